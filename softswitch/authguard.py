"""Digest authentication of requests, with a throttle that stops guessing without
locking out an office.

One place decides whether a request is authenticated: it challenges when there are no
credentials, verifies them with :class:`sip.DigestServer`, and counts what fails. Unknown
users get exactly the answer a wrong password gets (403); only the log says which.

A throttle keyed on the source IP alone lets one guessed-at phone lock out everyone
behind the same NAT, so what is counted (each over a sliding ``window``) is keyed finer:

* wrong passwords per (source IP, user): ``max_failures`` of them refuse that user from
  that source, without digest work, while colleagues at the same address carry on;
* failures that name no user of ours (unknown user, unreadable or foreign-realm
  credentials) per source IP: ``max_failures`` refuse the whole source, so that user
  names cannot be probed by rotating them;
* challenges per source IP that no credentials answer: ``max_unanswered`` in a row and
  the source gets a 403 instead of a challenge, so a flood without credentials costs one
  cheap refusal each. Any credentials the guard checks answer their source's challenges.

A request without credentials whose user (the To of a REGISTER, else the From) is
throttled at its source is refused at once: a guessing loop is not challenged again.
A throttle holds until its oldest counted event is ``window`` old, and counting starts
afresh when it ends. Memory is bounded: at most ``max_sources`` counters of each kind
and throttles (the least recently used counter, the throttle nearest its end, go first).

The guard is pure (time passed in). What the security log must say comes back as
:class:`Report` values: on a verdict (``auth_failed``; ``auth_throttled`` when a throttle
starts) and from :meth:`AuthGuard.expire` (``auth_throttle_ended``, with how many requests
the throttle refused), due at :attr:`AuthGuard.deadline`.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from sip import AuthResult, Credentials, DigestServer, ParseError, Request, parse_credentials

# reasons, as the security log spells them
WRONG_PASSWORD = "wrong_password"  # a user of ours, a wrong response (or a replayed nonce)
UNKNOWN_USER = "unknown_user"
BAD_CREDENTIALS = "bad_credentials"  # unreadable, or for another realm
UNANSWERED = "unanswered_challenges"

_SOURCE = ""  # the user part of a key that covers the whole source
_FAILURES, _CHALLENGES = "failures", "challenges"
_Key = tuple[str, str, str]  # (kind, source IP, user)


@dataclass(frozen=True, slots=True)
class Report:
    """A line for the security log: ``event`` from ``source``:``port``."""

    event: str  # auth_failed, auth_throttled, auth_throttle_ended
    source: str
    port: int
    user: str | None  # None: the whole source
    method: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """``user`` is set when authenticated; otherwise answer ``status`` with ``headers``.
    ``throttled``: refused by a throttle, without digest work."""

    user: str | None
    status: int = 200
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    reports: tuple[Report, ...] = ()
    throttled: bool = False


@dataclass(slots=True)
class _Throttle:
    key: _Key
    until: float
    cause: str
    port: int
    method: str | None
    refused: int = 0


class AuthGuard:
    def __init__(
        self,
        realm: str,
        passwords: Callable[[str], str | None],
        *,
        max_failures: int = 10,
        max_unanswered: int = 100,
        window: float = 60.0,
        max_sources: int = 10_000,
        nonce_ttl: float = 300.0,
        algorithms: tuple[str, ...] = ("MD5", "SHA-256"),
    ) -> None:
        # MD5 first by default: RFC 8760 clients take the first challenge they support,
        # but MD5-only clients (SIPp 3.6, older desk phones) often just take the first.
        self.server = DigestServer(realm, nonce_ttl=nonce_ttl, algorithms=algorithms)
        self.passwords = passwords
        self.max_failures = max_failures
        self.max_unanswered = max_unanswered
        self.window = window
        self.max_sources = max_sources
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._unanswered: OrderedDict[str, deque[float]] = OrderedDict()
        self._throttles: dict[_Key, _Throttle] = {}
        self._ends: list[tuple[float, int, _Throttle]] = []  # heap; stale entries skipped
        self._order = itertools.count()
        self.failed = 0  # credentials refused
        self.throttled = 0  # requests refused by a throttle
        self.challenged = 0

    # -- the throttles ----------------------------------------------------------------------

    def throttled_source(self, source: str, now: float) -> bool:
        """Is every request from ``source`` refused (names no user, or never answers)?"""
        return any(
            self._holding((kind, source, _SOURCE), now) is not None
            for kind in (_FAILURES, _CHALLENGES)
        )

    def throttled_user(self, source: str, user: str, now: float) -> bool:
        """Is ``user`` refused from ``source`` (its own wrong passwords, or the source's)?"""
        return self._holding((_FAILURES, source, user), now) is not None or self.throttled_source(
            source, now
        )

    def __len__(self) -> int:
        """Counters and throttles held (bounded by ``3 * max_sources``)."""
        return len(self._failures) + len(self._unanswered) + len(self._throttles)

    @property
    def deadline(self) -> float | None:
        """When :meth:`expire` has a throttle to end (None: none holds)."""
        while self._ends and not self._current(self._ends[0]):
            heapq.heappop(self._ends)
        return self._ends[0][0] if self._ends else None

    def expire(self, now: float) -> list[Report]:
        """End the throttles whose time is up: an ``auth_throttle_ended`` report each."""
        reports: list[Report] = []
        while self._ends and self._ends[0][0] <= now:
            entry = heapq.heappop(self._ends)
            if self._current(entry):
                reports.append(self._end(entry[2]))
        return reports

    def _current(self, entry: tuple[float, int, _Throttle]) -> bool:
        throttle = entry[2]
        return self._throttles.get(throttle.key) is throttle and throttle.until == entry[0]

    def _holding(self, key: _Key, now: float) -> _Throttle | None:
        throttle = self._throttles.get(key)
        return throttle if throttle is not None and throttle.until > now else None

    def _end(self, throttle: _Throttle) -> Report:
        del self._throttles[throttle.key]
        _, source, user = throttle.key
        return Report(
            "auth_throttle_ended",
            source,
            throttle.port,
            user or None,
            throttle.method,
            f"{throttle.cause},refused:{throttle.refused}",
        )

    def _start(
        self, key: _Key, until: float, cause: str, port: int, method: str | None
    ) -> list[Report]:
        throttle = _Throttle(key, until, cause, port, method)
        self._throttles[key] = throttle
        heapq.heappush(self._ends, (until, next(self._order), throttle))
        _, source, user = key
        reports = [Report("auth_throttled", source, port, user or None, method, cause)]
        while len(self._throttles) > self.max_sources:  # the one nearest its end goes
            entry = heapq.heappop(self._ends)
            if self._current(entry):
                reports.append(self._end(entry[2]))
        return reports

    def _refuse(self, throttle: _Throttle) -> Verdict:
        throttle.refused += 1
        self.throttled += 1
        why = "unanswered challenges" if throttle.cause == UNANSWERED else "failed attempts"
        return Verdict(None, 403, f"Forbidden (too many {why})", throttled=True)

    def _count(self, times: deque[float], now: float) -> int:
        while times and times[0] <= now - self.window:
            times.popleft()
        return len(times)

    def _fail(
        self,
        source: str,
        user: str,
        now: float,
        port: int,
        method: str,
        cause: str,
        tried: str | None,
    ) -> list[Report]:
        """A failure counted on (source, user); ``user`` "" counts on the whole source.
        ``tried``: the user name the credentials gave (for the log only)."""
        self.failed += 1
        reports = [Report("auth_failed", source, port, tried, method, cause)]
        name = (source, user)
        times = self._failures.pop(name, None) or deque(maxlen=self.max_failures)
        times.append(now)
        if self._count(times, now) >= self.max_failures:
            return reports + self._start(
                (_FAILURES, *name), times[0] + self.window, cause, port, method
            )
        self._failures[name] = times  # most recently used last
        if len(self._failures) > self.max_sources:
            self._failures.popitem(last=False)
        return reports

    def _challenged(self, source: str, now: float, port: int, method: str) -> list[Report]:
        self.challenged += 1
        times = self._unanswered.pop(source, None) or deque(maxlen=self.max_unanswered)
        times.append(now)
        if self._count(times, now) >= self.max_unanswered:
            key = (_CHALLENGES, source, _SOURCE)
            return self._start(key, times[0] + self.window, UNANSWERED, port, method)
        self._unanswered[source] = times
        if len(self._unanswered) > self.max_sources:
            self._unanswered.popitem(last=False)
        return []

    def _answered(self, source: str, now: float) -> None:
        """Credentials came from ``source``: its challenges were answered."""
        self._unanswered.pop(source, None)
        throttle = self._holding((_CHALLENGES, source, _SOURCE), now)
        if throttle is not None:  # lifted: ended by the next expire()
            throttle.until = now
            heapq.heappush(self._ends, (now, next(self._order), throttle))

    # -- checking a request ---------------------------------------------------------------

    def check(
        self, request: Request, source: str, now: float, *, proxy: bool = False, port: int = 0
    ) -> Verdict:
        """Authenticate ``request`` from IP ``source`` (``port``: for the reports).
        ``proxy`` uses 407 and Proxy-Authorization (INVITE through a PBX), else 401
        (REGISTER)."""
        method = request.method
        header = "Proxy-Authorization" if proxy else "Authorization"
        values = request.headers.get_lines(header)
        if not values:
            named = request.to if method == "REGISTER" else request.from_
            claimed = named.uri.user or _SOURCE
            for key in (
                (_FAILURES, source, _SOURCE),
                (_CHALLENGES, source, _SOURCE),
                (_FAILURES, source, claimed),
            ):
                throttle = self._holding(key, now)
                if throttle is not None:
                    return self._refuse(throttle)
            reports = self._challenged(source, now, port, method)
            return self._challenge(now, proxy, stale=False, reports=reports)
        credentials = self._ours(values)
        tried = credentials.username if credentials is not None else None
        password = self.passwords(tried) if tried is not None else None
        user = tried if tried is not None and password is not None else _SOURCE
        for key in ((_FAILURES, source, _SOURCE), (_FAILURES, source, user)):
            throttle = self._holding(key, now)
            if throttle is not None:
                return self._refuse(throttle)
        self._answered(source, now)
        if credentials is None:
            reports = self._fail(source, _SOURCE, now, port, method, BAD_CREDENTIALS, None)
            return Verdict(None, 403, "Forbidden", reports=tuple(reports))
        result = self.server.verify(
            credentials, method=method, password=password, now=now, body=request.body
        )
        if result is AuthResult.OK:
            return Verdict(credentials.username)
        if result is AuthResult.STALE:
            reports = self._challenged(source, now, port, method)
            return self._challenge(now, proxy, stale=True, reports=reports)
        cause = WRONG_PASSWORD if password is not None else UNKNOWN_USER
        reports = self._fail(source, user, now, port, method, cause, tried)
        return Verdict(None, 403, "Forbidden", reports=tuple(reports))

    def _ours(self, values: list[str]) -> Credentials | None:
        """The first credentials for our realm among ``values``."""
        for value in values:
            try:
                credentials = parse_credentials(value)
            except ParseError:
                continue
            if credentials.realm == self.server.realm:
                return credentials
        return None

    def _challenge(self, now: float, proxy: bool, *, stale: bool, reports: list[Report]) -> Verdict:
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        headers = tuple((name, str(c)) for c in self.server.challenges(now, stale=stale))
        return Verdict(None, 407 if proxy else 401, None, headers, tuple(reports))
