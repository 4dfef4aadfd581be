"""A phone made of this project's UA and RTP, with one codec, on a drift-free media clock.

It sends what ``source`` gives (at the codec's audio rate) and keeps, per call, every
payload it sent and received and every frame it decoded, undistorted: frames are kept at
the length the decoder returned (a peer that sends too many samples per packet shows as
a wrong duration, not a silently trimmed frame).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

import sip
from media import codecs
from media.clock import MediaClock
from media.stream import AudioStream
from rtp import Session, Status
from softswitch import codec_policy
from softswitch.pbx import Pbx

from .audio import burst_signal

Samples = npt.NDArray[np.int16]
OPUS_MAX_BITRATE = 16000  # what Opus phones here put in maxaveragebitrate (< our 24000)


@dataclass
class Leg:
    call: sip.Call
    stream: AudioStream
    source: Samples
    position: int = 0
    sending: bool = True
    sent: list[bytes] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)
    frames: list[Samples] = field(default_factory=list)  # one per tick (silence if none)
    start_tick: int = 0

    @property
    def rate(self) -> int:
        return self.stream.codec.sample_rate

    def heard(self, start: float = 0.0, end: float | None = None) -> Samples:
        """What this leg heard from ``start`` to ``end`` seconds after it was set up."""
        first = int(start * 50)
        last = None if end is None else int(end * 50)
        frames = self.frames[first:last]
        return np.concatenate(frames) if frames else np.zeros(0, np.int16)


class SoftPhone:
    def __init__(
        self,
        ext: str,
        password: str,
        pbx_port: int,
        codec: str,
        clock: MediaClock,
        source: Callable[[int], Samples],
        *,
        answer: bool = True,
    ) -> None:
        self.ext, self.password, self.pbx_port = ext, password, pbx_port
        self.codec = codecs.codec(codec)
        self.sdp_codec = codec_policy.SIP_CODECS[self.codec.name]
        if self.codec.name == "OPUS":  # a phone that asks for less than the default rate
            fmtp = f"{codec_policy.OPUS_FMTP};maxaveragebitrate={OPUS_MAX_BITRATE}"
            self.sdp_codec = replace(self.sdp_codec, fmtp=fmtp)
        self.clock = clock
        self.source = source(self.codec.sample_rate)  # what it says, at its codec's rate
        self.auto_answer = answer
        self.ua = sip.UserAgent("udp:127.0.0.1:0", user=ext)
        self.legs: list[Leg] = []
        self.ringing: list[sip.IncomingCall] = []
        self._pending: dict[int, tuple[Session, sip.AudioStream]] = {}
        self._unsubscribe: Callable[[], None] | None = None

    async def start(self) -> None:
        await self.ua.start()
        self.ua.on_invite = self._on_invite
        await self.ua.register(
            f"sip:127.0.0.1:{self.pbx_port}",
            aor=f"sip:{self.ext}@demo.softswitch",
            username=self.ext,
            password=self.password,
            expires=300,
        )
        self._unsubscribe = self.clock.subscribe(self._tick)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        await self.ua.close()  # BYE to every call still up (the PBX then has none to send)
        for leg in self.legs:
            leg.stream.session.close()

    def _leg(self, call: sip.Call, session: Session, stream: sip.AudioStream) -> Leg:
        session.payload_type = stream.payload_type
        session.accepted_pts = {stream.payload_type}
        session.dtmf_pt = stream.dtmf_payload_type
        session.set_remote((stream.remote_address, stream.remote_port))
        options = codecs.Options.from_fmtp(stream.remote_fmtp)
        audio = AudioStream(session, self.codec, stream.ptime, options)
        leg = Leg(call, audio, self.source, start_tick=self.clock.tick)
        self.legs.append(leg)
        return leg

    async def _on_invite(self, call: sip.IncomingCall) -> None:
        session = Session(payload_type=0, rtcp=False)
        local = await session.open("127.0.0.1")
        answer, stream = sip.answer(
            sip.parse_sdp(call.remote_sdp or b""), "127.0.0.1", local[1], [self.sdp_codec]
        )
        if stream is None:
            session.close()
            call.reject(488)
            return
        if not self.auto_answer:
            self.ringing.append(call)
            call.ring()
            self._pending[id(call)] = (session, stream)
            return
        self._leg(call, session, stream)
        call.answer(bytes(answer))

    def answer_ringing(self) -> Leg:
        call = self.ringing.pop(0)
        session, stream = self._pending.pop(id(call))
        answer, _ = sip.answer(
            sip.parse_sdp(call.remote_sdp or b""),
            "127.0.0.1",
            session.local[1] if session.local else 0,
            [self.sdp_codec],
        )
        leg = self._leg(call, session, stream)
        call.answer(bytes(answer))
        return leg

    async def call(self, number: str) -> Leg:
        session = Session(payload_type=0, rtcp=False)
        local = await session.open("127.0.0.1")
        offer = sip.make_offer("127.0.0.1", local[1], [self.sdp_codec])
        call = await self.ua.invite(
            f"sip:{number}@127.0.0.1:{self.pbx_port}",
            bytes(offer),
            credentials=(self.ext, self.password),
            timeout=15,
        )
        stream = sip.process_answer(offer, sip.parse_sdp(call.remote_sdp or b""))
        return self._leg(call, session, stream)

    def _tick(self, tick: int) -> None:
        for leg in self.legs:
            if leg.call.state is sip.CallState.ENDED:
                continue
            audio = leg.stream
            n = audio.samples
            if leg.sending:
                chunk = leg.source[leg.position : leg.position + n]
                if len(chunk) < n:
                    chunk = np.resize(leg.source, n)
                leg.position = (leg.position + n) % len(leg.source)
                payload = audio.encoder.encode(chunk)
                leg.sent.append(payload)
                audio.write_payload(payload)
            elif audio.session.dtmf_sender.active:  # keys go out even when it says nothing
                audio.write_payload(audio.encoder.encode(audio.silence))
            else:
                audio.session.skip()
            status, payload = audio.session.pop()
            if status is Status.FRAME:
                leg.received.append(payload)
                leg.frames.append(audio.decoder.decode(payload))
            else:
                leg.frames.append(audio.silence)


# Users 200-223 (password "pass<ext>"), added to the demo office by the tests whose phones
# are SoftPhones in the PBX's process
USERS = "".join(
    f'\n[[users]]\nextension = "{200 + i}"\nname = "Test {200 + i}"\n'
    f'password = "pass{200 + i}"\npin = "{1200 + i}"\n'
    for i in range(24)
)


def phone(pbx: Pbx, clock: MediaClock, ext: int, codec: str, freq: float, **kw: bool) -> SoftPhone:
    """User ``ext``'s SoftPhone on ``pbx``, sending ``freq`` Hz tone bursts in ``codec``."""
    port = pbx.ua.listeners[0].port
    return SoftPhone(
        str(ext), f"pass{ext}", port, codec, clock, lambda rate: burst_signal(freq, rate), **kw
    )
