"""Where a dialled number goes: the dialplan, pure (config in, decision out).

Order: feature codes (voicemail access), the conference bridge, users' extensions,
then external numbers, classified emergency / national / international and allowed by
the caller's permission. Emergency numbers are allowed to every authenticated user.
Unauthenticated callers never reach a trunk (toll fraud).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .config import PERMISSION_RANK, Config, User


@dataclass(frozen=True, slots=True)
class ToUser:
    user: User


@dataclass(frozen=True, slots=True)
class ToVoicemailAccess:
    mailbox: str | None  # None: ask for it


@dataclass(frozen=True, slots=True)
class ToConference:
    pass


@dataclass(frozen=True, slots=True)
class ToExternal:
    number: str
    kind: str  # emergency / national / international


@dataclass(frozen=True, slots=True)
class Refused:
    status: int
    reason: str


Route = ToUser | ToVoicemailAccess | ToConference | ToExternal | Refused


def classify(number: str, config: Config) -> str | None:
    plan = config.dialplan
    if number in plan.emergency:
        return "emergency"
    if re.fullmatch(plan.international, number):
        return "international"
    if re.fullmatch(plan.national, number):
        return "national"
    return None


def route(dialled: str, caller: User | None, config: Config) -> Route:
    """Route ``dialled`` for ``caller`` (None: not a local user, e.g. the trunk)."""
    features = config.features
    if dialled == features.voicemail_access:
        if caller is None:
            return Refused(403, "Forbidden (voicemail access needs a local user)")
        return ToVoicemailAccess(caller.extension)
    if dialled == features.voicemail_any:
        return ToVoicemailAccess(None)
    if features.conference_bridge is not None and dialled == features.conference_bridge:
        return ToConference()
    user = config.user(dialled)
    if user is not None:
        return ToUser(user)
    kind = classify(dialled, config)
    if kind is None:
        return Refused(404, "Not Found")
    if caller is None:
        return Refused(403, "Forbidden (external calls need an authenticated user)")
    if kind != "emergency" and PERMISSION_RANK[caller.permission] < PERMISSION_RANK[kind]:
        return Refused(403, f"Forbidden ({kind} calls not permitted)")
    if not config.trunks:
        return Refused(503, "Service Unavailable (no trunk)")
    return ToExternal(dialled, kind)
