"""The conference bridge as the PBX offers it: answer, ask for a code, join, obey keys.

Callers dial the bridge number; each is a leg of the PBX's media engine (its shared port,
unless the caller cannot be told apart there), mixed by its room on the same tick. A code
followed by ``#`` picks the conference and the role (host or participant); wrong codes
are retried ``code_attempts`` times, then the call ends politely. Limits are explicit:
the bridge refuses a caller beyond its process-wide capacity with 503 before answering,
and a full or locked conference says so and hangs up; nobody else is affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

import numpy as np
import numpy.typing as npt

import sip
from ivr.digits import collect_digits

from ... import codec_policy
from ...calls import from_browser, srtp_terms
from ...encryption import PLAIN, Encryption
from ...feature import BaseFeature, Dial, Done, Failed, Handler, Outcome
from ...media_engine import offer_peers
from ...services import Services
from ..hold_music import builtin_music
from .codes import Codes
from .keypad import KeypadParser, Pressed
from .member import Member
from .room import Room

log = logging.getLogger(__name__)
Samples = npt.NDArray[np.int16]
CODECS = (sip.PCMU, sip.PCMA, sip.G722, codec_policy.OPUS_SDP)


class Conference(BaseFeature):
    """The bridge number as a feature: callers to it join :class:`ConferenceService`."""

    name = "conference"
    state = ("service",)

    def __post_init__(self) -> None:
        self.service: ConferenceService | None = None

    def numbers(self) -> Mapping[str, Handler]:
        bridge = self.config.features.conference_bridge
        return {bridge: self.join} if bridge is not None else {}

    async def start(self, svc: Services) -> None:
        await super().start(svc)
        self.service = ConferenceService(svc)

    async def stop(self) -> None:
        if self.service is not None:
            self.service.close()

    async def resume(self, old: object, svc: Services) -> None:
        await super().resume(old, svc)  # the rooms and their calls go on
        if self.service is not None:  # codes for users added meanwhile
            self.service.codes = Codes(svc.config.users, svc.data_dir)

    async def join(self, dial: Dial) -> Outcome:
        party = dial.party
        call = party.call
        if (
            self.service is None
            or not isinstance(call, sip.IncomingCall)
            or call.state not in (sip.CallState.CALLING, sip.CallState.EARLY)
        ):
            return Failed(488, "refused", "Not Acceptable Here (the bridge takes new calls only)")
        if party.offer is None:
            return Failed(488, "refused", "Not Acceptable Here (the bridge needs an SDP offer)")
        self.services.detach(party)  # conference legs share the bridge's one port
        # the bridge answers the call itself: listeners (the call history) hear it here
        await self.service.serve(
            call,
            party.offer,
            lambda: self.services.emit("answered", party),
            party.encryption,
        )
        return Done()


class ConferenceService:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.settings = svc.config.conference
        self.engine = svc.engine
        slots = svc.config.hold_music

        def music(rate: int) -> Samples:
            from media.audio import load_audio

            path = slots.get("default")
            return load_audio(path, rate) if path else builtin_music(rate)

        self.waiting_music = self.engine.shared("conference-waiting", music)
        self.capacity = self.settings.max_legs_total
        self.legs: set[Member] = set()
        self.codecs = codec_policy.preference(svc.config)
        self.codes = Codes(svc.config.users, svc.data_dir)
        self.rooms: dict[str, Room] = {}
        log.info(
            "event=conference_bridge number=%s capacity=%d",
            svc.config.features.conference_bridge,
            self.capacity,
        )

    def close(self) -> None:
        for room in list(self.rooms.values()):
            room.end()
        for member in list(self.legs):
            member.close()

    def members(self) -> int:
        return sum(len(r.members) for r in self.rooms.values())

    def room(self, owner: str) -> Room:
        room = self.rooms.get(owner)
        if room is None or room.ended:
            user = self.svc.config.user(owner)
            before = user.conference_join_before_host if user else None
            end = user.conference_end_with_host if user else None
            room = Room(
                self.engine,
                owner,
                max_legs=self.settings.max_legs,
                join_before_host=self.settings.join_before_host if before is None else before,
                end_with_host=self.settings.end_with_host if end is None else end,
                recordings=self.svc.data_dir / "recordings",
                on_end=self._ended,
            )
            self.rooms[owner] = room
        return room

    def _ended(self, room: Room) -> None:
        log.info("event=conference_ended room=%s", room.owner)
        self.rooms.pop(room.owner, None)
        for leg in [*room.members, *room.waiting]:
            self.svc.spawn(self._goodbye(leg, "conf-ended"))

    async def _goodbye(self, leg: Member, prompt: str) -> None:
        if leg.room is not None:
            leg.room.leave(leg)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(leg.play_prompt(prompt), 10)
        await leg.call.hangup()

    async def serve(
        self,
        call: sip.IncomingCall,
        offer: sip.SessionDescription,
        answered: Callable[[], None] | None = None,
        encryption: Encryption = PLAIN,
    ) -> None:
        if len(self.legs) >= self.capacity:
            call.reject(503, "Service Unavailable (conference bridge full)")
            return
        host = self.svc.ua.local_host(call.incoming.source)
        chosen = codec_policy.answer_codecs(self.codecs, offer)
        source = call.incoming.source[1]  # the IP its SIP came from
        try:
            leg = await self.engine.new_leg(host, offer_peers(source, offer))
        except OSError:
            call.reject(503, "Service Unavailable (no RTP port for the bridge)")
            return
        browser = leg.browser_terms() if from_browser(offer) else None
        answer, stream = sip.answer(
            offer, host, leg.local[1], chosen, browser=browser, **srtp_terms(encryption, leg)
        )
        if stream is None:
            leg.close()
            call.reject(488)
            return
        leg.on_rejected_source = self.svc.report_rtp(None)
        leg.configure(stream, signalling=source)
        member = Member(leg, call, self.waiting_music)
        member.encryption = encryption
        self.legs.add(member)
        call.on_dtmf.add(member.digit)
        call.on_reinvite = lambda c, request: self._reinvite(member, request)
        try:
            call.answer(bytes(answer))
            if answered is not None:
                answered()
            await self._session(member)
        finally:
            if member.room is not None:
                member.room.leave(member)
            self.legs.discard(member)
            member.close()
            if call.state is not sip.CallState.ENDED:
                await call.hangup()

    async def _reinvite(self, member: Member, request: sip.Request) -> bytes | None:
        if not request.body:
            return None
        offer = sip.parse_sdp(request.body)
        leg = member.leg
        current = leg.codec.name if leg.codec else None
        chosen = codec_policy.answer_codecs(self.codecs, offer, current)
        terms = srtp_terms(member.encryption, leg)
        browser = leg.browser_terms() if from_browser(offer) else None
        answer, stream = sip.answer(
            offer, leg.local[0], leg.local[1], chosen, browser=browser, **terms
        )
        if stream is None:
            raise sip.RequestRefused(488)
        leg.configure(stream)  # held (sendonly, inactive): nothing until it resumes
        return bytes(answer)

    async def _session(self, leg: Member) -> None:
        ended = asyncio.ensure_future(leg.call.ended.wait())
        joining = asyncio.ensure_future(self._join(leg))
        try:
            await asyncio.wait({ended, joining}, return_when=asyncio.FIRST_COMPLETED)
            if joining.done() and joining.result():
                await ended  # in the conference until the caller (or the room) ends it
        finally:
            ended.cancel()
            joining.cancel()

    async def _join(self, leg: Member) -> bool:
        """Code, then admission; True once the caller is in (or waiting for) a room."""
        access = None
        for _ in range(self.settings.code_attempts):
            await leg.play_prompt("conf-enter-code", interruptible=True)
            code = await collect_digits(leg, max_digits=10, first_timeout=15)
            access = self.codes.lookup(code)
            if access is not None:
                break
            await leg.play_prompt("conf-invalid")
        if access is None:
            await leg.play_prompt("goodbye")
            return False
        room = self.room(access.owner)
        refusal = room.admit(leg, host=access.host)
        if refusal is not None:
            log.info("event=conference_refused room=%s reason=%s", room.owner, refusal)
            await leg.play_prompt(refusal)
            await leg.play_prompt("goodbye")
            return False
        if leg.waiting:
            leg.say("conf-wait-host")
        self._keypad(leg, room)
        return True

    def _keypad(self, leg: Member, room: Room) -> None:
        """Keys pressed in the conference go through a keypad parser to the room."""
        parser = KeypadParser()
        loop = asyncio.get_running_loop()
        timer: list[asyncio.TimerHandle] = []

        def apply(events: list[Pressed]) -> None:
            for pressed in events:
                if leg.room is None or leg.waiting:
                    continue
                if room.command(leg, pressed) == "leave":
                    self.svc.spawn(leg.call.hangup())
            for handle in timer:
                handle.cancel()
            timer.clear()
            deadline = parser.deadline
            if deadline is not None:
                timer.append(loop.call_at(deadline, lambda: apply(parser.on_timer(loop.time()))))

        leg.on_digit = lambda d: apply(parser.feed(d, loop.time()))
        while not leg.dtmf.empty():  # keys typed while the code was checked
            leg.on_digit(leg.dtmf.get_nowait())
