"""Session timers (RFC 4028), pure: negotiation from headers, and a timer that says when
to refresh or when the session is dead. Time is an argument.

The refresher sends a re-INVITE or UPDATE every half interval; the other side ends the
session (BYE) when no refresh came for the whole interval. Polycom phones refresh late
now and then, so the non-refresher waits ``interval + min(32, interval / 3)`` (the
RFC's margin, given to the peer rather than taken from it) before ending the call.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .errors import ParseError
from .headers import Headers

MIN_SE_FLOOR = 90  # RFC 4028 §5: the smallest Min-SE a UA may demand (tests go lower)
MAX_INTERVAL = 86400


@dataclass(frozen=True, slots=True)
class TimerSettings:
    """What this UA asks for and accepts: ``expires`` (0 turns timers off) and the
    smallest interval it agrees to (``min_se``)."""

    expires: int = 1800
    min_se: int = MIN_SE_FLOOR


@dataclass(frozen=True, slots=True)
class SessionExpires:
    interval: int
    refresher: str | None = None  # "uac" or "uas"

    def __str__(self) -> str:
        if self.refresher is None:
            return str(self.interval)
        return f"{self.interval};refresher={self.refresher}"


def parse_session_expires(value: str) -> SessionExpires:
    """``1800;refresher=uac``."""
    head, *params = value.split(";")
    head = head.strip()
    if not head.isdigit() or not 1 <= int(head) <= MAX_INTERVAL:
        raise ParseError(f"Session-Expires: {value!r} is not a delta-seconds value")
    refresher = None
    for param in params:
        name, _, val = param.partition("=")
        if name.strip().lower() == "refresher":
            refresher = val.strip().lower()
            if refresher not in ("uac", "uas"):
                raise ParseError(f"Session-Expires: refresher must be uac or uas, not {val!r}")
    return SessionExpires(int(head), refresher)


def parse_min_se(value: str) -> int:
    head = value.split(";")[0].strip()
    if not head.isdigit() or not 1 <= int(head) <= MAX_INTERVAL:
        raise ParseError(f"Min-SE: {value!r} is not a delta-seconds value")
    return int(head)


def _session_expires(headers: Headers) -> SessionExpires | None:
    value = headers.get("Session-Expires")  # the compact "x" is normalised by Headers
    return parse_session_expires(value) if value else None


def _supports_timer(headers: Headers) -> bool:
    options = [*headers.values("Supported"), *headers.values("Require")]
    return any(o.strip().lower() == "timer" for o in options)


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The agreed interval and who refreshes; ``we_refresh`` from this UA's side."""

    interval: int
    refresher: str  # "uac" or "uas", relative to the request that set it
    we_refresh: bool

    def response_headers(self) -> list[tuple[str, str]]:
        headers = [("Session-Expires", f"{self.interval};refresher={self.refresher}")]
        if self.refresher == "uac":
            headers.append(("Require", "timer"))  # the UAC said it supports timers
        return headers


class IntervalTooSmall(ParseError):
    """The request's Session-Expires is below our Min-SE: answer 422 with ``min_se``."""

    def __init__(self, asked: int, min_se: int) -> None:
        super().__init__(f"Session Interval Too Small ({asked} < {min_se})", status=422)
        self.min_se = min_se

    def headers(self) -> list[tuple[str, str]]:
        return [("Min-SE", str(self.min_se))]


def negotiate_uas(headers: Headers, settings: TimerSettings) -> Negotiated | None:
    """A UAS answering an INVITE/UPDATE with ``headers``: the timer to put in the 2xx
    (None: no timer). Raises :class:`IntervalTooSmall` (422) or ParseError (400)."""
    asked = _session_expires(headers)
    uac_supports = _supports_timer(headers)
    floor = settings.min_se
    min_se_value = headers.get("Min-SE")
    peer_min = parse_min_se(min_se_value) if min_se_value else 0
    if asked is None:
        if not settings.expires:
            return None
        interval = max(settings.expires, peer_min, floor)
        refresher = "uac" if uac_supports else "uas"
        return Negotiated(interval, refresher, refresher == "uas")
    if asked.interval < floor:
        raise IntervalTooSmall(asked.interval, floor)
    interval = asked.interval
    if settings.expires and settings.expires < interval:
        interval = max(settings.expires, peer_min, floor)  # we may shorten, not below Min-SE
    refresher = asked.refresher or ("uac" if uac_supports else "uas")
    if refresher == "uac" and not uac_supports:
        refresher = "uas"  # a UAC that does not support timers cannot refresh
    return Negotiated(interval, refresher, refresher == "uas")


def request_headers(settings: TimerSettings) -> list[tuple[str, str]]:
    """What a UAC puts in an INVITE to offer timers (the UAS picks the refresher)."""
    if not settings.expires:
        return [("Supported", "timer")]
    return [
        ("Supported", "timer"),
        ("Session-Expires", str(settings.expires)),
        ("Min-SE", str(settings.min_se)),
    ]


def negotiate_uac(headers: Headers) -> Negotiated | None:
    """A UAC reading the 2xx to its INVITE/UPDATE: no Session-Expires, no timer
    (RFC 4028 §7.2); a 2xx without a refresher is read as ours to refresh."""
    got = _session_expires(headers)
    if got is None:
        return None
    refresher = got.refresher or "uac"
    return Negotiated(got.interval, refresher, refresher == "uac")


class Action(Enum):
    REFRESH = "refresh"  # send a re-INVITE or UPDATE now
    EXPIRE = "expire"  # no refresh came: end the session with BYE


class SessionTimer:
    """The running timer of one session: :meth:`refreshed` at each refresh (sent and
    answered, or received), :attr:`deadline` to sleep until, :meth:`on_timer` to act."""

    def __init__(self, negotiated: Negotiated, now: float) -> None:
        self.negotiated = negotiated
        self.last = now

    @property
    def interval(self) -> int:
        return self.negotiated.interval

    @property
    def grace(self) -> float:
        return min(32.0, self.interval / 3)

    def refreshed(self, now: float, negotiated: Negotiated | None = None) -> None:
        if negotiated is not None:
            self.negotiated = negotiated
        self.last = now

    @property
    def deadline(self) -> float:
        if self.negotiated.we_refresh:
            return self.last + self.interval / 2
        return self.last + self.interval + self.grace

    def on_timer(self, now: float) -> Action | None:
        if now < self.deadline:
            return None
        return Action.REFRESH if self.negotiated.we_refresh else Action.EXPIRE


__all__ = [
    "MIN_SE_FLOOR",
    "Action",
    "IntervalTooSmall",
    "Negotiated",
    "SessionExpires",
    "SessionTimer",
    "TimerSettings",
    "negotiate_uac",
    "negotiate_uas",
    "parse_min_se",
    "parse_session_expires",
    "request_headers",
]
