"""The conference media engine: every conference leg on one UDP port, batched per tick.

At a thousand legs the per-packet cost of an asyncio datagram transport per leg is more
than the whole tick budget (DESIGN.md, "Media hot path"), so conference legs share one
socket. Their SDP all name the same port; packets are told apart by source address,
learnt as in :mod:`rtp.source_policy` (strict RTP): a leg is taken only by its SDP
address or a source at its SDP or signalling IP, and moves to another port only after
probation and silence from the old one; other packets are counted and dropped. Each
20 ms tick:

1. the socket is drained with ``recvfrom_into`` a preallocated buffer; RFC 4733 events
   become digits, audio payloads queue on their leg (at most four: bursts survive);
2. G.711 payloads of all legs are decoded in one table look-up and written to the rooms'
   mixers, which detect talkers and mix (N-1 only for talkers);
3. every leg gets one packet: its own prompt, the waiting music, its N-1 mix if it talks,
   or the room's shared mix encoded once per codec.

Each leg works at its codec's audio rate (8 kHz G.711, 16 kHz G.722 and Opus; the RTP
clock, 8000 for G.722 and 48000 for Opus, only steps the timestamps): wideband legs put
16 kHz frames into their room's mixer and hear its 16 kHz mix (media.mixer), prompts and
waiting music are made at the rate of the leg that hears them.

RTCP is received on port+1 and dropped (the port exists so peers get no ICMP errors).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import struct
import time
from collections import deque
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
from rtp.source_policy import REASONS, UNEXPECTED, BurstGate

log = logging.getLogger(__name__)
Samples = npt.NDArray[np.int16]
Address = tuple[str, int]
_HEADER = struct.Struct("!BBHII")
RX_QUEUE = 4
SOUNDS = Path(__file__).resolve().parents[2] / "sounds"


class ConfLeg:
    """One caller on the bridge: its RTP state, digits, and what it hears."""

    def __init__(self, engine: ConferenceEngine, call: sip.Call, stream: sip.AudioStream) -> None:
        self.engine = engine
        self.call = call
        self.expected: Address = (stream.remote_address, stream.remote_port)
        self.addr: Address | None = None  # the learnt source (what packets come from)
        signalling = call.destination[1] if call.destination else None
        self.source = SourcePolicy(learn_unnamed=False)
        self.source.expect(self.expected, signalling, time.monotonic())
        # the IPs a packet for this leg may come from (SDP's, signalling's)
        self.ips = {self.expected[0]} | ({signalling} if signalling else set())
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
        self.rx: deque[bytes] = deque(maxlen=RX_QUEUE)
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
        self.frame_in: Samples | None = None
        self.player: Player | None = None
        self._played: asyncio.Event | None = None
        self._barge_in = False
        self.waiting = False  # hears the waiting music (before the host)
        self.room: object | None = None  # a Room, when joined
        self.mixer_row: int | None = None
        self.host = False
        self.self_muted = False
        self.self_unmuted = False
        self.received = 0
        self.closed = False

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
        """A decoded frame from this caller, at its rate (and in-band DTMF)."""
        self.frame_in = frame
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
        self.legs: list[ConfLeg] = []
        self.by_addr: dict[Address, ConfLeg] = {}
        self.rooms: dict[str, object] = {}
        self._prompts: dict[tuple[str, int], Samples] = {}
        self._silence: dict[str, bytes] = {}
        # waiting music: one player per rate (``hold_music(rate)`` makes its audio), one
        # frame and one encoding per stateless codec per tick, for every listener
        self._hold_music = hold_music
        self._hold: dict[int, SharedPlayer] = {}
        self.stats = {"received": 0, "sent": 0, "malformed": 0, "strays": 0, "dropped": 0}
        self.stats.update({f"strays_{reason}": 0 for reason in REASONS})
        self.by_ip: dict[str, list[ConfLeg]] = {}  # legs by the IPs signalling named
        self.by_expected: dict[Address, ConfLeg] = {}  # legs by their SDP address
        # a refused source (address, reason), at most once per source per burst
        self.on_rejected_source: Callable[[Address, str], None] | None = None
        self._strays = BurstGate()
        self._rtp, self._rtcp, self.port = self._bind(ports)
        self._buf = bytearray(2048)
        self._view = memoryview(self._buf)
        self._unsubscribe = clock.subscribe(self._tick, priority=40)

    def _bind(self, ports: PortAllocator) -> tuple[socket.socket, socket.socket, int]:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for port in ports.candidates():
            rtp = socket.socket(family, socket.SOCK_DGRAM)
            rtcp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                rtp.bind((self.host, port))
                rtcp.bind((self.host, port + 1))
            except OSError:
                rtp.close()
                rtcp.close()
                continue
            for s in (rtp, rtcp):
                s.setblocking(False)
            # a tick's worth of packets from every leg waits in the kernel between passes
            for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
                if option is None:
                    continue
                try:
                    rtp.setsockopt(socket.SOL_SOCKET, option, 8 << 20)
                    break
                except OSError:
                    continue
            rtp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            ports.take(port)
            return rtp, rtcp, port
        raise OSError("no free RTP port for the conference bridge")

    def close(self) -> None:
        self._unsubscribe()
        self._rtp.close()
        self._rtcp.close()

    # -- legs -----------------------------------------------------------------------------

    def add_leg(self, call: sip.Call, stream: sip.AudioStream) -> ConfLeg:
        if len(self.legs) >= self.capacity:
            raise OverflowError(f"the bridge holds {self.capacity} legs")
        leg = ConfLeg(self, call, stream)
        self.legs.append(leg)
        for ip in leg.ips:
            self.by_ip.setdefault(ip, []).append(leg)
        self.by_expected.setdefault(leg.expected, leg)
        return leg

    def remove_leg(self, leg: ConfLeg) -> None:
        leg.closed = True
        if leg in self.legs:
            self.legs.remove(leg)
        if leg.addr is not None and self.by_addr.get(leg.addr) is leg:
            del self.by_addr[leg.addr]
        if self.by_expected.get(leg.expected) is leg:
            del self.by_expected[leg.expected]
        for ip in leg.ips:
            at_ip = self.by_ip.get(ip, [])
            if leg in at_ip:
                at_ip.remove(leg)
            if not at_ip:
                self.by_ip.pop(ip, None)

    def _latch(self, addr: Address, ssrc: int, seq: int, now: float) -> ConfLeg | None:
        """The leg a packet from a source no leg has learnt belongs to, or None (a stray,
        counted). Only legs that signalling put at the source's IP are asked, in order:
        the one whose SDP names the source exactly, a learnt one whose peer has this SSRC
        (its NAT mapping moved), the oldest one not learnt yet, the only one at that IP.
        That leg's policy decides (learn, probation, drop)."""
        source = (addr[0], addr[1])
        at_ip = self.by_ip.get(source[0], ())
        leg = (
            self.by_expected.get(source)
            or next(
                (c for c in at_ip if c.addr is not None and c.source.current_ssrc == ssrc), None
            )
            or next((c for c in at_ip if c.addr is None), None)
            or (at_ip[0] if len(at_ip) == 1 else None)
        )
        if leg is None:
            self._stray(source, UNEXPECTED, self._strays(source, now))
            return None
        verdict = leg.source.check(source, ssrc, seq, now)
        if not verdict.accept:
            self._stray(source, verdict.reason or UNEXPECTED, verdict.report)
            return None
        if verdict.moved:
            if leg.addr is not None and self.by_addr.get(leg.addr) is leg:
                del self.by_addr[leg.addr]
            leg.addr = addr
            self.by_addr[addr] = leg
            log.info("event=conference_latch source=%s:%d ssrc=%08x", addr[0], addr[1], ssrc)
        return leg

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
        self._receive()
        self._decode()
        for room in list(self.rooms.values()):
            room.mix(tick)  # type: ignore[attr-defined]
        self._send(tick)

    def _receive(self) -> None:
        sock, buf, view = self._rtp, self._buf, self._view
        by_addr = self.by_addr
        limit = 8 * len(self.legs) + 64
        received = 0
        now = time.monotonic()
        for _ in range(limit):
            try:
                nbytes, addr = sock.recvfrom_into(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue  # ICMP errors surface here; the packet is gone anyway
            received += 1
            first = buf[0]
            if nbytes < 12 or first >> 6 != 2:
                self.stats["malformed"] += 1
                continue
            leg = by_addr.get(addr)
            if leg is None:
                leg = self._latch(
                    addr, int.from_bytes(buf[8:12], "big"), (buf[2] << 8) | buf[3], now
                )
                if leg is None:
                    continue
            else:
                leg.source.last_heard = now
            start = 12 + 4 * (first & 0x0F)
            if first & 0x10:
                if nbytes < start + 4:
                    continue
                start += 4 + 4 * int.from_bytes(buf[start + 2 : start + 4], "big")
            end = nbytes - (buf[nbytes - 1] if first & 0x20 else 0)
            if end <= start:
                continue
            pt = buf[1] & 0x7F
            leg.received += 1
            if pt == leg.pt:
                leg.rx.append(bytes(view[start:end]))
            elif pt == leg.dtmf_pt:
                ssrc = int.from_bytes(buf[8:12], "big")
                timestamp = int.from_bytes(buf[4:8], "big")
                d = leg._rfc4733.receive(ssrc, timestamp, bytes(view[start:end]))
                if d is not None:
                    leg.digit(d)
        self.stats["received"] += received
        while True:  # RTCP: drained and dropped
            try:
                self._rtcp.recv(2048)
            except (BlockingIOError, InterruptedError, OSError):
                break

    def _decode(self) -> None:
        ulaw: list[ConfLeg] = []
        alaw: list[ConfLeg] = []
        ulaw_data: list[bytes] = []
        alaw_data: list[bytes] = []
        for leg in self.legs:
            if not leg.rx:
                leg.frame_in = None
                continue
            payload = leg.rx.popleft()
            if leg.g711 and len(payload) == 160:
                if leg.codec.name == "PCMU":
                    ulaw.append(leg)
                    ulaw_data.append(payload)
                else:
                    alaw.append(leg)
                    alaw_data.append(payload)
            else:
                frame = leg.decode_one(payload)
                leg.frame_in = None
                if frame is not None:
                    leg.heard(frame)
        for legs, data, table in (
            (ulaw, ulaw_data, g711.ULAW_DECODE),
            (alaw, alaw_data, g711.ALAW_DECODE),
        ):
            if not legs:
                continue
            frames = table[np.frombuffer(b"".join(data), dtype=np.uint8).reshape(-1, 160)]
            for i, leg in enumerate(legs):
                leg.heard(frames[i])

    def _hold_payload(self, leg: ConfLeg, tick: int) -> bytes:
        if self._hold_music is None:
            return self._silence_payload(leg)
        shared = self._hold.get(leg.rate)
        if shared is None:
            music = self._hold_music(leg.rate)
            shared = self._hold[leg.rate] = SharedPlayer(Player(music, leg.samples, loop=True))
        frame = shared.advance(tick)
        if not leg.codec.stateless:
            return leg.encode(frame)  # G.722 and Opus keep state per leg
        return shared.encoded(leg.codec)

    def _silence_payload(self, leg: ConfLeg) -> bytes:
        silence = np.zeros(leg.samples, np.int16)
        if not leg.codec.stateless:
            return leg.encode(silence)
        payload = self._silence.get(leg.codec.name)
        if payload is None:
            payload = self._silence[leg.codec.name] = leg.encoder.encode(silence)
        return payload

    def _send(self, tick: int) -> None:
        sock = self._rtp
        pack = _HEADER.pack
        sent = dropped = 0
        for leg in self.legs:
            addr = leg.addr or leg.expected
            frame = leg.next_prompt_frame()
            if frame is not None:
                payload = leg.encode(frame)
            elif leg.room is not None and not leg.waiting:
                payload = leg.room.payload_for(leg)  # type: ignore[attr-defined]
            elif leg.waiting:
                payload = self._hold_payload(leg, tick)
            else:
                payload = self._silence_payload(leg)
            seq, ts = leg.seq, leg.ts
            leg.seq = (seq + 1) & 0xFFFF
            leg.ts = (ts + leg.step) & 0xFFFFFFFF
            if not leg.sending or payload is None:
                continue
            try:
                sock.sendto(pack(0x80, leg.pt, seq, ts, leg.ssrc) + payload, addr)
                sent += 1
            except (BlockingIOError, InterruptedError):
                dropped += 1
            except OSError:
                dropped += 1
        self.stats["sent"] += sent
        self.stats["dropped"] += dropped
