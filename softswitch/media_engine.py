"""The media engine: every anchored RTP leg of the daemon, on shared ports, batched per tick.

A leg is a row of numpy columns, not an object on the event loop. Each 20 ms tick:

1. *receive*: every shared port is drained by one ``recvmmsg`` (:mod:`rtp.batch`), headers
   parsed as columns (:mod:`rtp.columns`), packets matched to legs by source address
   (vectorised), audio queued in one jitter row per leg (:mod:`rtp.jitter_rows`), RFC
   4733 events turned into digits;
2. *pop*: one frame per leg from the jitter rows; nothing is decoded yet;
3. *listen*: legs with taps (recording) or in-band DTMF detection decode theirs;
4. *send*: a bridged leg whose partner has its codec and packet time gets the partner's
   payload copied into its row (a relay: no Python per packet, no decode); listeners of
   hold music or a tone on a stateless codec get the tick's one shared encoding in one
   assignment per group; every other leg (a prompt, a transcoded bridge, wideband music,
   a key being played) is asked for its packet by its :class:`Source`; then headers are
   written as columns and every port's packets leave in one ``sendmmsg``;
5. RTCP: reports per leg at the RFC 3550 interval, peers' reports kept.

Which leg a packet belongs to is never guessed. A packet is its leg's when it comes
from the address that leg latched or that its SDP named; otherwise from an IP that one
leg alone claims on that port (its SDP's, its SIP messages'): strict RTP
(:mod:`rtp.source_policy`) then decides within it — learning, probation, NAT
rebinding. A leg that would have to learn its port from an IP another learning leg
claims (two phones behind one NAT calling at once) gets a port of its own. Packets
nobody owns are counted and dropped, reported once per source per burst.

Rates: a leg works at its codec's audio rate (``leg.rate``: 8000 for G.711, 16000 for
G.722 and Opus), never at the RTP clock (:mod:`media.codecs` keeps the two apart). Every
source gives frames at the rate of the leg that asks, converting at most once: a bridge
of an 8 kHz and a 16 kHz leg resamples in :class:`LegSource`, a shared source keeps one
player per rate. G.722 and Opus listeners of a shared source keep their own encoder: a
phone's decoder follows the state of the encoder whose stream it gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import secrets
import select
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

import sip
from media import codecs, g711
from media.audio import Player, SharedPlayer, load_audio
from media.clock import MediaClock
from media.conceal import MAX_REPEATS, Concealment
from media.dtmf_detect import DtmfDetector
from media.resample import StreamResampler
from media.tones import dtmf_tone, tone
from rtp import DtmfReceiver, PortAllocator, SourcePolicy
from rtp.batch import Batch, BatchSocket, address_bytes, address_text, ip_key
from rtp.columns import Headers, gather, parse, write_headers
from rtp.dtmf import DtmfSender, EventPacket
from rtp.jitter_rows import FRAME, LOST, JitterRows, Popped
from rtp.packet import (
    Bye,
    PacketError,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    SenderReport,
    SourceDescription,
    build_compound,
    parse_rtcp,
)
from rtp.source_policy import REASONS, UNEXPECTED, BurstGate
from rtp.stats import ntp_timestamp, report_block, rtcp_interval

log = logging.getLogger(__name__)
Samples = npt.NDArray[np.int16]
Ints = npt.NDArray[np.int64]
Address = tuple[str, int]
SOUNDS = Path(__file__).resolve().parent / "sounds"
MAX_PAYLOAD = 480  # bytes of audio per packet kept (60 ms of G.711); longer is refused
SLOT = 640  # bytes per received datagram
FRAME_WIDTH = 960  # samples of a leg's frame kept per tick (60 ms at 16 kHz)
AMBIGUOUS = "ambiguous"  # a stray's reason: its IP is claimed by several legs
ENDED = -3  # the row of a source whose leg just closed (see _Ports.bury)
AFTERLIFE = 5.0  # seconds a closed leg's source stays refused
# SDP addresses behind a NAT: a leg whose SDP names one of these while its SIP comes from
# another IP is heard from that IP (its NAT), at a port it must learn
_PRIVATE = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    )
)
_UNSPECIFIED = ("", "0.0.0.0", "::")


def prompt_path(name: str, language: str = "en") -> Path:
    """A built-in prompt in ``language`` (English when it has no translation)."""
    path = SOUNDS / language / f"{name}.flac"
    return path if language != "en" and path.exists() else SOUNDS / f"{name}.flac"


def behind_nat(sdp_ip: str, signalling: str | None) -> bool:
    """Whether a phone's media is likely to come from its signalling IP rather than its
    SDP's: a private (or unusable) SDP address and SIP from elsewhere."""
    if not signalling or signalling == sdp_ip:
        return False
    try:
        ip = ipaddress.ip_address(sdp_ip)
    except ValueError:
        return True  # a name, or garbage: trust only what signalling shows
    return ip.is_unspecified or any(ip in net for net in _PRIVATE if net.version == ip.version)


def _ip16(host: str) -> bytes | None:
    if host in _UNSPECIFIED:
        return None
    try:
        return address_bytes(host)
    except ValueError:
        return None


# -- what a leg sends ------------------------------------------------------------------------


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
    use the same codec and packet time (the engine copies them row to row), else its
    decoded frames (resampled once when the rates differ) re-encoded."""

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
        self.on_done: Callable[[], None] | None = None  # called once, when it has played
        self._converter = _Converter()

    def frame(self, leg: MediaLeg, tick: int) -> Samples | None:
        if self.player.done:
            if not self.done.is_set():
                self.done.set()
                if self.on_done is not None:
                    self.on_done()
            return None
        return self._converter.convert(self.player.read(), self.rate, leg.rate)


Groups = list[tuple[Ints, bytes]]  # rows that get one payload
Singles = list[tuple[int, bytes | None]]  # a row and its own payload (None: nothing)


class GroupSource(Source):
    """A source many legs hear at once, served as a block: once per tick the engine asks
    it for the payloads of every leg that hears it (the rows of those sending), as groups
    of rows that get the same bytes (copied in one assignment each) and single rows."""

    def payloads(self, engine: MediaEngine, rows: Ints, tick: int) -> tuple[Groups, Singles]:
        raise NotImplementedError


class SharedSource(GroupSource):
    """Hold music or a progress tone: one player per rate (the audio made at that rate,
    not resampled per tick), one frame per tick and one encoding per stateless codec for
    every listener (the engine copies it to every such listener's row at once). G.722
    and Opus listeners keep their own encoder: a phone's decoder follows the state of
    the encoder whose stream it gets, and switching it to a shared encoder's stream
    (bridge, then music) garbles the audio well beyond a few ms."""

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

    def shares(self, leg: MediaLeg) -> bool:
        """Whether ``leg`` takes the shared encoding (a stateless codec, 20 ms packets)."""
        stream = leg.stream
        return stream is not None and stream.codec.stateless and stream.samples == leg.rate // 50

    def encoded(self, codec: codecs.Codec, rate: int, tick: int) -> bytes:
        shared = self.player(rate)
        shared.advance(tick)
        return shared.encoded(codec)

    def payload(self, leg: MediaLeg, tick: int) -> bytes | None:
        stream = leg.stream
        if stream is None or not self.shares(leg):
            return None
        return self.encoded(stream.codec, leg.rate, tick)

    def payloads(self, engine: MediaEngine, rows: Ints, tick: int) -> tuple[Groups, Singles]:
        groups: Groups = []
        singles: Singles = []
        by_kind: dict[tuple[str, int], list[int]] = {}
        for row in rows.tolist():
            leg = engine.leg_at(row)
            stream = leg.stream if leg is not None else None
            if leg is None or stream is None:
                continue
            if self.shares(leg):
                by_kind.setdefault((stream.codec.name, leg.rate), []).append(row)
            else:  # its own encoder (G.722, Opus) or packet time
                frame = self.frame(leg, tick)
                singles.append((row, None if frame is None else stream.encoder.encode(frame)))
        for (name, rate), members in by_kind.items():
            payload = self.encoded(codecs.codec(name), rate, tick)
            groups.append((np.array(members, dtype=np.int64), payload))
        return groups, singles


# -- legs ------------------------------------------------------------------------------------


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


class _Ports:
    """An RTP/RTCP port pair: the shared one of a host, or one leg's own."""

    def __init__(self, host: str, ports: PortAllocator, *, shared: bool) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for port in ports.candidates():
            rtp = socket.socket(family, socket.SOCK_DGRAM)
            rtcp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                rtp.bind((host, port))
                rtcp.bind((host, port + 1))
            except OSError:
                rtp.close()
                rtcp.close()
                continue
            break
        else:
            raise OSError(f"no free RTP port pair in {ports.start}-{ports.end}")
        ports.take(port)
        if shared:  # a tick's worth of every leg's packets waits in the kernel
            for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
                if option is None:
                    continue
                try:
                    rtp.setsockopt(socket.SOL_SOCKET, option, 8 << 20)
                    break
                except OSError:
                    continue
            rtp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        for s in (rtp, rtcp):
            s.setblocking(False)
        self.host, self.port, self.shared = host, port, shared
        self.rtp, self.rtcp = BatchSocket(rtp), BatchSocket(rtcp)
        self._allocator = ports
        self.legs: set[MediaLeg] = set()
        # who may be heard here: exact source addresses, and IPs (a leg learning its port)
        self.exact: dict[tuple[bytes, int], MediaLeg] = {}
        self.claims: dict[bytes, set[MediaLeg]] = {}
        # sources of legs that just closed, until when: their phone's last packets (sent
        # before it read our BYE) are dropped, not taken for a new call learning at its IP
        self.ended: dict[tuple[bytes, int], float] = {}
        self.expires = np.inf
        self._index: tuple[npt.NDArray[np.uint64], Ints, npt.NDArray[np.uint8], Ints] | None = None

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()
        self._allocator.release(self.port)

    def reindex(self) -> None:
        self._index = None

    def bury(self, sources: Iterable[tuple[bytes, int]], until: float) -> None:
        """Drop packets from ``sources`` (a closed leg's) until ``until``."""
        for source in sources:
            self.ended[source] = until
        self.expires = min(self.expires, until)
        self._index = None

    def expire(self, now: float) -> None:
        if now < self.expires:
            return
        self.ended = {k: t for k, t in self.ended.items() if t > now}
        self.expires = min(self.ended.values(), default=np.inf)
        self._index = None

    def _tables(self) -> tuple[npt.NDArray[np.uint64], Ints, npt.NDArray[np.uint8], Ints]:
        """Sorted keys for the vectorised look-up: (ip, port) pairs, then single IPs
        (port -1), each with its leg's row; an IP claimed by several legs maps to -2."""
        if self._index is None:
            ips: list[bytes] = []
            ports: list[int] = []
            rows: list[int] = []
            for (ip, port), leg in self.exact.items():
                ips.append(ip)
                ports.append(port)
                rows.append(leg.row)
            for (ip, port), _until in self.ended.items():
                if (ip, port) not in self.exact:
                    ips.append(ip)
                    ports.append(port)
                    rows.append(ENDED)
            for ip, legs in self.claims.items():
                ips.append(ip)
                ports.append(-1)
                rows.append(next(iter(legs)).row if len(legs) == 1 else -2)
            if ips:
                ip_arr = np.frombuffer(b"".join(ips), dtype=np.uint8).reshape(-1, 16)
            else:
                ip_arr = np.zeros((0, 16), dtype=np.uint8)
            port_arr = np.array(ports, dtype=np.int64)
            keys = _keys(ip_arr, port_arr)
            order = np.argsort(keys, kind="stable")
            self._index = (
                keys[order],
                port_arr[order],
                ip_arr[order],
                np.array(rows, dtype=np.int64)[order],
            )
        return self._index

    def owners(self, ip: npt.NDArray[np.uint8], port: Ints) -> Ints:
        """The row each source belongs to: its exact address's leg, else its IP's only
        claimant; -1 nobody, -2 an IP several legs claim, ENDED a leg that just closed."""
        keys, k_port, k_ip, k_row = self._tables()
        out = np.full(len(port), -1, dtype=np.int64)
        if not len(keys):
            return out
        for p in (port, np.full(len(port), -1, dtype=np.int64)):
            want = out == -1
            if not want.any():
                break
            key = _keys(ip, p)
            pos = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
            hit = want & (keys[pos] == key) & (k_port[pos] == p) & (k_ip[pos] == ip).all(1)
            out[hit] = k_row[pos[hit]]
        return out


class _Poller:
    """Which of many sockets have packets, in one system call (epoll where there is one)."""

    def __init__(self) -> None:
        self._poll: Any = select.epoll() if hasattr(select, "epoll") else select.poll()
        self._mask = select.EPOLLIN if hasattr(select, "epoll") else select.POLLIN

    def add(self, *fds: int) -> None:
        for fd in fds:
            self._poll.register(fd, self._mask)

    def remove(self, *fds: int) -> None:
        for fd in fds:
            with contextlib.suppress(KeyError, OSError, ValueError):
                self._poll.unregister(fd)

    def ready(self) -> set[int]:
        return {fd for fd, _ in self._poll.poll(0)}

    def close(self) -> None:
        if hasattr(self._poll, "close"):
            self._poll.close()


def _keys(ip: npt.NDArray[np.uint8], port: Ints) -> npt.NDArray[np.uint64]:
    mixed = (port + 1).astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
    return ip_key(ip) ^ mixed if len(ip) else np.zeros(0, dtype=np.uint64)


class MediaLeg:
    """One party's RTP on the engine: codec, source, taps, digits, strict source."""

    def __init__(self, engine: MediaEngine, row: int, ports: _Ports) -> None:
        self.engine = engine
        self.row = row
        self.ports = ports
        self.stream: LegStream | None = None
        self.codec: codecs.Codec | None = None
        self.rate = 8000
        self.payload_type = 0
        self.accepted_pts: set[int] = set()
        self.dtmf_pt: int | None = None
        self.ssrc = secrets.randbits(32)
        self.cname = f"{secrets.token_hex(6)}@softswitch"
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
        self.expected: Address | None = None  # the SDP's address
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

    # -- addresses -------------------------------------------------------------------------

    @property
    def local(self) -> Address:
        """The RTP address our SDP names for this leg."""
        return (self.ports.host, self.ports.port)

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
        if address[0] not in _UNSPECIFIED and address[1]:
            self.expected = address
        if target is None or target == address:
            self.remote = address if address[1] else None
            self.remote_rtcp = (address[0], address[1] + 1) if address[1] else None
        else:  # the learnt source stays (a NAT): keep sending there
            self.remote = target
        self._inband = stream.dtmf_payload_type is None
        self._detect_at_8k = StreamResampler(self.rate, 8000) if self.rate != 8000 else None
        self._sending = stream.sends
        self.engine._configured(self)

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
        self.on_rejected_source = None
        for other in list(self.dependents):
            self.engine._classify(other)
        self.dependents.clear()


# -- the engine --------------------------------------------------------------------------------

# how a leg's packet is made each tick
NOTHING, RELAY, GROUP, PYTHON = 0, 1, 2, 3


class Mixing(Protocol):
    """What mixes the legs' decoded audio each tick (a conference room)."""

    def mix(self, tick: int) -> None: ...


_COLUMNS = {  # name: (dtype, fill)
    "pt": (np.int64, 0),
    "seq": (np.int64, 0),
    "ts": (np.int64, 0),
    "step": (np.int64, 160),
    "ssrc": (np.int64, 0),
    "sending": (np.bool_, False),
    "received": (np.int64, 0),
    "sent": (np.int64, 0),
    "sent_octets": (np.int64, 0),
    "dst_port": (np.int64, 0),
    "cur_port": (np.int64, -1),
    "last_heard": (np.float64, -np.inf),
    "relay_from": (np.int64, -1),
    "status": (np.int8, 0),
    "pindex": (np.int64, -1),
    "audio_pt": (np.int64, -1),
    "key_pt": (np.int64, -1),
    # RFC 3550 receiver statistics
    "base": (np.int64, -1),
    "stats_ssrc": (np.int64, -1),
    "audio_in": (np.int64, 0),
    "jitter_ts": (np.float64, 0.0),
    "transit": (np.float64, np.nan),
    "rtp_rate": (np.int64, 8000),
    "last_sr": (np.int64, 0),
    "last_sr_at": (np.float64, np.nan),
    "rtcp_due": (np.float64, np.inf),
    # decoding: who needs audio, what was decoded this tick
    "codec_id": (np.int64, 2),
    "decode_flag": (np.bool_, False),
    "decoded_at": (np.int64, -1),
    "heard": (np.bool_, False),
    "repeats": (np.int64, 0),
}
PCMU_ID, PCMA_ID, OTHER_ID = 0, 1, 2  # codec_id: table-decoded 20 ms G.711, or a decoder
_TABLES = {PCMU_ID: g711.ULAW_DECODE, PCMA_ID: g711.ALAW_DECODE}


class MediaEngine:
    """Every leg of the daemon; ``clock`` ticks it, ``ports`` gives its port pairs."""

    # columns, a row per leg (see _COLUMNS)
    pt: Ints
    seq: Ints
    ts: Ints
    step: Ints
    ssrc: Ints
    sending: npt.NDArray[np.bool_]
    received: Ints
    sent: Ints
    sent_octets: Ints
    dst_port: Ints
    cur_port: Ints
    last_heard: npt.NDArray[np.float64]
    relay_from: Ints
    status: npt.NDArray[np.int8]
    pindex: Ints
    audio_pt: Ints
    key_pt: Ints
    base: Ints
    stats_ssrc: Ints
    audio_in: Ints
    jitter_ts: npt.NDArray[np.float64]
    transit: npt.NDArray[np.float64]
    rtp_rate: Ints
    last_sr: Ints
    last_sr_at: npt.NDArray[np.float64]
    rtcp_due: npt.NDArray[np.float64]
    dst_ip: npt.NDArray[np.uint8]
    cur_ip: npt.NDArray[np.uint8]
    codec_id: Ints
    decode_flag: npt.NDArray[np.bool_]
    decoded_at: Ints
    heard: npt.NDArray[np.bool_]
    repeats: Ints
    frames: npt.NDArray[np.int16]  # this tick's audio per leg
    last_frame: npt.NDArray[np.int16]  # for concealment

    def __init__(
        self,
        clock: MediaClock,
        ports: PortAllocator,
        country: str = "us",
        language: str = "en",
        *,
        capacity: int = 64,
    ) -> None:
        self.clock = clock
        self.ports = ports
        self.country = country
        self.language = language
        self.legs: set[MediaLeg] = set()
        self.tick_count = 0
        self.stats: dict[str, int] = {
            "received": 0,
            "sent": 0,
            "malformed": 0,
            "strays": 0,
            "dropped": 0,
            "foreign_pt": 0,
            "rtcp_sent": 0,
            "rtcp_received": 0,
            "own_ports": 0,
        }
        self.stats.update({f"strays_{reason}": 0 for reason in (*REASONS, AMBIGUOUS, "ended")})
        # a source no leg owns (address, reason), at most once per source per burst
        self.on_rejected_source: Callable[[Address, str], None] | None = None
        self._strays = BurstGate()
        self._prompts: dict[tuple[str, int], Samples] = {}
        self._shared: dict[str, SharedSource] = {}
        self._pairs: dict[str, _Ports] = {}  # the shared pair of each host
        self._own: list[_Ports] = []
        # the own ports' sockets, asked once a tick which have packets (a call whose far
        # end sends no RTP costs nothing but that one poll)
        self._poller = _Poller()
        self._ready: set[int] = set()
        self._by_row: list[MediaLeg | None] = []
        self._free: list[int] = []
        self.capacity = 0
        self.rows = np.zeros(0, dtype=np.int64)
        self.jitter = JitterRows(1, payload=MAX_PAYLOAD)
        self._grow(max(1, capacity))
        self._popped: Popped | None = None
        # how each leg is served: relays and shared groups as row arrays, the rest by hand
        self._kind: dict[MediaLeg, int] = {}
        self._relays: set[MediaLeg] = set()
        self._relay_rows = np.zeros(0, dtype=np.int64)
        self._groups: dict[GroupSource, dict[MediaLeg, None]] = {}
        self._group_rows: dict[GroupSource, Ints] = {}
        self._mixers: dict[Mixing, None] = {}
        self._audio_users: set[MediaLeg] = set()
        self._decode_rows = np.zeros(0, dtype=np.int64)
        self._decode_dirty = False
        self._python: dict[MediaLeg, None] = {}  # ordered: served in the order they came
        self._plan_dirty = False
        self._listeners: dict[MediaLeg, None] = {}
        self.rx = Batch(256, SLOT)
        self._rtcp_rx = Batch(64, SLOT)
        self._rng = random.Random()
        self._unsubscribe = clock.subscribe(self._tick, priority=50, idle=self.idle)

    # -- rows --------------------------------------------------------------------------------------

    def _grow(self, capacity: int) -> None:
        old = self.capacity
        for name, (dtype, fill) in _COLUMNS.items():
            column: npt.NDArray[np.generic] = np.full(capacity, fill, dtype=dtype)
            if old:
                column[:old] = getattr(self, name)
            setattr(self, name, column)
        for name, width, kind in (
            ("dst_ip", 16, np.uint8),
            ("cur_ip", 16, np.uint8),
            ("frames", FRAME_WIDTH, np.int16),
            ("last_frame", FRAME_WIDTH, np.int16),
        ):
            block: npt.NDArray[np.generic] = np.zeros((capacity, width), dtype=kind)
            if old:
                block[:old] = getattr(self, name)
            setattr(self, name, block)
        prior = np.zeros((capacity, 2), dtype=np.int64)  # expected, received at last report
        if old:
            prior[:old] = self._prior
        self._prior: Ints = prior
        self.jitter = (
            self.jitter.resized(capacity) if old else JitterRows(capacity, payload=MAX_PAYLOAD)
        )
        self._by_row += [None] * (capacity - old)
        self._free = list(range(capacity - 1, old - 1, -1)) + self._free
        self.capacity = capacity
        self.tx = Batch(capacity, 12 + MAX_PAYLOAD)
        self._has = np.zeros(capacity, dtype=bool)
        self._size = np.zeros(capacity, dtype=np.int64)
        self._marker = np.zeros(capacity, dtype=bool)
        self._pt_out = np.zeros(capacity, dtype=np.int64)
        self._ts_out = np.zeros(capacity, dtype=np.int64)

    def idle(self) -> bool:
        """No leg: the media clock may sleep."""
        return not self.legs and not self._mixers

    async def new_leg(self, host: str, peers: Iterable[str | Address] = ()) -> MediaLeg:
        """A leg whose SDP will name ``host``. ``peers``: where its phone's RTP may come
        from, when known (IPs, or an offer's exact address). It gets a port of its own
        when the shared port could not tell its packets from another leg's: an IP another
        leg there is still learning its port at, or an address another leg there expects
        (a peer that sends several calls from one port, as SIPp does)."""
        pair = self._shared_pair(host)
        for peer in peers:
            ip, port = (peer, None) if isinstance(peer, str) else peer
            key = _ip16(ip)
            if key is None:
                continue
            taken = (key, port) in pair.exact if port else False
            if taken or any(not leg.latched for leg in pair.claims.get(key, ())):
                return self._add(self._own_pair(host, f"shared_source peer={ip}:{port or '*'}"))
        return self._add(pair)

    def _shared_pair(self, host: str) -> _Ports:
        pair = self._pairs.get(host)
        if pair is None:
            pair = self._pairs[host] = _Ports(host, self.ports, shared=True)
        return pair

    def _own_pair(self, host: str, reason: str) -> _Ports:
        pair = _Ports(host, self.ports, shared=False)
        self._own.append(pair)
        self._poller.add(pair.rtp.sock.fileno(), pair.rtcp.sock.fileno())
        self.stats["own_ports"] += 1
        log.info("event=rtp_own_port port=%d reason=%s", pair.port, reason)
        return pair

    def _add(self, pair: _Ports) -> MediaLeg:
        if not self._free:
            self._grow(self.capacity * 2)
        row = self._free.pop()
        leg = MediaLeg(self, row, pair)
        self._by_row[row] = leg
        pair.legs.add(leg)
        self.legs.add(leg)
        for name, (_, fill) in _COLUMNS.items():
            getattr(self, name)[row] = fill
        self.dst_ip[row] = 0
        self.cur_ip[row] = 0
        self.last_frame[row] = 0
        self._prior[row] = 0
        self.jitter.clear(np.array([row]))
        self.seq[row] = secrets.randbits(16)
        self.ts[row] = secrets.randbits(32)
        self.ssrc[row] = leg.ssrc
        self.sending[row] = False
        self.rows = np.insert(self.rows, np.searchsorted(self.rows, row), row)
        self._decode_dirty = True
        self.clock.wake()
        return leg

    def _remove(self, leg: MediaLeg) -> None:
        if leg not in self.legs:
            return
        now = time.monotonic()
        if leg.remote_rtcp is not None and leg.stream is not None:
            self._send_rtcp(leg, now, bye=True)
        self.legs.discard(leg)
        pair = leg.ports
        pair.legs.discard(leg)
        if pair.shared:
            sources = [k for k, owner in pair.exact.items() if owner is leg]
            pair.bury(sources, now + AFTERLIFE)
        self._unclaim(leg)
        if not pair.shared:
            self._poller.remove(pair.rtp.sock.fileno(), pair.rtcp.sock.fileno())
            pair.close()
            self._own.remove(pair)
        self._unplan(leg)
        self._listeners.pop(leg, None)
        self._by_row[leg.row] = None
        self.rtcp_due[leg.row] = np.inf
        self.status[leg.row] = 0
        self._audio_users.discard(leg)
        self.decode_flag[leg.row] = False
        self._decode_dirty = True
        self._free.append(leg.row)
        self.rows = self.rows[self.rows != leg.row]

    # -- who may be heard --------------------------------------------------------------------------

    def _claim(self, leg: MediaLeg) -> None:
        """Index where ``leg``'s packets may come from on its port."""
        if leg.closed:
            return
        self._unclaim(leg)
        pair = leg.ports
        policy = leg.policy
        natted = leg.expected is not None and behind_nat(leg.expected[0], policy.signalling)
        for address in (policy.current, None if natted else leg.expected):
            if address is None:
                continue
            key = _ip16(address[0])
            if key is not None:
                pair.exact[key, address[1]] = leg  # the last one signalled wins
        ips = set()
        if leg.expected is not None:
            ips.add(leg.expected[0])
        if policy.signalling:
            ips.add(policy.signalling)
        if policy.current is not None:
            ips.add(policy.current[0])
        for ip in ips:
            key = _ip16(ip)
            if key is not None:
                pair.claims.setdefault(key, set()).add(leg)
        pair.reindex()

    def _unclaim(self, leg: MediaLeg) -> None:
        pair = leg.ports
        for k in [k for k, owner in pair.exact.items() if owner is leg]:
            del pair.exact[k]
        for key in [k for k, legs in pair.claims.items() if leg in legs]:
            pair.claims[key].discard(leg)
            if not pair.claims[key]:
                del pair.claims[key]
        pair.reindex()

    # -- how each leg is served --------------------------------------------------------------------

    def _configured(self, leg: MediaLeg) -> None:
        stream = leg.stream
        assert stream is not None
        row = leg.row
        self.pt[row] = leg.payload_type
        self.step[row] = stream.codec.rtp_ticks(stream.ptime)
        self.rtp_rate[row] = stream.codec.rtp_clock
        table = {"PCMU": PCMU_ID, "PCMA": PCMA_ID}.get(stream.codec.name, OTHER_ID)
        self.codec_id[row] = table if stream.samples == 160 else OTHER_ID
        current = leg.policy.current  # a re-INVITE may have forgotten the latched source
        if current is None:
            self.cur_port[row] = -1
        self.audio_pt[row] = leg.payload_type
        self.key_pt[row] = leg.dtmf_pt if leg.dtmf_pt is not None else -1
        self._set_destination(leg)
        self._claim(leg)
        if leg.remote_rtcp is not None and not np.isfinite(self.rtcp_due[row]):
            self.rtcp_due[row] = time.monotonic() + self._interval(initial=True)
        self._classify(leg)
        self._listening(leg)
        for other in list(leg.dependents):
            self._classify(other)

    def _set_destination(self, leg: MediaLeg) -> None:
        row = leg.row
        remote = leg.remote
        key = _ip16(remote[0]) if remote is not None else None
        if remote is None or key is None:
            self.dst_port[row] = 0  # nowhere to send until the phone is heard
            return
        self.dst_ip[row] = np.frombuffer(key, dtype=np.uint8)
        self.dst_port[row] = remote[1]

    def _classify(self, leg: MediaLeg) -> None:
        """Put ``leg`` where this tick's packet for it is made."""
        if leg.closed or leg not in self.legs:
            return
        self._unplan(leg)
        source = leg.source
        kind = NOTHING
        self.sending[leg.row] = leg.sending and leg.stream is not None
        if leg.stream is None or source is None or not leg.sending:
            kind = PYTHON if leg.key_active and leg.stream is not None else NOTHING
        elif leg.key_active:
            kind = PYTHON
        elif isinstance(source, LegSource) and source.relays(leg) and not source.other.closed:
            kind = RELAY
            self.relay_from[leg.row] = source.other.row
        elif isinstance(source, GroupSource):
            kind = GROUP
        else:
            kind = PYTHON
        self._kind[leg] = kind
        if kind == RELAY:
            self._relays.add(leg)
        elif kind == GROUP:
            assert isinstance(source, GroupSource)
            self._groups.setdefault(source, {})[leg] = None
            self._group_rows.pop(source, None)
        elif kind == PYTHON:
            self._python[leg] = None
        if isinstance(source, LegSource):  # a transcoded bridge decodes its talker
            self._refresh_decode(source.other)
        self._plan_dirty = True

    def _unplan(self, leg: MediaLeg) -> None:
        kind = self._kind.pop(leg, NOTHING)
        if kind == RELAY:
            self._relays.discard(leg)
            self.relay_from[leg.row] = -1
        elif kind == GROUP:
            for source, legs in list(self._groups.items()):
                if legs.pop(leg, 0) is None:
                    self._group_rows.pop(source, None)
                    if not legs:
                        del self._groups[source]
        elif kind == PYTHON:
            self._python.pop(leg, None)
        self._plan_dirty = True

    def _listening(self, leg: MediaLeg) -> None:
        if not leg.closed and (leg.taps or (leg.listen_dtmf and leg._inband)):
            self._listeners[leg] = None
        else:
            self._listeners.pop(leg, None)
        self._refresh_decode(leg)

    def need_audio(self, leg: MediaLeg, needed: bool) -> None:
        """Decode ``leg``'s audio every tick, with every other such leg's, into
        :attr:`frames` (a conference member feeding a mixer), or stop."""
        if needed:
            self._audio_users.add(leg)
        else:
            self._audio_users.discard(leg)
        self._refresh_decode(leg)

    def _refresh_decode(self, leg: MediaLeg) -> None:
        """Whether ``leg``'s frames are decoded in the tick's batch: something listens to
        it (taps, key detection, a mixer) or a leg that hears it transcodes."""
        if leg.closed or leg not in self.legs:
            return
        needed = (
            leg in self._listeners
            or leg in self._audio_users
            or any(self._kind.get(d) == PYTHON for d in leg.dependents)
        )
        self.decode_flag[leg.row] = needed
        self._decode_dirty = True

    def add_mixer(self, mixer: Mixing) -> None:
        """``mixer.mix(tick)`` runs every tick once its inputs are decoded."""
        self._mixers[mixer] = None
        self.clock.wake()

    def remove_mixer(self, mixer: Mixing) -> None:
        self._mixers.pop(mixer, None)

    def leg_at(self, row: int) -> MediaLeg | None:
        return self._by_row[row]

    # -- the tick ---------------------------------------------------------------------------------

    def _tick(self, tick: int) -> None:
        if not len(self.rows) and not self._mixers:
            return
        self.tick_count += 1
        now = time.monotonic()
        self._receive(now)
        self._pop()
        if self._decode_dirty:
            self._decode_rows = self.rows[self.decode_flag[self.rows]]
            self._decode_dirty = False
        if len(self._decode_rows):
            self.decode(self._decode_rows)
        for leg in list(self._listeners):
            leg._listen()
        for mixer in list(self._mixers):
            mixer.mix(tick)
        self._send(tick)
        self._rtcp_tick(now)

    def _pairs_to_read(self, rtcp: bool) -> list[_Ports]:
        """The shared pairs, and the own pairs whose socket has packets."""
        ready = self._ready
        pairs = [p for p in self._pairs.values() if p.legs]
        for pair in self._own:
            if (pair.rtcp if rtcp else pair.rtp).sock.fileno() in ready:
                pairs.append(pair)
        return pairs

    def _receive(self, now: float) -> None:
        rx = self.rx
        rx.count = 0
        spans: list[tuple[_Ports, int, int]] = []
        self._ready = self._poller.ready() if self._own else set()
        for pair in self._pairs_to_read(rtcp=False):
            if not pair.legs:
                continue
            first = rx.count
            if pair.rtp.receive(rx):
                spans.append((pair, first, rx.count))
            if rx.count >= rx.capacity:
                break
        n = rx.count
        if not n:
            return
        if n >= rx.capacity and rx.capacity < 8192:  # more legs than the batch: widen it
            self.rx = Batch(min(8192, rx.capacity * 2), SLOT)
        self.stats["received"] += n
        h = parse(rx.data[:n], rx.length[:n])
        self.stats["malformed"] += int(n - np.count_nonzero(h.valid))
        row = np.full(n, -1, dtype=np.int64)
        for pair, first, last in spans:
            if pair.shared:
                pair.expire(now)
                row[first:last] = pair.owners(rx.ip[first:last], rx.port[first:last])
                several = np.flatnonzero(row[first:last] == -2) + first
                if len(several):
                    row[several] = self._resolve(pair, rx.ip[several], now)
            else:
                (leg,) = pair.legs
                row[first:last] = leg.row
        tail = row == ENDED
        if tail.any():  # an ended call's last packets: dropped, not reported
            self.stats["strays_ended"] += int(np.count_nonzero(tail))
            row[tail] = -4
        bad = h.valid & (row < 0) & (row != -4)
        if bad.any():
            self._strays_unowned(np.flatnonzero(bad), row, now)
        take = np.flatnonzero(h.valid & (row >= 0))
        if not len(take):
            return
        r = row[take]
        # from the latched source: accepted as is; anything else asks the leg's policy
        # addresses compared as two 64-bit words each (exact, and 8x fewer operations)
        words = np.ascontiguousarray(rx.ip[take]).view(np.uint64)
        latched = self.cur_ip.view(np.uint64)[r]
        current = (self.cur_port[r] == rx.port[take]) & (latched == words).all(1)
        self.last_heard[r[current]] = now
        if not current.all():
            keep = self._check_sources(take[~current], r[~current], h, now)
            accepted = np.ones(len(take), dtype=bool)
            accepted[~current] = keep
            take, r = take[accepted], r[accepted]
        np.add.at(self.received, r, 1)
        pt = h.pt[take]
        audio = pt == self.audio_pt[r]
        keys = ~audio & (pt == self.key_pt[r])
        foreign = ~audio & ~keys
        if foreign.any():
            self.stats["foreign_pt"] += int(np.count_nonzero(foreign))
            for fr in r[foreign].tolist():
                other = self._by_row[fr]
                if other is not None:
                    other.counters.foreign += 1
        if keys.any():
            self._keys(take[keys], r[keys], h)
        if audio.any():
            self._queue(take[audio], r[audio], h, now)

    def _resolve(self, pair: _Ports, ips: npt.NDArray[np.uint8], now: float) -> Ints:
        """Rows for packets from an IP several legs claim, at a port none of them latched
        or named: the one leg still learning its phone's port there, else the one whose
        latched source fell silent (a NAT rebinding); any other case is ambiguous (-2) and
        dropped (never guessed)."""
        out = np.full(len(ips), -2, dtype=np.int64)
        decided: dict[bytes, int] = {}
        for i, raw in enumerate(ips):
            key = raw.tobytes()
            row = decided.get(key)
            if row is None:
                legs = pair.claims.get(key, set())
                learning = [leg for leg in legs if not leg.latched]
                if not learning:
                    learning = [
                        leg
                        for leg in legs
                        if now - float(self.last_heard[leg.row]) > leg.policy.silence
                    ]
                row = decided[key] = learning[0].row if len(learning) == 1 else -2
            out[i] = row
        return out

    def _strays_unowned(self, packets: Ints, row: Ints, now: float) -> None:
        rx = self.rx
        seen: set[tuple[bytes, int, int]] = set()
        for i in packets[:64].tolist():
            seen.add((rx.ip[i].tobytes(), int(rx.port[i]), int(row[i])))
        self.stats["strays"] += len(packets)
        ambiguous = int(np.count_nonzero(row[packets] == -2))
        self.stats[f"strays_{AMBIGUOUS}"] += ambiguous
        self.stats[f"strays_{UNEXPECTED}"] += len(packets) - ambiguous
        for ip, port, owner in seen:  # the burst gate is asked once per source per tick
            source = (address_text(ip), port)
            if self._strays(source, now):
                self._report(None, source, AMBIGUOUS if owner == -2 else UNEXPECTED)

    def _report(self, leg: MediaLeg | None, source: Address, reason: str) -> None:
        log.info(
            "event=rtp_source_rejected local=%s source=%s:%d reason=%s peer=%s",
            leg.local if leg is not None else None,
            source[0],
            source[1],
            reason,
            leg.policy.current if leg is not None else None,
        )
        hook = leg.on_rejected_source if leg is not None else self.on_rejected_source
        if hook is not None:
            hook(source, reason)

    def _check_sources(
        self, take: Ints, rows: Ints, h: Headers, now: float
    ) -> npt.NDArray[np.bool_]:
        """Packets from other sources than the latched one, one by one through each leg's
        policy (the first packets of a leg, a NAT that moved, strangers at its IP)."""
        rx = self.rx
        keep = np.zeros(len(take), dtype=bool)
        for i, (k, row) in enumerate(zip(take.tolist(), rows.tolist(), strict=True)):
            leg = self._by_row[row]
            if leg is None:
                continue
            source = (address_text(rx.ip[k].tobytes()), int(rx.port[k]))
            policy = leg.policy
            policy.last_heard = float(self.last_heard[row])
            verdict = policy.check(source, int(h.ssrc[k]), int(h.seq[k]), now)
            self.last_heard[row] = policy.last_heard
            if not verdict.accept:
                leg.counters.foreign += 1
                self.stats["strays"] += 1
                self.stats[f"strays_{verdict.reason or UNEXPECTED}"] += 1
                if verdict.report:
                    self._report(leg, source, verdict.reason or UNEXPECTED)
                continue
            keep[i] = True
            if verdict.moved:
                self.cur_ip[row] = rx.ip[k]
                self.cur_port[row] = source[1]
                leg.remote = source
                leg.remote_rtcp = (source[0], source[1] + 1)
                self._set_destination(leg)
                self._claim(leg)
        return keep

    def _keys(self, take: Ints, rows: Ints, h: Headers) -> None:
        data = self.rx.data
        for k, row in zip(take.tolist(), rows.tolist(), strict=True):
            leg = self._by_row[row]
            if leg is None:
                continue
            payload = data[k, h.start[k] : h.end[k]].tobytes()
            digit = leg._dtmf_receiver.receive(int(h.ssrc[k]), int(h.ts[k]), payload)
            if digit is not None:
                leg.counters.dtmf_received += 1
                leg.push_dtmf(digit)

    def _queue(self, take: Ints, rows: Ints, h: Headers, now: float) -> None:
        start, end = h.start[take], h.end[take]
        size = end - start
        fits = size <= MAX_PAYLOAD
        if not fits.all():
            self.stats["malformed"] += int(np.count_nonzero(~fits))
            take, rows, start, size = take[fits], rows[fits], start[fits], size[fits]
        payload = gather(self.rx.data, take, start, MAX_PAYLOAD)
        ssrc, seq, ts = h.ssrc[take], h.seq[take], h.ts[take]
        changes = self.jitter.ssrc_changes[rows].sum()
        self.jitter.put(rows, ssrc, seq, payload, size)
        if self.jitter.ssrc_changes[rows].sum() != changes:
            for row in np.unique(rows).tolist():
                leg = self._by_row[row]
                if leg is not None:
                    leg.counters.ssrc_changes = int(self.jitter.ssrc_changes[row])
        self._receiver_stats(rows, ssrc, seq, ts, now)

    def _receiver_stats(self, rows: Ints, ssrc: Ints, seq: Ints, ts: Ints, now: float) -> None:
        """RFC 3550 counts and interarrival jitter (arrival times are the tick's: the
        jitter is measured to a tick, what this engine's playout can follow anyway)."""
        new = self.stats_ssrc[rows] != ssrc
        if new.any():
            fresh = rows[new]
            self.stats_ssrc[fresh] = ssrc[new]
            self.audio_in[fresh] = 0
            self._prior[fresh] = 0
            self.jitter_ts[fresh] = 0.0
            self.transit[fresh] = np.nan
            self.base[fresh] = self.jitter.highest[fresh]
        np.add.at(self.audio_in, rows, 1)
        self.base[rows] = np.minimum(self.base[rows], self.jitter.highest[rows])
        transit = np.floor(now * self.rtp_rate[rows]) - ts
        d = np.abs(transit - self.transit[rows])
        ok = np.isfinite(d) & (d < 2**31)
        self.jitter_ts[rows[ok]] += (d[ok] - self.jitter_ts[rows[ok]]) / 16.0
        self.transit[rows] = transit

    def _pop(self) -> None:
        rows = self.rows
        out = self.jitter.pop(rows)
        self._popped = out
        self.status[rows] = out.status
        index = np.full(len(rows), -1, dtype=np.int64)
        frames = out.status == FRAME
        index[frames] = np.arange(int(np.count_nonzero(frames)))
        self.pindex[rows] = index

    def decode(self, rows: Ints) -> None:
        """This tick's audio of ``rows`` into :attr:`frames` (``heard`` where there is
        some): 20 ms G.711 in one table look-up for all, lost frames concealed as
        :mod:`media.conceal` does (the last frame at half level, three times, then
        silence); other codecs by each leg's decoder."""
        out = self._popped
        self.heard[rows] = False
        self.decoded_at[rows] = self.tick_count
        if out is None:
            return
        status = self.status[rows]
        table_rows = self.codec_id[rows] != OTHER_ID
        got = rows[(status == FRAME) & table_rows]
        if len(got):
            index = self.pindex[got]
            lengths = out.length[index]
            codec = self.codec_id[got]
            plain = lengths == 160
            for cid, table in _TABLES.items():
                pick = plain & (codec == cid)
                if pick.any():
                    self.frames[got[pick], :160] = table[out.payload[index[pick], :160]]
            for i in np.flatnonzero(~plain).tolist():  # a peer with another packet time
                n = int(lengths[i])
                decoded = _TABLES[int(codec[i])][out.payload[index[i], :n]]
                self.frames[got[i], :160] = np.resize(decoded, 160) if n else 0
            self.last_frame[got, :160] = self.frames[got, :160]
            self.repeats[got] = 0
            self.heard[got] = True
        lost = rows[(status == LOST) & table_rows]
        if len(lost):
            conceal = lost[self.repeats[lost] < MAX_REPEATS]
            self.repeats[conceal] += 1
            self.last_frame[conceal, :160] //= 2
            self.frames[conceal, :160] = self.last_frame[conceal, :160]
            self.heard[conceal] = True
        for row, state in zip(
            rows[~table_rows].tolist(), status[~table_rows].tolist(), strict=True
        ):
            leg = self._by_row[row]
            frame = leg._decode_own(state) if leg is not None else None
            if frame is not None:
                n = min(len(frame), FRAME_WIDTH)
                self.frames[row, :n] = frame[:n]
                self.heard[row] = True

    def _payload(self, row: int) -> bytes | None:
        out = self._popped
        i = int(self.pindex[row])
        if out is None or i < 0 or self.status[row] != FRAME:
            return None
        return out.payload[i, : out.length[i]].tobytes()

    def _plan(self) -> None:
        self._relay_rows = np.array(sorted(leg.row for leg in self._relays), dtype=np.int64)
        self._plan_dirty = False

    def _send(self, tick: int) -> None:
        if self._plan_dirty:
            self._plan()
        tx, has, size = self.tx, self._has, self._size
        rows = self.rows
        has[rows] = False
        self._marker[rows] = False
        self._pt_out[rows] = self.pt[rows]
        self._ts_out[rows] = self.ts[rows]
        out = self._popped
        relay = self._relay_rows
        if len(relay) and out is not None:
            index = self.pindex[self.relay_from[relay]]
            ok = index >= 0
            if ok.any():
                target, index = relay[ok], index[ok]
                tx.data[target, 12:] = out.payload[index]
                size[target] = out.length[index]
                has[target] = True
        sending = self.sending
        for source, legs in list(self._groups.items()):
            cached = self._group_rows.get(source)
            if cached is None:
                cached = self._group_rows[source] = np.array(
                    sorted(leg.row for leg in legs), dtype=np.int64
                )
            target = cached
            groups, singles = source.payloads(self, target[sending[target]], tick)
            for rows_of, payload in groups:
                n = len(payload)
                if n > MAX_PAYLOAD:
                    continue
                tx.data[rows_of, 12 : 12 + n] = np.frombuffer(payload, dtype=np.uint8)
                size[rows_of] = n
                has[rows_of] = True
            for row, single in singles:
                if single is not None and len(single) <= MAX_PAYLOAD:
                    n = len(single)
                    tx.data[row, 12 : 12 + n] = np.frombuffer(single, dtype=np.uint8)
                    size[row] = n
                    has[row] = True
        for leg in list(self._python):
            packet = leg._packet(tick)
            if packet is None:
                continue
            payload, pt, marker, ts = packet
            row, n = leg.row, len(payload)
            if n > MAX_PAYLOAD:
                continue
            tx.data[row, 12 : 12 + n] = np.frombuffer(payload, dtype=np.uint8)
            size[row] = n
            has[row] = True
            self._pt_out[row] = pt
            self._marker[row] = marker
            if ts is not None:
                self._ts_out[row] = ts
        sendable = rows[has[rows] & self.sending[rows] & (self.dst_port[rows] > 0)]
        if len(sendable):
            s = sendable
            tx.length[s] = 12 + size[s]
            write_headers(
                tx.data,
                s,
                self._pt_out[s],
                self.seq[s],
                self._ts_out[s],
                self.ssrc[s],
                self._marker[s],
            )
            tx.ip[s] = self.dst_ip[s]
            tx.port[s] = self.dst_port[s]
            sent = 0
            for pair in (*self._pairs.values(), *self._own):
                if not pair.legs:
                    continue
                if pair.shared:
                    mine = s[self._on_pair(s, pair)]
                else:
                    (leg,) = pair.legs
                    mine = s[s == leg.row]
                if len(mine):
                    sent += pair.rtp.send(tx, mine)
            self.sent[s] += 1
            self.sent_octets[s] += size[s]
            self.seq[s] = (self.seq[s] + 1) & 0xFFFF
            self.stats["sent"] += sent
            self.stats["dropped"] += len(s) - sent
        self.ts[rows] = (self.ts[rows] + self.step[rows]) & 0xFFFFFFFF

    def _on_pair(self, rows: Ints, pair: _Ports) -> npt.NDArray[np.bool_]:
        if len(self._pairs) == 1 and not self._own:
            return np.ones(len(rows), dtype=bool)
        mine = np.zeros(self.capacity, dtype=bool)
        for leg in pair.legs:
            mine[leg.row] = True
        return mine[rows]

    # -- RTCP --------------------------------------------------------------------------------

    def _interval(self, *, initial: bool = False) -> float:
        return rtcp_interval(2, 1, 500.0, True, 100.0, initial, self._rng)

    def _rtcp_tick(self, now: float) -> None:
        self._rtcp_receive(now)
        rows = self.rows
        due = rows[self.rtcp_due[rows] <= now]
        for row in due.tolist()[:16]:  # a few per tick: reports are spread over time
            leg = self._by_row[row]
            if leg is None:
                continue
            self.rtcp_due[row] = now + self._interval()
            self._send_rtcp(leg, now)

    def report_block(self, leg: MediaLeg, now: float) -> ReportBlock | None:
        """``leg``'s reception report on its phone's stream (closes the interval)."""
        row = leg.row
        if self.audio_in[row] == 0:
            return None
        highest = int(self.jitter.highest[row])
        expected = highest - int(self.base[row]) + 1
        received = int(self.audio_in[row])
        prior_expected, prior_received = (int(x) for x in self._prior[row])
        self._prior[row] = (expected, received)
        last_sr_at = float(self.last_sr_at[row])
        return report_block(
            int(self.stats_ssrc[row]),
            expected,
            received,
            (prior_expected, prior_received),
            highest,
            float(self.jitter_ts[row]),
            int(self.last_sr[row]),
            now - last_sr_at if np.isfinite(last_sr_at) else None,
        )

    def rtcp_packets(self, leg: MediaLeg, now: float, *, bye: bool = False) -> list[RtcpPacket]:
        row = leg.row
        block = self.report_block(leg, now)
        blocks = (block,) if block is not None else ()
        report: SenderReport | ReceiverReport
        if self.sent[row]:
            report = SenderReport(
                leg.ssrc,
                ntp_timestamp(time.time()),
                int(self.ts[row]),
                int(self.sent[row]) & 0xFFFFFFFF,
                int(self.sent_octets[row]) & 0xFFFFFFFF,
                blocks,
            )
        else:
            report = ReceiverReport(leg.ssrc, blocks)
        packets: list[RtcpPacket] = [
            report,
            SourceDescription(((leg.ssrc, ((1, leg.cname.encode()),)),)),
        ]
        if bye:
            packets.append(Bye((leg.ssrc,)))
        return packets

    def _send_rtcp(self, leg: MediaLeg, now: float, *, bye: bool = False) -> None:
        target = leg.remote_rtcp
        if target is None:
            return
        try:
            leg.ports.rtcp.sock.sendto(build_compound(self.rtcp_packets(leg, now, bye=bye)), target)
        except OSError:
            return
        leg.counters.rtcp_sent += 1
        self.stats["rtcp_sent"] += 1

    def _rtcp_receive(self, now: float) -> None:
        batch = self._rtcp_rx
        batch.count = 0
        spans: list[tuple[_Ports, int, int]] = []
        for pair in self._pairs_to_read(rtcp=True):
            if not pair.legs:
                continue
            first = batch.count
            if pair.rtcp.receive(batch):
                spans.append((pair, first, batch.count))
            if batch.count >= batch.capacity:
                break
        if not batch.count:
            return
        for pair, first, last in spans:
            if pair.shared:  # RTCP comes from the RTP port + 1, or from the RTP IP alone
                ports = batch.port[first:last] - 1
                owners = pair.owners(batch.ip[first:last], ports).tolist()
            else:
                (only,) = pair.legs
                owners = [only.row] * (last - first)
            for i, owner in zip(range(first, last), owners, strict=True):
                if owner != ENDED:  # an ended call's last report: dropped quietly
                    self._rtcp_one(i, self._by_row[owner] if owner >= 0 else None, now)

    def _rtcp_one(self, i: int, leg: MediaLeg | None, now: float) -> None:
        batch = self._rtcp_rx
        source = (address_text(batch.ip[i].tobytes()), int(batch.port[i]))
        if leg is None:
            self.stats["strays"] += 1
            self.stats["strays_rtcp_foreign"] += 1
            if self._strays(source, now):
                self._report(None, source, "rtcp_foreign")
            return
        verdict = leg.policy.check_rtcp(source, now)
        if not verdict.accept:
            leg.counters.foreign += 1
            if verdict.report:
                self._report(leg, source, verdict.reason or "rtcp_foreign")
            return
        try:
            packets = parse_rtcp(batch.data[i, : batch.length[i]].tobytes())
        except PacketError:
            leg.counters.malformed += 1
            self.stats["malformed"] += 1
            return
        leg.counters.rtcp_received += 1
        self.stats["rtcp_received"] += 1
        leg.remote_rtcp = source
        for packet in packets:
            if isinstance(packet, SenderReport):
                self.last_sr[leg.row] = (packet.ntp_timestamp >> 16) & 0xFFFFFFFF
                self.last_sr_at[leg.row] = now
            if isinstance(packet, SenderReport | ReceiverReport):
                for block in packet.reports:
                    if block.ssrc == leg.ssrc:
                        leg.peer_report = block

    # -- shared audio ---------------------------------------------------------------------------

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
        for pair in self._pairs.values():
            pair.close()
        self._pairs.clear()
        self._poller.close()
