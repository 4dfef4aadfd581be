"""Console forms to configuration data (and back), for the item models to validate.

A form only turns fields into the shape of the TOML table (``forward.busy``, steps from
lines, rows of devices and rules); every check is the model's. An empty optional field is
``None``, which in a merge patch means "back to the default". A field holding a control
character is refused here, naming the field (:func:`refuse_controls`; the API checks its
JSON with the same rule).
"""

from __future__ import annotations

import re
from typing import Any

from starlette.datastructures import FormData

from ...config import BusinessHours, Trunk, User
from ..receptionist import Receptionist
from ..ring_groups import RingGroup
from .edits import EditError, FieldError

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
KEYS = tuple("123456789*0#")
DEVICE_ROWS = 4  # rows shown beyond the devices there are (blank: nothing)
RULE_ROWS = 2


# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: no value of the
# configuration holds one, and one saved (a NUL in a name) breaks what reads the file
# back, the receptionist's reload among them; str.splitlines() splits at most of them
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# the same in a field made of lines (steps, a greeting's text), where CR and LF separate
CONTROL_IN_LINES = re.compile("[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")
LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")


def control_char(value: str, *, lines: bool = False) -> str | None:
    """The first control character in ``value`` (``lines``: CR and LF allowed)."""
    found = (CONTROL_IN_LINES if lines else CONTROL).search(value)
    return found.group() if found else None


def control_message(char: str) -> str:
    return f"a control character (U+{ord(char):04X}) is not allowed here"


def shown(key: str) -> str:
    """A key as an error names it, its control characters escaped."""
    return CONTROL.sub(lambda m: ascii(m.group())[1:-1], key)


def refuse_controls(field: str, value: str, *, lines: bool = False) -> None:
    char = control_char(value, lines=lines)
    if char is not None:
        raise EditError([FieldError(field, control_message(char))])


def text(form: FormData, key: str, *, lines: bool = False) -> str | None:
    """The field ``key``, stripped (empty: None); one with a control character is
    refused (``lines``: a field made of lines, CR and LF allowed)."""
    value = form.get(key)
    if not isinstance(value, str):
        return None
    refuse_controls(key, value, lines=lines)
    value = value.strip()
    return value or None


def one_line(value: str | None) -> str | None:
    """Text spoken as one (a greeting typed on several lines): line breaks as spaces."""
    return LINE_BREAKS.sub(" ", value) if value is not None else None


def number(form: FormData, key: str) -> int | str | None:
    value = text(form, key)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return value  # the model says what is wrong with it


def checked(form: FormData, key: str) -> bool:
    return form.get(key) is not None


def words(value: str | None) -> list[str]:
    return [w for w in (value or "").replace(",", " ").split() if w]


def steps_from(value: str | None) -> list[dict[str, Any]]:
    """``101 102 / 20`` per line: the targets ringing together, then their seconds."""
    steps: list[dict[str, Any]] = []
    for line in (value or "").splitlines():
        targets, _, seconds = line.partition("/")
        step: dict[str, Any] = {"targets": words(targets)}
        if not step["targets"]:
            continue
        if seconds.strip():
            step["ring_seconds"] = int(seconds) if seconds.strip().isdigit() else seconds.strip()
        steps.append(step)
    return steps


def steps_text(steps: Any) -> str:
    return "\n".join(f"{' '.join(s.targets)} / {s.ring_seconds}" for s in steps or [])


def _listed(value: str | None) -> str | list[str] | None:
    items = [w.strip() for w in (value or "").split(",") if w.strip()]
    if not items:
        return None
    return items[0] if len(items) == 1 else items


def user_patch(form: FormData) -> dict[str, Any]:
    """The fields of the user form as a merge patch of the user's table."""
    forward: dict[str, Any] = {
        key: text(form, f"forward_{key}") for key in ("busy", "no_answer", "unreachable")
    }
    forward["no_answer_after"] = number(form, "forward_no_answer_after")
    forward["steps"] = steps_from(text(form, "forward_steps", lines=True)) or None
    forward["connecting_message"] = text(form, "forward_connecting_message")
    forward["confirm_external"] = checked(form, "forward_confirm_external") or None
    devices = []
    for i in range(int(text(form, "device_rows") or 0)):
        row: dict[str, Any] = {
            k: text(form, f"device_{i}_{k}") for k in ("name", "username", "password", "number")
        }
        row["flip"] = number(form, f"device_{i}_flip")
        if any(v is not None for v in row.values()):
            devices.append({k: v for k, v in row.items() if v is not None})
    rules = []
    for i in range(int(text(form, "rule_rows") or 0)):
        name, action = text(form, f"rule_{i}_name"), text(form, f"rule_{i}_action")
        match = {
            key: _listed(text(form, f"rule_{i}_{key}"))
            for key in ("caller", "called", "weekly", "dates")
        }
        if name is None and action is None and not any(match.values()):
            continue
        rules.append(
            {
                "name": name or "",
                "match": {k: v for k, v in match.items() if v is not None},
                "action": action or "",
            }
        )
    patch = {
        "extension": text(form, "extension"),
        "name": text(form, "name"),
        "password": text(form, "password"),
        "pin": text(form, "pin"),
        "permission": text(form, "permission"),
        "kind": text(form, "kind"),
        "dnd": text(form, "dnd"),
        "screening": text(form, "screening"),
        "voicemail": checked(form, "voicemail"),
        "hold_music": text(form, "hold_music"),
        "caller_id": text(form, "caller_id"),
        "in_hours": text(form, "in_hours"),
        "after_hours": text(form, "after_hours"),
        "forward": forward,
        "devices": devices or None,
        "rules": rules or None,
        "blocked": words(text(form, "blocked")) or None,
    }
    return keep_key(patch, "extension")


def keep_key(patch: dict[str, Any], key: str) -> dict[str, Any]:
    """A key the form left out is not a change (a merge patch would remove it)."""
    return patch if patch.get(key) is not None else {k: v for k, v in patch.items() if k != key}


def user_rows(user: User | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Device and rule rows for the form: the user's, then blank ones."""
    devices: list[dict[str, Any]] = [
        d.model_dump(mode="json") for d in (user.devices if user else [])
    ]
    devices += [{}] * DEVICE_ROWS
    rules: list[dict[str, Any]] = []
    for rule in user.rules if user else []:
        match = rule.match.model_dump(mode="json", exclude_none=True)
        rules.append(
            {
                "name": rule.name,
                "action": rule.action,
                **{k: ", ".join(v) if isinstance(v, list) else v for k, v in match.items()},
            }
        )
    rules += [{}] * RULE_ROWS
    return devices, rules


def group_data(form: FormData) -> dict[str, Any]:
    data = {
        "extension": text(form, "extension"),
        "name": text(form, "name"),
        "steps": steps_from(text(form, "steps", lines=True)),
        "no_answer": text(form, "no_answer"),
        "caller_hears": text(form, "caller_hears"),
        "permission": text(form, "permission"),
        "confirm_external": checked(form, "confirm_external"),
    }
    return data


def group_form(group: RingGroup | None) -> dict[str, Any]:
    if group is None:
        return {"steps": ""}
    return {**group.model_dump(mode="json"), "steps": steps_text(group.steps)}


def ivr_patch(form: FormData) -> dict[str, Any]:
    """The main menu's fields (sub-menus, after-hours and rules are kept as they are)."""
    keys = {k: v for k in KEYS if (v := text(form, f"key_{k}")) is not None}
    patch = {
        "extension": text(form, "extension"),
        "name": text(form, "name"),
        "greeting": one_line(text(form, "greeting", lines=True)),
        "keys": keys,  # a dict in a merge patch: merged, so removed keys are sent as None
        "dial_extension": checked(form, "dial_extension"),
        "default": text(form, "default"),
        "timeout": number(form, "timeout"),
        "retries": number(form, "retries"),
        "dial_by": text(form, "dial_by"),
    }
    return keep_key(patch, "extension")


def ivr_keys_patch(old: Receptionist | None, new: dict[str, Any]) -> dict[str, Any]:
    """Keys emptied in the form are removed (a merge patch needs them as None)."""
    keys: dict[str, Any] = dict(new.get("keys") or {})
    for key in old.keys if old else {}:
        keys.setdefault(key, None)
    return {**new, "keys": keys}


def hours_data(form: FormData) -> dict[str, Any]:
    data: dict[str, Any] = {"timezone": text(form, "timezone") or "UTC"}
    for day in DAYS:
        ranges = words(text(form, day))
        if ranges:
            data[day] = ranges
    closed = words(text(form, "closed"))
    if closed:
        data["closed"] = closed
    return data


def hours_form(hours: BusinessHours | None) -> dict[str, str]:
    if hours is None:
        return {"timezone": "UTC", **{d: "" for d in DAYS}, "closed": ""}
    return {
        "timezone": hours.timezone,
        **{d: ", ".join(getattr(hours, d)) for d in DAYS},
        "closed": ", ".join(hours.closed),
    }


def trunk_data(form: FormData) -> dict[str, Any]:
    data = {
        "name": text(form, "name"),
        "proxy": text(form, "proxy"),
        "username": text(form, "username"),
        "password": text(form, "password"),
        "register": checked(form, "register"),
        "from_domain": text(form, "from_domain"),
        "addresses": words(text(form, "addresses")),
        "inbound_extension": text(form, "inbound_extension"),
    }
    return data


def trunk_form(trunk: Trunk | None) -> dict[str, Any]:
    if trunk is None:
        return {"addresses": "", "register": False}
    data = trunk.model_dump(mode="json", by_alias=True)
    return {**data, "addresses": ", ".join(trunk.addresses)}
