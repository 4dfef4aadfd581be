"""Session timers (RFC 4028) for every call: the hook-up of :mod:`sip.session_timer`.

Calls from phones get ``Session-Expires`` in our 200 (the phone refreshes when it said it
supports timers, else we do), calls we place offer it; the refresher sends a re-INVITE
or UPDATE every half interval, and a call whose peer stopped refreshing (a phone that
lost power, a NAT that forgot us) is ended with BYE after its interval. An INVITE asking
for less than ``min_se`` gets 422 with our Min-SE before anything rings.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import Field

import sip
from sip.session_timer import MIN_SE_FLOOR

from ..feature import BaseFeature, CallCheck, Dial, Done, Outcome
from ..model import Strict
from ..services import Services


class SessionTimerSettings(Strict):
    enabled: bool = True
    expires: int = Field(1800, ge=1, le=86400)  # the interval we offer and grant at most
    # the smallest interval we accept; RFC 4028 says 90 at least (lower is for tests)
    min_se: int = Field(MIN_SE_FLOOR, ge=1, le=86400)


class SessionTimers(BaseFeature):
    name = "session_timers"
    section = "session_timers"
    config_model = SessionTimerSettings

    @property
    def options(self) -> SessionTimerSettings:
        settings: SessionTimerSettings | None = self.settings()
        return settings or SessionTimerSettings()

    async def start(self, svc: Services) -> None:
        await super().start(svc)
        options = self.options
        if not options.enabled:
            return
        svc.ua.session_timers = sip.TimerSettings(
            expires=max(options.expires, options.min_se), min_se=options.min_se
        )
        svc.ua.supported.add("timer")

    async def resume(self, old: object, svc: Services) -> None:
        await self.start(svc)  # what start() sets follows the new settings

    def call_checks(self) -> Iterable[CallCheck]:
        return (self.check,) if self.options.enabled else ()

    async def check(self, dial: Dial) -> Outcome | None:
        """422 (or 400) before the dialplan for an INVITE whose interval we refuse."""
        call = dial.party.call
        if isinstance(call, sip.IncomingCall) and not call.check_session_timer():
            return Done()
        return None
