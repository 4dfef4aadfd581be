"""The administrator's pages: dashboard, users, ring groups, call queues and their
wallboard, receptionists, hours, hold music, voicemail, trunks, call history, API tokens,
the administrator's own password."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ...config import BusinessHours, Trunk, User, Voicemail
from ..cdr import DISPOSITIONS, CallHistory, Filter, to_csv
from ..queues.settings import QueueSettings
from ..receptionist import Receptionist
from ..ring_groups import RingGroup
from . import forms, queues
from .accounts import PasswordError
from .edits import EditError, FieldError
from .mailboxes import mailbox_store, message_file
from .uploads import UploadError, read_form, save_audio

if TYPE_CHECKING:
    from .app import ConsoleApp
    from .websec import Session


def drop_none(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: drop_none(v) for k, v in data.items() if v is not None}
    return data


MAX_TTS = 2000  # characters: a receptionist's greeting at most
FAVICON = Path(__file__).parent / "static" / "favicon.svg"
log = logging.getLogger("softswitch")


def registered(users: Sequence[User], registrations: Any) -> dict[str, int] | None:
    """Phones registered now per extension, from the daemon's snapshot: a login is the
    user's extension or one of its devices' (a hot-desk login, known by the user's name
    the snapshot gives). None: the daemon did not say."""
    if registrations is None:
        return None
    owner: dict[str, str] = {}
    for user in users:
        owner[user.extension] = user.extension
        owner.update({d.username: user.extension for d in user.devices if d.username})
    by_name = {u.name: u.extension for u in users}
    counts = dict.fromkeys(owner.values(), 0)
    for r in registrations:
        ext = owner.get(str(r.get("login"))) or by_name.get(str(r.get("name")))
        if ext is not None:
            counts[ext] += 1
    return counts


def evict(app: ConsoleApp, extension: str) -> None:
    """Whoever reached the user ``extension`` through the console is out: its API tokens,
    portal password and sessions go. A changed or reset phone password must evict
    whoever knew the old one, not only change what the phones send."""
    app.accounts.forget_user(extension)
    app.sessions.drop_user("user", extension)


async def reset_user(app: ConsoleApp, extension: str) -> tuple[str, str]:
    """A new phone password and PIN for ``extension`` (to show once); the user evicted."""
    password = secrets.token_urlsafe(9)
    pin = f"{secrets.randbelow(10**6):06d}"
    await app.editor.replace("users", extension, {"password": password, "pin": pin}, patch=True)
    evict(app, extension)
    return password, pin


def cdr(app: ConsoleApp) -> CallHistory | None:
    feature = app.svc.registry.feature("cdr")
    return feature if isinstance(feature, CallHistory) else None


def day(value: str | None, *, end: bool = False) -> float | None:
    """``2026-06-01`` (UTC) as a time; ``end``: the day after it."""
    if not value:
        return None
    try:
        when = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        field = "until" if end else "since"
        raise EditError([FieldError(field, "expected YYYY-MM-DD")]) from None
    return when.timestamp() + (86400 if end else 0)


def call_filter(params: Any, extension: str | None = None) -> Filter:
    disposition = params.get("disposition") or None
    if disposition is not None and disposition not in DISPOSITIONS:
        raise EditError([FieldError("disposition", f"one of {', '.join(DISPOSITIONS)}")])
    try:
        limit = int(params.get("limit") or 500)
    except ValueError:
        raise EditError([FieldError("limit", "expected a number")]) from None
    return Filter(
        since=day(params.get("since")),
        until=day(params.get("until"), end=True),
        number=extension or (params.get("number") or "").strip()[:32] or None,
        disposition=disposition,
        limit=limit,
    )


def routes(app: ConsoleApp) -> list[BaseRoute]:
    r = app.route

    def admin(handler: Any) -> Any:
        async def checked(request: Request) -> Response:
            session = app.need(request, "admin")
            if isinstance(session, Response):
                return session
            return await handler(request, session)  # type: ignore[no-any-return]

        return r(checked)

    async def posted(request: Request, session: Session) -> Any:
        return await app.form(request, session)

    # -- dashboard ------------------------------------------------------------------------

    async def dashboard(request: Request, session: Session) -> Response:
        return app.render(request, "dashboard.html", session, live=await app.snapshot())

    # -- users ----------------------------------------------------------------------------

    def user_page(
        request: Request,
        session: Session,
        user: User | None,
        status: int = 200,
        errors: Any = (),
        values: forms.Values | None = None,
    ) -> Response:
        shown = values if values is not None else forms.user_values(user)
        return app.render(
            request,
            "user_edit.html",
            session,
            status,
            user=user,
            values=shown,
            devices=range(int(shown.get("device_rows") or 0)),
            rules=range(int(shown.get("rule_rows") or 0)),
            secrets={k for k, v in forms.user_secrets(user).items() if v} if user else set(),
            errors=errors,
            slots=["default", *app.svc.config.hold_music],
        )

    async def users(request: Request, session: Session) -> Response:
        try:
            registrations = (await app.snapshot()).get("registrations", [])
        except Exception as exc:  # the page without the counts rather than no page
            log.warning("event=console_snapshot_failed error=%r", exc)
            registrations = None
        return app.render(
            request,
            "users.html",
            session,
            users=app.svc.config.users,
            phones=registered(app.svc.config.users, registrations),
        )

    async def user_new(request: Request, session: Session) -> Response:
        return user_page(request, session, None)

    async def user_create(request: Request, session: Session) -> Response:
        form = await posted(request, session)
        if isinstance(form, Response):
            return form
        try:
            user = await app.editor.create("users", drop_none(forms.user_patch(form)))
        except EditError as exc:
            return user_page(request, session, None, 422, exc.errors, forms.posted(form))
        assert isinstance(user, User)
        return app.back(f"/admin/users/{user.extension}", session, f"user {user.extension} added")

    async def user_show(request: Request, session: Session) -> Response:
        user = app.editor.item("users", request.path_params["ext"])
        assert isinstance(user, User)
        return user_page(request, session, user)

    async def user_update(request: Request, session: Session) -> Response:
        ext = request.path_params["ext"]
        form = await posted(request, session)
        if isinstance(form, Response):
            return form
        user = app.editor.item("users", ext)
        assert isinstance(user, User)
        try:
            patch = forms.keep_secrets(forms.user_patch(form), user)
            saved = await app.editor.replace("users", ext, patch, patch=True)
        except EditError as exc:
            return user_page(request, session, user, 422, exc.errors, forms.posted(form))
        assert isinstance(saved, User)
        message = "saved and applied"
        if saved.password != user.password:  # whoever knew the old one is out
            evict(app, ext)
            message += "; the new phone password ended the user's sessions and API tokens"
        return app.back(f"/admin/users/{ext}", session, message)

    async def user_secrets(request: Request, session: Session) -> Response:
        """The phone password, PIN and device passwords, for the page's Show button: a
        POST with the CSRF token, so that no secret is in the page itself (its HTML, a
        cache, a screenshot) until asked for."""
        form = await posted(request, session)
        if isinstance(form, Response):
            return form
        user = app.editor.item("users", request.path_params["ext"])
        assert isinstance(user, User)
        return JSONResponse(forms.user_secrets(user))

    async def user_delete(request: Request, session: Session) -> Response:
        ext = request.path_params["ext"]
        form = await posted(request, session)
        if isinstance(form, Response):
            return form
        await app.editor.delete("users", ext)
        evict(app, ext)
        return app.back("/admin/users", session, f"user {ext} deleted")

    async def user_reset(request: Request, session: Session) -> Response:
        """A new phone password and PIN (shown once); the user's sessions, API tokens and
        portal password go (the user logs in with the new phone password)."""
        ext = request.path_params["ext"]
        form = await posted(request, session)
        if isinstance(form, Response):
            return form
        password, pin = await reset_user(app, ext)
        message = f"user {ext}: new phone password {password}, new PIN {pin} (shown once)"
        return app.back(f"/admin/users/{ext}", session, message)

    # -- ring groups ------------------------------------------------------------------------

    def group_page(
        request: Request,
        session: Session,
        group: RingGroup | None,
        status: int = 200,
        errors: Any = (),
        values: forms.Values | None = None,
    ) -> Response:
        return app.render(
            request,
            "group_edit.html",
            session,
            status,
            group=group,
            values=values if values is not None else forms.group_values(group),
            errors=errors,
        )

    async def groups(request: Request, session: Session) -> Response:
        return app.render(request, "groups.html", session, groups=app.editor.items("ring_groups"))

    async def group_new(request: Request, session: Session) -> Response:
        return group_page(request, session, None)

    async def group_save(request: Request, session: Session) -> Response:
        ext = request.path_params.get("ext")
        form = await posted(request, session)
        if isinstance(form, Response):
            return form
        old = app.editor.item("ring_groups", ext) if ext else None
        try:
            data = forms.group_data(form)
            if ext is None:
                group = await app.editor.create("ring_groups", drop_none(data))
            else:
                group = await app.editor.replace("ring_groups", ext, data, patch=True)
        except EditError as exc:
            assert old is None or isinstance(old, RingGroup)
            return group_page(request, session, old, 422, exc.errors, forms.posted(form))
        assert isinstance(group, RingGroup)
        return app.back(f"/admin/groups/{group.extension}", session, "saved and applied")

    async def group_show(request: Request, session: Session) -> Response:
        group = app.editor.item("ring_groups", request.path_params["ext"])
        assert isinstance(group, RingGroup)
        return group_page(request, session, group)

    async def group_delete(request: Request, session: Session) -> Response:
        form = await posted(request, session)
        if isinstance(form, Response):
            return form
        await app.editor.delete("ring_groups", request.path_params["ext"])
        return app.back("/admin/groups", session, "ring group deleted")

    # -- call queues ------------------------------------------------------------------------

    def queue_page(
        request: Request,
        session: Session,
        queue: QueueSettings | None,
        status: int = 200,
        errors: Any = (),
        values: forms.Values | None = None,
    ) -> Response:
        return app.render(
            request,
            "queue_edit.html",
            session,
            status,
            queue=queue,
            values=values if values is not None else forms.queue_values(queue),
            errors=errors,
            slots=["default", *app.svc.config.hold_music],
        )

    async def queue_list(request: Request, session: Session) -> Response:
        names = {u.extension: u.name for u in app.svc.config.users}
        return app.render(
            request, "queues.html", session, queues=app.editor.items("queues"), names=names
        )

    async def queue_new(request: Request, session: Session) -> Response:
        return queue_page(request, session, None)

    async def queue_save(request: Request, session: Session) -> Response:
        ext = request.path_params.get("ext")
        form = await posted(request, session)
        if isinstance(form, Response):
            return form
        old = app.editor.item("queues", ext) if ext else None
        assert old is None or isinstance(old, QueueSettings)
        try:
            data = forms.queue_data(form)
            if ext is None:
                queue = await app.editor.create("queues", drop_none(data))
            else:
                queue = await app.editor.replace("queues", ext, data, patch=True)
        except EditError as exc:
            return queue_page(request, session, old, 422, exc.errors, forms.posted(form))
        assert isinstance(queue, QueueSettings)
        return app.back(f"/admin/queues/{queue.extension}", session, "saved and applied")

    async def queue_show(request: Request, session: Session) -> Response:
        queue = app.editor.item("queues", request.path_params["ext"])
        assert isinstance(queue, QueueSettings)
        return queue_page(request, session, queue)

    async def queue_delete(request: Request, session: Session) -> Response:
        form = await posted(request, session)
        if isinstance(form, Response):
            return form
        await app.editor.delete("queues", request.path_params["ext"])
        return app.back("/admin/queues", session, "queue deleted")

    async def wallboard(request: Request, session: Session) -> Response:
        """Every queue (or the one of the path) live: callers waiting, agents, today's
        figures; its script follows ``/live/queues`` and acts on agents through the API."""
        only = request.path_params.get("ext")
        if only is not None:
            app.editor.item("queues", only)  # 404 if there is none
        return app.render(
            request,
            "wallboard.html",
            session,
            board=await app.queues_or_error(),
            only=only,
            words={
                "states": queues.STATES,
                "outcomes": queues.OUTCOMES,
                "strategies": dict(forms.CHOICES["strategy"]),
            },
        )

    # -- receptionists ----------------------------------------------------------------------

    def ivr_page(
        request: Request,
        session: Session,
        menu: Receptionist | None,
        status: int = 200,
        errors: Any = (),
        values: forms.Values | None = None,
    ) -> Response:
        return app.render(
            request,
            "ivr_edit.html",
            session,
            status,
            menu=menu,
            values=values if values is not None else forms.ivr_values(menu),
            keys=forms.KEYS,
            errors=errors,
        )

    async def ivrs(request: Request, session: Session) -> Response:
        return app.render(request, "ivrs.html", session, menus=app.editor.items("ivr"))

    async def ivr_new(request: Request, session: Session) -> Response:
        return ivr_page(request, session, None)

    async def ivr_show(request: Request, session: Session) -> Response:
        menu = app.editor.item("ivr", request.path_params["ext"])
        assert isinstance(menu, Receptionist)
        return ivr_page(request, session, menu)

    async def ivr_save(request: Request, session: Session) -> Response:
        ext = request.path_params.get("ext")
        form = await read_form(request)  # a greeting file may come with it
        checked = app.checked(request, session, form)
        if isinstance(checked, Response):
            return checked
        old = app.editor.item("ivr", ext) if ext else None
        assert old is None or isinstance(old, Receptionist)
        upload = form.get("greeting_file")
        try:
            data = forms.ivr_patch(form)
            if upload is not None and not isinstance(upload, str) and upload.filename:
                folder = app.svc.data_dir / "audio" / "greetings"
                path = await save_audio(upload, upload.filename, folder)
                data["greeting"] = str(path)
            if ext is None:
                menu = await app.editor.create("ivr", drop_none(data))
            else:
                menu = await app.editor.replace(
                    "ivr", ext, forms.ivr_keys_patch(old, data), patch=True
                )
        except UploadError as exc:
            errors = [FieldError("greeting_file", str(exc))]
            return ivr_page(request, session, old, exc.status, errors, forms.posted(form))
        except EditError as exc:
            return ivr_page(request, session, old, 422, exc.errors, forms.posted(form))
        assert isinstance(menu, Receptionist)
        return app.back(f"/admin/ivr/{menu.extension}", session, "saved and applied")

    async def ivr_delete(request: Request, session: Session) -> Response:
        form = await posted(request, session)
        if isinstance(form, Response):
            return form
        await app.editor.delete("ivr", request.path_params["ext"])
        return app.back("/admin/ivr", session, "receptionist deleted")

    async def tts(request: Request, session: Session) -> Response:
        """The greeting's text as callers will hear it spoken. Text only: a value that
        looks like a file name is spoken too, never opened (a path here read any audio
        file the daemon could)."""
        value = (request.query_params.get("text") or "").strip()
        if not value or len(value) > MAX_TTS:
            raise EditError([FieldError("greeting", f"1 to {MAX_TTS} characters")])
        forms.refuse_controls("greeting", value, lines=True)
        text = forms.one_line(value) or value  # as the form saves it
        try:
            path = await asyncio.to_thread(app.svc.prompts.speech.render, text)
        except Exception as exc:  # espeak-ng missing or failing
            raise EditError([FieldError("greeting", f"cannot speak it: {exc}")], 500) from None
        return FileResponse(path, media_type="audio/wav")

    # -- business hours -------------------------------------------------------------------

    async def hours(request: Request, session: Session) -> Response:
        return app.render(
            request,
            "hours.html",
            session,
            values=forms.hours_form(app.svc.config.business_hours),
            days=forms.DAYS,
            errors=(),
            now_open=app.svc.office_open(),
        )

    async def hours_save(request: Request, session: Session) -> Response:
        form = await posted(request, session)
        if isinstance(form, Response):
            return form
        try:
            if forms.checked(form, "always_open"):
                await app.editor.set_singleton("business_hours", None)
            else:
                await app.editor.set_singleton("business_hours", forms.hours_data(form))
        except EditError as exc:
            values = forms.posted(form)
            return app.render(
                request,
                "hours.html",
                session,
                422,
                values=values,
                days=forms.DAYS,
                errors=exc.errors,
                now_open=app.svc.office_open(),
            )
        return app.back("/admin/hours", session, "business hours saved and applied")

    # -- hold music -------------------------------------------------------------------------

    async def music(request: Request, session: Session) -> Response:
        slots = {"default": None, **app.svc.config.hold_music}
        return app.render(request, "music.html", session, slots=slots, slot="default", errors=())

    async def music_upload(request: Request, session: Session) -> Response:
        try:
            form = await read_form(request)
        except UploadError as exc:
            return music_error(request, session, exc.status, str(exc))
        checked = app.checked(request, session, form)
        if isinstance(checked, Response):
            return checked
        slot = forms.text(form, "slot") or "default"
        upload = form.get("file")
        if upload is None or isinstance(upload, str) or not upload.filename:
            return music_error(request, session, 400, "choose a file to upload", slot)
        try:
            path = await save_audio(upload, upload.filename, app.svc.data_dir / "audio" / "music")
            await app.editor.set_music(slot, str(path))
        except UploadError as exc:
            return music_error(request, session, exc.status, str(exc), slot)
        except EditError as exc:
            return music_error(request, session, 422, exc.errors[0].message, slot, exc.errors)
        return app.back(
            "/admin/music", session, f"hold music '{slot}': {upload.filename} plays now"
        )

    def music_error(
        request: Request,
        session: Session,
        status: int,
        message: str,
        slot: str = "default",
        errors: Any = None,
    ) -> Response:
        slots = {"default": None, **app.svc.config.hold_music}
        return app.render(
            request,
            "music.html",
            session,
            status,
            slots=slots,
            slot=forms.shown(slot),
            errors=errors or [FieldError("file", message)],
        )

    async def music_delete(request: Request, session: Session) -> Response:
        form = await posted(request, session)
        if isinstance(form, Response):
            return form
        await app.editor.set_music(request.path_params["slot"], None)
        return app.back("/admin/music", session, "slot removed")

    async def music_file(request: Request, session: Session) -> Response:
        slot = request.path_params["slot"]
        path = app.svc.config.hold_music.get(slot)
        if path is None or not app.svc.config.path(path).is_file():
            return app.error(request, 404, "no file in this slot (the built-in music plays)")
        return FileResponse(app.svc.config.path(path))

    # -- voicemail --------------------------------------------------------------------------

    async def voicemail(request: Request, session: Session) -> Response:
        return voicemail_page(request, session)

    def voicemail_page(
        request: Request,
        session: Session,
        status: int = 200,
        errors: Any = (),
        values: forms.Values | None = None,
    ) -> Response:
        settings = app.svc.config.voicemail
        store = mailbox_store(app.svc)
        boxes = [
            (u, store.messages(u.extension) if store else [])
            for u in app.svc.config.users
            if u.voicemail
        ]
        return app.render(
            request,
            "voicemail.html",
            session,
            status,
            boxes=boxes,
            names={u.extension: u.name for u in app.svc.config.users},
            values=values
            or {
                "max_message_seconds": str(settings.max_message_seconds),
                "max_messages": str(settings.max_messages),
                "unsolicited_mwi": "on" if settings.unsolicited_mwi else "",
            },
            errors=errors,
        )

    async def voicemail_settings(request: Request, session: Session) -> Response:
        form = await posted(request, session)
        if isinstance(form, Response):
            return form
        try:
            data = {
                "max_message_seconds": forms.number(form, "max_message_seconds"),
                "max_messages": forms.number(form, "max_messages"),
                "unsolicited_mwi": forms.checked(form, "unsolicited_mwi"),
            }
            await app.editor.set_singleton("voicemail", drop_none(data))
        except EditError as exc:
            return voicemail_page(request, session, 422, exc.errors, forms.posted(form))
        return app.back("/admin/voicemail", session, "voicemail settings saved")

    async def voicemail_file(request: Request, session: Session) -> Response:
        found = message_file(app.svc, request.path_params["ext"], request.path_params["id"])
        if found is None:
            return app.error(request, 404, "no such message")
        download = request.query_params.get("download") is not None
        return FileResponse(
            found.path,
            media_type="audio/wav",
            filename=f"voicemail-{found.mailbox}-{found.id}.wav" if download else None,
        )

    async def voicemail_delete(request: Request, session: Session) -> Response:
        form = await posted(request, session)
        if isinstance(form, Response):
            return form
        ext, message_id = request.path_params["ext"], request.path_params["id"]
        found = message_file(app.svc, ext, message_id)
        store = mailbox_store(app.svc)
        if found is None or store is None:
            return app.error(request, 404, "no such message")
        store.delete(found.id)
        return app.back("/admin/voicemail", session, "message deleted")

    # -- trunks -----------------------------------------------------------------------------

    def trunk_page(
        request: Request,
        session: Session,
        trunk: Trunk | None,
        status: int = 200,
        errors: Any = (),
        values: forms.Values | None = None,
    ) -> Response:
        return app.render(
            request,
            "trunk_edit.html",
            session,
            status,
            trunk=trunk,
            values=values if values is not None else forms.trunk_values(trunk),
            errors=errors,
        )

    async def trunks(request: Request, session: Session) -> Response:
        return app.render(request, "trunks.html", session, trunks=app.svc.config.trunks)

    async def trunk_new(request: Request, session: Session) -> Response:
        return trunk_page(request, session, None)

    async def trunk_show(request: Request, session: Session) -> Response:
        trunk = app.editor.item("trunks", request.path_params["name"])
        assert isinstance(trunk, Trunk)
        return trunk_page(request, session, trunk)

    async def trunk_save(request: Request, session: Session) -> Response:
        name = request.path_params.get("name")
        form = await posted(request, session)
        if isinstance(form, Response):
            return form
        old = app.editor.item("trunks", name) if name else None
        assert old is None or isinstance(old, Trunk)
        try:
            data = forms.trunk_data(form)
            if name is None:
                trunk = await app.editor.create("trunks", drop_none(data))
            else:
                trunk = await app.editor.replace("trunks", name, data, patch=True)
        except EditError as exc:
            return trunk_page(request, session, old, 422, exc.errors, forms.posted(form))
        assert isinstance(trunk, Trunk)
        return app.back(f"/admin/trunks/{trunk.name}", session, "saved and applied")

    async def trunk_delete(request: Request, session: Session) -> Response:
        form = await posted(request, session)
        if isinstance(form, Response):
            return form
        await app.editor.delete("trunks", request.path_params["name"])
        return app.back("/admin/trunks", session, "trunk deleted")

    # -- call history -----------------------------------------------------------------------

    async def calls(request: Request, session: Session) -> Response:
        return calls_page(request, session)

    def calls_page(
        request: Request,
        session: Session,
        status: int = 200,
        errors: Any = (),
        retention: str | None = None,
    ) -> Response:
        history = cdr(app)
        try:
            where = call_filter(request.query_params)
        except EditError as exc:  # the filter shown again, its error beside it
            where, errors, status = Filter(limit=0), exc.errors, 422
        rows = [c.row() for c in history.query(where)] if history and where.limit else []
        kept = history.options.retention_days if history else 0
        return app.render(
            request,
            "calls.html",
            session,
            status,
            rows=rows,
            params={k: forms.shown(v) for k, v in request.query_params.items()},
            dispositions=DISPOSITIONS,
            retention=kept if retention is None else retention,
            errors=errors,
            csv=f"/admin/calls.csv?{request.url.query}",
        )

    async def calls_csv(request: Request, session: Session) -> Response:
        history = cdr(app)
        rows = history.query(call_filter(request.query_params)) if history else []
        return Response(
            to_csv(rows),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="calls.csv"'},
        )

    async def retention(request: Request, session: Session) -> Response:
        form = await posted(request, session)
        if isinstance(form, Response):
            return form
        try:
            days = forms.number(form, "retention_days")
            await app.editor.set_singleton("cdr", {"retention_days": days})
        except EditError as exc:
            typed = forms.posted(form).get("retention_days", "")
            return calls_page(request, session, 422, exc.errors, typed)
        return app.back("/admin/calls", session, "retention saved")

    # -- API tokens and the administrator's account ----------------------------------------

    async def tokens(request: Request, session: Session) -> Response:
        return tokens_page(request, session)

    def tokens_page(
        request: Request,
        session: Session,
        status: int = 200,
        errors: Any = (),
        values: forms.Values | None = None,
    ) -> Response:
        return app.render(
            request,
            "tokens.html",
            session,
            status,
            tokens=app.accounts.tokens(),
            users=app.svc.config.users,
            values=values or {},
            errors=errors,
        )

    async def token_new(request: Request, session: Session) -> Response:
        form = await posted(request, session)
        if isinstance(form, Response):
            return form
        try:
            extension = forms.text(form, "extension")
            if extension is not None and app.svc.user(extension) is None:
                raise EditError([FieldError("extension", f"no user {extension}")])
            label = forms.text(form, "label") or "token"
            try:
                token = app.accounts.new_token("user" if extension else "admin", extension, label)
            except PasswordError as exc:
                raise EditError([FieldError("label", str(exc))]) from None
        except EditError as exc:
            return tokens_page(request, session, 422, exc.errors, forms.posted(form))
        return app.back("/admin/tokens", session, f"new token (shown once): {token}")

    async def token_revoke(request: Request, session: Session) -> Response:
        form = await posted(request, session)
        if isinstance(form, Response):
            return form
        app.accounts.revoke(request.path_params["digest"])
        return app.back("/admin/tokens", session, "token revoked")

    async def account(request: Request, session: Session) -> Response:
        return app.render(request, "account.html", session, errors=())

    async def account_save(request: Request, session: Session) -> Response:
        form = await posted(request, session)
        if isinstance(form, Response):
            return form
        current = str(form.get("current") or "")
        new = str(form.get("new") or "")
        if not await app.accounts.check_admin(session.name, current):
            errors = [FieldError("current", "this is not your password")]
            return app.render(request, "account.html", session, 422, errors=errors)
        if new != str(form.get("again") or ""):
            errors = [FieldError("again", "the two new passwords differ")]
            return app.render(request, "account.html", session, 422, errors=errors)
        try:
            app.accounts.set_admin(session.name, new)
        except PasswordError as exc:
            return app.render(
                request, "account.html", session, 422, errors=[FieldError("new", str(exc))]
            )
        app.sessions.drop_user("admin", session.name, keep=session.id)
        return app.back("/admin/account", session, "password changed")

    async def root(request: Request, session: Session) -> Response:
        return RedirectResponse("/admin", status_code=303)

    async def favicon(request: Request) -> Response:
        return FileResponse(FAVICON, media_type="image/svg+xml")  # what browsers ask first

    app.templates.filters["label"] = forms.label
    app.templates.filters["when"] = forms.when
    app.templates.filters["part"] = forms.part
    app.templates.filters["humane"] = forms.humane
    app.templates.filters["clock"] = forms.clock
    app.templates.filters["percent"] = forms.percent
    app.templates.globals["choices"] = forms.CHOICES
    get, post = ["GET"], ["POST"]
    return [
        Route("/favicon.ico", r(favicon), methods=get),
        Route("/admin", admin(dashboard), methods=get),
        Route("/admin/", admin(root), methods=get),
        Route("/admin/users", admin(users), methods=get),
        Route("/admin/users/new", admin(user_new), methods=get),
        Route("/admin/users/new", admin(user_create), methods=post),
        Route("/admin/users/{ext}", admin(user_show), methods=get),
        Route("/admin/users/{ext}", admin(user_update), methods=post),
        Route("/admin/users/{ext}/delete", admin(user_delete), methods=post),
        Route("/admin/users/{ext}/reset", admin(user_reset), methods=post),
        Route("/admin/users/{ext}/secrets", admin(user_secrets), methods=post),
        Route("/admin/groups", admin(groups), methods=get),
        Route("/admin/groups/new", admin(group_new), methods=get),
        Route("/admin/groups/new", admin(group_save), methods=post),
        Route("/admin/groups/{ext}", admin(group_show), methods=get),
        Route("/admin/groups/{ext}", admin(group_save), methods=post),
        Route("/admin/groups/{ext}/delete", admin(group_delete), methods=post),
        Route("/admin/queues", admin(queue_list), methods=get),
        Route("/admin/queues/new", admin(queue_new), methods=get),
        Route("/admin/queues/new", admin(queue_save), methods=post),
        Route("/admin/queues/wallboard", admin(wallboard), methods=get),
        Route("/admin/queues/{ext}", admin(queue_show), methods=get),
        Route("/admin/queues/{ext}", admin(queue_save), methods=post),
        Route("/admin/queues/{ext}/delete", admin(queue_delete), methods=post),
        Route("/admin/queues/{ext}/wallboard", admin(wallboard), methods=get),
        Route("/admin/ivr", admin(ivrs), methods=get),
        Route("/admin/ivr/new", admin(ivr_new), methods=get),
        Route("/admin/ivr/new", admin(ivr_save), methods=post),
        Route("/admin/tts", admin(tts), methods=get),
        Route("/admin/ivr/{ext}", admin(ivr_show), methods=get),
        Route("/admin/ivr/{ext}", admin(ivr_save), methods=post),
        Route("/admin/ivr/{ext}/delete", admin(ivr_delete), methods=post),
        Route("/admin/hours", admin(hours), methods=get),
        Route("/admin/hours", admin(hours_save), methods=post),
        Route("/admin/music", admin(music), methods=get),
        Route("/admin/music", admin(music_upload), methods=post),
        Route("/admin/music/{slot}/file", admin(music_file), methods=get),
        Route("/admin/music/{slot}/delete", admin(music_delete), methods=post),
        Route("/admin/voicemail", admin(voicemail), methods=get),
        Route("/admin/voicemail", admin(voicemail_settings), methods=post),
        Route("/admin/voicemail/{ext}/{id}.wav", admin(voicemail_file), methods=get),
        Route("/admin/voicemail/{ext}/{id}/delete", admin(voicemail_delete), methods=post),
        Route("/admin/trunks", admin(trunks), methods=get),
        Route("/admin/trunks/new", admin(trunk_new), methods=get),
        Route("/admin/trunks/new", admin(trunk_save), methods=post),
        Route("/admin/trunks/{name}", admin(trunk_show), methods=get),
        Route("/admin/trunks/{name}", admin(trunk_save), methods=post),
        Route("/admin/trunks/{name}/delete", admin(trunk_delete), methods=post),
        Route("/admin/calls", admin(calls), methods=get),
        Route("/admin/calls.csv", admin(calls_csv), methods=get),
        Route("/admin/calls/retention", admin(retention), methods=post),
        Route("/admin/tokens", admin(tokens), methods=get),
        Route("/admin/tokens", admin(token_new), methods=post),
        Route("/admin/tokens/{digest}/revoke", admin(token_revoke), methods=post),
        Route("/admin/account", admin(account), methods=get),
        Route("/admin/account", admin(account_save), methods=post),
    ]


__all__ = ["BusinessHours", "Voicemail", "routes"]
