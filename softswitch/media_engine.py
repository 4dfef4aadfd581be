"""Anchored media: one RTP leg per call party, fed from a source, on the media clock.

Each 20 ms tick has two passes over every leg: *receive* (one decoded frame from the
jitter buffer, handed to taps such as recorders and DTMF detectors) then *transmit*
(what the leg's source gives: the other party's frame when bridged, the shared hold
music or ringback, a prompt...). Legs with different codecs are transcoded by this
decode/encode; 16 kHz (G.722) and 8 kHz legs are resampled between. Shared sources
(hold music, tones) are decoded once and encoded once per codec per tick, however many
legs listen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

import sip
from media import codecs
from media.audio import Player, SharedPlayer, load_audio
from media.clock import MediaClock
from media.dtmf_detect import DtmfDetector
from media.resample import StreamResampler
from media.stream import AudioStream
from media.tones import dtmf_tone, tone
from rtp import PortAllocator, Session

log = logging.getLogger(__name__)
Samples = npt.NDArray[np.int16]
SOUNDS = Path(__file__).resolve().parent / "sounds"


def prompt_path(name: str, language: str = "en") -> Path:
    """A built-in prompt in ``language`` (English when it has no translation)."""
    path = SOUNDS / language / f"{name}.flac"
    return path if language != "en" and path.exists() else SOUNDS / f"{name}.flac"


class Source:
    """What a leg transmits. ``frame`` gives samples at ``rate``; shared sources also give
    an encoded payload per codec (computed once per tick)."""

    rate = 8000
    shared: SharedPlayer | None = None

    def frame(self, leg: MediaLeg, tick: int) -> Samples | None:
        raise NotImplementedError


class LegSource(Source):
    """The other party of a bridged call."""

    def __init__(self, other: MediaLeg) -> None:
        self.other = other
        self._resampler: StreamResampler | None = None

    def frame(self, leg: MediaLeg, tick: int) -> Samples | None:
        if not self.other.heard:
            return None  # a relay: nothing came from the other party, nothing goes out
        frame = self.other.frame_in
        if self.other.rate != leg.rate:
            if self._resampler is None:
                self._resampler = StreamResampler(self.other.rate, leg.rate)
            frame = self._resampler.process(frame)
        return frame


class PlayerSource(Source):
    """A file or tone for one listener (a prompt); ``done`` is set at its end."""

    def __init__(self, player: Player, rate: int) -> None:
        self.player = player
        self.rate = rate
        self.done = asyncio.Event()

    def frame(self, leg: MediaLeg, tick: int) -> Samples | None:
        if self.player.done:
            self.done.set()
            return None
        return self.player.read()


class SharedSource(Source):
    """Hold music or a progress tone: one frame and one encoding per codec per tick."""

    def __init__(self, shared: SharedPlayer, rate: int) -> None:
        self.shared = shared
        self.rate = rate

    def frame(self, leg: MediaLeg, tick: int) -> Samples | None:
        return self.shared.advance(tick) if self.shared else None


class MediaLeg:
    """An RTP session with codec, the last received frame, taps, a source and DTMF."""

    def __init__(self, engine: MediaEngine, session: Session) -> None:
        self.engine = engine
        self.session = session
        self.stream: AudioStream | None = None
        self.codec: codecs.Codec | None = None
        self.rate = 8000
        self.frame_in: Samples = np.zeros(160, dtype=np.int16)
        self.heard = False  # frame_in came from the peer this tick (or conceals a loss)
        self.source: Source | None = None
        self.sending = True  # False while the peer holds us (sendonly/inactive from it)
        self.taps: list[Callable[[Samples], None]] = []
        self.dtmf: asyncio.Queue[str] = asyncio.Queue(maxsize=64)
        # In-band detection costs a Goertzel bank per frame: it runs only while something
        # listens for digits (IVR, voicemail, conference) and the peer has no RFC 4733.
        self.listen_dtmf = False
        self.dtmf_peer: MediaLeg | None = None  # the bridged leg keys are relayed to
        # while bridged, keys go through this first (the PBX's in-call codes), which
        # relays what is not a code with relay_digit
        self.key_filter: Callable[[str], None] | None = None
        self._tone: Player | None = None  # an in-band key being played to this phone
        self._inband = False
        self._detector: DtmfDetector | None = None
        self._last_rfc4733: float = -1.0
        self.closed = False
        session.on_dtmf = self._on_rfc4733
        session.source.learn_unnamed = False  # nobody is heard before the SDP names the peer

    @property
    def local(self) -> tuple[str, int]:
        assert self.session.local is not None
        return self.session.local

    @property
    def signalling(self) -> str | None:
        """The IP this party's SIP messages come from: RTP is taken only from it or from
        the SDP's address (strict RTP, :mod:`rtp.source_policy`)."""
        return self.session.source.signalling

    @signalling.setter
    def signalling(self, ip: str | None) -> None:
        self.session.source.set_signalling(ip)

    def configure(self, stream: sip.AudioStream, *, signalling: str | None = None) -> None:
        """Apply the result of offer/answer (codec, payload types, peer address);
        ``signalling``: see :attr:`signalling` (kept for later offers when None)."""
        codec = codecs.codec(stream.codec.name)
        self.session.payload_type = stream.payload_type
        self.session.accepted_pts = {pt for pt, _ in stream.codecs} | {stream.payload_type}
        self.session.dtmf_pt = stream.dtmf_payload_type
        self.session.set_remote(
            (stream.remote_address, stream.remote_port),
            signalling=self.signalling if signalling is None else signalling,
        )
        if self.codec != codec:
            self.codec = codec
            self.stream = AudioStream(self.session, codec, stream.ptime)
            self.rate = codec.sample_rate
            self.frame_in = np.zeros(self.stream.samples, dtype=np.int16)
        self.sending = stream.sends
        self._inband = stream.dtmf_payload_type is None and codec.sample_rate == 8000

    def _on_rfc4733(self, digit: str) -> None:
        self.push_dtmf(digit)

    def push_dtmf(self, digit: str) -> None:
        """A key from this leg's phone: relayed to the bridged peer, else kept for IVRs."""
        if self.dtmf_peer is not None and not self.listen_dtmf:
            if self.key_filter is not None:
                self.key_filter(digit)
            else:
                self.dtmf_peer.send_digit(digit)
        elif not self.dtmf.full():
            self.dtmf.put_nowait(digit)

    def relay_digit(self, digit: str) -> None:
        """A key of this leg's phone for the bridged peer (dropped when not bridged)."""
        if self.dtmf_peer is not None:
            self.dtmf_peer.send_digit(digit)

    def send_digit(self, digit: str) -> None:
        """Play a key to this leg's phone: RFC 4733 if it took telephone-event, else a
        DTMF tone in the audio."""
        if self.session.dtmf_pt is not None:
            self.session.send_dtmf(digit, 100)
        else:
            self._tone = Player(
                dtmf_tone(digit, 100, 60, self.rate), self.frame_samples, loop=False
            )

    def receive(self) -> None:
        if self.stream is None:
            return
        if not self.session.counters.received and not self.taps:
            self.heard = False  # nothing ever came (an idle leg costs next to nothing)
            return
        self.frame_in = frame = self.stream.read()
        self.heard = frame is not self.stream.silence
        if self.listen_dtmf and self._inband and frame is not self.stream.silence:
            if self._detector is None:
                self._detector = DtmfDetector()
            for digit in self._detector.feed(frame):
                self.push_dtmf(digit)
        for tap in self.taps:
            tap(self.frame_in)

    def transmit(self, tick: int) -> None:
        stream = self.stream
        if stream is None:
            return
        source = self.source
        if not self.sending or source is None:
            self.session.skip()
            return
        if (
            source.shared is not None
            and source.rate == self.rate
            and self.codec is not None
            and self.codec.stateless
        ):
            source.shared.advance(tick)
            stream.write_payload(source.shared.encoded(self.codec))
            return
        frame = source.frame(self, tick)
        if self._tone is not None:  # a relayed key replaces the audio while it sounds
            frame = self._tone.read()
            if self._tone.done:
                self._tone = None
            stream.write(frame)
            return
        if frame is None:
            if self.session.dtmf_sender.active:  # a relayed RFC 4733 key still goes out
                stream.write(stream.silence)
            else:
                self.session.skip()
            return
        if source.rate != self.rate:
            frame = self.engine.resample_shared(source, frame, self.rate, tick)
        stream.write(frame)

    def play(self, samples: Samples, *, loop: bool = False) -> PlayerSource:
        source = PlayerSource(Player(samples, self.frame_samples, loop=loop), self.rate)
        self.source = source
        return source

    def stop_playing(self) -> None:
        """Cut the prompt being played short (a key was pressed: barge-in)."""
        if isinstance(self.source, PlayerSource):
            self.source.done.set()
            self.source = None

    async def play_prompt(self, name: str) -> None:
        """Play a built-in prompt to the end."""
        source = self.play(self.engine.prompt(name, self.rate))
        await source.done.wait()

    async def play_file(self, path: Path) -> None:
        await self.play_samples(load_audio(path, self.rate))

    async def play_samples(self, samples: Samples) -> None:
        source = self.play(samples)
        await source.done.wait()

    @property
    def frame_samples(self) -> int:
        return self.stream.samples if self.stream else 160

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.engine.legs.discard(self)
            self.session.close()
            # bridged legs point at each other (sources, keys): undo it, so that an
            # ended call is freed at once rather than by the cycle collector
            self.source = self.dtmf_peer = self.key_filter = None
            self.taps = []


class MediaEngine:
    def __init__(
        self, clock: MediaClock, ports: PortAllocator, country: str = "us", language: str = "en"
    ) -> None:
        self.clock = clock
        self.ports = ports
        self.country = country
        self.language = language
        self.legs: set[MediaLeg] = set()
        self._prompts: dict[tuple[str, int], Samples] = {}
        self._shared: dict[str, SharedSource] = {}
        self._resamplers: dict[tuple[int, int], StreamResampler] = {}
        self._resampled: dict[tuple[int, int], tuple[int, Samples]] = {}
        self._unsubscribe = clock.subscribe(self._tick, priority=50)

    async def new_leg(self, host: str) -> MediaLeg:
        session = Session(payload_type=0)
        await session.open_from(self.ports, host)
        leg = MediaLeg(self, session)
        self.legs.add(leg)
        return leg

    def _tick(self, tick: int) -> None:
        legs = list(self.legs)
        for leg in legs:
            leg.receive()
        for leg in legs:
            leg.transmit(tick)

    def prompt(self, name: str, rate: int = 8000) -> Samples:
        key = (name, rate)
        samples = self._prompts.get(key)
        if samples is None:
            samples = self._prompts[key] = load_audio(prompt_path(name, self.language), rate)
        return samples

    def shared(self, name: str, make: Callable[[], Samples], rate: int = 8000) -> SharedSource:
        """The shared source ``name`` (created on first use)."""
        source = self._shared.get(name)
        if source is None:
            player = Player(make(), rate * 20 // 1000, loop=True)
            source = self._shared[name] = SharedSource(SharedPlayer(player), rate)
        return source

    def tone_source(self, name: str) -> SharedSource:
        return self.shared(f"tone:{name}", lambda: tone(name, self.country)[0])

    def resample_shared(self, source: Source, frame: Samples, rate: int, tick: int) -> Samples:
        """``frame`` of ``source`` at ``rate``, converted once per tick for all legs."""
        key = (id(source), rate)
        entry = self._resampled.get(key)
        if entry is not None and entry[0] == tick:
            return entry[1]
        resampler = self._resamplers.get(key)
        if resampler is None:
            resampler = self._resamplers[key] = StreamResampler(source.rate, rate)
        out = resampler.process(frame)
        self._resampled[key] = (tick, out)
        return out

    def close(self) -> None:
        self._unsubscribe()
        for leg in list(self.legs):
            leg.close()
