"""The registrar (RFC 3261 §10.3) as a table of bindings; time is passed in.

Several contacts per address of record, expiry, ``*`` to remove all, Call-ID/CSeq
ordering, Min-Expires, and a bound on bindings per AOR. With a
:class:`~softswitch.binding_store.BindingStore`, every change is written through (a new
binding, one removed or expired, a refresh that moves the expiry by more than a tenth of
its interval: not a retransmission or an early repeat), and :meth:`Registrar.restore`
reads the bindings back after a restart with their remaining lifetime.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sip import Contact, ParseError, Request, parse_uri
from sip.transaction import Address
from sip.uri import URI

from .binding_store import BindingStore, StoredBinding

log = logging.getLogger("softswitch")


@dataclass(slots=True)
class Binding:
    aor: str
    contact: URI
    source: Address  # where the REGISTER came from: requests go there (NAT, RFC 3581)
    expires_at: float
    call_id: str
    cseq: int
    user_agent: str = ""
    q: float = 1.0
    instance: str | None = None  # +sip.instance (RFC 5626), identifies the device

    def expires_in(self, now: float) -> int:
        return max(0, round(self.expires_at - now))

    @property
    def device(self) -> str:
        """What tells this binding from the AOR's others: +sip.instance, else the contact."""
        return self.instance or str(self.contact)


@dataclass(frozen=True, slots=True)
class RegisterResult:
    status: int
    reason: str | None = None
    bindings: list[Binding] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    added: list[Binding] = field(default_factory=list)
    removed: list[Binding] = field(default_factory=list)


class Registrar:
    def __init__(
        self,
        *,
        min_expires: int = 60,
        max_expires: int = 3600,
        default_expires: int = 3600,
        max_bindings: int = 10,
        store: BindingStore | None = None,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        """``store``: where bindings are written through (None: memory only);
        ``wallclock``: seconds since the epoch, for the expiry written there."""
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.max_bindings = max_bindings
        self.store = store
        self._wall = wallclock
        self._bindings: dict[str, list[Binding]] = {}
        self._stored: dict[tuple[str, str], StoredBinding] = {}

    # -- persistence ----------------------------------------------------------------------

    def restore(self, now: float, rows: Iterable[StoredBinding]) -> list[Binding]:
        """Take the stored bindings back (``rows``, read from the store after a restart:
        ``await store.load()``), with their remaining lifetime; expired or unreadable
        rows are deleted from the store. Returns the bindings restored."""
        if self.store is None:
            return []
        wall = self._wall()
        restored: list[Binding] = []
        for row in rows:
            left = row.expires_at - wall
            try:
                contact = parse_uri(row.contact)
            except ParseError:
                left = -1.0
            if left <= 0 or row.transport not in ("udp", "tcp", "tls"):
                self.store.delete(*row.key)
                continue
            binding = Binding(
                row.aor,
                contact,
                (row.transport, row.host, row.port),
                now + left,
                row.call_id,
                row.cseq,
                row.user_agent,
                row.q,
                row.instance,
            )
            current = self._bindings.setdefault(row.aor, [])
            if len(current) >= self.max_bindings:
                continue
            current.append(binding)
            self._stored[row.key] = row
            restored.append(binding)
        return restored

    def _sync(self, aor: str, before: list[Binding], now: float) -> None:
        """Write what changed for ``aor`` to the store."""
        if self.store is None:
            return
        after = self._bindings.get(aor, [])
        kept = {b.device for b in after}
        for binding in before:
            if binding.device not in kept:
                self._forget(binding)
        for binding in after:
            self._persist(binding, now)

    def _persist(self, binding: Binding, now: float) -> None:
        assert self.store is not None
        left = binding.expires_at - now
        row = StoredBinding(
            binding.aor,
            str(binding.contact),
            *binding.source,
            self._wall() + left,
            binding.call_id,
            binding.cseq,
            binding.user_agent,
            binding.q,
            binding.instance,
        )
        old = self._stored.get(row.key)
        if (
            old is not None
            and (old.contact, old.transport, old.host, old.port, old.call_id, old.q)
            == (row.contact, row.transport, row.host, row.port, row.call_id, row.q)
            and abs(old.expires_at - row.expires_at) <= max(1.0, 0.1 * left)
        ):
            return  # a retransmission or an early repeat: what is stored still holds
        self.store.put(row)
        self._stored[row.key] = row

    def _forget(self, binding: Binding) -> None:
        assert self.store is not None
        key = (binding.aor, binding.device)
        self.store.delete(*key)
        self._stored.pop(key, None)

    def __len__(self) -> int:
        return sum(len(v) for v in self._bindings.values())

    def aors(self) -> list[str]:
        return list(self._bindings)

    def lookup(self, aor: str, now: float) -> list[Binding]:
        """Live bindings of ``aor``, best q first."""
        live = [b for b in self._bindings.get(aor, []) if b.expires_at > now]
        return sorted(live, key=lambda b: -b.q)

    def remove(self, binding: Binding) -> None:
        """Drop one binding (its contact stopped answering keep-alives)."""
        current = self._bindings.get(binding.aor, [])
        if binding in current:
            current.remove(binding)
            if self.store is not None:
                self._forget(binding)
        if not current:
            self._bindings.pop(binding.aor, None)

    def expire(self, now: float) -> list[Binding]:
        gone: list[Binding] = []
        for aor in list(self._bindings):
            keep: list[Binding] = []
            for b in self._bindings[aor]:
                (keep if b.expires_at > now else gone).append(b)
            if keep:
                self._bindings[aor] = keep
            else:
                del self._bindings[aor]
        if self.store is not None:
            for binding in gone:
                self._forget(binding)
        return gone

    def process(self, request: Request, aor: str, source: Address, now: float) -> RegisterResult:
        """Apply an authenticated REGISTER for ``aor``; the response to send."""
        self.expire(now)
        contacts = request.contact
        header_expires = request.expires
        current = list(self._bindings.get(aor, []))  # committed only on success
        if not contacts:  # a query: list current bindings
            return self._ok(aor, now)
        if any(c.star for c in contacts):
            if len(contacts) != 1 or header_expires != 0:
                return RegisterResult(
                    400, "Bad Request ('*' needs Expires: 0 and no other Contact)"
                )
            removed = [b for b in current if self._in_order(b, request)]
            self._bindings[aor] = [b for b in current if b not in removed]
            self._sync(aor, current, now)
            result = self._ok(aor, now)
            return RegisterResult(200, None, result.bindings, result.headers, [], removed)
        added: list[Binding] = []
        removed = []
        for contact in contacts:
            expires = self._expires(contact, header_expires)
            if 0 < expires < self.min_expires:
                return RegisterResult(423, None, headers=[("Min-Expires", str(self.min_expires))])
            existing = next((b for b in current if _same_device(b, contact)), None)
            if existing is not None:
                if not self._in_order(existing, request):
                    return RegisterResult(500, "Server Internal Error (out-of-order REGISTER)")
                current.remove(existing)
                if expires == 0:
                    removed.append(existing)
                    continue
            elif expires == 0:
                continue
            if len(current) >= self.max_bindings:
                return RegisterResult(403, f"Forbidden (more than {self.max_bindings} devices)")
            binding = Binding(
                aor,
                contact.uri.copy(),
                source,
                now + min(expires, self.max_expires),
                request.call_id,
                request.cseq.seq,
                request.headers.get("User-Agent") or "",
                _q(contact),
                contact.params.get("+sip.instance"),
            )
            current.append(binding)
            added.append(binding)
        before = self._bindings.get(aor, [])
        if current:
            self._bindings[aor] = current
        else:
            self._bindings.pop(aor, None)
        self._sync(aor, before, now)
        result = self._ok(aor, now)
        return RegisterResult(200, None, result.bindings, result.headers, added, removed)

    def _expires(self, contact: Contact, header_expires: int | None) -> int:
        if contact.expires is not None:
            return contact.expires
        if header_expires is not None:
            return header_expires
        return self.default_expires

    @staticmethod
    def _in_order(binding: Binding, request: Request) -> bool:
        return binding.call_id != request.call_id or request.cseq.seq > binding.cseq

    def _ok(self, aor: str, now: float) -> RegisterResult:
        bindings = self.lookup(aor, now)
        headers = [("Contact", f"<{b.contact}>;expires={b.expires_in(now)}") for b in bindings]
        return RegisterResult(200, None, bindings, headers)


def _same_device(binding: Binding, contact: Contact) -> bool:
    instance = contact.params.get("+sip.instance")
    if instance is not None and binding.instance is not None:
        return instance == binding.instance
    return binding.contact == contact.uri


def _q(contact: Contact) -> float:
    value = contact.params.get("q")
    return float(value) if value is not None else 1.0
