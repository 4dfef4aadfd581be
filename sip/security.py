"""The security event log: one structured line per event, bursts summarised.

Every layer reports what an administrator or fail2ban must see through one
:class:`SecurityLog`; lines go to the logger named ``security`` at WARNING, keys always
in this order and spelling (a fail2ban filter matches ``event=(auth_failed|...)
src=<HOST>:``)::

    event=auth_failed src=192.0.2.7:5060 user=100 method=REGISTER reason=wrong_password
    event=auth_failed src=192.0.2.7:* suppressed=1990 window=60s user=100 method=REGISTER ...

(a summary ends with the user, method and reason of the last event it counts).
IPv6 sources are bracketed (``src=[2001:db8::7]:5060``). Missing values are ``-``.
Values that come from the network are made safe for a line-oriented log: spaces become
``_``, anything outside printable ASCII (and ``%``, ``=``, ``"``, ``\\``) is %-escaped, and
each value is cut to a bounded length, so a peer can neither forge a line (CR/LF) nor
inject a second ``event=... src=...`` pair for fail2ban to misread.

Events (others may be added: a lower-case token; the reason says more):

``auth_failed``
    digest credentials refused: wrong password, unknown user, replayed or forged nonce.
``auth_throttled``
    a request refused by the failed-auth throttle (start of a throttle burst).
``request_refused``
    a request refused by policy or by the UA core: not permitted (toll fraud), call
    limit, unsupported URI scheme (416), ...
``malformed``
    a message that failed to parse (``reason`` is the parse error) or a stream whose
    framing was lost; the peer still gets its 400 when one can be formed.
``tcp_refused``
    an inbound TCP/TLS connection closed at once: ``reason=max_per_address`` or
    ``reason=max_connections`` (no idle connection could be evicted).
``tcp_evicted``
    the oldest idle connection, closed to admit a new one at the total cap.
``tcp_idle``
    a connection closed after ``idle_timeout`` seconds without a byte from the peer.
``tcp_slow``
    a connection closed because a message was not complete ``message_timeout`` seconds
    after its first byte (slowloris).
``http_refused``, ``http_evicted``, ``http_slow``, ``http_too_large``
    the same for the HTTP listeners of the web process (``softswitch.web.server``), and
    a request body over its route's limit.

Rate limit, per (event, source IP): in each window of ``window`` seconds the first
``burst`` events are logged one line each (enough for fail2ban's ``maxretry``); the rest
are counted and logged as one summary line when the window ends, so a flood that goes on
gives one summary per window. Memory and total volume are bounded too: at most
``max_sources`` (event, IP) pairs are tracked (the oldest window is evicted), and a
token bucket per event (``rate`` lines/s, ``capacity`` at once) caps its individual and
summary lines across all sources, so a spoofed flood of one event cannot crowd out the
others; what a bucket holds back, and evicted counts, go into one ``src=*:*`` summary per
event and window.

:class:`SecurityEvents` is the pure core (time passed in, lines out);
:class:`SecurityLog` writes its lines to the logger and tells an owner with an event
loop when to call :meth:`SecurityLog.flush` (``on_deadline``).
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .errors import SipUsageError

# (host, port) or a transport Address (transport, host, port)
Source = tuple[str, int] | tuple[str, str, int]

_EVENT_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
_SAFE = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/@+,;()[]*#!?'<>&$^|{}`"
)
_VALUE_LIMITS = {"user": 64, "method": 32, "reason": 160, "host": 64}


def clean(value: object, limit: int = 160) -> str:
    """``value`` as one safe log token: ``-`` for None/empty, spaces as ``_``, the rest
    of the unsafe characters %-escaped (UTF-8), cut to ``limit`` characters."""
    if value is None:
        return "-"
    text = str(value)
    if not text:
        return "-"
    if len(text) <= limit and all(c in _SAFE for c in text):
        return text
    out: list[str] = []
    size = 0
    cut = False
    for c in text:
        if c in _SAFE:
            piece = c
        elif c == " ":
            piece = "_"
        else:
            piece = "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape"))
        if size + len(piece) > limit:
            cut = True
            break
        out.append(piece)
        size += len(piece)
    return "".join(out) + ("..." if cut else "")


def _host_port(source: Source) -> tuple[str, int]:
    if len(source) == 3:
        return source[1], source[2]
    return source[0], source[1]


def _host(host: str) -> str:
    host = clean(host.strip("[]"), _VALUE_LIMITS["host"])
    return f"[{host}]" if ":" in host else host


def _details(user: str | None, method: str | None, reason: str | None) -> str:
    return (
        f"user={clean(user, _VALUE_LIMITS['user'])} "
        f"method={clean(method, _VALUE_LIMITS['method'])} "
        f"reason={clean(reason, _VALUE_LIMITS['reason'])}"
    )


@dataclass(slots=True)
class _Burst:
    """One (event, IP) in its current window."""

    start: float
    logged: int = 0
    suppressed: int = 0
    last: tuple[str | None, str | None, str | None] = (None, None, None)  # of the last one


@dataclass(slots=True)
class _Overflow:
    """Per event: what the global bucket held back or eviction dropped, this window."""

    start: float
    count: int = 0


class SecurityEvents:
    """Pure core: ``event()`` and ``flush()`` return the lines to log, time passed in."""

    def __init__(
        self,
        *,
        window: float = 60.0,
        burst: int = 10,
        max_sources: int = 4096,
        rate: float = 20.0,
        capacity: int = 200,
    ) -> None:
        if window <= 0 or burst < 1 or max_sources < 1 or rate <= 0 or capacity < 1:
            raise SipUsageError("security log limits must be positive")
        self.window = window
        self.burst = burst
        self.max_sources = max_sources
        self.rate = rate
        self.capacity = capacity
        self._bursts: OrderedDict[tuple[str, str], _Burst] = OrderedDict()  # by window start
        self._overflow: dict[str, _Overflow] = {}
        self._buckets: dict[str, list[float]] = {}  # event -> [tokens, refilled at]
        self.logged = 0  # individual lines
        self.suppressed = 0  # events counted into a summary instead

    def __len__(self) -> int:
        return len(self._bursts)

    @property
    def deadline(self) -> float | None:
        """When :meth:`flush` has a window to close (None: nothing pending)."""
        ends = [o.start + self.window for o in self._overflow.values()]
        if self._bursts:
            ends.append(next(iter(self._bursts.values())).start + self.window)
        return min(ends) if ends else None

    def event(
        self,
        event: str,
        source: Source,
        now: float,
        *,
        user: str | None = None,
        method: str | None = None,
        reason: str | None = None,
    ) -> list[str]:
        if _EVENT_NAME.match(event) is None:
            raise SipUsageError(f"security event name {event!r}: expected a lower-case token")
        lines = self.flush(now)
        host, port = _host_port(source)
        src = _host(host)
        key = (event, src)
        burst = self._bursts.get(key)
        if burst is None:
            if len(self._bursts) >= self.max_sources:
                (old_event, _), old = self._bursts.popitem(last=False)
                if old.suppressed:
                    self._overflowed(old_event, old.suppressed, now)
            burst = self._bursts[key] = _Burst(now)
        if burst.logged < self.burst and self._take(event, now):
            burst.logged += 1
            self.logged += 1
            lines.append(f"event={event} src={src}:{port} {_details(user, method, reason)}")
        else:  # a flood's cost stops here: no formatting
            burst.suppressed += 1
            burst.last = (user, method, reason)
            self.suppressed += 1
        return lines

    def flush(self, now: float) -> list[str]:
        """Close the windows that ended by ``now``: their summary lines."""
        lines: list[str] = []
        window = self.window
        while self._bursts:
            (event, src), burst = next(iter(self._bursts.items()))
            if burst.start + window > now:
                break
            del self._bursts[(event, src)]
            if not burst.suppressed:
                continue
            if self._take(event, now):
                lines.append(
                    f"event={event} src={src}:* suppressed={burst.suppressed} "
                    f"window={window:g}s {_details(*burst.last)}"
                )
            else:
                self._overflowed(event, burst.suppressed, now)
        for event, over in list(self._overflow.items()):
            if over.start + window <= now:
                del self._overflow[event]
                lines.append(
                    f"event={event} src=*:* suppressed={over.count} window={window:g}s "
                    "user=- method=- reason=log_rate_limit"
                )
        return lines

    def close(self) -> list[str]:
        """The summaries of every open window, at once: the log is closing (a daemon
        that stops loses no count). Not rate-limited: at most one line per tracked
        source and per event."""
        lines: list[str] = []
        for (event, src), burst in self._bursts.items():
            if burst.suppressed:
                lines.append(
                    f"event={event} src={src}:* suppressed={burst.suppressed} "
                    f"window={self.window:g}s {_details(*burst.last)}"
                )
        for event, over in self._overflow.items():
            lines.append(
                f"event={event} src=*:* suppressed={over.count} window={self.window:g}s "
                "user=- method=- reason=log_rate_limit"
            )
        self._bursts.clear()
        self._overflow.clear()
        return lines

    def _overflowed(self, event: str, count: int, now: float) -> None:
        over = self._overflow.get(event)
        if over is None:
            over = self._overflow[event] = _Overflow(now)
        over.count += count

    def _take(self, event: str, now: float) -> bool:
        bucket = self._buckets.get(event)
        if bucket is None:
            bucket = self._buckets[event] = [float(self.capacity), now]
        tokens = min(self.capacity, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return True
        bucket[0] = tokens
        return False


class SecurityLog:
    """The logging adapter: lines of :class:`SecurityEvents` to the ``security`` logger.

    An owner with an event loop sets ``on_deadline`` to be told when :meth:`flush` must
    run next (a summary is due even if no further event comes).
    """

    def __init__(
        self, core: SecurityEvents | None = None, logger: logging.Logger | None = None
    ) -> None:
        self.core = core if core is not None else SecurityEvents()
        self.logger = logger or logging.getLogger("security")
        self.on_deadline: Callable[[float], None] | None = None
        self._announced: float | None = None

    def event(
        self,
        event: str,
        source: Source,
        now: float,
        *,
        user: str | None = None,
        method: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Report ``event`` from ``source`` (host, port or a transport address)."""
        lines = self.core.event(event, source, now, user=user, method=method, reason=reason)
        self._write(lines)

    def flush(self, now: float) -> None:
        self._announced = None
        self._write(self.core.flush(now))

    def close(self) -> None:
        """Log the summaries still open (see :meth:`SecurityEvents.close`)."""
        self._announced = None
        for line in self.core.close():
            self.logger.warning("%s", line)

    @property
    def deadline(self) -> float | None:
        return self.core.deadline

    def _write(self, lines: list[str]) -> None:
        for line in lines:
            self.logger.warning("%s", line)
        deadline = self.core.deadline
        if deadline is not None and deadline != self._announced and self.on_deadline:
            self._announced = deadline
            self.on_deadline(deadline)
