"""Console forms to configuration data (and back), for the item models to validate.

A form only turns fields into the shape of the TOML table (``forward.busy``, steps from
lines, rows of devices and rules); every check is the model's. An empty optional field is
``None``, which in a merge patch means "back to the default". A field holding a control
character is refused here, naming the field (:func:`refuse_controls`; the API checks its
JSON with the same rule).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import FormData

from ...config import BusinessHours, Trunk, User
from ..queues.settings import QueueSettings
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


# a form field as the model names it, for an error this module finds (a control
# character) to show where the model's own errors do
FIELD_PATHS = (
    (re.compile(r"^device_(\d+)_(\w+)$"), r"devices[\1].\2"),
    (re.compile(r"^rule_(\d+)_(\w+)$"), r"rules[\1].\2"),
    (re.compile(r"^forward_(\w+)$"), r"forward.\1"),
    (re.compile(r"^key_(.)$"), r"keys.\1"),
)


def model_path(field: str) -> str:
    for pattern, path in FIELD_PATHS:
        if pattern.match(field):
            return pattern.sub(path, field)
    return field


def user_patch(form: FormData) -> dict[str, Any]:
    """The fields of the user form as a merge patch of the user's table."""
    try:
        return _user_patch(form)
    except EditError as exc:
        raise EditError([FieldError(model_path(e.field), e.message) for e in exc.errors]) from None


def _user_patch(form: FormData) -> dict[str, Any]:
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


MEMBER = re.compile(r"^(?P<extension>[0-9]{2,8})(?::(?P<penalty>[0-9]))?$")
QUEUE_NUMBERS = (
    "ring_seconds",
    "wrap_up_seconds",
    "max_callers",
    "max_wait_seconds",
    "announce_position_seconds",
    "service_level_seconds",
)


def members_from(value: str | None) -> list[str | dict[str, Any]]:
    """``101, 102:1``: the agents of a queue, each with its penalty after a colon (a
    higher one rings only when no lower one is free); 0 is written as the bare number."""
    members: list[str | dict[str, Any]] = []
    for word in words(value):
        m = MEMBER.match(word)
        if m is None:
            message = f"{word}: expected an extension, or extension:penalty (0 to 9)"
            raise EditError([FieldError("members", message)])
        penalty = int(m["penalty"] or 0)
        extension = m["extension"]
        members.append({"extension": extension, "penalty": penalty} if penalty else extension)
    return members


def members_text(queue: QueueSettings) -> str:
    return ", ".join(
        f"{m.extension}:{m.penalty}" if m.penalty else m.extension for m in queue.member_list()
    )


def queue_data(form: FormData) -> dict[str, Any]:
    """The queue form as a merge patch of its table (what the form does not show, such as
    priorities and rules, is kept)."""
    data: dict[str, Any] = {
        "extension": text(form, "extension"),
        "name": text(form, "name"),
        "members": members_from(text(form, "members")),
        "strategy": text(form, "strategy"),
        "overflow": text(form, "overflow"),
        "join_empty": checked(form, "join_empty"),
        "music": text(form, "music"),
        "announce_wait": checked(form, "announce_wait"),
        "leave_message": text(form, "leave_message"),
    }
    data.update({key: number(form, key) for key in QUEUE_NUMBERS})
    return keep_key(data, "extension")


def queue_values(queue: QueueSettings | None) -> Values:
    if queue is None:  # the model's defaults
        defaults = queue_values(QueueSettings(extension="00", name="-", members=[]))
        return {**defaults, "extension": "", "name": ""}
    values: Values = {
        "extension": queue.extension,
        "name": queue.name,
        "members": members_text(queue),
        "strategy": queue.strategy,
        "overflow": queue.overflow,
        "join_empty": "on" if queue.join_empty else "",
        "music": queue.music,
        "announce_wait": "on" if queue.announce_wait else "",
        "leave_message": queue.leave_message or "",
    }
    return values | {key: str(getattr(queue, key)) for key in QUEUE_NUMBERS}


def ivr_patch(form: FormData) -> dict[str, Any]:
    """The main menu's fields (sub-menus, after-hours and rules are kept as they are)."""
    try:
        return _ivr_patch(form)
    except EditError as exc:
        raise EditError([FieldError(model_path(e.field), e.message) for e in exc.errors]) from None


def _ivr_patch(form: FormData) -> dict[str, Any]:
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


# -- what the forms show -------------------------------------------------------------------
# Every console form renders from ``values``: field name -> the text in the input. A GET
# builds them from the item (``*_values``); a refused POST shows what was typed
# (:func:`posted`), so an error never costs the user their input.

Values = dict[str, str]

# the words a person reads for the configuration's enum values (which stay the options'
# values, so what is posted is unchanged)
CHOICES: dict[str, tuple[tuple[str, str], ...]] = {
    "permission": (
        ("internal", "Extensions only"),
        ("emergency", "Emergency numbers"),
        ("national", "National numbers"),
        ("international", "International numbers"),
    ),
    "kind": (
        ("user", "Person with phones"),
        ("virtual", "Virtual (no phone: forwarding and voicemail)"),
        ("message_only", "Message only (greeting, then voicemail)"),
    ),
    "dnd": (
        ("off", "Off"),
        ("no_queue", "Not for ring groups"),
        ("all", "On: everything to voicemail"),
    ),
    "screening": (
        ("off", "Off"),
        ("unknown", "Callers who are not colleagues"),
        ("all", "Every caller"),
    ),
    "caller_hears": (("ringback", "Ringing"), ("music", "Hold music")),
    "dial_by": (("last", "Last name"), ("first", "First name")),
    "strategy": (
        ("rotating", "In turn (round robin)"),
        ("simultaneous", "All free agents together"),
        ("fixed_order", "In the listed order"),
        ("longest_idle", "The agent idle the longest"),
        ("fewest_calls", "The agent with the fewest calls today"),
    ),
}


def label(value: Any, field: str) -> str:
    """The words for ``value`` of ``field`` (itself when it has none)."""
    return dict(CHOICES.get(field, ())).get(str(value), str(value))


# what a field holds, for the model's "String should match pattern '^...$'" (a regular
# expression is no help to a person), by the field's last name
PATTERN_HINTS = {
    "extension": "2 to 8 digits",
    "inbound_extension": "2 to 8 digits",
    "pin": "4 to 12 digits",
    "caller_id": "a number such as +33123456789",
    "number": "a number such as +33612345678",
    "username": "letters, digits, '.', '_' or '-'",
    "name": "1 to 32 letters, digits, '_' or '-'",
    "proxy": "an address starting with sip: or sips:",
    "overflow": "an extension, voicemail:101, an outside number or hangup",
    "leave_message": "an extension, voicemail:101, an outside number or hangup",
    **{day: "a range such as 09:00-12:00" for day in DAYS},
}


def humane(message: str, field: str) -> str:
    """A model's message about ``field`` as a person reads it."""
    if not message.startswith("String should match pattern"):
        return message
    last = re.sub(r"\[\d+\]", "", field).rpartition(".")[2]
    hint = PATTERN_HINTS.get(last)
    return f"expected {hint}" if hint else "not in the expected form"


def part(rest: str) -> str:
    """The part of a field an error is about, as a person counts: ``[0].targets[1]`` is
    ``#1 targets #2``."""
    words = re.sub(r"\[(\d+)\]", lambda m: f" #{int(m[1]) + 1} ", rest).replace(".", " ")
    return " ".join(words.split())


def when(value: float | str | None) -> str:
    """One format for every time the console shows: ``2026-12-07 10:37:40`` (UTC, as
    the call history's CSV and API are)."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
    else:
        moment = datetime.fromtimestamp(value, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def clock(seconds: float | None) -> str:
    """A wait as the wallboard shows it: ``0:42``, ``12:05``, ``1:02:05`` (None: ``-``)."""
    if seconds is None:
        return "-"
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def percent(fraction: float | None) -> str:
    """A share as the wallboard shows it: ``95 %`` (None, nothing to count yet: ``-``)."""
    return "-" if fraction is None else f"{round(100 * fraction)} %"


def posted(form: FormData) -> Values:
    """The form's text fields as typed, to show again; control characters escaped (one
    was refused, and would not survive the page either)."""
    out: Values = {}
    for key, value in form.multi_items():
        if isinstance(value, str) and key != "csrf":
            out[shown(key)] = CONTROL_IN_LINES.sub(lambda m: ascii(m.group())[1:-1], value)
    return out


def user_values(user: User | None) -> Values:
    """The user form's fields for ``user`` (None: a new user's defaults). The phone
    password, the PIN and the devices' passwords are left out: the page reveals them on
    demand, and an empty one is kept as it is (:func:`keep_secrets`)."""
    if user is None:  # the model's defaults, the four fields it requires empty
        defaults = user_values(User(extension="00", name="-", password="-" * 8, pin="0000"))
        return {**defaults, "extension": "", "name": ""}
    forward = user.forward
    values: Values = {
        "extension": user.extension,
        "name": user.name,
        "permission": user.permission,
        "kind": user.kind,
        "caller_id": user.caller_id or "",
        "dnd": user.dnd,
        "screening": user.screening,
        "voicemail": "on" if user.voicemail else "",
        "hold_music": user.hold_music,
        "blocked": " ".join(user.blocked),
        "forward_busy": forward.busy or "",
        "forward_no_answer": forward.no_answer or "",
        "forward_no_answer_after": str(forward.no_answer_after),
        "forward_unreachable": forward.unreachable or "",
        "forward_steps": steps_text(forward.steps),
        "forward_connecting_message": forward.connecting_message or "",
        "forward_confirm_external": "on" if forward.confirm_external else "",
        "in_hours": str(user.in_hours),
        "after_hours": str(user.after_hours),
    }
    devices, rules = user_rows(user)
    for i, device in enumerate(devices):
        for key in ("name", "username", "number", "flip"):
            values[f"device_{i}_{key}"] = str(device.get(key) or "")
    for i, rule in enumerate(rules):
        for key in ("name", "caller", "called", "weekly", "dates", "action"):
            values[f"rule_{i}_{key}"] = str(rule.get(key) or "")
    values["device_rows"], values["rule_rows"] = str(len(devices)), str(len(rules))
    return values


def user_secrets(user: User) -> Values:
    """What the page's Show button reveals: field name -> secret."""
    found = {"password": user.password, "pin": user.pin}
    for i, device in enumerate(user.devices):
        if device.password is not None:
            found[f"device_{i}_password"] = device.password
    return found


def keep_secrets(patch: dict[str, Any], user: User) -> dict[str, Any]:
    """An edit's patch with the secrets left empty kept as they are: the phone password,
    the PIN, and each device's password and what the form does not show of it (matched
    by login or number)."""
    patch = dict(patch)
    for key in ("password", "pin"):
        if patch.get(key) is None:
            patch.pop(key, None)
    if patch.get("devices"):
        old = {d.username or d.number: d.model_dump(exclude_none=True) for d in user.devices}
        devices = []
        for device in patch["devices"]:
            before = old.get(device.get("username") or device.get("number"), {})
            # the flip is in the form (emptied: none); the rest is kept unless typed
            devices.append({**{k: v for k, v in before.items() if k != "flip"}, **device})
        patch["devices"] = devices
    return patch


def group_values(group: RingGroup | None) -> Values:
    if group is None:
        return {"steps": "", "no_answer": "hangup", "caller_hears": "ringback"}
    return {
        "extension": group.extension,
        "name": group.name,
        "steps": steps_text(group.steps),
        "no_answer": str(group.no_answer),
        "caller_hears": group.caller_hears,
        "permission": group.permission,
        "confirm_external": "on" if group.confirm_external else "",
    }


def ivr_values(menu: Receptionist | None) -> Values:
    if menu is None:
        return {"default": "hangup", "timeout": "5", "retries": "3", "dial_by": "last"}
    values: Values = {
        "extension": menu.extension,
        "name": menu.name,
        "greeting": str(menu.greeting),
        "dial_extension": "on" if menu.dial_extension else "",
        "default": str(menu.default),
        "timeout": f"{menu.timeout:g}",
        "retries": str(menu.retries),
        "dial_by": menu.dial_by,
    }
    return values | {f"key_{k}": v for k, v in menu.keys.items()}


def trunk_values(trunk: Trunk | None) -> Values:
    return {k: "" if v is None else str(v) for k, v in trunk_form(trunk).items()} | (
        {"register": "on" if trunk and trunk.registers else ""}
    )
