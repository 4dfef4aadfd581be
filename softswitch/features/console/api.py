"""The REST API under ``/api/``: the console's operations for automation, in JSON.

Call queues: ``GET /api/queues`` is the wallboard's data now (an admin's); ``POST
/api/queues/agents/{extension}`` with ``{"action": "login" | "logout" | "pause" |
"unpause"}`` acts on an agent (an admin's token: any agent; a user's: itself only); the
queues' configuration is ``/api/queue_settings`` (as ``ring_groups``).

Authentication: ``Authorization: Bearer <token>`` (tokens made in the console or the
portal), or the console's session cookie with its CSRF token in ``X-CSRF-Token`` for
anything that changes state. An admin token reaches everything; a user token only its own
user (read, and ``PATCH`` of forwarding, DND, screening and block list), its own
voicemail and its own calls. Errors are ``{"error": "...", "detail": [{"field": "...",
"message": "..."}]}``: 400 for a body that is not JSON or nests deeper than
``MAX_DEPTH``, 401 without credentials, 403 for another's data, 404, 409, 413, and 422
naming the field of an invalid change (a string holding a control character among
them), which changes nothing. The schema is ``/api/openapi.json`` (OpenAPI 3.1, the
configuration's own pydantic models).

A user's SIP password and PIN (and its devices' passwords) are shown once, in the answer
to the ``POST`` that creates the user or to ``POST /api/users/{key}/reset``; never
afterwards. A ``PUT`` or ``PATCH`` that leaves them out keeps them. A new phone password
(``PUT``, ``PATCH``, a reset) revokes the user's API tokens, forgets its portal password
and ends its console sessions.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ...config import BusinessHours, Trunk, User, Voicemail
from ..cdr import CdrSettings, to_csv
from ..queues.settings import QueueSettings
from ..receptionist import Receptionist
from ..ring_groups import RingGroup
from .admin import call_filter, cdr, evict, reset_user
from .edits import COLLECTIONS, SINGLETONS, EditError, FieldError, NotFound, _no_nulls, dump
from .forms import control_char, control_message, shown
from .mailboxes import mailbox_store, message_file, notify
from .queues import ACTIONS, agent_action
from .uploads import read_body, save_audio

if TYPE_CHECKING:
    from .app import ConsoleApp

log = logging.getLogger("softswitch")
MAX_JSON = 256 * 1024
# levels of objects and arrays a body may nest; no item needs more than 5 (a user's
# rules[0].match.weekly); the code after the parser (merge, validation, TOML) recurses
MAX_DEPTH = 16
MAX_FIELD_ERRORS = 20
USER_FIELDS = ("forward", "dnd", "screening", "blocked")  # what a user may change itself
SECRETS = ("password", "pin")  # a user's, shown once


def parse_json(raw: bytes) -> Any:
    """A request body as data: 400 if it is not JSON or nests deeper than MAX_DEPTH, 422
    naming each string (key or value) that holds a control character."""
    deep = EditError([FieldError("", f"JSON nested deeper than {MAX_DEPTH} levels")], 400)
    try:
        data = json.loads(raw or b"null")
    except RecursionError:  # the parser's own bound, far deeper than ours
        raise deep from None
    except ValueError as exc:
        raise EditError([FieldError("", f"not JSON: {exc}")], 400) from None
    errors: list[FieldError] = []
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:  # iterative: a deep body must not exhaust the stack here either
        value, where, depth = stack.pop()
        if isinstance(value, str):
            char = control_char(value)
            if char is not None:
                errors.append(FieldError(where, control_message(char)))
            continue
        if not isinstance(value, dict | list):
            continue
        if depth >= MAX_DEPTH:
            raise deep
        if isinstance(value, list):
            stack += [(v, f"{where}[{i}]", depth + 1) for i, v in reversed(list(enumerate(value)))]
            continue
        for key, item in reversed(value.items()):
            path = f"{where}.{shown(key)}" if where else shown(key)
            char = control_char(key)
            if char is not None:
                errors.append(FieldError(path, control_message(char)))
            stack.append((item, path, depth + 1))
    if errors:
        raise EditError(errors[:MAX_FIELD_ERRORS])
    return data


def public(user: BaseModel) -> dict[str, Any]:
    """A user as the API shows it after its creation: without its secrets."""
    data = dump(user)
    for key in SECRETS:
        data.pop(key, None)
    for device in data.get("devices") or []:
        device.pop("password", None)
    return data


def keep_device_passwords(current: User, data: Any) -> Any:
    """``data`` (a user's JSON), its SIP devices sent without a password given their
    current one (found by username): the API does not show it, so a client puts a
    device back without it."""
    if not isinstance(data, dict) or not isinstance(data.get("devices"), list):
        return data
    known = {d.username: d.password for d in current.devices if d.username and d.password}
    devices = []
    for device in data["devices"]:
        name = device.get("username") if isinstance(device, dict) else None
        if isinstance(name, str) and name in known and "password" not in device:
            device = {**device, "password": known[name]}
        devices.append(device)
    return {**data, "devices": devices}


def replacing(old: Any, new: Any, keep: tuple[str, ...] = ()) -> Any:
    """The merge patch that turns ``old`` into ``new`` (keys ``new`` lacks removed),
    except the keys ``keep``, left as they are when ``new`` lacks them."""
    if not isinstance(new, dict):
        return new
    base = old if isinstance(old, dict) else {}
    patch: dict[str, Any] = {k: None for k in base if k not in new and k not in keep}
    patch.update({k: replacing(base.get(k), v) for k, v in new.items()})
    return patch


@dataclass(frozen=True, slots=True)
class Principal:
    role: str  # "admin" or "user"
    extension: str | None  # the user's own extension
    via_session: bool


class Denied(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def routes(app: ConsoleApp) -> list[BaseRoute]:
    def principal(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            token = app.accounts.token(header[7:].strip())
            if token is None:
                app.svc.security.event(
                    "auth_failed",
                    app.source(request),
                    app.now(),
                    method=request.method,
                    reason="console_token",
                )
                raise Denied(401, "unknown or revoked token")
            return Principal(token.role, token.extension, via_session=False)
        session = app.session(request)
        if session is None:
            raise Denied(401, "authentication needed: Authorization: Bearer <token>")
        if request.method not in ("GET", "HEAD") and not session.csrf_ok(
            request.headers.get("x-csrf-token")
        ):
            raise Denied(403, "X-CSRF-Token missing or wrong")
        extension = session.name if session.role == "user" else None
        return Principal(session.role, extension, via_session=True)

    def endpoint(handler: Any, role: str = "admin") -> Any:
        async def wrapped(request: Request) -> Response:
            try:
                who = principal(request)
                if role == "admin" and who.role != "admin":
                    raise Denied(403, "an administrator's token is needed")
                return await handler(request, who)  # type: ignore[no-any-return]
            except Denied as exc:
                return JSONResponse(
                    {"error": str(exc), "detail": [{"field": "", "message": str(exc)}]},
                    status_code=exc.status,
                )

        return app.route(wrapped)

    async def body(request: Request) -> Any:
        return parse_json(await read_body(request, MAX_JSON))

    def own(who: Principal, extension: str) -> None:
        """A user reaches its own extension only."""
        if who.role != "admin" and who.extension != extension:
            raise Denied(403, "this is another user's")

    # -- collections ----------------------------------------------------------------------

    def collection_routes(name: str, base: str | None = None) -> list[BaseRoute]:
        COLLECTIONS[name]

        async def index(request: Request, who: Principal) -> Response:
            items = app.editor.items(name)
            return JSONResponse([dump(i) for i in items])

        async def create(request: Request, who: Principal) -> Response:
            item = await app.editor.create(name, await body(request))
            return JSONResponse(dump(item), status_code=201)

        async def show(request: Request, who: Principal) -> Response:
            return JSONResponse(dump(app.editor.item(name, request.path_params["key"])))

        async def put(request: Request, who: Principal) -> Response:
            key = request.path_params["key"]
            return JSONResponse(dump(await app.editor.replace(name, key, await body(request))))

        async def patch(request: Request, who: Principal) -> Response:
            key = request.path_params["key"]
            item = await app.editor.replace(name, key, await body(request), patch=True)
            return JSONResponse(dump(item))

        async def delete(request: Request, who: Principal) -> Response:
            await app.editor.delete(name, request.path_params["key"])
            return Response(status_code=204)

        base = base or f"/api/{name}"
        return [
            Route(base, endpoint(index), methods=["GET"]),
            Route(base, endpoint(create), methods=["POST"]),
            Route(base + "/{key}", endpoint(show), methods=["GET"]),
            Route(base + "/{key}", endpoint(put), methods=["PUT"]),
            Route(base + "/{key}", endpoint(patch), methods=["PATCH"]),
            Route(base + "/{key}", endpoint(delete), methods=["DELETE"]),
        ]

    # users: an administrator does everything; a user reads and patches itself; the
    # secrets are shown at creation and reset only
    def current_user(key: str) -> User:
        user = app.editor.item("users", key)
        assert isinstance(user, User)
        return user

    def changed(before: User, after: BaseModel) -> Response:
        """The answer to a change of ``before``; a new phone password evicts the user."""
        assert isinstance(after, User)
        if after.password != before.password:
            evict(app, before.extension)
        return JSONResponse(public(after))

    async def users(request: Request, who: Principal) -> Response:
        found = app.svc.config.users
        if who.role != "admin":
            found = [u for u in found if u.extension == who.extension]
        return JSONResponse([public(u) for u in found])

    async def user_show(request: Request, who: Principal) -> Response:
        key = request.path_params["key"]
        own(who, key)
        return JSONResponse(public(current_user(key)))

    async def user_patch(request: Request, who: Principal) -> Response:
        key = request.path_params["key"]
        own(who, key)
        data = await body(request)
        if who.role != "admin" and isinstance(data, dict):
            refused = [k for k in data if k not in USER_FIELDS]
            if refused:
                message = f"only {', '.join(USER_FIELDS)} can be changed with a user's token"
                raise EditError([FieldError(k, message) for k in refused], 403)
        before = current_user(key)
        data = keep_device_passwords(before, data)
        return changed(before, await app.editor.replace("users", key, data, patch=True))

    async def user_put(request: Request, who: Principal) -> Response:
        """The user becomes the body, but for the secrets it leaves out. Sent as a merge
        patch that removes what the body lacks, so that those secrets are taken from the
        file under the editor's lock: a reset made meanwhile is not undone by a client
        that never saw the password."""
        key = request.path_params["key"]
        data = await body(request)
        if not isinstance(data, dict):
            raise EditError([FieldError("", "expected an object")])
        errors = _no_nulls(data)
        if errors:
            raise EditError(errors)
        before = current_user(key)
        data = keep_device_passwords(before, data)
        patch = replacing(dump(before), data, keep=SECRETS)
        return changed(before, await app.editor.replace("users", key, patch, patch=True))

    async def user_reset(request: Request, who: Principal) -> Response:
        """A new phone password and PIN, shown in this answer only."""
        key = request.path_params["key"]
        current_user(key)  # 404 if there is none
        password, pin = await reset_user(app, key)
        return JSONResponse({"password": password, "pin": pin})

    async def user_delete(request: Request, who: Principal) -> Response:
        key = request.path_params["key"]
        await app.editor.delete("users", key)
        evict(app, key)
        return Response(status_code=204)

    # -- tables edited whole --------------------------------------------------------------

    async def singleton(request: Request, who: Principal) -> Response:
        name = request.path_params["name"]
        if name not in SINGLETONS:
            raise NotFound(f"settings {name}")
        if request.method == "PUT":
            data = await body(request)
            if not isinstance(data, dict):
                raise EditError([FieldError("", "expected an object")])
            await app.editor.set_singleton(name, data)
        elif request.method == "DELETE":
            await app.editor.set_singleton(name, None)
            return Response(status_code=204)
        value = app.editor.singleton(name)
        return JSONResponse(dump(value) if value is not None else None)

    # -- hold music --------------------------------------------------------------------------

    async def music(request: Request, who: Principal) -> Response:
        slots = {"default": None, **app.svc.config.hold_music}
        return JSONResponse({k: str(v) if v else None for k, v in slots.items()})

    async def music_put(request: Request, who: Principal) -> Response:
        slot = request.path_params["slot"]
        data = await read_body(request)
        name = request.headers.get("x-filename") or f"{slot}.upload"
        path = await save_audio(data, name, app.svc.data_dir / "audio" / "music")
        await app.editor.set_music(slot, str(path))
        return JSONResponse({"slot": slot, "file": str(path)})

    async def music_delete(request: Request, who: Principal) -> Response:
        await app.editor.set_music(request.path_params["slot"], None)
        return Response(status_code=204)

    # -- voicemail ----------------------------------------------------------------------------

    async def messages(request: Request, who: Principal) -> Response:
        ext = request.path_params["ext"]
        own(who, ext)
        if app.svc.user(ext) is None:
            raise NotFound(f"mailbox {ext}")
        store = mailbox_store(app.svc)
        found = store.messages(ext) if store else []
        return JSONResponse(
            [
                {
                    "id": m.id,
                    "caller": m.caller,
                    "created": m.created,
                    "seconds": round(m.seconds, 1),
                    "heard": m.heard,
                    "audio": f"/api/voicemail/{ext}/{m.id}",
                }
                for m in found
            ]
        )

    async def message(request: Request, who: Principal) -> Response:
        ext, message_id = request.path_params["ext"], request.path_params["id"]
        own(who, ext)
        found = message_file(app.svc, ext, message_id)
        if found is None:
            raise NotFound(f"message {message_id}")
        if request.method == "DELETE":
            store = mailbox_store(app.svc)
            assert store is not None
            store.delete(found.id)
            notify(app.svc, ext)
            return Response(status_code=204)
        return FileResponse(found.path, media_type="audio/wav")

    # -- calls ------------------------------------------------------------------------------

    async def calls(request: Request, who: Principal) -> Response:
        history = cdr(app)
        where = call_filter(request.query_params, who.extension if who.role != "admin" else None)
        rows = history.query(where) if history else []
        if request.url.path.endswith(".csv"):
            return Response(to_csv(rows), media_type="text/csv; charset=utf-8")
        return JSONResponse([row.row() for row in rows])

    async def status(request: Request, who: Principal) -> Response:
        return JSONResponse(await app.snapshot())

    # -- call queues --------------------------------------------------------------------------

    async def queues_now(request: Request, who: Principal) -> Response:
        try:
            return JSONResponse(await app.queues())
        except (RuntimeError, OSError, TimeoutError) as exc:
            message = f"the PBX did not answer ({exc or 'no answer'})"
            raise EditError([FieldError("", message)], 503) from None

    async def queue_agent(request: Request, who: Principal) -> Response:
        extension = request.path_params["extension"]
        own(who, extension)
        data = await body(request)
        if not isinstance(data, dict):
            raise EditError([FieldError("", "expected an object")])
        answer = await agent_action(app, extension, data.get("action"))
        log.info(
            "event=console_queue_agent agent=%s action=%s by=%s",
            extension,
            data.get("action"),
            who.extension or "admin",
        )
        return JSONResponse(answer)

    async def openapi(request: Request) -> Response:
        return JSONResponse(schema())

    return [
        Route("/api/openapi.json", app.route(openapi), methods=["GET"]),
        Route("/api/status", endpoint(status), methods=["GET"]),
        Route("/api/queues", endpoint(queues_now), methods=["GET"]),
        Route("/api/queues/agents/{extension}", endpoint(queue_agent, "any"), methods=["POST"]),
        Route("/api/users", endpoint(users, "any"), methods=["GET"]),
        Route("/api/users/{key}", endpoint(user_show, "any"), methods=["GET"]),
        Route("/api/users/{key}", endpoint(user_patch, "any"), methods=["PATCH"]),
        Route("/api/users/{key}", endpoint(user_put), methods=["PUT"]),
        Route("/api/users/{key}", endpoint(user_delete), methods=["DELETE"]),
        Route("/api/users/{key}/reset", endpoint(user_reset), methods=["POST"]),
        *[r for r in collection_routes("users") if getattr(r, "methods", set()) & {"POST"}],
        *collection_routes("ring_groups"),
        *collection_routes("ivr"),
        *collection_routes("trunks"),
        *collection_routes("queues", "/api/queue_settings"),
        Route("/api/settings/{name}", endpoint(singleton), methods=["GET", "PUT", "DELETE"]),
        Route("/api/hold_music", endpoint(music), methods=["GET"]),
        Route("/api/hold_music/{slot}", endpoint(music_put), methods=["PUT"]),
        Route("/api/hold_music/{slot}", endpoint(music_delete), methods=["DELETE"]),
        Route("/api/voicemail/{ext}", endpoint(messages, "any"), methods=["GET"]),
        Route("/api/voicemail/{ext}/{id}", endpoint(message, "any"), methods=["GET", "DELETE"]),
        Route("/api/calls", endpoint(calls, "any"), methods=["GET"]),
        Route("/api/calls.csv", endpoint(calls, "any"), methods=["GET"]),
    ]


MODELS: dict[str, Any] = {
    "User": User,
    "RingGroup": RingGroup,
    "Receptionist": Receptionist,
    "Trunk": Trunk,
    "QueueSettings": QueueSettings,
    "BusinessHours": BusinessHours,
    "Voicemail": Voicemail,
    "CdrSettings": CdrSettings,
}
_SCHEMA: dict[str, Any] = {}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def schema() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once)."""
    if _SCHEMA:
        return _SCHEMA
    _, defs = models_json_schema(
        [(m, "validation") for m in MODELS.values()], ref_template="#/components/schemas/{model}"
    )
    error = {
        "type": "object",
        "properties": {
            "error": {"type": "string"},
            "detail": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                },
            },
        },
    }
    components = {**defs.get("$defs", {}), "Error": error}
    errors = {
        str(code): {
            "description": text,
            "content": {"application/json": {"schema": _ref("Error")}},
        }
        for code, text in (
            (401, "no or unknown credentials"),
            (403, "not yours (a user token on another user)"),
            (404, "not found"),
            (422, "invalid: the fields at fault, nothing changed"),
        )
    }

    def op(
        summary: str,
        model: str | None = None,
        *,
        body: bool = False,
        many: bool = False,
        status: str = "200",
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"summary": summary, "responses": dict(errors)}
        if model is not None:
            content = {"items": _ref(model), "type": "array"} if many else _ref(model)
            out["responses"][status] = {
                "description": "OK",
                "content": {"application/json": {"schema": content}},
            }
        else:
            out["responses"][status] = {"description": "OK"}
        if body and model is not None:
            out["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(model)}},
            }
        return out

    paths: dict[str, Any] = {}
    for name, model in (
        ("users", "User"),
        ("ring_groups", "RingGroup"),
        ("ivr", "Receptionist"),
        ("trunks", "Trunk"),
        ("queue_settings", "QueueSettings"),
    ):
        key = {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}
        paths[f"/api/{name}"] = {
            "get": op(f"list {name}", model, many=True),
            "post": op(f"add to {name}", model, body=True, status="201"),
        }
        paths[f"/api/{name}/{{key}}"] = {
            "parameters": [key],
            "get": op(f"one of {name}", model),
            "put": op(f"replace one of {name}", model, body=True),
            "patch": {
                **op(f"change fields of one of {name} (JSON merge patch)", model),
                "requestBody": {
                    "required": True,
                    "content": {"application/merge-patch+json": {"schema": {"type": "object"}}},
                },
            },
            "delete": op(f"delete one of {name}", status="204"),
        }
    setting = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"enum": sorted(SINGLETONS)},
    }
    paths["/api/settings/{name}"] = {
        "parameters": [setting],
        "get": op("business_hours, voicemail or cdr settings"),
        "put": op("replace them"),
        "delete": op("back to the defaults", status="204"),
    }
    slot = {"name": "slot", "in": "path", "required": True, "schema": {"type": "string"}}
    paths["/api/hold_music"] = {"get": op("slots and their files")}
    paths["/api/hold_music/{slot}"] = {
        "parameters": [slot],
        "put": {
            **op("upload a WAV/MP3/FLAC/Ogg file (at most 5 MB) as the slot's music"),
            "requestBody": {
                "required": True,
                "content": {"application/octet-stream": {"schema": {}}},
            },
        },
        "delete": op("remove the slot", status="204"),
    }
    paths["/api/users/{key}/reset"] = {
        "parameters": [
            {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "post": {
            **op("a new phone password and PIN, shown in this answer only"),
            "description": "The user's API tokens, portal password and sessions end.",
        },
    }
    ext = {"name": "ext", "in": "path", "required": True, "schema": {"type": "string"}}
    paths["/api/voicemail/{ext}"] = {"parameters": [ext], "get": op("the mailbox's messages")}
    paths["/api/voicemail/{ext}/{id}"] = {
        "parameters": [
            ext,
            {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
        ],
        "get": op("the message (audio/wav)"),
        "delete": op("delete the message", status="204"),
    }
    filters = [
        {"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
        for n in ("since", "until", "number", "disposition", "limit")
    ]
    paths["/api/calls"] = {"get": {**op("call history (JSON)"), "parameters": filters}}
    paths["/api/calls.csv"] = {"get": {**op("call history (CSV)"), "parameters": filters}}
    paths["/api/status"] = {"get": op("registrations, calls, conferences, media ticks now")}
    paths["/api/queues"] = {
        "get": op("the call queues now: callers waiting, agents and their states, today's figures")
    }
    action = {
        "type": "object",
        "required": ["action"],
        "properties": {"action": {"enum": list(ACTIONS)}},
    }
    paths["/api/queues/agents/{extension}"] = {
        "parameters": [
            {"name": "extension", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "post": {
            **op("log a queue agent in or out, pause or resume it"),
            "description": "A user's token acts on its own extension only.",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": action}},
            },
        },
    }
    _SCHEMA.update(
        {
            "openapi": "3.1.0",
            "info": {"title": "softswitch", "version": "1"},
            "components": {
                "schemas": components,
                "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
            },
            "security": [{"token": []}],
            "paths": paths,
        }
    )
    return _SCHEMA
