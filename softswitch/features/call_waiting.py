"""Call waiting: a user on a call who is rung by a second call hears the call-waiting
tone (the country's cadence, ``server.country``) over the call, while the phone shows
the second call. For the users listed in ``[call_waiting] users`` (or ``all = true``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from pydantic import Field

import sip
from media.tones import Samples, tone

from ..calls import Party, refresh_media
from ..config import Extension, User
from ..feature import BaseFeature, CallListener
from ..media_engine import MediaLeg, Source
from ..model import Strict


class CallWaitingSettings(Strict):
    all: bool = False
    users: list[Extension] = Field([], max_length=1000)


class WithTone(Source):
    """What a leg heard, with a repeating tone cycle added on top."""

    def __init__(self, inner: Source, cycle: Samples, start: int) -> None:
        self.inner = inner
        self.cycle = cycle.astype(np.int32)
        self.start = start

    def frame(self, leg: MediaLeg, tick: int) -> Samples | None:
        frame = self.inner.samples(leg, tick)  # decoded even where it was relayed
        n = leg.frame_samples if frame is None else len(frame)
        at = ((tick - self.start) * n) % len(self.cycle)
        part = np.resize(np.roll(self.cycle, -at)[:n], n)
        mixed = part if frame is None else frame.astype(np.int32) + part
        return np.clip(mixed, -32768, 32767).astype(np.int16)


class CallWaiting(BaseFeature, CallListener):
    name = "call_waiting"
    state = ("waiting",)
    section = "call_waiting"
    config_model = CallWaitingSettings

    def __post_init__(self) -> None:
        self.waiting: dict[Party, Party] = {}  # ringing fork -> the busy user's party

    @property
    def options(self) -> CallWaitingSettings:
        settings: CallWaitingSettings | None = self.settings()
        return settings or CallWaitingSettings()

    def enabled(self, user: User) -> bool:
        return self.options.all or user.extension in self.options.users

    def listeners(self) -> Iterable[CallListener]:
        return (self,)

    def _on_call(self, user: User, fork: Party) -> Party | None:
        return next(
            (
                p
                for p in self.services.parties
                if p.user is user
                and p is not fork
                and p.peer is not None
                and p.call.state is sip.CallState.ESTABLISHED
            ),
            None,
        )

    def ringing(self, party: Party) -> None:
        user = party.user
        if user is None or party in self.waiting or not self.enabled(user):
            return
        busy = self._on_call(user, party)
        if busy is None or busy.leg.source is None:
            return
        svc = self.services
        cycle, _ = tone("call_waiting", svc.config.server.country, busy.leg.rate)
        busy.leg.source = WithTone(busy.leg.source, cycle, svc.clock.stats.ticks)
        self.waiting[party] = busy

    def answered(self, party: Party) -> None:
        self._stop(party)

    def ended(self, party: Party) -> None:
        self._stop(party)

    def _stop(self, party: Party) -> None:
        busy = self.waiting.pop(party, None)
        if busy is not None and isinstance(busy.leg.source, WithTone):
            busy.leg.source = busy.leg.source.inner
            refresh_media(busy)
