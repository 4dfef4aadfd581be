"""Intercom: ``*85`` + extension rings the callee's phones with the auto-answer headers,
so that they answer at once on the speaker.

Both common signals go in the INVITE: ``Alert-Info: <...>;info=alert-autoanswer``
(Polycom maps it to its ``autoAnswer`` ring class with ``voIpProt.SIP.alertInfo.1.*``,
which provisioning writes) and ``Call-Info: <...>;answer-after=0`` (RFC 5373 style;
baresip, Yealink, Snom and others honour it). Only the users in ``[intercom] allowed``
may page (others get 403); a callee already on a call is not interrupted (486).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from pydantic import Field

from ..config import Extension
from ..feature import BaseFeature, Dial, Failed, Handler, Outcome, Target
from ..model import Strict

log = logging.getLogger("softswitch")
ALERT_INFO_VALUE = "alert-autoanswer"  # what voIpProt.SIP.alertInfo.1.value matches


class IntercomSettings(Strict):
    code: str = Field("*85", pattern=r"^\*[0-9]{1,3}$")
    allowed: list[Extension] = []  # who may page
    ring_seconds: int = Field(10, ge=2, le=60)  # a phone that does not auto-answer


def auto_answer_headers(domain: str) -> tuple[tuple[str, str], ...]:
    return (
        ("Alert-Info", f"<sip:intercom@{domain}>;info={ALERT_INFO_VALUE};delay=0"),
        ("Call-Info", f"<sip:{domain}>;answer-after=0"),
    )


class Intercom(BaseFeature):
    name = "intercom"
    section = "intercom"
    config_model = IntercomSettings

    def __post_init__(self) -> None:
        for i, extension in enumerate(self.options.allowed):
            if self.config.user(extension) is None:
                raise ValueError(f"intercom.allowed[{i}]: no extension {extension}")

    @property
    def options(self) -> IntercomSettings:
        settings: IntercomSettings | None = self.settings()
        return settings or IntercomSettings()

    def numbers(self) -> Mapping[str, Handler]:
        code = self.options.code
        return {code + u.extension: self.page for u in self.config.users}

    async def page(self, dial: Dial) -> Outcome:
        svc = self.services
        options = self.options
        caller = dial.caller
        callee = svc.user(dial.target.removeprefix(options.code))
        if caller is None or caller.extension not in options.allowed or callee is None:
            log.info("event=intercom_refused caller=%s", caller.extension if caller else "-")
            return Failed(403, "refused", "Forbidden (not allowed to page)")
        if svc.busy(callee):
            return Failed(486, "busy")
        log.info("event=intercom caller=%s callee=%s", caller.extension, callee.extension)
        result = await svc.ring(
            dial.party,
            [Target("user", callee.extension)],
            options.ring_seconds,
            headers=auto_answer_headers(svc.domain),
        )
        if result.outcome == "answered" and result.party is not None:
            return await svc.connect(dial.party, result.party)
        if result.outcome == "cancelled":
            return Failed(487, "cancelled")
        return Failed(486 if result.outcome == "busy" else 480, result.outcome)
