"""The console's web application: login, sessions, CSRF, rendering, the live feed.

Every route goes through :meth:`ConsoleApp.route`, which adds the security headers
(a strict Content-Security-Policy: scripts, styles and media from the daemon only) and
turns an :class:`~.edits.EditError` or :class:`~.uploads.UploadError` into a page or a
JSON error. Roles are checked by each handler first thing (:meth:`ConsoleApp.need`):
``admin`` pages refuse users, and a user's pages and API calls only ever reach the
user's own extension.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .accounts import Accounts
from .edits import EditError, Editor
from .settings import ConsoleSettings
from .uploads import UploadError
from .websec import COOKIE, LoginThrottle, Session, Sessions

if TYPE_CHECKING:
    from ...web.child import WebServices

log = logging.getLogger("softswitch")
HERE = Path(__file__).parent
LIVE_INTERVAL = 1.0  # seconds between two dashboard updates
MAX_LIVE_STREAMS = 16
MAX_LOGIN_FIELD = 128
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; "
        "form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
Handler = Callable[[Request], Awaitable[Response]]


class ConsoleApp:
    def __init__(self, svc: WebServices, settings: ConsoleSettings, accounts: Accounts) -> None:
        self.svc = svc
        self.settings = settings
        self.accounts = accounts
        self.editor = Editor(svc)
        self.sessions = Sessions(settings.session_minutes * 60)
        self.throttle = LoginThrottle(settings.login_attempts, settings.login_window)
        self.https = settings.certificate is not None
        self.closing = asyncio.Event()
        self.streams = 0
        # per daemon handler: when it was asked, what came; the question in flight
        self._answers: dict[str, tuple[float, dict[str, Any]]] = {}
        self._asking: dict[str, asyncio.Future[Any]] = {}
        self._queues_problem: str | None = None  # the wallboard's, logged once
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
        )
        self.templates.filters["tojson_attr"] = lambda v: json.dumps(v)

    # -- routes ---------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        from . import admin, api, portal

        mine: list[BaseRoute] = [
            Route("/", self.route(self.home)),
            Route("/login", self.route(self.login_page)),
            Route("/login", self.route(self.login), methods=["POST"]),
            Route("/logout", self.route(self.logout), methods=["POST"]),
            Route("/live", self.route(self.live)),
            Route("/live/queues", self.route(self.live_queues)),
            Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
            # the browser phone's SIP library, when built (softswitch.features.console.portal)
            Mount("/vendor", app=StaticFiles(directory=portal.VENDOR, check_dir=False)),
        ]
        return mine + admin.routes(self) + portal.routes(self) + api.routes(self)

    def route(self, handler: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            try:
                response = await handler(request)
            except EditError as exc:
                response = self.error(request, exc.status, str(exc), exc.errors)
            except UploadError as exc:
                response = self.error(request, exc.status, str(exc))
            for name, value in HEADERS.items():
                response.headers.setdefault(name, value)
            if self.https:
                response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
            return response

        return wrapped

    def error(
        self, request: Request, status: int, message: str, errors: Sequence[Any] = ()
    ) -> Response:
        if request.url.path.startswith("/api/"):
            fields = [e.json() for e in errors] or [{"field": "", "message": message}]
            return JSONResponse({"error": message, "detail": fields}, status_code=status)
        session = self.session(request)
        return self.render(
            request, "error.html", session, status=status, message=message, errors=errors
        )

    # -- sessions -------------------------------------------------------------------------

    def now(self) -> float:
        return self.svc.now()

    def session(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE), self.now())

    def need(self, request: Request, role: str) -> Session | Response:
        """The session if it has ``role`` (``admin``, ``user``, or ``any``); else the
        login page (or 401/403 for scripts)."""
        session = self.session(request)
        if session is None:
            if request.url.path.startswith(("/api/", "/live")):
                return JSONResponse({"error": "login needed"}, status_code=401)
            return RedirectResponse("/login", status_code=303)
        if role != "any" and session.role != role:
            return self.error(request, 403, "this page is not for your account")
        return session

    async def form(self, request: Request, session: Session) -> FormData | Response:
        """A posted form whose CSRF token is this session's; else 403 (and logged)."""
        try:
            form = await request.form(max_files=0, max_fields=200, max_part_size=64 * 1024)
        except Exception as exc:
            raise UploadError(f"the form could not be read ({exc})") from None
        return self.checked(request, session, form)

    def checked(self, request: Request, session: Session, form: FormData) -> FormData | Response:
        token = form.get("csrf")
        if not session.csrf_ok(token if isinstance(token, str) else None):
            log.warning(
                "event=console_csrf_refused src=%s path=%s", self.source(request)[0], request.url
            )
            return self.error(request, 403, "this form has expired or did not come from here")
        return form

    def source(self, request: Request) -> tuple[str, int]:
        client = request.client
        return (client.host, client.port) if client else ("?", 0)

    def set_cookie(self, response: Response, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            session.id,
            max_age=int(self.sessions.idle),
            path="/",
            httponly=True,
            samesite="strict",
            secure=self.https,
        )

    # -- pages ----------------------------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        session: Session | None,
        status: int = 200,
        **ctx: Any,
    ) -> HTMLResponse:
        flash = []
        if session is not None:
            flash, session.flash = session.flash, []
        html = self.templates.get_template(template).render(
            session=session,
            csrf=session.csrf if session else "",
            flash=flash,
            path=request.url.path,
            writable=self.editor.writable,
            domain=self.svc.domain,
            **ctx,
        )
        return HTMLResponse(html, status_code=status)

    def back(self, url: str, session: Session, message: str, kind: str = "ok") -> Response:
        session.flash.append((kind, message))
        return RedirectResponse(url, status_code=303)

    async def home(self, request: Request) -> Response:
        session = self.session(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        return RedirectResponse("/admin" if session.role == "admin" else "/portal", 303)

    async def login_page(self, request: Request) -> Response:
        return self.render(request, "login.html", None, message="", name="")

    async def login(self, request: Request) -> Response:
        try:
            form = await request.form(max_files=0, max_fields=8, max_part_size=1024)
        except Exception:
            return self.render(request, "login.html", None, 400, message="bad form", name="")
        name = str(form.get("name") or "").strip()[:MAX_LOGIN_FIELD]
        password = str(form.get("password") or "")[:MAX_LOGIN_FIELD]
        source = self.source(request)
        now = self.now()
        security = self.svc.security
        refusal = self.throttle.refused(source[0], name, now)
        if refusal is not None:
            wait = max(1, int(refusal.until - now))
            message = f"too many failed logins: try again in {wait} s"
            return self.render(request, "login.html", None, 429, message=message, name=name)
        user = self.svc.user(name)
        if user is not None:
            ok = await self.accounts.check_portal(user.extension, password, user.password)
            role = "user"
        else:
            ok = await self.accounts.check_admin(name, password)
            role = "admin"
        if not ok:
            security.event(
                "auth_failed", source, now, user=name or None, method="POST", reason="console"
            )
            started = self.throttle.failed(source[0], name, now)
            if started is not None:
                security.event(
                    "auth_throttled",
                    source,
                    now,
                    user=name if started.scope == "account" else None,
                    method="POST",
                    reason="console",
                )
            return self.render(
                request, "login.html", None, 401, message="wrong name or password", name=name
            )
        self.throttle.succeeded(name, source[0])  # the guesses of others still count
        session = self.sessions.new(role, name, now)
        log.info("event=console_login role=%s name=%s src=%s", role, name, source[0])
        response = RedirectResponse("/admin" if role == "admin" else "/portal", 303)
        self.set_cookie(response, session)
        return response

    async def logout(self, request: Request) -> Response:
        session = self.need(request, "any")
        if isinstance(session, Response):
            return session
        form = await self.form(request, session)
        if isinstance(form, Response):
            return form
        self.sessions.drop(session.id)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- the live feed (server-sent events) --------------------------------------------------

    async def ask(self, name: str) -> dict[str, Any]:
        """The daemon's answer to ``name`` (``console.snapshot``, ``queues.snapshot``):
        pages and live streams open together share one answer a second."""
        now = self.now()
        cached = self._answers.get(name)
        if cached is None or now - cached[0] >= LIVE_INTERVAL / 2:
            asking = self._asking.get(name)
            if asking is None or asking.done():  # one question at a time
                asking = self._asking[name] = asyncio.ensure_future(self.svc.call(name))
            data = await asyncio.shield(asking)
            assert isinstance(data, dict)
            cached = self._answers[name] = (now, data)
        return cached[1]

    def forget(self, name: str) -> None:
        """The next ``ask(name)`` asks the daemon again (something just changed)."""
        self._answers.pop(name, None)
        self._asking.pop(name, None)

    async def snapshot(self) -> dict[str, Any]:
        """The PBX now (the dashboard)."""
        return await self.ask("console.snapshot")

    async def queues(self) -> dict[str, Any]:
        """The call queues now (the wallboard): ``{"queues": [...]}`` (without a queue
        configured the daemon is not asked); an error of the daemon raises RuntimeError,
        OSError or TimeoutError."""
        if not self.svc.config.section("queues"):
            return {"queues": []}
        return await self.ask("queues.snapshot")

    async def queues_or_error(self) -> dict[str, Any]:
        """The wallboard's data with the time, or ``{"error": ...}`` for the page to say."""
        try:
            data = {"time": time.time(), **await self.queues()}
        except (RuntimeError, OSError, TimeoutError) as exc:
            problem = str(exc) or type(exc).__name__
            if problem != self._queues_problem:  # once, not every second of every wallboard
                log.warning("event=console_queues_failed error=%r", problem)
                self._queues_problem = problem
            error = f"no answer from the PBX ({problem})"
            return {"time": time.time(), "queues": [], "error": error}
        self._queues_problem = None
        return data

    async def live(self, request: Request) -> Response:
        """The dashboard's feed."""
        return self._stream(request, self.snapshot, '"registrations"')

    async def live_queues(self, request: Request) -> Response:
        """The wallboard's feed."""
        return self._stream(request, self.queues_or_error, '"queues"')

    def _stream(
        self, request: Request, fetch: Callable[[], Awaitable[dict[str, Any]]], after: str
    ) -> Response:
        session = self.need(request, "admin")
        if isinstance(session, Response):
            return session
        if self.streams >= MAX_LIVE_STREAMS:
            return JSONResponse({"error": "too many dashboards open"}, status_code=503)
        return StreamingResponse(
            self._events(request, fetch, after),
            media_type="text/event-stream",
            headers={"X-Accel-Buffering": "no"},
        )

    async def _events(
        self, request: Request, fetch: Callable[[], Awaitable[dict[str, Any]]], after: str
    ) -> AsyncIterator[bytes]:
        """``fetch``'s data once a second when it changed (what follows the key ``after``,
        which comes after the time), and every 15 s regardless."""
        self.streams += 1
        try:
            last = ""
            idle = 0
            while not self.closing.is_set():
                if await request.is_disconnected():
                    return
                data = json.dumps(await fetch())
                body = data.partition(after)[2]  # without the time
                if body != last or idle >= 15:
                    last, idle = body, 0
                    yield f"data: {data}\n\n".encode()
                else:
                    idle += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.closing.wait(), LIVE_INTERVAL)
        finally:
            self.streams -= 1


def new_password() -> str:
    """A password to show once (about 72 bits, easy to type)."""
    return secrets.token_urlsafe(9)
