"""Extensions: a call to a user rings its devices, then its forwarding steps, then its
busy / no-answer / unreachable rules; do-not-disturb sends everything to voicemail.

Every rule is a destination of the dialplan, so "send this call to X" re-enters it:
forwarding to another extension follows that user's own rules, to a ring group rings the
group, to an external number goes through the trunk on behalf of the forwarding user.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from ..config import Step, User
from ..feature import BaseFeature, Dial, Failed, Handler, Outcome, Target

log = logging.getLogger("softswitch")
STATUS = {"busy": 486, "noanswer": 480, "unreachable": 480}


class Extensions(BaseFeature):
    name = "extensions"

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

    def steps(self, user: User) -> list[Step]:
        """The ring sequence: the user's devices first unless a step names them."""
        fw = user.forward
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
        if user.dnd == "all":
            log.info("event=dnd user=%s", user.extension)
            return await self.apply_rule(
                dial, user, "voicemail" if user.voicemail else None, "busy"
            )
        outcome = "unreachable"
        for step in self.steps(user):
            targets = [
                Target("user", t.removeprefix("ext:"))
                if t.removeprefix("ext:") == user.extension
                else svc.target(t, permission=user.permission)
                for t in step.targets
            ]
            result = await svc.ring(dial.party, targets, step.ring_seconds)
            log.info(
                "event=ring_outcome callee=%s step=%s outcome=%s",
                user.extension,
                ",".join(step.targets),
                result.outcome,
            )
            if result.outcome == "answered" and result.party is not None:
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

    async def apply_rule(self, dial: Dial, user: User, rule: str | None, outcome: str) -> Outcome:
        status = STATUS[outcome]
        if rule is None or rule == "hangup" or (rule == "voicemail" and not user.voicemail):
            return Failed(status, outcome)
        log.info("event=forward from=%s to=%s reason=%s", user.extension, rule, outcome)
        result = await self.services.send_on(dial, rule, on_behalf=user)
        if isinstance(result, Failed) and result.cause == "refused":
            return Failed(status, outcome, result.reason)
        return result
