"""Sessions, CSRF tokens and the login throttle of the web console (pure: time passed in).

A session is a random identifier in an HttpOnly, SameSite=Strict cookie (Secure over
HTTPS), kept in memory (a restart logs everyone out), ended after ``idle`` seconds without
a request. Each session has its own CSRF token, which every form carries in a hidden
field and every script request in the ``X-CSRF-Token`` header; a state-changing request
without the session's token is refused. The login throttle counts failures per source
address and per account over a sliding window: ``limit`` failures refuse that source (or
that account, from anywhere) until the oldest failure leaves the window.
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass, field

COOKIE = "softswitch_session"
MAX_SESSIONS = 1000  # beyond, the least recently used goes
MAX_TRACKED = 4096  # sources and accounts the throttle follows


@dataclass(eq=False)
class Session:
    id: str
    role: str  # "admin" or "user"
    name: str  # the administrator's name, or the user's extension
    csrf: str
    expires: float
    flash: list[tuple[str, str]] = field(default_factory=list)  # (kind, message) to show once

    def csrf_ok(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())


class Sessions:
    def __init__(self, idle: float) -> None:
        self.idle = idle
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def new(self, role: str, name: str, now: float) -> Session:
        session = Session(
            secrets.token_urlsafe(32), role, name, secrets.token_urlsafe(32), now + self.idle
        )
        self._sessions[session.id] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def get(self, sid: str | None, now: float) -> Session | None:
        if not sid:
            return None
        session = self._sessions.get(sid)
        if session is None:
            return None
        if session.expires <= now:
            del self._sessions[sid]
            return None
        session.expires = now + self.idle
        self._sessions.move_to_end(sid)
        return session

    def drop(self, sid: str) -> None:
        self._sessions.pop(sid, None)

    def drop_user(self, role: str, name: str, keep: str | None = None) -> None:
        """End a user's sessions (a password changed, an account deleted)."""
        for sid, s in list(self._sessions.items()):
            if s.role == role and s.name == name and sid != keep:
                del self._sessions[sid]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A login refused by the throttle: by ``scope`` (``source`` or ``account``) until
    ``until``; ``started``: this failure started the throttle."""

    scope: str
    until: float
    started: bool = False


class LoginThrottle:
    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def refused(self, source: str, account: str, now: float) -> Refusal | None:
        """Is a login from ``source`` to ``account`` refused now (before its password
        is looked at)?"""
        for scope, key in (("source", f"src:{source}"), ("account", f"acct:{account}")):
            times = self._recent(key, now)
            if len(times) >= self.limit:
                return Refusal(scope, times[0] + self.window)
        return None

    def failed(self, source: str, account: str, now: float) -> Refusal | None:
        """Count a failure; the refusal it starts, if it starts one."""
        started: Refusal | None = None
        for scope, key in (("source", f"src:{source}"), ("account", f"acct:{account}")):
            times = self._recent(key, now)
            if not times:
                times = self._failures[key] = deque(maxlen=self.limit)
            times.append(now)
            self._failures.move_to_end(key)
            if len(times) >= self.limit and started is None:
                started = Refusal(scope, times[0] + self.window, started=True)
        while len(self._failures) > MAX_TRACKED:
            self._failures.popitem(last=False)
        return started

    def succeeded(self, account: str) -> None:
        self._failures.pop(f"acct:{account}", None)
