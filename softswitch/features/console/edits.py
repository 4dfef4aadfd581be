"""Edits of the configuration: validated by the TOML's own models, saved, applied live.

The console and the API change the configuration *file* (its TOML document, comments and
layout kept by tomlkit), never the running :class:`~softswitch.config.Config` directly:
an edit is checked by the item's model (a user, a ring group...), then the whole new text
is validated as at start and written atomically (:class:`softswitch.reload.ConfigFile`),
then applied to the running PBX, whose calls go on. An invalid edit raises
:class:`EditError` with one :class:`FieldError` per problem, the field relative to the
item edited when the problem is there (``forward.no_answer_after``), else its full key
(``ring_groups[0].steps[0].targets[1]``); nothing is written or applied. Edits are made
one at a time.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import tomlkit
from pydantic import BaseModel, TypeAdapter, ValidationError

from ...config import BusinessHours, ConfigError, Trunk, User, Voicemail
from ..cdr import CdrSettings
from ..queues.settings import QueueSettings
from ..receptionist import Receptionist
from ..ring_groups import RingGroup

if TYPE_CHECKING:
    from ...web.child import WebServices


@dataclass(frozen=True, slots=True)
class Collection:
    """A list of items in the configuration (``[[users]]``), each known by ``key``."""

    name: str
    model: type[BaseModel]
    key: str
    title: str


COLLECTIONS = {
    c.name: c
    for c in (
        Collection("users", User, "extension", "users"),
        Collection("ring_groups", RingGroup, "extension", "ring groups"),
        Collection("ivr", Receptionist, "extension", "receptionists"),
        Collection("trunks", Trunk, "name", "trunks"),
        Collection("queues", QueueSettings, "extension", "queues"),
    )
}
# tables edited whole: [business_hours], [voicemail], [cdr]
SINGLETONS: dict[str, Any] = {
    "business_hours": BusinessHours,
    "voicemail": Voicemail,
    "cdr": CdrSettings,
}
SLOT = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str

    def json(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class EditError(Exception):
    def __init__(self, errors: list[FieldError], status: int = 422) -> None:
        super().__init__(
            "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in errors)
        )
        self.errors = errors
        self.status = status


class NotFound(EditError):
    def __init__(self, what: str) -> None:
        super().__init__([FieldError("", f"{what}: not found")], 404)


def dump(item: BaseModel) -> dict[str, Any]:
    """An item as JSON shows it (every field)."""
    return item.model_dump(mode="json", by_alias=True)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validation_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    errors = []
    for error in exc.errors():
        where = _loc(tuple(error["loc"]))
        field = f"{prefix}.{where}" if prefix and where else (prefix or where)
        errors.append(FieldError(field, error["msg"].removeprefix("Value error, ")))
    return errors


_LINE = re.compile(r"^(?P<source>[^:]*(?::[^:\s][^:]*)?): (?P<key>[^:]+): (?P<message>.+)$")


def config_errors(exc: ConfigError, item: str | None = None) -> list[FieldError]:
    """The lines of a ConfigError as fields; a key inside ``item`` (``users[3]``) is
    given relative to it."""
    errors = []
    for line in str(exc).splitlines():
        m = _LINE.match(line)
        if m is None:
            errors.append(FieldError("", line))
            continue
        key = m["key"].strip()
        if item is not None and (key == item or key.startswith((item + ".", item + "["))):
            key = key[len(item) :].lstrip(".") or key
        errors.append(FieldError(key, m["message"]))
    return errors


def _no_nulls(data: Any, where: str = "") -> list[FieldError]:
    """TOML has no null: a key left out takes its default."""
    found: list[FieldError] = []
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{where}.{key}" if where else str(key)
            if value is None:
                found.append(FieldError(path, "cannot be null (leave it out for the default)"))
            else:
                found += _no_nulls(value, path)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found += _no_nulls(value, f"{where}[{i}]")
    return found


def to_toml(item: BaseModel) -> dict[str, Any]:
    """What the file gets: the fields that differ from their defaults."""
    data = item.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    return {k: v for k, v in data.items() if v is not None}


def merge(base: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: objects merged, null removes a key."""
    if not isinstance(patch, dict):
        return patch
    out = dict(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


class Editor:
    """Edits of ``svc``'s configuration file, one at a time."""

    def __init__(self, svc: WebServices) -> None:
        self.svc = svc
        self.lock = asyncio.Lock()

    @property
    def writable(self) -> bool:
        file = self.svc.config_file
        return file is not None and file.target is not None and self.svc.apply_config is not None

    # -- reading (the running configuration) ------------------------------------------

    def items(self, name: str) -> list[BaseModel]:
        config = self.svc.config
        if name == "users":
            return list(config.users)
        if name == "trunks":
            return list(config.trunks)
        return list(config.section(name) or [])

    def item(self, name: str, key: str) -> BaseModel:
        collection = COLLECTIONS[name]
        for item in self.items(name):
            if str(getattr(item, collection.key)) == key:
                return item
        raise NotFound(f"{collection.title} {key}")

    def singleton(self, name: str) -> BaseModel | None:
        config = self.svc.config
        if name in ("business_hours", "voicemail"):
            value: BaseModel | None = getattr(config, name)
            return value
        found: BaseModel | None = config.section(name)
        return found

    # -- writing (the file, then the running PBX) -----------------------------------------

    def _raw(self, doc: tomlkit.TOMLDocument, name: str) -> list[dict[str, Any]]:
        table = doc.get(name)
        if table is None:
            return []
        return [dict(copy.deepcopy(t.unwrap() if hasattr(t, "unwrap") else t)) for t in table]

    async def _commit(self, doc: tomlkit.TOMLDocument, item: str | None = None) -> list[str]:
        file, apply = self.svc.config_file, self.svc.apply_config
        if file is None or apply is None or file.target is None:
            raise EditError([FieldError("", "this PBX has no configuration file to save to")], 409)
        try:
            config = file.write(tomlkit.dumps(doc))
        except ConfigError as exc:
            raise EditError(config_errors(exc, item)) from None
        try:
            return await apply(config)
        except (RuntimeError, OSError, TimeoutError) as exc:  # the daemon did not apply it
            message = f"saved, but the PBX did not apply it ({exc or 'no answer'}): try again"
            raise EditError([FieldError("", message)], 503) from None

    def _validated(self, collection: Collection, data: Any) -> BaseModel:
        if not isinstance(data, dict):
            raise EditError([FieldError("", "expected an object")])
        errors = _no_nulls(data)
        if errors:
            raise EditError(errors)
        try:
            return collection.model.model_validate(data)
        except ValidationError as exc:
            raise EditError(validation_errors(exc)) from None

    async def create(self, name: str, data: Any) -> BaseModel:
        collection = COLLECTIONS[name]
        item = self._validated(collection, data)
        key = str(getattr(item, collection.key))
        async with self.lock:
            doc = tomlkit.parse(self._text())
            raw = self._raw(doc, name)
            if any(str(r.get(collection.key)) == key for r in raw):
                raise EditError([FieldError(collection.key, f"{key} exists already")], 409)
            raw.append(to_toml(item))
            doc[name] = raw
            await self._commit(doc, f"{name}[{len(raw) - 1}]")
        return item

    async def replace(self, name: str, key: str, data: Any, *, patch: bool = False) -> BaseModel:
        """The item ``key`` becomes ``data`` (``patch``: ``data`` merged into it)."""
        collection = COLLECTIONS[name]
        async with self.lock:
            doc = tomlkit.parse(self._text())
            raw = self._raw(doc, name)
            index = next((i for i, r in enumerate(raw) if str(r.get(collection.key)) == key), None)
            if index is None:
                raise NotFound(f"{collection.title} {key}")
            if patch:
                if not isinstance(data, dict):
                    raise EditError([FieldError("", "expected an object")])
                data = merge(raw[index], data)
            item = self._validated(collection, data)
            if str(getattr(item, collection.key)) != key:
                message = f"cannot change (it is {key}; delete and create instead)"
                raise EditError([FieldError(collection.key, message)])
            raw[index] = to_toml(item)
            doc[name] = raw
            await self._commit(doc, f"{name}[{index}]")
        return item

    async def delete(self, name: str, key: str) -> None:
        collection = COLLECTIONS[name]
        async with self.lock:
            doc = tomlkit.parse(self._text())
            raw = self._raw(doc, name)
            kept = [r for r in raw if str(r.get(collection.key)) != key]
            if len(kept) == len(raw):
                raise NotFound(f"{collection.title} {key}")
            if kept:
                doc[name] = kept
            else:
                del doc[name]
            await self._commit(doc)

    async def set_singleton(self, name: str, data: Mapping[str, Any] | None) -> None:
        """``[name]`` becomes ``data`` (None: removed, its defaults apply)."""
        async with self.lock:
            doc = tomlkit.parse(self._text())
            if data is None:
                if name in doc:
                    del doc[name]
            else:
                errors = _no_nulls(dict(data))
                if errors:
                    raise EditError(errors)
                try:
                    value = TypeAdapter(SINGLETONS[name]).validate_python(dict(data))
                except ValidationError as exc:
                    raise EditError(validation_errors(exc)) from None
                doc[name] = to_toml(value)
            await self._commit(doc, name)

    async def set_music(self, slot: str, path: str | None) -> None:
        """Hold-music slot ``slot`` plays ``path`` (None: the slot is removed)."""
        if not SLOT.match(slot):
            raise EditError([FieldError("slot", "1-32 letters, digits, - or _")])
        async with self.lock:
            doc = tomlkit.parse(self._text())
            music = dict(doc.get("hold_music", {}))
            if path is None:
                if slot not in music:
                    raise NotFound(f"hold-music slot {slot}")
                del music[slot]
            else:
                music[slot] = path
            if music:
                doc["hold_music"] = music
            elif "hold_music" in doc:
                del doc["hold_music"]
            await self._commit(doc, f"hold_music.{slot}")

    def _text(self) -> str:
        file = self.svc.config_file
        if file is None:
            raise EditError([FieldError("", "this PBX has no configuration file to save to")], 409)
        try:
            return file.text()
        except ConfigError as exc:
            raise EditError([FieldError("", str(exc))], 409) from None
