"""Call pickup: answer from your phone a call that rings someone else's.

- Directed: ``*8`` + extension (``*8101``) takes a call ringing at 101's devices.
- BLF key: a Polycom whose busy-lamp key shows 101 ringing sends an INVITE with
  ``Replaces: <call-id>;to-tag=..;from-tag=..;early-only`` naming the early dialog that the
  dialog package told it about (RFC 3891); the PBX takes that very call.
- Group: ``*8`` alone takes a call ringing at a member of one of the caller's pickup
  groups (``[[pickup.groups]]``), the longest-ringing first.

The picker is answered, the forks that rang get CANCEL, and the caller's destination
bridges the caller with the picker as if the picker's phone had answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping

from pydantic import Field, field_validator

import sip

from ..calls import Party
from ..config import Extension, User
from ..feature import BaseFeature, CallCheck, Connected, Dial, Done, Failed, Handler, Outcome
from ..model import Strict
from ..services import Ringing, Services

log = logging.getLogger("softswitch")
BRIDGE_WAIT = 5.0  # seconds for the caller's side to bridge a picked call


class PickupGroup(Strict):
    name: str = Field(min_length=1, max_length=64)
    members: list[Extension] = Field(min_length=1, max_length=100)


class PickupSettings(Strict):
    code: str = Field("*8", pattern=r"^\*[0-9]{1,3}$")
    directed: bool = True  # code + extension, and INVITE with Replaces (BLF keys)
    groups: list[PickupGroup] = []

    @field_validator("groups")
    @classmethod
    def _names(cls, groups: list[PickupGroup]) -> list[PickupGroup]:
        names = [g.name for g in groups]
        if len(names) != len(set(names)):
            raise ValueError("two pickup groups have the same name")
        return groups


def parse_replaces(value: str) -> tuple[str, set[str], bool] | None:
    """``call-id;to-tag=a;from-tag=b;early-only`` -> (call-id, {a, b}, early-only)."""
    call_id, *params = [p.strip() for p in value.split(";")]
    tags: dict[str, str] = {}
    early_only = False
    for param in params:
        name, _, val = param.partition("=")
        if name.lower() in ("to-tag", "from-tag"):
            tags[name.lower()] = val
        elif name.lower() == "early-only":
            early_only = True
    if not call_id or len(tags) != 2:
        return None
    return call_id, set(tags.values()), early_only


class Pickup(BaseFeature):
    name = "pickup"
    section = "pickup"
    config_model = PickupSettings

    def __post_init__(self) -> None:
        options = self.options
        for i, group in enumerate(options.groups):
            for j, member in enumerate(group.members):
                if self.config.user(member) is None:
                    raise ValueError(f"pickup.groups[{i}].members[{j}]: no extension {member}")

    @property
    def options(self) -> PickupSettings:
        settings: PickupSettings | None = self.settings()
        return settings or PickupSettings()

    def numbers(self) -> Mapping[str, Handler]:
        code = self.options.code
        table: dict[str, Handler] = {code: self.group_pickup}
        if self.options.directed:
            table.update({code + u.extension: self.directed for u in self.config.users})
        return table

    async def start(self, svc: Services) -> None:
        await super().start(svc)
        if self.options.directed:
            svc.ua.supported.add("replaces")  # INVITEs that Require it are ours to take

    async def resume(self, old: object, svc: Services) -> None:
        await self.start(svc)  # what start() sets follows the new settings

    def call_checks(self) -> Iterable[CallCheck]:
        return (self.replaces,) if self.options.directed else ()

    # -- the three ways in ------------------------------------------------------------------

    async def directed(self, dial: Dial) -> Outcome:
        user = self.services.user(dial.target.removeprefix(self.options.code))
        if dial.caller is None or user is None:
            return Failed(403, "refused", "Forbidden (pickup is for local users)")
        return await self.take(dial, lambda ringing: bool(ringing.at(user)))

    async def group_pickup(self, dial: Dial) -> Outcome:
        caller = dial.caller
        if caller is None:
            return Failed(403, "refused", "Forbidden (pickup is for local users)")
        mates = {
            m
            for g in self.options.groups
            if caller.extension in g.members
            for m in g.members
            if m != caller.extension
        }
        if not mates:
            return Failed(403, "refused", "Forbidden (not in a pickup group)")

        def in_group(ringing: Ringing) -> bool:
            return any(p.user is not None and p.user.extension in mates for p in ringing.forks)

        return await self.take(dial, in_group)

    async def replaces(self, dial: Dial) -> Outcome | None:
        """The call check for INVITEs with Replaces: an early dialog of ours is picked up."""
        call = dial.party.call
        value = call.invite.headers.get("Replaces")
        if value is None or not isinstance(call, sip.IncomingCall):
            return None
        parsed = parse_replaces(value)
        if parsed is None:
            return Failed(400, "refused", "Bad Request (Replaces)")
        if dial.caller is None:
            return Failed(403, "refused", "Forbidden (pickup is for local users)")
        call_id, tags, _ = parsed

        def named(ringing: Ringing) -> bool:
            return any(
                p.call.call_id == call_id
                and p.call.dialog is not None
                and {p.call.dialog.local_tag, p.call.dialog.remote_tag} == tags
                for p in ringing.forks
            )

        outcome = await self.take(dial, named)
        if isinstance(outcome, Failed) and outcome.status == 480:
            return Failed(481, "refused", "Call/Transaction Does Not Exist (no such early dialog)")
        return outcome

    # -- taking the call --------------------------------------------------------------------

    async def take(self, dial: Dial, wanted: Callable[[Ringing], bool]) -> Outcome:
        svc = self.services
        picker = dial.party
        found = next((r for r in list(svc.ringing) if r.caller is not picker and wanted(r)), None)
        if found is None:
            return Failed(480, "refused", "Temporarily Unavailable (nothing to pick up)")
        if not await svc.answer(picker):
            return Done()
        if not svc.pick(found, picker):  # answered or abandoned meanwhile
            log.info("event=pickup_missed picker=%s", picker.label)
            return Done()
        log.info("event=pickup picker=%s caller=%s", picker.label, found.caller.label)
        if await self._bridged(picker):
            return Connected()
        return Done()

    @staticmethod
    async def _bridged(picker: Party) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BRIDGE_WAIT
        while picker.peer is None and not picker.ended and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return picker.peer is not None


def pickup_groups_of(settings: PickupSettings, user: User) -> list[str]:
    """The names of the pickup groups ``user`` belongs to."""
    return [g.name for g in settings.groups if user.extension in g.members]
