"""Blocked callers and announcements.

``[blocking]`` refuses calls office-wide (numbers, prefixes ending in ``*``, calls
without caller ID, all external calls); users add their own ``blocked`` list (checked by
the extensions feature). A blocked caller is answered, hears the configured message (text
or an audio file; a built-in one by default) and the call ends; nothing rings; a counter
and a security-log line record it. The ``announce:<text or file>`` destination kind
(answer, say, hang up) serves rules and business-hours handling as well.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from pydantic import Field

from ivr import Prompt

from ..config import Blocked, User
from ..feature import BaseFeature, CallCheck, Dial, Kind, Outcome
from ..model import Strict
from ..prompts import configured
from ..rules import blocked_by
from ..services import Services

log = logging.getLogger("softswitch")
BLOCKED = Prompt("builtin", "blocked")


class BlockingSettings(Strict):
    numbers: list[Blocked] = []
    anonymous: bool = False  # calls without caller ID
    external: bool = False  # every call that is not from one of our users
    message: str | None = Field(None, min_length=1, max_length=1000)  # text or audio file


class Blocking(BaseFeature):
    name = "blocking"
    section = "blocking"
    config_model = BlockingSettings

    def __post_init__(self) -> None:
        settings: BlockingSettings = self.settings() or BlockingSettings()
        self.patterns = list(settings.numbers)
        self.patterns += ["anonymous"] * settings.anonymous + ["external"] * settings.external
        try:
            self.message = (
                configured(settings.message, self.config) if settings.message else BLOCKED
            )
        except ValueError as exc:
            raise ValueError(f"blocking.message: {exc}") from None

    def destination_kinds(self) -> Mapping[str, Kind]:
        return {"announce": Kind(self.announce, self.check_announce)}

    def call_checks(self) -> Iterable[CallCheck]:
        return (self.office_check,) if self.patterns else ()

    async def start(self, svc: Services) -> None:
        await super().start(svc)
        svc.counters.setdefault("blocked", 0)
        svc.refuse_blocked = self.refuse_if  # users' own block lists (extensions)
        await svc.prompts.prepare([self.message])

    async def resume(self, old: object, svc: Services) -> None:
        await self.start(svc)  # the new patterns and message

    def check_announce(self, value: str, user: User | None) -> str | None:
        try:
            configured(value, self.config)
        except ValueError as exc:
            return f"announce: {exc}"
        return None

    async def announce(self, dial: Dial) -> Outcome:
        return await self.services.announce(dial.party, configured(dial.target, self.config))

    async def office_check(self, dial: Dial) -> Outcome | None:
        return await self.refuse_if(dial, self.patterns, "office")

    async def refuse_if(self, dial: Dial, patterns: list[str], scope: str) -> Outcome | None:
        """Refuse the call when ``patterns`` block its caller (None: let it through)."""
        svc = self.services
        facts = svc.facts(dial)
        entry = blocked_by(patterns, facts, external=dial.caller is None)
        if entry is None:
            return None
        svc.counters["blocked"] += 1
        log.info(
            "event=blocked caller=%s called=%s by=%s entry=%s",
            facts.caller,
            facts.called,
            scope,
            entry,
        )
        svc.ua.security_event(
            "call_blocked",
            dial.party.call.destination or ("udp", "0.0.0.0", 0),
            user=facts.caller,
            method="INVITE",
            reason=f"{scope}:{entry}",
        )
        return await svc.announce(dial.party, self.message)
