"""Limits on stream (TCP/TLS) connections, as a pure table: time in, decisions out.

A SIP server on the Internet meets peers that open connections and send nothing, send a
message one byte at a time (slowloris), or open thousands from one address. The table
decides, the transport carries it out:

- ``idle_timeout``: a connection that brought no byte for this long is closed. Default
  600 s: well above the 95-120 s keep-alive interval RFC 5626 §4.4.1 asks of clients on
  TCP and above the registrar's OPTIONS keep-alive (30 s by default), so a connection
  that carries a registration never gets there; an abandoned one frees its slot within
  minutes. Floods are the caps' business, not this one's.
- ``message_timeout``: once the first byte of a message arrived, the whole message must
  arrive within this (default 10 s; a 64 KiB message needs 6.5 KB/s).
- ``max_per_address``: inbound connections from one IP (default 32: an office of 32 TCP
  phones behind one NAT; raise it for bigger sites). The next one is refused.
- ``max_connections``: all connections (default 2048, as Kamailio's
  ``tcp_max_connections``). At the cap a newcomer is admitted by closing the oldest idle
  inbound connection: one that never carried a complete message first, then the least
  recently active. Only when there is none is the newcomer refused.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .errors import SipUsageError

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    idle_timeout: float = 600.0
    message_timeout: float = 10.0
    max_connections: int = 2048
    max_per_address: int = 32

    def __post_init__(self) -> None:
        if min(self.idle_timeout, self.message_timeout) <= 0:
            raise SipUsageError("connection timeouts must be positive")
        if min(self.max_connections, self.max_per_address) < 1:
            raise SipUsageError("connection caps must be at least 1")


@dataclass(slots=True)
class Admission(Generic[K]):
    """``accepted``; if not, ``reason``. ``evict`` is a connection to close first."""

    accepted: bool
    reason: str | None = None
    evict: K | None = None


@dataclass(slots=True, eq=False)
class _Entry:
    host: str
    inbound: bool
    last_activity: float
    partial_since: float | None = None
    messages: int = 0


class ConnectionTable(Generic[K]):
    """The connections of one transport layer, keyed by anything hashable."""

    def __init__(self, limits: ConnectionLimits | None = None) -> None:
        self.limits = limits or ConnectionLimits()
        self._entries: dict[K, _Entry] = {}
        self._per_host: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def inbound_from(self, host: str) -> int:
        return self._per_host.get(host, 0)

    def admit(self, key: K, host: str, now: float) -> Admission[K]:
        """An inbound connection from ``host`` was accepted by the kernel: keep it?

        When accepted, the key is tracked; close ``evict`` (if any) to make room.
        """
        limits = self.limits
        if self._per_host.get(host, 0) >= limits.max_per_address:
            return Admission(False, "max_per_address")
        victim: K | None = None
        if len(self._entries) >= limits.max_connections:
            victim = self._oldest_idle()
            if victim is None:
                return Admission(False, "max_connections")
            self.remove(victim)
        self._add(key, host, now, inbound=True)
        return Admission(True, None, victim)

    def add_outbound(self, key: K, host: str, now: float) -> None:
        """A connection we opened: counted in the total, never refused or evicted."""
        self._add(key, host, now, inbound=False)

    def _add(self, key: K, host: str, now: float, *, inbound: bool) -> None:
        if key in self._entries:
            self.remove(key)
        self._entries[key] = _Entry(host, inbound, now)
        if inbound:
            self._per_host[host] = self._per_host.get(host, 0) + 1

    def _oldest_idle(self) -> K | None:
        best: K | None = None
        best_rank: tuple[bool, float] | None = None
        for key, entry in self._entries.items():
            if not entry.inbound:
                continue
            rank = (entry.messages > 0, entry.last_activity)
            if best_rank is None or rank < best_rank:
                best, best_rank = key, rank
        return best

    def received(self, key: K, now: float, *, messages: int, partial: bool) -> None:
        """Bytes arrived: ``messages`` complete ones, ``partial`` if one is still open."""
        entry = self._entries.get(key)
        if entry is None:
            return
        entry.last_activity = now
        entry.messages += messages
        if not partial:
            entry.partial_since = None
        elif entry.partial_since is None or messages:
            entry.partial_since = now  # a new message started

    def remove(self, key: K) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None and entry.inbound:
            left = self._per_host[entry.host] - 1
            if left:
                self._per_host[entry.host] = left
            else:
                del self._per_host[entry.host]

    def expired(self, now: float) -> list[tuple[K, str]]:
        """Connections to close now, each with ``"message_timeout"`` or ``"idle_timeout"``;
        they are no longer tracked."""
        limits = self.limits
        out: list[tuple[K, str]] = []
        for key, entry in self._entries.items():
            if entry.partial_since is not None and now - entry.partial_since >= (
                limits.message_timeout
            ):
                out.append((key, "message_timeout"))
            elif now - entry.last_activity >= limits.idle_timeout:
                out.append((key, "idle_timeout"))
        for key, _ in out:
            self.remove(key)
        return out

    @property
    def deadline(self) -> float | None:
        """The next time :meth:`expired` can return something (None: no connection)."""
        limits = self.limits
        times = [e.last_activity + limits.idle_timeout for e in self._entries.values()]
        times += [
            e.partial_since + limits.message_timeout
            for e in self._entries.values()
            if e.partial_since is not None
        ]
        return min(times) if times else None
