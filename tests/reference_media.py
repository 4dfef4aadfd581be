"""The per-packet media path the daemon used before softswitch.media_engine: kept only as
the reference the engine's packets are compared with (tests/test_media_batch.py).

Anchored media: one RTP leg per call party, fed from a source, on the media clock.

Each 20 ms tick has two passes over every leg: *receive* (one decoded frame from the
jitter buffer, handed to taps such as recorders and DTMF detectors) then *transmit*
(what the leg's source gives: the other party's frame when bridged, the shared hold
music or ringback, a prompt...).

Rates: a leg works at its codec's audio rate (``leg.rate``: 8000 for G.711, 16000 for
G.722 and Opus), never at the RTP clock (:mod:`media.codecs` keeps the two apart). Every
source gives frames at the rate of the leg that asks, converting at most once: a bridge
of an 8 kHz and a 16 kHz leg resamples in :class:`LegSource`, a shared source keeps one
player per rate (decoded from the file at that rate). Two legs with the same codec relay
payloads untouched (no transcoding, no 8 kHz bottleneck between wideband phones). Shared
sources (hold music, tones) are decoded once and encoded once per stateless codec per
tick, however many legs listen.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from rtp.session import send_payloads

log = logging.getLogger(__name__)
Samples = npt.NDArray[np.int16]
SOUNDS = Path(__file__).resolve().parent.parent / "softswitch" / "sounds"


def prompt_path(name: str, language: str = "en") -> Path:
    """A built-in prompt in ``language`` (English when it has no translation)."""
    path = SOUNDS / language / f"{name}.flac"
    return path if language != "en" and path.exists() else SOUNDS / f"{name}.flac"


class Source:
    """What a leg transmits. :meth:`frame` gives this tick's samples at ``leg.rate``;
    :meth:`payload` gives a payload already encoded for ``leg``'s codec when the source
    has one (a shared encoding, a relayed packet), else None and :meth:`frame` is used."""

    def frame(self, leg: MediaLeg, tick: int) -> Samples | None:
        raise NotImplementedError

    def payload(self, leg: MediaLeg, tick: int) -> bytes | None:
        return None

    def samples(self, leg: MediaLeg, tick: int) -> Samples | None:
        """This tick's audio as samples even where :meth:`payload` would relay it (for
        what mixes something over a source, such as the call-waiting tone)."""
        return self.frame(leg, tick)


class _Converter:
    """A stream resampler that follows the rates it is asked for (a re-INVITE may change
    a leg's codec)."""

    def __init__(self) -> None:
        self._resampler: StreamResampler | None = None

    def convert(self, frame: Samples, rate_in: int, rate_out: int) -> Samples:
        if rate_in == rate_out:
            return frame
        r = self._resampler
        if r is None or (r.rate_in, r.rate_out) != (rate_in, rate_out):
            r = self._resampler = StreamResampler(rate_in, rate_out)
        return r.process(frame)


class LegSource(Source):
    """The other party of a bridged call: its packets relayed as they came when both legs
    use the same codec and packet time, else its decoded frames (resampled once when the
    rates differ) re-encoded."""

    def __init__(self, other: MediaLeg) -> None:
        self.other = other
        self._converter = _Converter()

    @property
    def rate(self) -> int:
        return self.other.rate

    def relays(self, leg: MediaLeg) -> bool:
        a, b = self.other.stream, leg.stream
        return a is not None and b is not None and a.codec == b.codec and a.ptime == b.ptime

    def payload(self, leg: MediaLeg, tick: int) -> bytes | None:
        return self.other.payload_in if self.relays(leg) else None

    def frame(self, leg: MediaLeg, tick: int) -> Samples | None:
        if self.relays(leg):
            return None  # nothing to relay this tick: the phone conceals the gap itself
        return self.samples(leg, tick)

    def samples(self, leg: MediaLeg, tick: int) -> Samples | None:
        return self._converter.convert(self.other.frame_in, self.other.rate, leg.rate)


class PlayerSource(Source):
    """A file or tone for one listener (a prompt); ``done`` is set at its end."""

    def __init__(self, player: Player, rate: int) -> None:
        self.player = player
        self.rate = rate
        self.done = asyncio.Event()
        self._converter = _Converter()

    def frame(self, leg: MediaLeg, tick: int) -> Samples | None:
        if self.player.done:
            self.done.set()
            return None
        return self._converter.convert(self.player.read(), self.rate, leg.rate)


class SharedSource(Source):
    """Hold music or a progress tone: one player per rate (the audio made at that rate,
    not resampled per tick), one frame per tick and one encoding per stateless codec for
    every listener. G.722 and Opus listeners keep their own encoder: a phone's decoder
    follows the state of the encoder whose stream it gets, and switching it to a shared
    encoder's stream (bridge, then music) garbles the audio well beyond a few ms."""

    def __init__(self, make: Callable[[int], Samples]) -> None:
        self.make = make
        self.players: dict[int, SharedPlayer] = {}

    def player(self, rate: int) -> SharedPlayer:
        shared = self.players.get(rate)
        if shared is None:
            offset = 0
            if self.players:  # start where the others are
                other_rate, other = next(iter(self.players.items()))
                offset = other.player.position * rate // other_rate
            player = Player(self.make(rate), rate // 50, loop=True, offset=offset)
            shared = self.players[rate] = SharedPlayer(player)
        return shared

    def frame(self, leg: MediaLeg, tick: int) -> Samples | None:
        return self.player(leg.rate).advance(tick)

    def payload(self, leg: MediaLeg, tick: int) -> bytes | None:
        codec, stream = leg.codec, leg.stream
        if codec is None or stream is None or stream.samples != leg.rate // 50:
            return None
        if not codec.stateless:
            return None
        shared = self.player(leg.rate)
        shared.advance(tick)
        return shared.encoded(codec)


class MediaLeg:
    """An RTP session with codec, the last received frame, taps, a source and DTMF."""

    def __init__(self, engine: MediaEngine, session: Session) -> None:
        self.engine = engine
        self.session = session
        self.stream: AudioStream | None = None
        self.codec: codecs.Codec | None = None
        self.rate = 8000
        self.payload_in: bytes | None = None  # this tick's packet as received (relays)
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
        self._detect_at_8k: StreamResampler | None = None  # wideband legs: for the detector
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
        options = codecs.Options.from_fmtp(stream.remote_fmtp)
        current = self.stream
        if (
            current is None
            or current.codec != codec
            or current.ptime != stream.ptime
            or current.options != options
        ):
            self.codec = codec
            self.stream = AudioStream(self.session, codec, stream.ptime, options)
            self.rate = codec.sample_rate
        self.sending = stream.sends
        self._inband = stream.dtmf_payload_type is None
        self._detect_at_8k = StreamResampler(self.rate, 8000) if self.rate != 8000 else None

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

    @property
    def frame_in(self) -> Samples:
        """This tick's audio from the phone (decoded when first asked for)."""
        if self.stream is None:
            return np.zeros(160, dtype=np.int16)
        return self.stream.frame()

    def receive(self) -> None:
        if self.stream is None:
            return
        self.stream.receive()
        self.payload_in = self.stream.payload_in
        if not self.taps and not (self.listen_dtmf and self._inband):
            return  # decoded later only if a listener needs audio (not for a relay)
        frame = self.stream.frame()
        if self.listen_dtmf and self._inband and frame is not self.stream.silence:
            if self._detector is None:
                self._detector = DtmfDetector()
            narrow = frame
            if self._detect_at_8k is not None:  # the detector's filters are set for 8 kHz
                narrow = self._detect_at_8k.process(frame)
            for digit in self._detector.feed(narrow):
                self.push_dtmf(digit)
        for tap in self.taps:
            tap(frame)

    def transmit(self, tick: int, out: Outbox | None = None) -> None:
        """This tick's packet to the phone. With ``out``, a payload ready to go as it is
        (a relayed packet, a shared encoding) is queued there instead, for the engine to
        send with every other leg's (:func:`rtp.session.send_payloads`)."""
        stream = self.stream
        if stream is None:
            return
        source = self.source
        if not self.sending or source is None:
            self.session.skip()
            return
        if self._tone is not None:  # a relayed key replaces the audio while it sounds
            source.frame(self, tick)  # the source moves on all the same
            key = self._tone.read()
            if self._tone.done:
                self._tone = None
            stream.write(key)
            return
        payload = source.payload(self, tick)
        if payload is not None:
            if out is not None and not self.session.dtmf_sender.active:
                out.add(self.session, payload)
            else:
                stream.write_payload(payload)
            return
        frame = source.frame(self, tick)
        if frame is None:
            if self.session.dtmf_sender.active:  # a relayed RFC 4733 key still goes out
                stream.write(stream.silence)
            else:
                self.session.skip()
            return
        stream.write(frame)

    def play(self, samples: Samples, *, loop: bool = False) -> PlayerSource:
        source = PlayerSource(Player(samples, self.frame_samples, loop=loop), self.rate)
        if self.closed:  # the call is gone: nothing to wait for
            source.done.set()
            return source
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

    def add_tap(self, tap: Callable[[Samples], None]) -> None:
        """``tap`` gets each received frame (decoded) until :meth:`remove_tap`."""
        self.taps.append(tap)

    def remove_tap(self, tap: Callable[[Samples], None]) -> None:
        """Stops ``tap``; a leg that closed meanwhile has already let go of it."""
        with contextlib.suppress(ValueError):
            self.taps.remove(tap)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.engine.legs.discard(self)
            self.session.close()
            if isinstance(self.source, PlayerSource):  # whoever waits for its end goes on
                self.source.done.set()
            # bridged legs point at each other (sources, keys): undo it, so that an
            # ended call is freed at once rather than by the cycle collector
            self.source = self.dtmf_peer = self.key_filter = None
            self.taps = []


class Outbox:
    """A tick's ready payloads, one per session (each leg keeps its own socket and so the
    source port its SDP named: phones with strict RTP and our own source policy expect
    it), sent in one pass when every leg has been through."""

    __slots__ = ("payloads", "sessions")

    def __init__(self) -> None:
        self.sessions: list[Session] = []
        self.payloads: list[bytes] = []

    def add(self, session: Session, payload: bytes) -> None:
        self.sessions.append(session)
        self.payloads.append(payload)

    def flush(self) -> None:
        if self.sessions:
            send_payloads(self.sessions, self.payloads)
            self.sessions, self.payloads = [], []


class MediaEngine:
    """``batched``: ready payloads (relays, hold music) leave in one pass per tick
    (:class:`Outbox`); False sends each as its leg is served (the reference path)."""

    def __init__(
        self,
        clock: MediaClock,
        ports: PortAllocator,
        country: str = "us",
        language: str = "en",
        *,
        batched: bool = True,
    ) -> None:
        self.clock = clock
        self.batched = batched
        self._outbox = Outbox()
        self.ports = ports
        self.country = country
        self.language = language
        self.legs: set[MediaLeg] = set()
        self._prompts: dict[tuple[str, int], Samples] = {}
        self._shared: dict[str, SharedSource] = {}
        self._unsubscribe = clock.subscribe(self._tick, priority=50, idle=self.idle)

    def idle(self) -> bool:
        """No leg: the media clock may sleep."""
        return not self.legs

    async def new_leg(self, host: str) -> MediaLeg:
        session = Session(payload_type=0)
        await session.open_from(self.ports, host)
        leg = MediaLeg(self, session)
        self.legs.add(leg)
        self.clock.wake()
        return leg

    def _tick(self, tick: int) -> None:
        legs = list(self.legs)
        for leg in legs:
            leg.receive()
        if not self.batched:
            for leg in legs:
                leg.transmit(tick)
            return
        out = self._outbox
        for leg in legs:
            leg.transmit(tick, out)
        out.flush()

    def prompt(self, name: str, rate: int = 8000) -> Samples:
        key = (name, rate)
        samples = self._prompts.get(key)
        if samples is None:
            samples = self._prompts[key] = load_audio(prompt_path(name, self.language), rate)
        return samples

    def shared(self, name: str, make: Callable[[int], Samples]) -> SharedSource:
        """The shared source ``name`` (created on first use); ``make(rate)`` gives its
        audio at ``rate``, called once per rate that some leg needs."""
        source = self._shared.get(name)
        if source is None:
            source = self._shared[name] = SharedSource(make)
        return source

    def tone_source(self, name: str) -> SharedSource:
        return self.shared(f"tone:{name}", lambda rate: tone(name, self.country, rate)[0])

    def close(self) -> None:
        self._unsubscribe()
        for leg in list(self.legs):
            leg.close()
