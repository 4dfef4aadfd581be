"""Destinations as data, pure: what a configured destination string means.

A destination names where a call goes; the dialplan resolves it through the numbers and
destination kinds that features register (:mod:`softswitch.plugins`):

- ``101``, ``600``, ``800``, ``*97``: a number of the dialplan (an extension, a ring
  group, the bridge, a feature code); ``ext:101`` is the same as ``101``;
- ``voicemail`` (the mailbox of the user whose rule this is) or ``voicemail:100``;
- ``tel:+33612345678`` or a bare number the dialplan classifies as external;
- ``hangup``; and ``kind:value`` for kinds that other features register.

External numbers are classified emergency / national / international by the
``[dialplan]`` patterns; emergency numbers are allowed to every authenticated user.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .config import PERMISSION_RANK, Config


@dataclass(frozen=True, slots=True)
class Destination:
    kind: str  # "number", "voicemail", "tel", "hangup", or a feature's kind
    value: str = ""

    def __str__(self) -> str:
        if self.kind == "number":
            return self.value
        return f"{self.kind}:{self.value}" if self.value else self.kind


def parse_destination(text: str) -> Destination:
    text = text.strip()
    if text in ("hangup", "voicemail"):
        return Destination(text)
    kind, sep, value = text.partition(":")
    if not sep:
        return Destination("number", text)
    if kind == "ext":
        return Destination("number", value)
    return Destination(kind, value)


def classify(number: str, config: Config) -> str | None:
    """emergency / international / national, or None for a number that is not external."""
    plan = config.dialplan
    number = number.removeprefix("tel:")
    if number in plan.emergency:
        return "emergency"
    if re.fullmatch(plan.international, number):
        return "international"
    if re.fullmatch(plan.national, number):
        return "national"
    return None


def permitted(kind: str, permission: str) -> bool:
    """May a caller with ``permission`` call a number of ``kind``?"""
    return kind == "emergency" or PERMISSION_RANK[permission] >= PERMISSION_RANK[kind]
