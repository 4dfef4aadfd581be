"""A leg of the media engine: one party's RTP, as the features see it (its source, taps,
keys, prompts, negotiated stream and strict source); its state lives in the engine's
rows (:mod:`softswitch.media_engine`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

import sip
from media import codecs
from media.audio import Player, load_audio
from media.conceal import Concealment
from media.dtmf_detect import DtmfDetector
from media.resample import StreamResampler
from media.tones import dtmf_tone
from rtp import DtmfReceiver, SourcePolicy
from rtp.dtls_srtp import DtlsSrtp
from rtp.dtmf import DtmfSender, EventPacket
from rtp.ice_lite import IceLite
from rtp.jitter_rows import FRAME, LOST
from rtp.packet import (
    ReportBlock,
)
from rtp.srtp import SrtpContext
from sip import entropy, sdes, webrtc

from .media_ports import PortPair
from .media_sources import LegSource, PlayerSource, Source

if TYPE_CHECKING:
    from .media_engine import MediaEngine

log = logging.getLogger("softswitch.media_engine")
Samples = npt.NDArray[np.int16]
Address = tuple[str, int]


@dataclass(slots=True)
class LegStream:
    """The negotiated audio of a leg: codec, packet time, the peer's fmtp options, and
    the codec's state (a phone's decoder follows our encoder's; ours follows its)."""

    codec: codecs.Codec
    ptime: int
    options: codecs.Options
    samples: int  # audio samples per packet at the codec's rate
    encoder: codecs.Encoder
    decoder: codecs.Decoder

    @classmethod
    def make(cls, codec: codecs.Codec, ptime: int, options: codecs.Options) -> LegStream:
        return cls(
            codec,
            ptime,
            options,
            codec.samples_per_frame(ptime),
            codec.encoder(options),
            codec.decoder(),
        )


@dataclass(slots=True)
class LegCounters:
    dtmf_received: int = 0
    foreign: int = 0  # refused: a stranger's packet, or a payload type not negotiated
    malformed: int = 0
    refused: int = 0  # payloads its decoder refused
    ssrc_changes: int = 0
    rtcp_received: int = 0
    rtcp_sent: int = 0
    srtp_refused: int = 0  # SRTP/SRTCP that did not verify (forged, replayed): dropped


class MediaLeg:
    """One party's RTP on the engine: codec, source, taps, digits, strict source."""

    def __init__(self, engine: MediaEngine, row: int, ports: PortPair) -> None:
        self.engine = engine
        self.row = row
        self.ports = ports
        self.stream: LegStream | None = None
        self.codec: codecs.Codec | None = None
        self.rate = 8000
        self.payload_type = 0
        self.accepted_pts: set[int] = set()
        self.dtmf_pt: int | None = None
        self.ssrc = entropy.randbits(32)
        self.cname = f"{entropy.token_hex(6)}@softswitch"
        self._source: Source | None = None
        self._sending = True  # False while the peer holds us (sendonly/inactive from it)
        self.taps: list[Callable[[Samples], None]] = []
        self.dtmf: asyncio.Queue[str] = asyncio.Queue(maxsize=64)
        # In-band detection costs a Goertzel bank per frame: it runs only while something
        # listens for digits (IVR, voicemail, conference) and the peer has no RFC 4733.
        self._listen_dtmf = False
        self.dtmf_peer: MediaLeg | None = None  # the bridged leg keys are relayed to
        # while bridged, keys go through this first (the PBX's in-call codes), which
        # relays what is not a code with relay_digit
        self.key_filter: Callable[[str], None] | None = None
        self.on_key: Callable[[str], None] | None = None  # an application's (the bridge)
        self.policy = SourcePolicy(learn_unnamed=False)  # nobody heard before the SDP
        self.remote: Address | None = None  # where packets go (learnt, else the SDP's)
        self.remote_rtcp: Address | None = None
        self.peer_report: ReportBlock | None = None  # the phone's view of our stream
        # a refused source (address, reason), at most once per source per burst
        self.on_rejected_source: Callable[[Address, str], None] | None = None
        self.counters = LegCounters()
        self.dependents: set[MediaLeg] = set()  # legs whose source is LegSource(self)
        self._tone: Player | None = None  # an in-band key being played to this phone
        self._inband = False
        self._detector: DtmfDetector | None = None
        self._detect_at_8k: StreamResampler | None = None  # wideband legs: for the detector
        self._dtmf_sender = DtmfSender(160)
        self._dtmf_receiver = DtmfReceiver()
        self._event_ts = 0
        self._concealment = Concealment(160)
        self.closed = False
        # the SDP's address when another leg on the shared port expects it (see
        # MediaEngine.move_to_own_port): this leg is not heard from it until it moves
        self.contested: Address | None = None
        self.moved_from: Address | None = None  # that address, once moved off it
        # called once when RTP comes from the contested address (the PBX then moves it)
        self.on_contested: Callable[[], None] | None = None
        # SRTP (sip.sdes keys of the last offer/answer): None for plain RTP
        self.srtp: sip.SrtpKeys | None = None
        self.srtp_in: SrtpContext | None = None  # verifies and decrypts the phone's packets
        self.srtp_out: SrtpContext | None = None  # protects ours
        self._key: bytes | None = None
        # a browser's leg (sip.webrtc): ICE-lite answers its checks, DTLS gives the keys
        self.ice: IceLite | None = None
        self.dtls: DtlsSrtp | None = None
        self.browser: webrtc.Peer | None = None

    # -- addresses -------------------------------------------------------------------------

    @property
    def local(self) -> Address:
        """The RTP address our SDP names for this leg."""
        return (self.ports.host, self.ports.port)

    @property
    def expected(self) -> Address | None:
        """The address the SDP named (the policy keeps it across offers that name none)."""
        return self.policy.expected

    @property
    def latched(self) -> bool:
        """Its phone's packets have been heard from an accepted source."""
        return self.policy.current is not None

    @property
    def own_port(self) -> bool:
        return not self.ports.shared

    @property
    def signalling(self) -> str | None:
        """The IP this party's SIP messages come from: RTP is taken only from it or from
        the SDP's address (strict RTP, :mod:`rtp.source_policy`)."""
        return self.policy.signalling

    @signalling.setter
    def signalling(self, ip: str | None) -> None:
        self.policy.set_signalling(ip)
        self.engine._claim(self)

    @property
    def received(self) -> int:
        """RTP packets taken from the phone (audio and keys)."""
        return int(self.engine.received[self.row]) if not self.closed else 0

    @property
    def sent(self) -> int:
        return int(self.engine.sent[self.row]) if not self.closed else 0

    # -- negotiation -----------------------------------------------------------------------

    def browser_terms(self) -> webrtc.Local:
        """Our ICE credentials and DTLS fingerprint for a browser's offer (an ICE-lite
        agent made on first use and known to the engine by its ufrag)."""
        if self.ice is None:
            self.ice = IceLite()
            self.engine._ice_legs[self.ice.ufrag] = self
        return webrtc.Local(self.ice.ufrag, self.ice.pwd, self.engine.identity.fingerprint)

    @property
    def key(self) -> bytes:
        """Our SRTP master key material for this leg's offers and answers (made on first
        use; every offer and answer of the leg names the same key)."""
        if self._key is None:
            self._key = sdes.new_key()
        return self._key

    def configure(self, stream: sip.AudioStream, *, signalling: str | None = None) -> None:
        """Apply the result of offer/answer (codec, payload types, peer address);
        ``signalling``: see :attr:`signalling` (kept for later offers when None)."""
        codec = codecs.codec(stream.codec.name)
        self.payload_type = stream.payload_type
        self.accepted_pts = {pt for pt, _ in stream.codecs} | {stream.payload_type}
        self.dtmf_pt = stream.dtmf_payload_type
        options = codecs.Options.from_fmtp(stream.remote_fmtp)
        current = self.stream
        if (
            current is None
            or current.codec != codec
            or current.ptime != stream.ptime
            or current.options != options
        ):
            self.codec = codec
            self.stream = LegStream.make(codec, stream.ptime, options)
            self.rate = codec.sample_rate
            self._concealment = Concealment(self.stream.samples)
            self._dtmf_sender = DtmfSender(
                codec.rtp_ticks(stream.ptime), clock_rate=codec.rtp_clock
            )
        address = (stream.remote_address, stream.remote_port)
        ip = signalling if signalling is not None else self.signalling
        target = self.policy.expect(address, ip, time.monotonic())
        if target is None or target == address:
            self.remote = address if address[1] else None
            self.remote_rtcp = (address[0], address[1] + 1) if address[1] else None
        else:  # the learnt source stays (a NAT): keep sending there
            self.remote = target
        self._inband = stream.dtmf_payload_type is None
        self._detect_at_8k = StreamResampler(self.rate, 8000) if self.rate != 8000 else None
        self._sending = stream.sends
        if stream.webrtc is not None:
            self._browser(stream.webrtc)
        else:
            self._encrypt(stream.srtp)
        self.engine._configured(self)

    def _browser(self, peer: webrtc.Peer) -> None:
        """A browser's terms: its ICE ufrag to check, a DTLS endpoint for its certificate
        (made again only when the certificate or the role changed; keys come from it)."""
        current = self.browser
        self.browser = peer
        if self.ice is not None:
            self.ice.remote_ufrag = peer.ufrag
        if current is None or (current.fingerprint, current.server) != (
            peer.fingerprint,
            peer.server,
        ):
            self.dtls = DtlsSrtp(
                self.engine.identity, server=peer.server, remote_fingerprint=peer.fingerprint
            )
            self._encrypt(None)  # nothing leaves until the handshake gives keys
            self.engine._handshaking.add(self)
        self.engine.mux[self.row] = True

    def dtls_keys(self, keys: tuple[str, bytes, bytes]) -> None:
        """The keys the DTLS handshake exported: SRTP from now on, both ways."""
        self._encrypt(sip.SrtpKeys(*keys))
        self.engine._classify(self)

    def _encrypt(self, keys: sip.SrtpKeys | None) -> None:
        """SRTP contexts for ``keys`` (new ones only when a key or the suite changed: a
        re-INVITE that names the same keys keeps the replay windows and rollover counts)."""
        if keys == self.srtp:
            return
        self.srtp = keys
        if keys is None:
            self.srtp_in = self.srtp_out = None
        else:
            self.srtp_in = SrtpContext(keys.suite, keys.remote, inbound=True)
            self.srtp_out = SrtpContext(keys.suite, keys.local, inbound=False)
        self.engine.srtp[self.row] = keys is not None

    # -- what it sends -----------------------------------------------------------------------

    @property
    def source(self) -> Source | None:
        return self._source

    @source.setter
    def source(self, source: Source | None) -> None:
        old = self._source
        if isinstance(old, LegSource):
            old.other.dependents.discard(self)
        self._source = source
        if isinstance(source, LegSource) and not self.closed:
            source.other.dependents.add(self)
        self.engine._classify(self)

    @property
    def sending(self) -> bool:
        return self._sending

    @sending.setter
    def sending(self, value: bool) -> None:
        self._sending = value
        self.engine._classify(self)

    @property
    def listen_dtmf(self) -> bool:
        return self._listen_dtmf

    @listen_dtmf.setter
    def listen_dtmf(self, value: bool) -> None:
        self._listen_dtmf = value
        self.engine._listening(self)

    # -- digits ------------------------------------------------------------------------------

    def push_dtmf(self, digit: str) -> None:
        """A key from this leg's phone: to :attr:`on_key` when an application takes them,
        relayed to the bridged peer, else kept for IVRs."""
        if self.on_key is not None:
            self.on_key(digit)
        elif self.dtmf_peer is not None and not self._listen_dtmf:
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
        if self.dtmf_pt is not None:
            with contextlib.suppress(OverflowError):  # a flood of keys: the rest is dropped
                self._dtmf_sender.queue(digit, 100)
        else:
            self._tone = Player(
                dtmf_tone(digit, 100, 60, self.rate), self.frame_samples, loop=False
            )
        self.engine._classify(self)

    def send_dtmf(self, digits: str, duration_ms: int = 100) -> None:
        """Queue RFC 4733 events for ``digits`` (the phone negotiated telephone-event)."""
        if self.dtmf_pt is None:
            raise ValueError("the peer did not negotiate telephone-event")
        self._dtmf_sender.queue(digits, duration_ms)
        self.engine._classify(self)

    # -- audio in ------------------------------------------------------------------------------

    @property
    def payload_in(self) -> bytes | None:
        """This tick's packet as the phone sent it (None: nothing due)."""
        return self.engine._payload(self.row) if not self.closed else None

    @property
    def frame_in(self) -> Samples:
        """This tick's audio from the phone (decoded on first use, concealed if lost,
        silence if none)."""
        stream = self.stream
        if stream is None or self.closed:
            return np.zeros(160, dtype=np.int16)
        engine = self.engine
        row = self.row
        if engine.decoded_at[row] != engine.tick_count:
            engine.decode(np.array([row], dtype=np.int64))
        if not engine.heard[row]:
            return self._concealment.silence
        return engine.frames[row, : stream.samples].copy()  # taps may keep it

    def _decode_own(self, status: int) -> Samples | None:
        """This tick's frame by this leg's own decoder (G.722, Opus, another packet time
        than 20 ms), None when nothing was due."""
        stream = self.stream
        if stream is None:
            return None
        concealment = self._concealment
        if status == FRAME:
            try:
                return concealment.good(stream.decoder.decode(self.payload_in or b""))
            except codecs.CodecError as exc:
                self._refuse(exc)
                return concealment.lost(stream.decoder, None)
        if status == LOST:
            return concealment.lost(stream.decoder, self.engine.jitter.following(self.row))
        return None

    def _refuse(self, exc: codecs.CodecError) -> None:
        self.counters.refused += 1
        if self.counters.refused in (1, 10, 100, 1000):
            log.warning(
                "event=payload_refused codec=%s source=%s count=%d error=%s",
                self.codec.name if self.codec else "?",
                self.remote,
                self.counters.refused,
                exc,
            )

    def _listen(self) -> None:
        """The tick's frame to taps and the in-band key detector."""
        if self.stream is None or self.closed:
            return
        if int(self.engine.status[self.row]) not in (FRAME, LOST):
            return
        frame = self.frame_in
        if self._listen_dtmf and self._inband:
            if self._detector is None:
                self._detector = DtmfDetector()
            narrow = frame
            if self._detect_at_8k is not None:  # the detector's filters are set for 8 kHz
                narrow = self._detect_at_8k.process(frame)
            for digit in self._detector.feed(narrow):
                self.push_dtmf(digit)
        for tap in list(self.taps):
            tap(frame)

    def add_tap(self, tap: Callable[[Samples], None]) -> None:
        """``tap`` gets each received frame (decoded) until :meth:`remove_tap`."""
        self.taps.append(tap)
        self.engine._listening(self)

    def remove_tap(self, tap: Callable[[Samples], None]) -> None:
        """Stops ``tap``; a leg that closed meanwhile has already let go of it."""
        with contextlib.suppress(ValueError):
            self.taps.remove(tap)
        self.engine._listening(self)

    # -- audio out -------------------------------------------------------------------------------

    def _packet(self, tick: int) -> tuple[bytes, int, bool, int | None] | None:
        """This tick's packet when the engine cannot make it alone: (payload, payload
        type, marker, timestamp or None for the stream's), or None to send nothing."""
        stream = self.stream
        source = self._source
        if stream is None or not self._sending:
            return None
        payload: bytes | None = None
        if source is None:
            pass  # nothing to say; a key being sent still goes out
        elif self._tone is not None:  # a played key replaces the audio while it sounds
            source.frame(self, tick)  # the source moves on all the same
            key = self._tone.read()
            if self._tone.done:
                self._tone = None
                self.engine._classify(self)
            payload = stream.encoder.encode(key)
        else:
            payload = source.payload(self, tick)
            if payload is None:
                frame = source.frame(self, tick)
                if frame is not None:
                    payload = stream.encoder.encode(frame)
        if self._dtmf_sender.active and self.dtmf_pt is not None:
            event, starting = self._next_event()
            if event is not None:
                if starting:
                    self._event_ts = int(self.engine.ts[self.row])
                return event.payload, self.dtmf_pt, event.marker, self._event_ts
            if payload is None:  # between keys: silence keeps the stream going
                payload = stream.encoder.encode(np.zeros(stream.samples, dtype=np.int16))
        if payload is None:
            return None
        return payload, self.payload_type, False, None

    def _next_event(self) -> tuple[EventPacket | None, bool]:
        sender = self._dtmf_sender
        packet = sender.next_packet()
        if not sender.active:  # the last key went out: the leg may be served in bulk again
            self.engine._classify(self)
        return packet

    @property
    def key_active(self) -> bool:
        """A key is being played to the phone (RFC 4733 or in-band)."""
        return self._tone is not None or self._dtmf_sender.active

    def play(self, samples: Samples, *, loop: bool = False) -> PlayerSource:
        source = PlayerSource(Player(samples, self.frame_samples, loop=loop), self.rate)
        if self.closed:  # the call is gone: nothing to wait for
            source.done.set()
            return source
        self.source = source
        return source

    def stop_playing(self) -> None:
        """Cut the prompt being played short (a key was pressed: barge-in)."""
        if isinstance(self._source, PlayerSource):
            self._source.done.set()
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
        if self.closed:
            return
        source = self._source
        self.engine._remove(self)
        self.closed = True
        if isinstance(source, PlayerSource):  # whoever waits for its end goes on
            source.done.set()
        if isinstance(source, LegSource):
            source.other.dependents.discard(self)
        # bridged legs point at each other (sources, keys): undo it, so that an
        # ended call is freed at once rather than by the cycle collector
        self._source = self.dtmf_peer = self.key_filter = None
        self.taps = []
        # the PBX's hooks close over the call's party, which holds this leg
        self.on_rejected_source = self.on_contested = None
        self.srtp_in = self.srtp_out = None
        if self.ice is not None:
            self.engine._ice_legs.pop(self.ice.ufrag, None)
        self.engine._handshaking.discard(self)
        self.dtls = None
        for other in list(self.dependents):
            self.engine._classify(other)
        self.dependents.clear()
