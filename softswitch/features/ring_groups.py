"""Ring groups: a number that rings a list of steps, each step's targets together.

A group has its own extension and name, and steps run in order: every target of a step
rings for the step's ``ring_seconds`` (simultaneous ringing is one step, sequential is one
target per step). Targets are extensions (all of that user's devices ring; a member busy
on another call is skipped) or external numbers (through the trunk, when the group's
``permission`` allows it); other ring groups are refused, so groups cannot loop. At most
10 targets in all. When every step is exhausted the call goes to ``no_answer``, any
destination. The caller hears ringback, or music (``caller_hears = "music"``) as early media.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Literal

from pydantic import Field, field_validator

import sip

from ..config import Extension, Handling, Permission, Step, Target, User, check_steps
from ..dialplan import classify
from ..feature import BaseFeature, Dial, Failed, Handler, Outcome
from ..model import Strict
from ..rules import Rule, conflicts

log = logging.getLogger("softswitch")


class RingGroup(Strict):
    extension: Extension
    name: str = Field(min_length=1, max_length=64)
    steps: list[Step] = Field(min_length=1)
    no_answer: Target = "hangup"
    caller_hears: Literal["ringback", "music"] = "ringback"
    music: str = "default"  # the [hold_music] slot when caller_hears = "music"
    permission: Permission = "internal"  # for external targets
    caller_id: str | None = Field(None, pattern=r"^\+?[0-9]{3,20}$")  # shown on external legs
    confirm_external: bool = False  # an external member presses 1 to take the call
    rules: list[Rule] = []  # first match wins, before the hours
    in_hours: Handling = "ring"
    after_hours: Handling = "ring"

    _steps = field_validator("steps")(check_steps)


class RingGroups(BaseFeature):
    name = "ring_groups"
    section = "ring_groups"
    config_model = list[RingGroup]

    def __post_init__(self) -> None:
        groups: list[RingGroup] = self.settings() or []
        self.groups = {g.extension: g for g in groups}
        for i, group in enumerate(groups):
            if group.music != "default" and group.music not in self.config.hold_music:
                raise ValueError(f"ring_groups[{i}].music: no slot {group.music!r} in [hold_music]")
            for j, step in enumerate(group.steps):
                for k, target in enumerate(step.targets):
                    error = self._target_error(target.removeprefix("ext:"))
                    if error:
                        raise ValueError(f"ring_groups[{i}].steps[{j}].targets[{k}]: {error}")

    def _target_error(self, target: str) -> str | None:
        if target in self.groups:
            return f"{target} is a ring group; a group rings extensions and numbers (no loops)"
        if self.config.user(target) is not None:
            return None
        if target.startswith("tel:") or classify(target, self.config) is not None:
            return None
        return f"{target} is neither an extension nor an external number"

    def numbers(self) -> Mapping[str, Handler]:
        return {extension: self.call_group for extension in self.groups}

    def destinations(self) -> Iterable[tuple[str, str, User | None]]:
        for i, group in enumerate(self.groups.values()):
            yield f"ring_groups[{i}].no_answer", group.no_answer, None
            for key in ("in_hours", "after_hours"):
                if getattr(group, key) != "ring":
                    yield f"ring_groups[{i}].{key}", getattr(group, key), None
            for j, rule in enumerate(group.rules):
                if rule.action != "ring":
                    yield f"ring_groups[{i}].rules[{j}].action", rule.action, None

    def warnings(self) -> Iterable[str]:
        for i, group in enumerate(self.groups.values()):
            for conflict in conflicts(group.rules):
                yield f"ring_groups[{i}] ({group.extension}): {conflict}"

    async def call_group(self, dial: Dial) -> Outcome:
        svc = self.services
        group = self.groups[dial.target]
        party = dial.party
        log.info("event=ring_group group=%s name=%r", group.extension, group.name)
        action = svc.handling(dial, list(group.rules), group.in_hours, group.after_hours)
        if action != "ring":
            return await svc.send_on(dial, action)
        if group.caller_hears == "music" and svc.music is not None:
            svc.early_media(party, svc.music(group.music))
        elif party.call.state is sip.CallState.ESTABLISHED:
            party.leg.source = svc.ringback()  # a transferee: no phone rings back for it
        for number, step in enumerate(group.steps, 1):
            targets = [
                replace(
                    svc.target(t, permission=group.permission, caller_id=group.caller_id),
                    shown=(group.name, group.extension),
                )
                for t in step.targets
            ]
            result = await svc.ring(party, targets, step.ring_seconds, skip_busy=True)
            log.info(
                "event=ring_group_step group=%s step=%d outcome=%s",
                group.extension,
                number,
                result.outcome,
            )
            if result.outcome == "answered" and result.party is not None:
                callee = result.party
                external = callee.user is None and group.confirm_external
                if external and not await svc.confirm(callee, group.name):
                    await callee.call.hangup()
                    continue  # nobody pressed 1: the next step
                return await svc.connect(party, callee)
            if result.outcome == "cancelled":
                return Failed(487, "cancelled")
        log.info("event=ring_group_exhausted group=%s to=%s", group.extension, group.no_answer)
        return await svc.send_on(dial, group.no_answer)
