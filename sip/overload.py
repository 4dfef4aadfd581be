"""Local overload control: refuse new work early and cheaply instead of collapsing.

In the spirit of RFC 7339's loss-based overload control and Kamailio's ``ratelimit``
practice, applied at the server itself: every probe period the user agent measures how
long the oldest unread SIP datagram has waited in the kernel (asyncio reads one datagram
per socket per loop pass, so a loop saturated by signalling shows as messages waiting
rather than as timer lateness), how late the probe itself ran (a loop blocked by other
work), how full the UDP receive buffers are (about to drop), and how many incoming calls
wait for an answer; how busy the process was (CPU time over wall time) is reported with
them. A busy process that keeps up is not overloaded, nor is a burst read within the
bound: only work that waits too long is. While any stays over its bound, a
growing share of *new* INVITEs and REGISTERs is answered 503 with
``Retry-After`` right after parsing, before any transaction, authentication, media port or
task exists. In-dialog requests (ACK, BYE, re-INVITE, INFO), CANCEL and retransmissions
of requests already accepted are always served: calls in progress finish.

The share refused follows the load (additive increase while overloaded, slow decrease
after), so goodput stays near capacity rather than oscillating between all and nothing.
Pure: lag samples, counts and time go in; admit/refuse decisions come out.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OverloadSettings:
    """``max_lag``: smoothed event-loop lateness (s) counted as overload;
    ``max_wait``: smoothed time (s) the oldest unread SIP datagram has waited;
    ``max_backlog``: how full the fullest SIP socket's receive buffer is (0..1);
    ``max_pending``: incoming calls not yet answered; ``retry_after``: seconds, told to
    refused clients; ``interval``: the probe period (s); ``step_up``/``step_down``: how
    fast the refused share grows while overloaded and shrinks after."""

    max_lag: float = 0.1
    max_wait: float = 0.1
    max_backlog: float = 0.5
    max_pending: int = 2000
    retry_after: int = 5
    interval: float = 0.05
    step_up: float = 0.1
    step_down: float = 0.02
    smoothing: float = 0.3


@dataclass(slots=True)
class OverloadStats:
    admitted: int = 0
    refused: int = 0
    episodes: int = 0  # times overload began
    max_lag: float = 0.0
    max_wait: float = 0.0
    max_backlog: float = 0.0


class OverloadControl:
    """The share of new requests to refuse, from lag and pending-call samples."""

    def __init__(self, settings: OverloadSettings | None = None) -> None:
        self.settings = settings or OverloadSettings()
        self.stats = OverloadStats()
        self.lag = 0.0  # smoothed
        self.busy = 0.0  # smoothed
        self.backlog = 0.0  # smoothed
        self.wait = 0.0  # smoothed
        self.refuse_share = 0.0
        self._credit = 0.0
        self._refused_in_episode = 0

    @property
    def overloaded(self) -> bool:
        return self.refuse_share > 0.0

    def observe(
        self, lag: float, pending: int, busy: float = 0.0, backlog: float = 0.0, wait: float = 0.0
    ) -> str | None:
        """One probe: its lateness (s), the calls waiting, the share of a core used since
        the last probe, the sockets' fill (0..1), the oldest unread datagram's wait (s).
        Returns "start" or "end" when an overload episode begins or ends (to log once per
        episode), else None."""
        s = self.settings
        self.lag += (max(0.0, lag) - self.lag) * s.smoothing
        self.busy += (max(0.0, busy) - self.busy) * s.smoothing
        self.backlog += (max(0.0, backlog) - self.backlog) * s.smoothing
        self.wait += (max(0.0, wait) - self.wait) * s.smoothing
        self.stats.max_wait = max(self.stats.max_wait, wait)
        self.stats.max_lag = max(self.stats.max_lag, lag)
        self.stats.max_backlog = max(self.stats.max_backlog, backlog)
        was = self.overloaded
        if (
            self.lag > s.max_lag
            or self.wait > s.max_wait
            or self.backlog > s.max_backlog
            or pending > s.max_pending
        ):
            self.refuse_share = min(1.0, self.refuse_share + s.step_up)
        else:
            self.refuse_share = max(0.0, self.refuse_share - s.step_down)
        if self.overloaded and not was:
            self.stats.episodes += 1
            self._refused_in_episode = 0
            return "start"
        if was and not self.overloaded:
            return "end"
        return None

    def admit(self) -> bool:
        """May one more new INVITE/REGISTER be served? Deterministic: of every N
        requests, ``(1 - refuse_share) * N`` are admitted, spread evenly."""
        if self.refuse_share <= 0.0:
            self.stats.admitted += 1
            return True
        self._credit += 1.0 - self.refuse_share
        if self._credit >= 1.0:
            self._credit -= 1.0
            self.stats.admitted += 1
            return True
        self.stats.refused += 1
        self._refused_in_episode += 1
        return False

    @property
    def refused_in_episode(self) -> int:
        return self._refused_in_episode
