"""The registrar (RFC 3261 §10.3) as a pure table of bindings; time is passed in.

Storage is in memory: phones refresh their registrations, so a restart only costs one
refresh interval (DESIGN.md). Several contacts per address of record, expiry, ``*`` to
remove all, Call-ID/CSeq ordering, Min-Expires, and a bound on bindings per AOR.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sip import Contact, Request
from sip.transaction import Address
from sip.uri import URI


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
    ) -> None:
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.max_bindings = max_bindings
        self._bindings: dict[str, list[Binding]] = {}

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
        if current:
            self._bindings[aor] = current
        else:
            self._bindings.pop(aor, None)
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
