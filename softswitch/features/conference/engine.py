"""The conference media engine: conference legs batched per tick, at the I/O floor.

At a thousand legs the per-packet cost of an asyncio datagram transport per leg is more
than the whole tick budget (README.md, "Batched media I/O"), so conference legs share one
UDP port, drained by one ``recvmmsg`` a tick and sent by one ``sendmmsg``
(:mod:`rtp.batch`). Nothing per packet is a Python object on that path:

1. every pending packet lands in a row of one array; headers are parsed as columns
   (:mod:`rtp.columns`); packets are matched to legs by their source IP, vectorised;
2. audio payloads go into one jitter buffer row per leg (:mod:`rtp.jitter_rows`:
   reordering, duplicates, late frames, loss reported); RFC 4733 events become digits;
3. each tick's due frames are decoded in one G.711 table look-up for all legs, lost
   ones concealed (the last frame at half level, three times, then silence), and
   written to the rooms' mixers, which detect talkers and mix (N-1 only for talkers);
4. every leg gets one packet, headers written as columns: its prompt, the waiting
   music, its N-1 mix if it talks, or the room's mix encoded once per codec, copied to
   every listener's row in one assignment; then one ``sendmmsg``.

Which leg a packet belongs to is never guessed. On the shared port each IP belongs to
one leg at most: the IPs its SDP and its SIP messages come from (strict RTP,
:mod:`rtp.source_policy`, decides the port within them: learning, probation, silence).
A leg that would share an IP with another one there (two calls from one phone, two
phones behind one NAT) gets a port of its own in its answer, read in the same pass;
there the destination port says whose packets they are. Packets from an IP no leg owns
are counted and dropped, reported once per source per burst.

Each leg works at its codec's audio rate (8 kHz G.711, 16 kHz G.722 and Opus; the RTP
clock, 8000 for G.722 and 48000 for Opus, only steps the timestamps): wideband legs put
16 kHz frames into their room's mixer and hear its 16 kHz mix (media.mixer), prompts and
waiting music are made at the rate of the leg that hears them.

RTCP on port+1: each leg sends a sender report (receiver report while it sends nothing)
with a reception block for its caller's stream about every 5 s (RFC 3550 interval), and
the caller's reports are kept (``ConfLeg.peer_report``), from the leg's IP only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

import sip
from media import codecs, g711
from media.audio import Player, SharedPlayer, load_audio
from media.clock import MediaClock
from media.dtmf_detect import DtmfDetector
from media.resample import StreamResampler
from rtp import DtmfReceiver, PortAllocator, SourcePolicy
from rtp.batch import Batch, BatchSocket, address_bytes, address_text, ip_key
from rtp.columns import Headers, gather, parse, write_headers
from rtp.jitter_rows import FRAME, LOST, JitterRows
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
from rtp.stats import ntp_timestamp, rtcp_interval

log = logging.getLogger(__name__)
Samples = npt.NDArray[np.int16]
Address = tuple[str, int]
Ints = npt.NDArray[np.int64]
MAX_PAYLOAD = 240  # bytes of audio per packet kept (20 ms G.711 is 160, 30 ms 240)
SLOT = 512  # bytes per received datagram (longer ones are refused)
MAX_REPEATS = 3  # lost frames concealed in a row before silence
PCMU_ID, PCMA_ID, OTHER_ID = 0, 1, 2
# SDP addresses behind a NAT: a leg whose SDP names one of these while its SIP comes from
# another IP is heard from that IP (its NAT), so it must own that IP on the shared port
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


def behind_nat(sdp_ip: str, signalling: str | None) -> bool:
    """Whether a caller's media is likely to come from its signalling IP rather than its
    SDP's: a private SDP address and SIP from elsewhere."""
    if not signalling or signalling == sdp_ip:
        return False
    try:
        ip = ipaddress.ip_address(sdp_ip)
    except ValueError:
        return True  # a name, or garbage: trust only what signalling shows
    return ip.is_unspecified or any(ip in net for net in _PRIVATE if net.version == ip.version)


SOUNDS = Path(__file__).resolve().parents[2] / "sounds"


class ConfLeg:
    """One caller on the bridge: its RTP state, digits, and what it hears."""

    def __init__(self, engine: ConferenceEngine, call: sip.Call, stream: sip.AudioStream) -> None:
        self.engine = engine
        self.call = call
        self.started = time.time()  # wall clock: the dashboard's time in the bridge
        self.expected: Address = (stream.remote_address, stream.remote_port)
        self.addr: Address | None = None  # the learnt source (what packets come from)
        self.row = -1  # this leg's row in the engine's arrays
        self.port = engine.port  # the local RTP port its answer names
        self.own: _Ports | None = None  # its own port, when the shared one cannot tell it
        self.peer_report: ReportBlock | None = None  # the caller's view of our stream
        self.rtcp_addr: Address | None = None  # where its RTCP comes from
        signalling = call.destination[1] if call.destination else None
        self.signalling = signalling
        self.source = SourcePolicy(learn_unnamed=False)
        self.source.expect(self.expected, signalling, time.monotonic())
        self.codec = codecs.codec(stream.codec.name)
        self.g711 = self.codec.name in ("PCMU", "PCMA")
        self.pt = stream.payload_type
        self.dtmf_pt = stream.dtmf_payload_type
        self.sending = stream.sends
        self.ssrc = secrets.randbits(32)
        self.seq = secrets.randbits(16)
        self.ts = secrets.randbits(32)
        self.step = self.codec.rtp_ticks(stream.ptime)
        self.rate = self.codec.sample_rate
        self.samples = self.rate // 50  # one 20 ms tick of audio
        self.dtmf: asyncio.Queue[str] = asyncio.Queue(maxsize=64)
        self.on_digit: Callable[[str], None] | None = None
        self._rfc4733 = DtmfReceiver()
        self._inband = DtmfDetector() if self.dtmf_pt is None else None
        # the detector's filters are set for 8 kHz: a wideband caller's keys go through this
        self._detect_at_8k = (
            StreamResampler(self.rate, 8000) if self._inband and self.rate != 8000 else None
        )
        self.options = codecs.Options.from_fmtp(stream.remote_fmtp)
        self.encoder = self.codec.encoder(self.options)
        self.decoder = self.codec.decoder()
        self.player: Player | None = None
        self._played: asyncio.Event | None = None
        self._barge_in = False
        self.waiting = False  # hears the waiting music (before the host)
        self.room: object | None = None  # a Room, when joined
        self.mixer_row: int | None = None
        self.host = False
        self.self_muted = False
        self.self_unmuted = False
        self.closed = False

    @property
    def received(self) -> int:
        """Packets taken from this caller (audio and keys)."""
        return int(self.engine.received[self.row]) if self.row >= 0 else 0

    @property
    def frame_in(self) -> Samples | None:
        """This tick's decoded audio from the caller (None: nothing to play)."""
        engine = self.engine
        if self.row < 0 or not engine.heard[self.row]:
            return None
        return engine.frames[self.row, : self.samples]

    @property
    def ips(self) -> set[str]:
        """The IPs this leg's RTP may come from (its SDP's, its SIP messages')."""
        return {self.expected[0]} | ({self.signalling} if self.signalling else set())

    # -- digits ---------------------------------------------------------------------------

    def digit(self, digit: str) -> None:
        if self._barge_in and self.player is not None:
            self._stop_prompt()  # a key cuts an interruptible prompt short
        if self.on_digit is not None:
            self.on_digit(digit)
        elif not self.dtmf.full():
            self.dtmf.put_nowait(digit)

    # -- prompts (ivr.Channel) ------------------------------------------------------------

    def play(self, samples: Samples, *, interruptible: bool = False) -> asyncio.Event:
        """Play ``samples`` (at this leg's rate) to this leg only, instead of the room."""
        self._stop_prompt()  # the previous prompt is cut short
        self.player = Player(samples, self.samples, loop=False)
        self.engine._prompting.add(self)
        self._played = asyncio.Event()
        self._barge_in = interruptible
        return self._played

    def _stop_prompt(self) -> None:
        self.player = None
        if self._played is not None:
            self._played.set()

    async def play_samples(self, samples: Samples) -> None:
        await self.play(samples).wait()

    async def play_prompt(self, name: str, *, interruptible: bool = False) -> None:
        if interruptible and not self.dtmf.empty():
            return  # the caller typed ahead
        await self.play(self.engine.prompt(name, self.rate), interruptible=interruptible).wait()

    async def play_file(self, path: Path) -> None:
        await self.play_samples(load_audio(path, self.rate))

    def say(self, *names: str) -> None:
        """Queue several prompts as one (does not wait)."""
        self.play(np.concatenate([self.engine.prompt(n, self.rate) for n in names]))

    # -- per tick ---------------------------------------------------------------------------

    def decode_one(self, payload: bytes) -> Samples | None:
        """This caller's frame at its rate (None: a payload its decoder refused)."""
        try:
            frame = self.decoder.decode(payload)
        except codecs.CodecError:
            self.engine.stats["malformed"] += 1
            return None
        return frame if len(frame) == self.samples else np.resize(frame, self.samples)

    def heard(self, frame: Samples) -> None:
        """A decoded frame from this caller, at its rate: in-band DTMF."""
        if self._inband is not None:
            if self._detect_at_8k is not None:
                frame = self._detect_at_8k.process(frame)
            for d in self._inband.feed(frame):
                self.digit(d)

    def encode(self, frame: Samples) -> bytes:
        """``frame`` (at this leg's rate) in this leg's codec."""
        return self.encoder.encode(frame)

    def next_prompt_frame(self) -> Samples | None:
        player = self.player
        if player is None:
            return None
        if player.done:
            self.player = None
            if self._played is not None:
                self._played.set()
            return None
        return player.read()


class _Ports:
    """A port pair of one leg's own (RTP and RTCP), for a caller the shared port cannot
    tell apart from another."""

    def __init__(self, rtp: socket.socket, rtcp: socket.socket, port: int) -> None:
        self.rtp = BatchSocket(rtp)
        self.rtcp = BatchSocket(rtcp)
        self.port = port

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


def _bind_pair(host: str, ports: PortAllocator) -> tuple[socket.socket, socket.socket, int]:
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
        for s in (rtp, rtcp):
            s.setblocking(False)
        ports.take(port)
        return rtp, rtcp, port
    raise OSError("no free RTP port for the conference bridge")


class ConferenceEngine:
    def __init__(
        self,
        clock: MediaClock,
        host: str,
        ports: PortAllocator,
        *,
        capacity: int = 2000,
        hold_music: Callable[[int], Samples] | None = None,
    ) -> None:
        self.clock = clock
        self.host = host
        self.capacity = capacity
        self.ports = ports
        self.legs: list[ConfLeg] = []
        self.rooms: dict[str, object] = {}
        self._prompts: dict[tuple[str, int], Samples] = {}
        self._silence: dict[str, bytes] = {}
        # waiting music: one player per rate (``hold_music(rate)`` makes its audio), one
        # frame and one encoding per stateless codec per tick, for every listener
        self._hold_music = hold_music
        self._hold: dict[int, SharedPlayer] = {}
        self.stats = {
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
        self.stats.update({f"strays_{reason}": 0 for reason in REASONS})
        # a refused source (address, reason), at most once per source per burst
        self.on_rejected_source: Callable[[Address, str], None] | None = None
        self._strays = BurstGate()
        rtp, rtcp, self.port = _bind_pair(host, ports)
        for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
            if option is None:  # a tick's worth of every leg's packets waits in the kernel
                continue
            try:
                rtp.setsockopt(socket.SOL_SOCKET, option, 8 << 20)
                break
            except OSError:
                continue
        rtp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self._rtp, self._rtcp = BatchSocket(rtp), BatchSocket(rtcp)
        # -- rows: a leg's state as columns ------------------------------------------
        n = capacity
        self._free = list(range(n - 1, -1, -1))
        self._by_row: list[ConfLeg | None] = [None] * n
        self.rows = np.zeros(0, dtype=np.int64)  # rows in use
        self.jitter = JitterRows(n, payload=MAX_PAYLOAD)
        self.received = np.zeros(n, dtype=np.int64)
        self.pt = np.zeros(n, dtype=np.int64)
        self.dtmf_pt = np.full(n, -1, dtype=np.int64)
        self.codec_id = np.zeros(n, dtype=np.int64)
        self.samples = np.zeros(n, dtype=np.int64)
        self.seq = np.zeros(n, dtype=np.int64)
        self.ts = np.zeros(n, dtype=np.int64)
        self.step = np.zeros(n, dtype=np.int64)
        self.ssrc = np.zeros(n, dtype=np.int64)
        self.sending = np.zeros(n, dtype=bool)
        self.sent = np.zeros(n, dtype=np.int64)
        self.sent_octets = np.zeros(n, dtype=np.int64)
        self.dst_ip = np.zeros((n, 16), dtype=np.uint8)  # where its packets go
        self.dst_port = np.zeros(n, dtype=np.int64)
        self.cur_ip = np.zeros((n, 16), dtype=np.uint8)  # the learnt source
        self.cur_port = np.full(n, -1, dtype=np.int64)
        self.last_heard = np.full(n, -np.inf)
        self.frames = np.zeros((n, 320), dtype=np.int16)  # this tick's audio per leg
        self.heard = np.zeros(n, dtype=bool)
        self._last = np.zeros((n, 320), dtype=np.int16)  # for concealment
        self._repeats = np.zeros(n, dtype=np.int64)
        # RFC 3550 receiver statistics per row
        self._base = np.full(n, -1, dtype=np.int64)
        self._stats_ssrc = np.full(n, -1, dtype=np.int64)
        self._audio_in = np.zeros(n, dtype=np.int64)
        self._jitter_ts = np.zeros(n, dtype=np.float64)
        self._transit = np.full(n, np.nan)
        self._prior = np.zeros((n, 2), dtype=np.int64)  # expected, received at last report
        self._last_sr = np.zeros(n, dtype=np.int64)
        self._last_sr_at = np.full(n, np.nan)
        self._rtcp_due = np.full(n, np.inf)
        self._rng = random.Random()
        # which leg owns an IP on the shared port: sorted keys for vectorised look-up
        self._owner: dict[bytes, ConfLeg] = {}
        self._claim_keys = np.zeros(0, dtype=np.uint64)
        self._claim_ips = np.zeros((0, 16), dtype=np.uint8)
        self._claim_rows = np.zeros(0, dtype=np.int64)
        self._own_legs: list[ConfLeg] = []  # legs on ports of their own
        self._prompting: set[ConfLeg] = set()
        self._inband: set[ConfLeg] = set()
        self._stateful: set[ConfLeg] = set()  # G.722, Opus: decoded leg by leg
        self.rx = Batch(min(max(256, 3 * capacity), 8192), SLOT)
        self._rtcp_rx = Batch(256, SLOT)
        self.tx = Batch(n, 12 + MAX_PAYLOAD)
        self._unsubscribe = clock.subscribe(self._tick, priority=40, idle=self.idle)

    def idle(self) -> bool:
        """No leg: the media clock may sleep."""
        return not self.legs

    def close(self) -> None:
        self._unsubscribe()
        self._rtp.close()
        self._rtcp.close()
        for leg in list(self._own_legs):
            self._release_own(leg)

    # -- legs -----------------------------------------------------------------------------

    def add_leg(self, call: sip.Call, stream: sip.AudioStream) -> ConfLeg:
        """A caller whose answer is being made: the answer names ``leg.port``, the
        shared port unless another leg there has one of its IPs (then its own)."""
        if len(self.legs) >= self.capacity or not self._free:
            raise OverflowError(f"the bridge holds {self.capacity} legs")
        leg = ConfLeg(self, call, stream)
        row = leg.row = self._free.pop()
        self._by_row[row] = leg
        self.legs.append(leg)
        self._place(leg)
        self.jitter.clear(np.array([row]))
        self.received[row] = 0
        self.pt[row] = leg.pt
        self.dtmf_pt[row] = leg.dtmf_pt if leg.dtmf_pt is not None else -1
        self.codec_id[row] = {"PCMU": PCMU_ID, "PCMA": PCMA_ID}.get(leg.codec.name, OTHER_ID)
        self.samples[row] = leg.samples
        self.seq[row], self.ts[row], self.ssrc[row] = leg.seq, leg.ts, leg.ssrc
        self.step[row] = leg.step
        self.sending[row] = leg.sending
        self.sent[row] = self.sent_octets[row] = 0
        self.dst_ip[row] = np.frombuffer(self._ip_bytes(leg.expected[0]), dtype=np.uint8)
        self.dst_port[row] = leg.expected[1]
        self.cur_port[row] = -1
        self.last_heard[row] = -np.inf
        self.heard[row] = False
        self._last[row] = 0
        self._repeats[row] = 0
        self._base[row] = self._stats_ssrc[row] = -1
        self._audio_in[row] = 0
        self._jitter_ts[row] = 0.0
        self._transit[row] = np.nan
        self._prior[row] = 0
        self._last_sr[row] = 0
        self._last_sr_at[row] = np.nan
        self._rtcp_due[row] = time.monotonic() + self._interval(initial=True)
        if leg.codec.name not in ("PCMU", "PCMA"):
            self._stateful.add(leg)
        if leg._inband is not None:
            self._inband.add(leg)
        self.rows = np.array(sorted(x.row for x in self.legs), dtype=np.int64)
        self.clock.wake()
        return leg

    def _ip_bytes(self, host: str) -> bytes:
        try:
            return address_bytes(host)
        except ValueError:
            return bytes(16)  # a name in the SDP: nothing is sent until the caller is heard

    def _place(self, leg: ConfLeg) -> None:
        """Own the leg's IPs on the shared port, or give it a port of its own."""
        needed = {leg.expected[0]}
        if behind_nat(leg.expected[0], leg.signalling) and leg.signalling:
            needed.add(leg.signalling)
        keys = {self._ip_bytes(ip) for ip in needed if ip not in ("0.0.0.0", "::", "")}
        if any(key in self._owner for key in keys):
            rtp, rtcp, port = _bind_pair(self.host, self.ports)
            leg.own = _Ports(rtp, rtcp, port)
            leg.port = port
            self._own_legs.append(leg)
            self.stats["own_ports"] += 1
            log.info(
                "event=conference_own_port port=%d reason=shared_ip ips=%s",
                port,
                ",".join(sorted(needed)),
            )
            return
        # the SIP source IP too when nobody has it (a phone that sends from there)
        if leg.signalling and self._ip_bytes(leg.signalling) not in self._owner:
            keys.add(self._ip_bytes(leg.signalling))
        keys.discard(bytes(16))
        for key in keys:
            self._owner[key] = leg
        self._index_claims()

    def _index_claims(self) -> None:
        items = sorted(self._owner.items())
        ips = np.array([np.frombuffer(k, dtype=np.uint8) for k, _ in items], dtype=np.uint8)
        ips = ips.reshape(-1, 16)
        keys = ip_key(ips) if len(ips) else np.zeros(0, dtype=np.uint64)
        order = np.argsort(keys, kind="stable")
        self._claim_keys = keys[order]
        self._claim_ips = ips[order]
        self._claim_rows = np.array([leg.row for _, leg in items], dtype=np.int64)[order]

    def remove_leg(self, leg: ConfLeg) -> None:
        leg.closed = True
        if leg not in self.legs:
            return
        self.legs.remove(leg)
        claimed = [k for k, owner in self._owner.items() if owner is leg]
        for key in claimed:
            del self._owner[key]
        if claimed:
            self._index_claims()
        if leg.own is not None:
            self._release_own(leg)
        self._prompting.discard(leg)
        self._inband.discard(leg)
        self._stateful.discard(leg)
        self._by_row[leg.row] = None
        self.heard[leg.row] = False
        self._rtcp_due[leg.row] = np.inf
        self._free.append(leg.row)
        self.rows = np.array(sorted(x.row for x in self.legs), dtype=np.int64)

    def _release_own(self, leg: ConfLeg) -> None:
        if leg.own is not None:
            leg.own.close()
            self.ports.release(leg.own.port)
            leg.own = None
        if leg in self._own_legs:
            self._own_legs.remove(leg)

    def set_sending(self, leg: ConfLeg, sending: bool) -> None:
        """A re-INVITE: the caller holds us (sendonly/inactive) or resumes."""
        leg.sending = sending
        if leg.row >= 0 and not leg.closed:
            self.sending[leg.row] = sending

    def _stray(self, source: Address, reason: str, report: bool) -> None:
        self.stats["strays"] += 1
        self.stats[f"strays_{reason}"] += 1
        if report:
            log.info(
                "event=rtp_source_rejected bridge_port=%d source=%s:%d reason=%s",
                self.port,
                source[0],
                source[1],
                reason,
            )
            if self.on_rejected_source is not None:
                self.on_rejected_source(source, reason)

    def prompt(self, name: str, rate: int = 8000) -> Samples:
        samples = self._prompts.get((name, rate))
        if samples is None:
            samples = self._prompts[name, rate] = load_audio(SOUNDS / f"{name}.flac", rate)
        return samples

    # -- the tick -------------------------------------------------------------------------

    def _tick(self, tick: int) -> None:
        now = time.monotonic()
        self._receive(now)
        self._decode()
        for room in list(self.rooms.values()):
            room.mix(tick)  # type: ignore[attr-defined]
        self._send(tick)
        self._rtcp_tick(now)

    def _receive(self, now: float) -> None:
        rx = self.rx
        rx.count = 0
        self._rtp.receive(rx)
        shared = rx.count
        owned: list[tuple[int, int, int]] = []  # (first row, count, leg row)
        for leg in self._own_legs:
            assert leg.own is not None
            first = rx.count
            if leg.own.rtp.receive(rx):
                owned.append((first, rx.count - first, leg.row))
        n = rx.count
        if not n:
            return
        self.stats["received"] += n
        h = parse(rx.data[:n], rx.length[:n])
        self.stats["malformed"] += int(n - np.count_nonzero(h.valid))
        row = np.full(n, -1, dtype=np.int64)
        for first, count, leg_row in owned:
            row[first : first + count] = leg_row
        # the shared port: a packet is the leg's that owns its source IP, or nobody's
        if shared:
            ask = np.flatnonzero(h.valid[:shared])
            if len(ask):
                found = self._owner_rows(rx.ip[ask])
                row[ask] = found
                self._strays_unowned(ask[found < 0], now)
        take = np.flatnonzero(h.valid & (row >= 0))
        if not len(take):
            return
        r = row[take]
        # from the learnt source: accepted as is; anything else asks the leg's policy
        current = (self.cur_port[r] == rx.port[take]) & (self.cur_ip[r] == rx.ip[take]).all(1)
        self.last_heard[r[current]] = now
        if not current.all():
            keep = self._check_sources(take[~current], r[~current], h, now)
            accepted = np.ones(len(take), dtype=bool)
            accepted[~current] = keep
            take, r = take[accepted], r[accepted]
        np.add.at(self.received, r, 1)
        pt = h.pt[take]
        audio = pt == self.pt[r]
        keys = ~audio & (pt == self.dtmf_pt[r])
        self.stats["foreign_pt"] += int(np.count_nonzero(~audio & ~keys))
        if keys.any():
            self._keys(take[keys], r[keys], h)
        if audio.any():
            self._queue(take[audio], r[audio], h, now)

    def _owner_rows(self, ips: npt.NDArray[np.uint8]) -> Ints:
        keys = ip_key(ips)
        claim = self._claim_keys
        if not len(claim):
            return np.full(len(ips), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(claim, keys), len(claim) - 1)
        hit = (claim[pos] == keys) & (self._claim_ips[pos] == ips).all(1)
        return np.where(hit, self._claim_rows[pos], -1)

    def _strays_unowned(self, rows: Ints, now: float) -> None:
        if not len(rows):
            return
        self.stats["strays"] += len(rows)
        self.stats[f"strays_{UNEXPECTED}"] += len(rows)
        rx = self.rx
        sources = {(rx.ip[i].tobytes(), int(rx.port[i])) for i in rows[:64].tolist()}
        for ip, port in sources:  # the burst gate is asked once per source per tick
            source = (address_text(ip), port)
            if self._strays(source, now):
                self.stats["strays"] -= 1
                self.stats[f"strays_{UNEXPECTED}"] -= 1
                self._stray(source, UNEXPECTED, True)

    def _check_sources(
        self, take: Ints, rows: Ints, h: Headers, now: float
    ) -> npt.NDArray[np.bool_]:
        """Packets from other sources than the learnt one, one by one through each leg's
        policy (the first packets of a leg, a NAT that moved, strangers at its IP)."""
        rx = self.rx
        keep = np.zeros(len(take), dtype=bool)
        for i, (k, row) in enumerate(zip(take.tolist(), rows.tolist(), strict=True)):
            leg = self._by_row[row]
            if leg is None:
                continue
            source = (address_text(rx.ip[k].tobytes()), int(rx.port[k]))
            policy = leg.source
            policy.last_heard = float(self.last_heard[row])
            verdict = policy.check(source, int(h.ssrc[k]), int(h.seq[k]), now)
            self.last_heard[row] = policy.last_heard
            if not verdict.accept:
                self._stray(source, verdict.reason or UNEXPECTED, verdict.report)
                continue
            keep[i] = True
            if verdict.moved:
                leg.addr = source
                self.cur_ip[row] = rx.ip[k]
                self.cur_port[row] = source[1]
                self.dst_ip[row] = rx.ip[k]
                self.dst_port[row] = source[1]
                log.info(
                    "event=conference_latch source=%s:%d ssrc=%08x",
                    source[0],
                    source[1],
                    int(h.ssrc[k]),
                )
        return keep

    def _keys(self, take: Ints, rows: Ints, h: Headers) -> None:
        data = self.rx.data
        for k, row in zip(take.tolist(), rows.tolist(), strict=True):
            leg = self._by_row[row]
            if leg is None:
                continue
            payload = data[k, h.start[k] : h.end[k]].tobytes()
            digit = leg._rfc4733.receive(int(h.ssrc[k]), int(h.ts[k]), payload)
            if digit is not None:
                leg.digit(digit)

    def _queue(self, take: Ints, rows: Ints, h: Headers, now: float) -> None:
        start, end = h.start[take], h.end[take]
        size = end - start
        fits = size <= MAX_PAYLOAD
        if not fits.all():
            self.stats["malformed"] += int(np.count_nonzero(~fits))
            take, rows, start, size = take[fits], rows[fits], start[fits], size[fits]
        payload = gather(self.rx.data, take, start, MAX_PAYLOAD)
        ssrc, seq, ts = h.ssrc[take], h.seq[take], h.ts[take]
        self.jitter.put(rows, ssrc, seq, payload, size)
        self._receiver_stats(rows, ssrc, seq, ts, now)

    def _receiver_stats(self, rows: Ints, ssrc: Ints, seq: Ints, ts: Ints, now: float) -> None:
        """RFC 3550 counts and interarrival jitter (arrival times are the tick's: the
        jitter is measured to a tick, what this engine's playout can follow anyway)."""
        new = self._stats_ssrc[rows] != ssrc
        if new.any():
            fresh = rows[new]
            self._stats_ssrc[fresh] = ssrc[new]
            self._audio_in[fresh] = 0
            self._prior[fresh] = 0
            self._jitter_ts[fresh] = 0.0
            self._transit[fresh] = np.nan
            self._base[fresh] = self.jitter.highest[fresh]
        np.add.at(self._audio_in, rows, 1)
        self._base[rows] = np.minimum(self._base[rows], self.jitter.highest[rows])
        rate = np.where(self.codec_id[rows] == OTHER_ID, self.step[rows] * 50, 8000)
        transit = np.floor(now * rate) - ts
        d = np.abs(transit - self._transit[rows])
        ok = np.isfinite(d) & (d < 2**31)
        self._jitter_ts[rows[ok]] += (d[ok] - self._jitter_ts[rows[ok]]) / 16.0
        self._transit[rows] = transit

    def _decode(self) -> None:
        rows = self.rows
        self.heard[:] = False
        if not len(rows):
            return
        out = self.jitter.pop(rows)
        status = out.status
        codec = self.codec_id[rows]
        g711_rows = codec != OTHER_ID
        full = (status == FRAME) & g711_rows
        fr = np.flatnonzero(full)  # indexes into rows / out
        payload_index = np.cumsum(status == FRAME) - 1  # row in out.payload per FRAME
        if len(fr):
            lengths = out.length[payload_index[fr]]
            plain = fr[lengths == 160]
            for cid, table in ((PCMU_ID, g711.ULAW_DECODE), (PCMA_ID, g711.ALAW_DECODE)):
                pick = plain[codec[plain] == cid]
                if len(pick):
                    decoded = table[out.payload[payload_index[pick], :160]]
                    self.frames[rows[pick], :160] = decoded
            odd = fr[lengths != 160]  # another packet time: decoded and fitted one by one
            for i in odd.tolist():
                n = int(out.length[payload_index[i]])
                codes = out.payload[payload_index[i], :n]
                table = g711.ULAW_DECODE if codec[i] == PCMU_ID else g711.ALAW_DECODE
                fitted = np.resize(table[codes], 160) if n else np.zeros(160, np.int16)
                self.frames[int(rows[i]), :160] = fitted
            got = rows[fr]
            self._last[got, :160] = self.frames[got, :160]
            self._repeats[got] = 0
            self.heard[got] = True
        lost = np.flatnonzero((status == LOST) & g711_rows)
        if len(lost):
            lr = rows[lost]
            conceal = lr[self._repeats[lr] < MAX_REPEATS]
            self._repeats[conceal] += 1
            self._last[conceal, :160] //= 2
            self.frames[conceal, :160] = self._last[conceal, :160]
            self.heard[conceal] = True
        for leg in self._stateful:  # G.722, Opus: a decoder each
            i = int(np.searchsorted(rows, leg.row))
            state = int(status[i])
            frame: Samples | None = None
            if state == FRAME:
                n = int(out.length[payload_index[i]])
                frame = leg.decode_one(out.payload[payload_index[i], :n].tobytes())
                if frame is not None:
                    self._last[leg.row, : leg.samples] = frame
                    self._repeats[leg.row] = 0
            elif state == LOST:
                frame = self._conceal_one(leg)
            if frame is not None:
                self.frames[leg.row, : leg.samples] = frame
                self.heard[leg.row] = True
        for leg in self._inband:
            if self.heard[leg.row]:
                leg.heard(self.frames[leg.row, : leg.samples])

    def _conceal_one(self, leg: ConfLeg) -> Samples | None:
        row = leg.row
        if self._repeats[row] >= MAX_REPEATS:
            return None
        self._repeats[row] += 1
        decoder = leg.decoder
        if isinstance(decoder, codecs.Concealer):
            frame = decoder.conceal(self.jitter.following(row))
            frame = np.resize(frame, leg.samples) if len(frame) else np.zeros(leg.samples, np.int16)
            self._last[row, : leg.samples] = frame
            return frame
        self._last[row, : leg.samples] //= 2
        return self._last[row, : leg.samples].copy()

    # -- sending --------------------------------------------------------------------------

    def _hold_payload(self, leg: ConfLeg, tick: int) -> bytes:
        if self._hold_music is None:
            return self._silence_payload(leg)
        frame, shared = self._hold_frame(leg.rate, leg.samples, tick)
        if not leg.codec.stateless:
            return leg.encode(frame)  # G.722 and Opus keep state per leg
        return shared.encoded(leg.codec)

    def _hold_frame(self, rate: int, samples: int, tick: int) -> tuple[Samples, SharedPlayer]:
        assert self._hold_music is not None
        shared = self._hold.get(rate)
        if shared is None:
            music = self._hold_music(rate)
            shared = self._hold[rate] = SharedPlayer(Player(music, samples, loop=True))
        return shared.advance(tick), shared

    def _silence_payload(self, leg: ConfLeg) -> bytes:
        silence = np.zeros(leg.samples, np.int16)
        if not leg.codec.stateless:
            return leg.encode(silence)
        payload = self._silence.get(leg.codec.name)
        if payload is None:
            payload = self._silence[leg.codec.name] = leg.encoder.encode(silence)
        return payload

    def _send(self, tick: int) -> None:
        rows = self.rows
        if not len(rows):
            return
        tx = self.tx
        has = np.zeros(self.capacity, dtype=bool)
        size = np.zeros(self.capacity, dtype=np.int64)

        def fill(target: Ints, payload: bytes) -> None:
            if not len(target):
                return
            n = len(payload)
            tx.data[target, 12 : 12 + n] = np.frombuffer(payload, dtype=np.uint8)
            size[target] = n
            has[target] = True

        # prompts first: a caller hearing a prompt hears nothing else
        prompting = np.zeros(self.capacity, dtype=bool)
        for leg in list(self._prompting):
            frame = leg.next_prompt_frame()
            if frame is None:
                self._prompting.discard(leg)
                continue
            prompting[leg.row] = True
            fill(np.array([leg.row]), leg.encode(frame))
        taken = prompting.copy()
        for room in list(self.rooms.values()):
            groups, singles = room.payloads(taken)  # type: ignore[attr-defined]
            for target, payload in groups:
                fill(target, payload)
                taken[target] = True
            for row, payload in singles:
                if payload is not None:
                    fill(np.array([row]), payload)
                taken[row] = True
        rest = rows[~taken[rows]]
        if len(rest):
            self._send_rest(rest, tick, fill)
        out = rows[has[rows] & self.sending[rows]]
        if len(out):
            tx.length[out] = 12 + size[out]
            write_headers(tx.data, out, self.pt[out], self.seq[out], self.ts[out], self.ssrc[out])
            tx.ip[out] = self.dst_ip[out]
            tx.port[out] = self.dst_port[out]
            known = self.dst_port[out] > 0
            out = out[known]
            self.sent[out] += 1
            self.sent_octets[out] += size[out]
            own = np.zeros(self.capacity, dtype=bool)
            for leg in self._own_legs:
                own[leg.row] = True
            sent = self._rtp.send(tx, out[~own[out]])
            for leg in self._own_legs:
                if has[leg.row] and self.sending[leg.row] and self.dst_port[leg.row] > 0:
                    assert leg.own is not None
                    sent += leg.own.rtp.send(tx, np.array([leg.row]))
            self.stats["sent"] += sent
            self.stats["dropped"] += len(out) - sent
        self.seq[rows] = (self.seq[rows] + 1) & 0xFFFF
        self.ts[rows] = (self.ts[rows] + self.step[rows]) & 0xFFFFFFFF

    def _send_rest(self, rest: Ints, tick: int, fill: Callable[[Ints, bytes], None]) -> None:
        """Legs neither prompted nor in a room: the waiting music, else silence."""
        waiting = np.zeros(self.capacity, dtype=bool)
        for row in rest.tolist():
            leg = self._by_row[row]
            if leg is not None and leg.waiting:
                waiting[row] = True
        codec = self.codec_id[rest]
        for cid, name in ((PCMU_ID, "PCMU"), (PCMA_ID, "PCMA")):
            pick = rest[codec == cid]
            if not len(pick):
                continue
            c = codecs.codec(name)
            hold = pick[waiting[pick]]
            if len(hold):
                if self._hold_music is None:
                    fill(hold, self._silence_of(c))
                else:
                    _, shared = self._hold_frame(8000, 160, tick)
                    fill(hold, shared.encoded(c))
            fill(pick[~waiting[pick]], self._silence_of(c))
        for row in rest[codec == OTHER_ID].tolist():
            leg = self._by_row[row]
            if leg is None:
                continue
            payload = self._hold_payload(leg, tick) if leg.waiting else self._silence_payload(leg)
            fill(np.array([row]), payload)

    def _silence_of(self, codec: codecs.Codec) -> bytes:
        payload = self._silence.get(codec.name)
        if payload is None:
            silence = np.zeros(codec.samples_per_frame(), np.int16)
            payload = self._silence[codec.name] = codec.encoder().encode(silence)
        return payload

    # -- RTCP -----------------------------------------------------------------------------

    def _interval(self, *, initial: bool = False) -> float:
        return rtcp_interval(2, 1, 500.0, True, 100.0, initial, self._rng)

    def _rtcp_tick(self, now: float) -> None:
        self._rtcp_receive(now)
        rows = self.rows
        if not len(rows):
            return
        due = rows[self._rtcp_due[rows] <= now]
        for row in due.tolist()[:16]:  # a few per tick: reports are spread over time
            leg = self._by_row[row]
            if leg is None:
                continue
            self._rtcp_due[row] = now + self._interval()
            self._send_rtcp(leg, now)

    def report_block(self, leg: ConfLeg, now: float) -> ReportBlock | None:
        """This leg's reception report on its caller's stream (closes the interval)."""
        row = leg.row
        if self._audio_in[row] == 0:
            return None
        highest = int(self.jitter.highest[row])
        expected = highest - int(self._base[row]) + 1
        received = int(self._audio_in[row])
        prior_expected, prior_received = (int(x) for x in self._prior[row])
        self._prior[row] = (expected, received)
        interval_expected = expected - prior_expected
        lost_interval = interval_expected - (received - prior_received)
        fraction = 0
        if interval_expected > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // interval_expected)
        cumulative = max(-0x800000, min(0x7FFFFF, expected - received))
        dlsr = 0
        if np.isfinite(self._last_sr_at[row]):
            dlsr = int((now - self._last_sr_at[row]) * 65536) & 0xFFFFFFFF
        return ReportBlock(
            int(self._stats_ssrc[row]) & 0xFFFFFFFF,
            fraction,
            cumulative,
            highest & 0xFFFFFFFF,
            int(self._jitter_ts[row]),
            int(self._last_sr[row]),
            dlsr,
        )

    def rtcp_packets(self, leg: ConfLeg, now: float, *, bye: bool = False) -> list[RtcpPacket]:
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
        cname = f"conference-{self.port}@softswitch".encode()
        packets: list[RtcpPacket] = [report, SourceDescription(((leg.ssrc, ((1, cname),)),))]
        if bye:
            packets.append(Bye((leg.ssrc,)))
        return packets

    def _send_rtcp(self, leg: ConfLeg, now: float) -> None:
        target = leg.rtcp_addr
        if target is None:
            peer = leg.addr or leg.expected
            target = (peer[0], peer[1] + 1)
        sock = leg.own.rtcp.sock if leg.own is not None else self._rtcp.sock
        try:
            sock.sendto(build_compound(self.rtcp_packets(leg, now)), target)
        except OSError:
            return
        self.stats["rtcp_sent"] += 1

    def _rtcp_receive(self, now: float) -> None:
        batch = self._rtcp_rx
        batch.count = 0
        self._rtcp.receive(batch)
        shared = batch.count
        owned: list[tuple[int, int, ConfLeg]] = []
        for mine in self._own_legs:
            assert mine.own is not None
            first = batch.count
            if mine.own.rtcp.receive(batch):
                owned.append((first, batch.count - first, mine))
        if not batch.count:
            return
        legs: list[ConfLeg | None] = [None] * batch.count
        if shared:
            for i, row in enumerate(self._owner_rows(batch.ip[:shared]).tolist()):
                legs[i] = self._by_row[row] if row >= 0 else None
        for first, count, owner in owned:
            legs[first : first + count] = [owner] * count
        for i, found in enumerate(legs):
            source = (address_text(batch.ip[i].tobytes()), int(batch.port[i]))
            leg = found
            if leg is None:
                self._stray(source, "rtcp_foreign", self._strays(source, now))
                continue
            verdict = leg.source.check_rtcp(source, now)
            if not verdict.accept:
                self._stray(source, verdict.reason or "rtcp_foreign", verdict.report)
                continue
            try:
                packets = parse_rtcp(batch.data[i, : batch.length[i]].tobytes())
            except PacketError:
                self.stats["malformed"] += 1
                continue
            self.stats["rtcp_received"] += 1
            leg.rtcp_addr = source
            for packet in packets:
                if isinstance(packet, SenderReport):
                    self._last_sr[leg.row] = (packet.ntp_timestamp >> 16) & 0xFFFFFFFF
                    self._last_sr_at[leg.row] = now
                if isinstance(packet, SenderReport | ReceiverReport):
                    for block in packet.reports:
                        if block.ssrc == leg.ssrc:
                            leg.peer_report = block
