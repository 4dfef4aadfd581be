"""The console in the web process: :func:`build` makes its app for :mod:`softswitch.web`.

Here, not in the daemon, live the console's accounts, sessions and pages, and the stores
it reads (call history, voicemail): SQLite files the daemon writes too (each write a short
transaction, so either side waits at most a moment for the other). Bodies are bounded per
route before any parsing: a login is a few hundred bytes, an API call at most the API's
JSON limit, an audio upload :data:`media.audio.MAX_AUDIO_FILE` and its form.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.types import Scope

from media.audio import MAX_AUDIO_FILE

from ...web.child import WebApp
from ...web.server import Limits
from ..cdr import CallHistory, CdrStore
from ..voicemail import Voicemail, VoicemailStore
from .accounts import Accounts
from .app import HEADERS, ConsoleApp
from .settings import ConsoleSettings

if TYPE_CHECKING:
    from ...web.child import WebServices

# the file and the form around it; a little more is still read, for the page that says so
UPLOAD = 2 * MAX_AUDIO_FILE
LIMITS = Limits(
    bodies=(
        ("/login", 4 * 1024),
        ("/admin/music", UPLOAD),
        ("/admin/ivr", UPLOAD),
        ("/portal/greeting", UPLOAD),
        ("/api/hold_music", UPLOAD),
        ("/api/", 256 * 1024),
    ),
)


class _Stores:
    """The call history and voicemail stores, opened once and handed to the features of
    every configuration the daemon sends (they are rebuilt; the files stay)."""

    def __init__(self, svc: WebServices) -> None:
        self.svc = svc
        self.cdr: CdrStore | None = None
        self.voicemail: VoicemailStore | None = None

    def attach(self) -> None:
        history: object = self.svc.registry.feature("cdr")
        if isinstance(history, CallHistory):
            if self.cdr is None:
                self.cdr = CdrStore(self.svc.data_dir)
            history.store = self.cdr
        voicemail: object = self.svc.registry.feature("voicemail")
        if isinstance(voicemail, Voicemail):
            if self.voicemail is None:
                self.voicemail = VoicemailStore(self.svc.data_dir)
            voicemail.store = self.voicemail

    def close(self) -> None:
        for store in (self.cdr, self.voicemail):
            if store is not None:
                store.close()


def build(svc: WebServices, settings: ConsoleSettings) -> WebApp:
    accounts = Accounts(svc.data_dir)
    app = ConsoleApp(svc, settings, accounts)
    stores = _Stores(svc)
    stores.attach()
    svc.on_config.append(stores.attach)
    headers = dict(HEADERS)
    if settings.certificate is not None:
        headers["Strict-Transport-Security"] = "max-age=31536000"

    def update(new: Any) -> None:
        assert isinstance(new, ConsoleSettings)
        app.settings = new

    def close() -> None:
        app.closing.set()  # the dashboards' live streams end
        accounts.close()
        stores.close()

    def may_send_large(scope: Scope) -> bool:
        """Uploads (larger than a form) only from a session or a token: a stranger's
        body is never held in memory past the default limit."""
        request = Request(scope)
        if app.session(request) is not None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and accounts.token(token.strip()) is not None

    return WebApp(
        app=Starlette(routes=app.routes()),
        headers=headers,
        limits=LIMITS,
        update=update,
        close=close,
        may_send_large=may_send_large,
    )
