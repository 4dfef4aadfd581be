"""Extensions: what happens to a call for a user.

In order: the user's own block list (the caller hears the blocking message); do not
disturb (everything to voicemail); the user's rules (first match wins) and its in-hours /
after-hours handling; call screening (the caller says its name, the user hears it and
presses 1 to accept or 2 for voicemail); then the user's devices ring, then its
forwarding steps ("ring my devices, then these numbers"; an external number that answers
may have to press 1 first), then the busy / no-answer / unreachable rules. Every rule is a
destination of the dialplan, so "send this call to X" re-enters it: another extension
follows that user's own rules, a ring group rings the group, an external number goes
through the trunk on behalf of the forwarding user.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np

from ivr import Prompt
from media.resample import resample
from media.tones import tone

from ..calls import Party
from ..config import Step, User
from ..feature import BaseFeature, Dial, Done, Failed, Handler, Outcome, Target
from ..prompts import configured
from ..rules import conflicts
from ..services import RingResult

log = logging.getLogger("softswitch")
STATUS = {"busy": 486, "noanswer": 480, "unreachable": 480}
NAME_SECONDS = 3.0  # a screened caller's name


class Extensions(BaseFeature):
    name = "extensions"

    def __post_init__(self) -> None:
        for i, user in enumerate(self.config.users):
            message = user.forward.connecting_message
            if message is not None:
                try:
                    configured(message, self.config)
                except ValueError as exc:
                    raise ValueError(f"users[{i}].forward.connecting_message: {exc}") from None

    def numbers(self) -> Mapping[str, Handler]:
        return {user.extension: self.call_user for user in self.config.users}

    def destinations(self) -> Iterable[tuple[str, str, User | None]]:
        for i, user in enumerate(self.config.users):
            fw = user.forward
            for key in ("busy", "no_answer", "unreachable"):
                value = getattr(fw, key)
                if value is not None:
                    yield f"users[{i}].forward.{key}", value, user
            for j, step in enumerate(fw.steps):
                for k, target in enumerate(step.targets):
                    yield f"users[{i}].forward.steps[{j}].targets[{k}]", target, user
            for key in ("in_hours", "after_hours"):
                if getattr(user, key) != "ring":
                    yield f"users[{i}].{key}", getattr(user, key), user
            for j, rule in enumerate(user.rules):
                if rule.action != "ring":
                    yield f"users[{i}].rules[{j}].action", rule.action, user

    def warnings(self) -> Iterable[str]:
        for i, user in enumerate(self.config.users):
            for conflict in conflicts(user.rules):
                yield f"users[{i}] ({user.extension}): {conflict}"

    def steps(self, user: User) -> list[Step]:
        """The ring sequence: the user's devices first unless a step names them (a
        virtual extension has none: only its steps)."""
        fw = user.forward
        if user.kind == "virtual":
            return [
                Step(targets=kept, ring_seconds=s.ring_seconds)
                for s in fw.steps
                if (kept := [t for t in s.targets if t.removeprefix("ext:") != user.extension])
            ]
        own = Step(
            targets=[user.extension], ring_seconds=fw.no_answer_after if fw.no_answer else 120
        )
        if not fw.steps:
            return [own]
        named = any(t.removeprefix("ext:") == user.extension for s in fw.steps for t in s.targets)
        return fw.steps if named else [own, *fw.steps]

    async def call_user(self, dial: Dial) -> Outcome:
        svc = self.services
        user = svc.user(dial.target)
        if user is None:
            return Failed(404, "refused", "Not Found")
        if user.blocked and svc.refuse_blocked is not None:
            refused = await svc.refuse_blocked(dial, list(user.blocked), user.extension)
            if refused is not None:
                return refused
        if user.kind == "message_only":  # an information line: its greeting, a message
            return await svc.send_on(dial, "voicemail", on_behalf=user)
        if user.dnd == "all":
            log.info("event=dnd user=%s", user.extension)
            return await self.apply_rule(
                dial, user, "voicemail" if user.voicemail else None, "busy"
            )
        action = svc.handling(dial, list(user.rules), user.in_hours, user.after_hours)
        if action != "ring":
            return await self.forward(dial, user, action)
        name: np.ndarray | None = None
        if user.screening == "all" or (user.screening == "unknown" and dial.caller is None):
            name = await self.screened_name(dial.party)
            if name is None:
                return Done()  # the caller hung up
        outcome = "unreachable"
        called = dial.called or dial.target
        shown = (called, called) if called != user.extension else None
        for step in self.steps(user):
            targets = [
                Target("user", t.removeprefix("ext:"), shown=shown)
                if t.removeprefix("ext:") == user.extension
                else svc.target(t, permission=user.permission)
                for t in step.targets
            ]
            result = await svc.ring(dial.party, targets, step.ring_seconds)
            log.debug(
                "event=ring_outcome callee=%s step=%s outcome=%s",
                user.extension,
                ",".join(step.targets),
                result.outcome,
            )
            if result.outcome == "answered" and result.party is not None:
                if not await self.accepted(result, user):
                    outcome = "noanswer"  # a mobile's voicemail, or nobody pressed 1
                    continue
                if name is not None:
                    return await self.offer_screened(dial, user, result.party, name)
                return await svc.connect(dial.party, result.party)
            if result.outcome == "cancelled":
                return Failed(487, "cancelled")
            own = any(t.kind == "user" and t.value == user.extension for t in targets)
            if result.outcome == "busy" and own:
                outcome = "busy"  # the user's own phone says busy: the busy rule, now
                break
            if result.outcome == "noanswer":
                outcome = "noanswer"
        fw = user.forward
        rule = {"busy": fw.busy, "noanswer": fw.no_answer, "unreachable": fw.unreachable}[outcome]
        return await self.apply_rule(dial, user, rule, outcome)

    async def accepted(self, result: RingResult, user: User) -> bool:
        """An external number must press 1 first, or type the user's answer PIN, when
        the user asks for it."""
        callee = result.party
        assert callee is not None
        fw = user.forward
        if callee.user is not None or not (fw.confirm_external or fw.answer_pin):
            return True
        svc = self.services
        if fw.answer_pin is not None:
            ok = await svc.ask_pin(callee, user.name, fw.answer_pin)
        else:
            ok = await svc.confirm(callee, user.name)
        if ok:
            return True
        await callee.call.hangup()
        return False

    async def apply_rule(self, dial: Dial, user: User, rule: str | None, outcome: str) -> Outcome:
        status = STATUS[outcome]
        if rule is None or rule == "hangup" or (rule == "voicemail" and not user.voicemail):
            return Failed(status, outcome)
        log.info("event=forward from=%s to=%s reason=%s", user.extension, rule, outcome)
        result = await self.forward(dial, user, rule)
        if isinstance(result, Failed) and result.cause == "refused":
            return Failed(status, outcome, result.reason)
        return result

    async def forward(self, dial: Dial, user: User, destination: str) -> Outcome:
        """Send the call on (with the connecting message first, when there is one)."""
        svc = self.services
        message = user.forward.connecting_message
        plain = destination.startswith(("voicemail", "announce:", "hangup"))
        if message and not plain and await svc.answer(dial.party):
            await svc.prompts.say(dial.party.leg, configured(message, self.config))
        return await svc.send_on(dial, destination, on_behalf=user)

    # -- call screening ------------------------------------------------------------------

    async def screened_name(self, caller: Party) -> np.ndarray | None:
        """Ask the caller its name and record it; then it hears music while we ring."""
        svc = self.services
        if not await svc.answer(caller):
            return None
        leg = caller.leg
        leg.listen_dtmf = True  # its keys are not for the callee
        await svc.prompts.say(leg, Prompt("builtin", "screen-say-name"))
        await leg.play_samples(tone("beep", svc.engine.country, leg.rate)[0])
        name = await svc.record(caller, NAME_SECONDS)
        if caller.ended:
            return None
        leg.listen_dtmf = False
        leg.source = svc.music("default") if svc.music is not None else svc.ringback()
        log.info("event=screening caller=%s seconds=%.1f", caller.label, len(name) / leg.rate)
        return resample(name, leg.rate, 8000)

    async def offer_screened(
        self, dial: Dial, user: User, callee: Party, name: np.ndarray
    ) -> Outcome:
        """The user hears who calls: 1 takes the call, 2 (or nothing) sends it to voicemail."""
        svc = self.services
        rate = callee.leg.rate
        prompt = np.concatenate(
            [
                svc.prompts.samples(Prompt("builtin", "screen-call-from"), rate),
                resample(name, 8000, rate),
                svc.prompts.samples(Prompt("builtin", "screen-choice"), rate),
            ]
        )
        key = await svc.ask_key(callee, prompt, "12")
        log.info("event=screened user=%s key=%s", user.extension, key)
        if key == "1":
            return await svc.connect(dial.party, callee)
        await callee.call.hangup()
        return await self.apply_rule(dial, user, "voicemail", "noanswer")
