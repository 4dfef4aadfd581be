"""``[[queues]]``: what a call queue is configured with (validated, no I/O)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_serializer, field_validator

from ...config import Extension, Handling, Target
from ...model import Strict
from ...rules import Rule
from .machine import Strategy

MAX_MEMBERS = 100


class QueueMember(Strict):
    extension: Extension
    penalty: int = Field(0, ge=0, le=9)  # a higher tier rings only when no lower one is free


class CallerPriority(Strict):
    """Callers whose number matches (a number, a prefix ending in ``*``, ``anonymous``)
    wait ahead of those of a lower priority."""

    caller: str = Field(pattern=r"^(anonymous|\+?[0-9]{1,20}\*?)$")
    priority: int = Field(1, ge=1, le=9)


class QueueSettings(Strict):
    extension: Extension
    name: str = Field(min_length=1, max_length=64)
    # extensions of users, or {extension, penalty} tables
    members: list[QueueMember] = Field(min_length=0, max_length=MAX_MEMBERS)
    strategy: Strategy = "rotating"
    ring_seconds: int = Field(15, ge=5, le=120)  # per offer
    wrap_up_seconds: int = Field(0, ge=0, le=600)  # after a queue call, before the next
    retry_seconds: int = Field(5, ge=0, le=120)  # an agent that let an offer ring out rests
    max_callers: int = Field(0, ge=0, le=1000)  # 0: no limit
    max_wait_seconds: int = Field(0, ge=0, le=86400)  # 0: wait as long as it takes
    # where a caller goes when it waited max_wait_seconds, the queue is full, or (with
    # join_empty off) nobody is logged in
    overflow: Target = "hangup"
    join_empty: bool = True  # wait even when no member is logged in
    music: str = "default"  # the [hold_music] slot callers hear
    # said once on entering: text (spoken) or an audio file; unset: the built-in greeting,
    # "" for none
    greeting: str | None = Field(None, max_length=2000)
    announce_position_seconds: int = Field(30, ge=0, le=600)  # 0: never
    announce_wait: bool = True  # the estimated wait with the position
    # pressing 1 while waiting sends the caller there (e.g. the queue's voicemail)
    leave_message: Target | None = None
    priorities: list[CallerPriority] = Field([], max_length=50)
    service_level_seconds: int = Field(30, ge=5, le=600)  # the wallboard's target
    rules: list[Rule] = []  # first match wins, before the hours
    in_hours: Handling = "ring"
    after_hours: Handling = "ring"

    @field_validator("members", mode="before")
    @classmethod
    def _tables(cls, members: object) -> object:
        """A member is an extension or an {extension, penalty} table: one form, so that a
        mistake gets one error naming the member, not one per form it could have had."""
        if isinstance(members, list):
            return [{"extension": m} if isinstance(m, str) else m for m in members]
        return members

    @field_validator("members")
    @classmethod
    def _unique(cls, members: list[QueueMember]) -> list[QueueMember]:
        seen: set[str] = set()
        for member in members:
            if member.extension in seen:
                raise ValueError(f"{member.extension} is listed twice")
            seen.add(member.extension)
        return members

    @field_serializer("members")
    def _compact(self, members: list[QueueMember]) -> list[str | dict[str, Any]]:
        """Written back as it is usually typed: an extension, a table when it has a penalty."""
        return [m.extension if not m.penalty else m.model_dump() for m in members]

    def member_list(self) -> list[QueueMember]:
        return list(self.members)
