"""The user portal: a user's own forwarding, do-not-disturb, screening, voicemail greeting
(uploaded, or recorded in the browser), messages (listen, download, delete), call
history, portal password and API token; a queue agent's log in, log out, pause and
resume. Every route works on the session's own extension only: nothing here takes
another extension from the request."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from media.audio import load_audio
from sip.address import parse_listen

from ...config import User
from ..cdr import Filter
from ..voicemail import Voicemail
from . import forms, queues
from .accounts import PasswordError
from .admin import cdr
from .app import HEADERS
from .edits import EditError, FieldError
from .mailboxes import mailbox_store, message_file, notify
from .uploads import UploadError, read_form, save_audio

if TYPE_CHECKING:
    from .app import ConsoleApp
    from .websec import Session

GREETING_RATE = 16000


def own_patch(form: Any) -> dict[str, Any]:
    """The settings a user may change: forwarding, DND, screening."""
    try:
        return _own_patch(form)
    except EditError as exc:  # named as the model's errors are, to show by the field
        errors = [FieldError(forms.model_path(e.field), e.message) for e in exc.errors]
        raise EditError(errors) from None


def _own_patch(form: Any) -> dict[str, Any]:
    return {
        "dnd": forms.text(form, "dnd"),
        "screening": forms.text(form, "screening"),
        "forward": {
            "busy": forms.text(form, "forward_busy"),
            "no_answer": forms.text(form, "forward_no_answer"),
            "no_answer_after": forms.number(form, "forward_no_answer_after"),
            "unreachable": forms.text(form, "forward_unreachable"),
        },
    }


def own_values(me: User) -> forms.Values:
    """The portal's fields for ``me`` (the token's label: a suggestion)."""
    return {
        "dnd": me.dnd,
        "screening": me.screening,
        "forward_busy": me.forward.busy or "",
        "forward_no_answer": me.forward.no_answer or "",
        "forward_no_answer_after": str(me.forward.no_answer_after),
        "forward_unreachable": me.forward.unreachable or "",
        "label": "my script",
    }


# JsSIP bundled at set-up time (js/: npm ci && npm run build), served at /vendor
VENDOR = Path(__file__).resolve().parents[3] / "js" / "dist"


def websocket_url(listen: list[str], asked_host: str) -> str | None:
    """Where the browser phone connects: the first ws: or wss: listener (a wildcard
    address is the host the page was asked from)."""
    for scheme, host, port in map(parse_listen, listen):
        if scheme in ("ws", "wss"):
            if host in ("0.0.0.0", "::"):
                host = asked_host
            return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"
    return None


def routes(app: ConsoleApp) -> list[BaseRoute]:
    r = app.route

    def user(handler: Any) -> Any:
        async def checked(request: Request) -> Response:
            session = app.need(request, "user")
            if isinstance(session, Response):
                return session
            me = app.svc.user(session.name)
            if me is None:  # deleted meanwhile
                app.sessions.drop(session.id)
                return app.error(request, 403, "this account no longer exists")
            return await handler(request, session, me)  # type: ignore[no-any-return]

        return r(checked)

    def greeting_path(me: User) -> Any:
        feature = app.svc.registry.feature("voicemail")
        if not isinstance(feature, Voicemail):
            return None
        return feature.greetings_dir(me.extension) / "standard.wav"

    async def agent_state(me: User) -> tuple[dict[str, Any] | None, str]:
        """The user as a queue agent (from the wallboard's data), or why it is unknown."""
        if not queues.member_of(app.svc.config, me.extension):
            return None, ""
        try:
            data = await app.queues()
        except (RuntimeError, OSError, TimeoutError) as exc:
            return None, f"the PBX did not say ({exc or 'no answer'})"
        return queues.agent_view(data, me.extension), ""

    async def page(
        request: Request,
        session: Session,
        me: User,
        status: int = 200,
        errors: Any = (),
        values: forms.Values | None = None,
    ) -> Response:
        store = mailbox_store(app.svc)
        history = cdr(app)
        calls = (
            [c.row() for c in history.query(Filter(number=me.extension, limit=100))]
            if (history)
            else []
        )
        greeting = greeting_path(me)
        agent, agent_problem = await agent_state(me)
        return app.render(
            request,
            "portal.html",
            session,
            status,
            me=me,
            values={**own_values(me), **(values or {})},
            messages=store.messages(me.extension) if store else [],
            names={u.extension: u.name for u in app.svc.config.users},
            calls=calls,
            errors=errors,
            has_greeting=bool(greeting and greeting.exists()),
            tokens=app.accounts.tokens(me.extension),
            my_queues=queues.member_of(app.svc.config, me.extension),
            agent=agent,
            agent_problem=agent_problem,
            states=queues.STATES,
        )

    async def home(request: Request, session: Session, me: User) -> Response:
        return await page(request, session, me)

    async def phone(request: Request, session: Session, me: User) -> Response:
        """The phone in the browser: JsSIP over the PBX's WebSocket listener."""
        ws_url = websocket_url(app.svc.config.server.listen, request.url.hostname or "")
        response = app.render(
            request,
            "phone.html",
            session,
            me=me,
            ws_url=ws_url,
            bundle=(VENDOR / "jssip.js").exists(),
        )
        if ws_url:  # the page may open that WebSocket (another port: not 'self')
            csp = HEADERS["Content-Security-Policy"].replace(
                "connect-src 'self'", f"connect-src 'self' {ws_url}"
            )
            response.headers["Content-Security-Policy"] = csp
        return response

    async def settings(request: Request, session: Session, me: User) -> Response:
        form = await app.form(request, session)
        if isinstance(form, Response):
            return form
        try:
            await app.editor.replace("users", me.extension, own_patch(form), patch=True)
        except EditError as exc:
            return await page(request, session, me, 422, exc.errors, forms.posted(form))
        return app.back("/portal", session, "your settings are saved and in use")

    async def greeting(request: Request, session: Session, me: User) -> Response:
        try:
            form = await read_form(request)
        except UploadError as exc:
            return await page(request, session, me, exc.status, [FieldError("greeting", str(exc))])
        checked = app.checked(request, session, form)
        if isinstance(checked, Response):
            return checked
        feature = app.svc.registry.feature("voicemail")
        upload = form.get("file")
        if not isinstance(feature, Voicemail) or upload is None or isinstance(upload, str):
            return await page(request, session, me, 400, [FieldError("greeting", "no file")])
        folder = app.svc.data_dir / "audio" / "uploads"
        try:
            path = await save_audio(upload, upload.filename or "greeting.wav", folder)
        except UploadError as exc:
            return await page(request, session, me, exc.status, [FieldError("greeting", str(exc))])
        samples = await asyncio.to_thread(load_audio, path, GREETING_RATE)
        feature.save_greeting(me.extension, "standard", samples, GREETING_RATE)
        path.unlink(missing_ok=True)
        return app.back("/portal", session, "your greeting is saved: callers hear it now")

    async def greeting_delete(request: Request, session: Session, me: User) -> Response:
        form = await app.form(request, session)
        if isinstance(form, Response):
            return form
        path = greeting_path(me)
        if path is not None:
            path.unlink(missing_ok=True)
        return app.back("/portal", session, "greeting removed: callers hear the standard one")

    async def greeting_file(request: Request, session: Session, me: User) -> Response:
        path = greeting_path(me)
        if path is None or not path.exists():
            return app.error(request, 404, "no recorded greeting")
        return FileResponse(path, media_type="audio/wav")

    async def message(request: Request, session: Session, me: User) -> Response:
        found = message_file(app.svc, me.extension, request.path_params["id"])
        if found is None:
            return app.error(request, 404, "no such message")
        download = request.query_params.get("download") is not None
        return FileResponse(
            found.path,
            media_type="audio/wav",
            filename=f"voicemail-{found.id}.wav" if download else None,
        )

    async def message_delete(request: Request, session: Session, me: User) -> Response:
        form = await app.form(request, session)
        if isinstance(form, Response):
            return form
        found = message_file(app.svc, me.extension, request.path_params["id"])
        store = mailbox_store(app.svc)
        if found is None or store is None:
            return app.error(request, 404, "no such message")
        store.delete(found.id)
        notify(app.svc, me.extension)
        return app.back("/portal", session, "message deleted")

    async def password(request: Request, session: Session, me: User) -> Response:
        form = await app.form(request, session)
        if isinstance(form, Response):
            return form
        current = str(form.get("current") or "")
        if not await app.accounts.check_portal(me.extension, current, me.password):
            errors = [FieldError("current", "not your password")]
            return await page(request, session, me, 422, errors)
        new = str(form.get("new") or "")
        if new != str(form.get("again") or ""):
            return await page(request, session, me, 422, [FieldError("again", "the two differ")])
        try:
            app.accounts.set_portal(me.extension, new)
        except PasswordError as exc:
            return await page(request, session, me, 422, [FieldError("new", str(exc))])
        # whoever knew the old password is out: other sessions, and the API tokens it
        # could have made (this session stays; a new token is one click away)
        app.sessions.drop_user("user", me.extension, keep=session.id)
        revoked = app.accounts.revoke_user_tokens(me.extension)
        done = "portal password changed" + (f"; {revoked} API token(s) revoked" if revoked else "")
        return app.back("/portal", session, done)

    async def token(request: Request, session: Session, me: User) -> Response:
        form = await app.form(request, session)
        if isinstance(form, Response):
            return form
        try:
            try:
                label = forms.text(form, "label") or "me"
                value = app.accounts.new_token("user", me.extension, label)
            except PasswordError as exc:
                raise EditError([FieldError("label", str(exc))]) from None
        except EditError as exc:
            return await page(request, session, me, 422, exc.errors, forms.posted(form))
        return app.back("/portal", session, f"your API token (shown once): {value}")

    async def queue_agent(request: Request, session: Session, me: User) -> Response:
        """Log in to / out of the user's queues, pause or resume."""
        form = await app.form(request, session)
        if isinstance(form, Response):
            return form
        try:
            answer = await queues.agent_action(app, me.extension, form.get("action"))
        except EditError as exc:
            return app.back("/portal", session, f"queues: {exc.errors[0].message}", "warn")
        return app.back("/portal", session, queues.done(answer))

    async def token_revoke(request: Request, session: Session, me: User) -> Response:
        form = await app.form(request, session)
        if isinstance(form, Response):
            return form
        app.accounts.revoke(request.path_params["digest"], me.extension)
        return app.back("/portal", session, "token revoked")

    get, post = ["GET"], ["POST"]
    return [
        Route("/portal", user(home), methods=get),
        Route("/portal/phone", user(phone), methods=get),
        Route("/portal/settings", user(settings), methods=post),
        Route("/portal/greeting", user(greeting), methods=post),
        Route("/portal/greeting.wav", user(greeting_file), methods=get),
        Route("/portal/greeting/delete", user(greeting_delete), methods=post),
        Route("/portal/voicemail/{id}.wav", user(message), methods=get),
        Route("/portal/voicemail/{id}/delete", user(message_delete), methods=post),
        Route("/portal/password", user(password), methods=post),
        Route("/portal/token", user(token), methods=post),
        Route("/portal/queues", user(queue_agent), methods=post),
        Route("/portal/token/{digest}/revoke", user(token_revoke), methods=post),
    ]


__all__ = ["EditError", "routes"]
