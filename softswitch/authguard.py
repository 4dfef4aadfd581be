"""Digest authentication of requests, with a throttle on failed-auth floods.

One place decides whether a request is authenticated: it challenges when there are no
credentials, verifies them with :class:`sip.DigestServer`, and counts failures per source
address. A source that fails too often in a window is refused outright (403, no digest
work) until the window passes: password guessing over SIP is the first thing a PBX on
the Internet meets. Unknown users get exactly the answer a wrong password gets.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from sip import AuthResult, DigestServer, ParseError, Request, parse_credentials


@dataclass(frozen=True, slots=True)
class Verdict:
    """``user`` is set when authenticated; otherwise answer ``status`` with ``headers``."""

    user: str | None
    status: int = 200
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


class AuthGuard:
    def __init__(
        self,
        realm: str,
        passwords: Callable[[str], str | None],
        *,
        max_failures: int = 10,
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
        self.window = window
        self.max_sources = max_sources
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self.failed = 0
        self.throttled = 0

    def throttled_source(self, source: str, now: float) -> bool:
        times = self._failures.get(source)
        if times is None:
            return False
        while times and times[0] <= now - self.window:
            times.popleft()
        return len(times) >= self.max_failures

    def _fail(self, source: str, now: float) -> None:
        self.failed += 1
        times = self._failures.setdefault(source, deque(maxlen=self.max_failures))
        times.append(now)
        self._failures.move_to_end(source)
        while len(self._failures) > self.max_sources:
            self._failures.popitem(last=False)

    def check(self, request: Request, source: str, now: float, *, proxy: bool = False) -> Verdict:
        """Authenticate ``request`` from IP ``source``. ``proxy`` uses 407 and
        Proxy-Authorization (INVITE through a PBX), else 401 (REGISTER)."""
        if self.throttled_source(source, now):
            self.throttled += 1
            return Verdict(None, 403, "Forbidden (too many failed attempts)")
        header = "Proxy-Authorization" if proxy else "Authorization"
        values = request.headers.get_lines(header)
        if not values:
            return self._challenge(now, proxy, stale=False)
        for value in values:
            try:
                credentials = parse_credentials(value)
            except ParseError:
                continue
            if credentials.realm != self.server.realm:
                continue
            result = self.server.verify(
                credentials,
                method=request.method,
                password=self.passwords(credentials.username),
                now=now,
                body=request.body,
            )
            if result is AuthResult.OK:
                return Verdict(credentials.username)
            if result is AuthResult.STALE:
                return self._challenge(now, proxy, stale=True)
            self._fail(source, now)
            return Verdict(None, 403, "Forbidden")
        self._fail(source, now)
        return Verdict(None, 403, "Forbidden")

    def _challenge(self, now: float, proxy: bool, *, stale: bool) -> Verdict:
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        headers = tuple((name, str(c)) for c in self.server.challenges(now, stale=stale))
        return Verdict(None, 407 if proxy else 401, None, headers)
