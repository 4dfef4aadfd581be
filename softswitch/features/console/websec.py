"""Sessions, CSRF tokens and the login throttle of the web console (pure: time passed in).

A session is a random identifier in an HttpOnly, SameSite=Strict cookie (Secure over
HTTPS), kept in memory (a restart logs everyone out), ended after ``idle`` seconds without
a request. Each session has its own CSRF token, which every form carries in a hidden
field and every script request in the ``X-CSRF-Token`` header; a state-changing request
without the session's token is refused. The login throttle is
:class:`softswitch.web.throttle.LoginThrottle` (per source and account).
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

from ...web.throttle import LoginThrottle as LoginThrottle
from ...web.throttle import Refusal as Refusal

COOKIE = "softswitch_session"
MAX_SESSIONS = 1000  # beyond, the least recently used goes


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
