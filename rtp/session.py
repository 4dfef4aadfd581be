"""An RTP session on an asyncio datagram endpoint, with RTCP on port+1.

- Symmetric RTP (RFC 4961): the peer's real address is learnt from its packets, so a
  phone behind NAT is reached where it really is, not where its SDP says; but only from
  a source that signalling named, and a learnt peer moves only after probation and its
  own silence (strict RTP, :mod:`rtp.source_policy`). Packets from any other source are
  counted and dropped: their audio, keys and RTCP never enter the call, and nothing is
  ever sent toward them.
- A new SSRC from the peer (a re-INVITE, a transfer) restarts the jitter buffer and the
  statistics instead of confusing them.
- Packets carry payloads; codecs are the business of :mod:`media`. RFC 4733 events
  (``dtmf_pt``) are taken out of the stream and reported as digits.
- RTCP: SR (while we send) or RR, with SDES CNAME, at the RFC 3550 interval; the
  peer's reports are kept (what it says of our stream's loss and jitter).
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .dtmf import DtmfReceiver, DtmfSender
from .jitter import JitterBuffer, Status
from .packet import (
    Bye,
    PacketError,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    SenderReport,
    build_compound,
    parse_rtcp,
    parse_rtp,
    report_packets,
)
from .source_policy import SourcePolicy
from .stats import ReceiverStats, ntp_timestamp, rtcp_interval

log = logging.getLogger(__name__)
_HEADER = struct.Struct("!BBHII")

Address = tuple[str, int]


@dataclass(slots=True)
class Counters:
    sent: int = 0
    sent_octets: int = 0
    received: int = 0
    malformed: int = 0
    foreign: int = 0  # wrong payload type, or not from the peer (reasons: session.source)
    ssrc_changes: int = 0
    dtmf_received: int = 0
    dropped: int = 0  # the socket buffer was full
    send_errors: int = 0
    rtcp_sent: int = 0
    rtcp_received: int = 0


class PortAllocator:
    """Even RTP ports in ``[start, end)``; RTCP takes port+1 (RFC 3550 §11).

    Ports are handed out round the range from the last one taken (spreading reuse, so a
    late packet of an ended call rarely reaches a new one); finding the next free port
    costs what it skips, not the size of the range.
    """

    def __init__(self, start: int = 16384, end: int = 32768) -> None:
        if start % 2 or end <= start + 2:
            raise ValueError("port range must start even and hold at least one pair")
        self.start, self.end = start, end
        self._next = start
        self._used: set[int] = set()

    @property
    def in_use(self) -> int:
        return len(self._used)

    def candidates(self) -> Iterator[int]:
        """Free even ports, starting after the last one handed out (spreads reuse); a
        port taken meanwhile is skipped."""
        count = (self.end - self.start) // 2
        first = (self._next - self.start) // 2
        for i in range(count):
            port = self.start + 2 * ((first + i) % count)
            if port not in self._used:
                yield port

    def take(self, port: int) -> None:
        self._used.add(port)
        self._next = port + 2 if port + 2 < self.end else self.start

    def release(self, port: int) -> None:
        self._used.discard(port)


class _RtpProtocol(asyncio.DatagramProtocol):
    def __init__(self, handler: Callable[[bytes, Address], None]) -> None:
        self.handler = handler

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.handler(data, (addr[0], addr[1]))


class Session:
    """One RTP stream pair (send and receive) with its RTCP."""

    def __init__(
        self,
        *,
        payload_type: int,
        clock_rate: int = 8000,
        frame_ticks: int = 160,
        dtmf_pt: int | None = 101,
        remote: Address | None = None,
        symmetric: bool = True,
        jitter_depth: int = 3,
        cname: str | None = None,
        rtcp: bool = True,
        rtcp_bandwidth: float = 500.0,  # bytes/s (5 % of 80 kbit/s)
        source_policy: SourcePolicy | None = None,
    ) -> None:
        self.payload_type = payload_type
        self.accepted_pts: set[int] = {payload_type}
        self.clock_rate = clock_rate
        self.frame_ticks = frame_ticks
        self.dtmf_pt = dtmf_pt
        self.remote = remote  # where we send (learnt from the peer's packets if symmetric)
        self.remote_rtcp: Address | None = (remote[0], remote[1] + 1) if remote else None
        self.symmetric = symmetric
        self.ssrc = secrets.randbits(32)
        self.cname = cname or f"{secrets.token_hex(6)}@softswitch"
        self.counters = Counters()
        self.stats = ReceiverStats(clock_rate)
        self.jitter = JitterBuffer(frame_ticks=frame_ticks, depth=jitter_depth)
        self.dtmf_sender = DtmfSender(frame_ticks)
        self.dtmf_receiver = DtmfReceiver()
        self.on_dtmf: Callable[[str], None] | None = None
        self.on_bye: Callable[[], None] | None = None
        # a refused source (address, reason), at most once per source per burst
        self.on_rejected_source: Callable[[Address, str], None] | None = None
        self.source = source_policy or SourcePolicy()
        if remote is not None:
            self.source.expect(remote, None, time.monotonic())
        self.peer_report: ReportBlock | None = None  # the peer's view of our stream
        self.local: Address | None = None
        self._rtcp_enabled = rtcp
        self._rtcp_bandwidth = rtcp_bandwidth
        self._transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None
        self._rtcp_transport: asyncio.DatagramTransport | None = None
        self._rtcp_timer: asyncio.TimerHandle | None = None
        self._peer_ssrc: int | None = None
        self._seq = secrets.randbits(16)
        self._timestamp = secrets.randbits(32)
        self._event_timestamp = 0
        self._rtcp_initial = True
        self._allocator: PortAllocator | None = None
        self.closed = False

    # -- lifecycle --------------------------------------------------------------------

    async def open(self, host: str, port: int = 0) -> Address:
        """Bind RTP on ``host:port`` (and RTCP on port+1 when enabled)."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
            sock.bind((host, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _RtpProtocol(self._on_rtp), sock=sock
        )
        self._transport = transport
        # Sending goes straight to the socket: asyncio's sendto wrapper costs more than
        # the system call, and a media packet that would block is better dropped.
        self._sock = sock
        bound = sock.getsockname()
        self.local = (bound[0], bound[1])
        if self._rtcp_enabled:
            try:
                rtcp, _ = await loop.create_datagram_endpoint(
                    lambda: _RtpProtocol(self._on_rtcp), local_addr=(host, bound[1] + 1)
                )
            except OSError:
                transport.close()
                raise
            self._rtcp_transport = rtcp
            self._schedule_rtcp()
        return self.local

    async def open_from(self, allocator: PortAllocator, host: str) -> Address:
        """Bind the first free even port of ``allocator`` (and its RTCP port)."""
        for port in allocator.candidates():
            allocator.take(port)  # reserved while binding: a concurrent open skips it
            try:
                address = await self.open(host, port)
            except OSError:
                allocator.release(port)
                continue
            self._allocator = allocator
            return address
        raise OSError(f"no free RTP port pair in {allocator.start}-{allocator.end}")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._rtcp_transport is not None and self.remote_rtcp is not None:
            self._send_rtcp(bye=True)
        if self._rtcp_timer is not None:
            self._rtcp_timer.cancel()
        for t in (self._transport, self._rtcp_transport):
            if t is not None:
                t.close()
        if self._allocator is not None and self.local is not None:
            self._allocator.release(self.local[1])
        # transport -> protocol -> our bound methods -> us: a cycle; let go of it so the
        # session is freed at once, not by the cycle collector
        self._transport = self._rtcp_transport = self._rtcp_timer = None
        self.on_dtmf = self.on_bye = self.on_rejected_source = None

    def set_clock(self, clock_rate: int, frame_ticks: int) -> None:
        """The RTP clock of the negotiated codec and the timestamp step of one packet
        (G.722: 8000 and 160; Opus: 48000 and 960 for 20 ms). Set before media flows."""
        if (clock_rate, frame_ticks) == (self.clock_rate, self.frame_ticks):
            return
        self.clock_rate, self.frame_ticks = clock_rate, frame_ticks
        self.dtmf_sender = DtmfSender(frame_ticks, clock_rate=clock_rate)
        self.stats = ReceiverStats(clock_rate)
        self.jitter = JitterBuffer(frame_ticks=frame_ticks, depth=self.jitter.depth)

    def set_remote(
        self, address: Address, rtcp: Address | None = None, *, signalling: str | None = None
    ) -> None:
        """Where the peer is, from SDP (an answer, a re-INVITE); ``signalling`` is the IP
        its SIP messages came from. Opens the learning window: the peer is then learnt
        from its packets, from that address or either IP (NAT)."""
        target = self.source.expect(address, signalling, time.monotonic())
        if target is None or target == address:
            self.remote = address
            self.remote_rtcp = rtcp or (address[0], address[1] + 1)
        else:  # the learnt source stays (a NAT): keep sending there
            self.remote = target

    # -- receiving --------------------------------------------------------------------

    def _on_rtp(self, data: bytes, addr: Address) -> None:
        try:
            packet = parse_rtp(data)
        except PacketError:
            self.counters.malformed += 1
            return
        now = time.monotonic()
        verdict = self.source.check(addr, packet.ssrc, packet.sequence, now)
        if not verdict.accept:
            self.counters.foreign += 1
            if verdict.report:
                self._rejected(addr, verdict.reason or "")
            return
        if verdict.moved and self.symmetric:
            self.remote = addr
            self.remote_rtcp = (addr[0], addr[1] + 1)
        if packet.ssrc != self._peer_ssrc:
            if self._peer_ssrc is not None:
                self.counters.ssrc_changes += 1
                self.jitter = JitterBuffer(frame_ticks=self.frame_ticks, depth=self.jitter.depth)
            self._peer_ssrc = packet.ssrc
        self.counters.received += 1
        if packet.payload_type == self.dtmf_pt:
            digit = self.dtmf_receiver.receive(packet.ssrc, packet.timestamp, packet.payload)
            if digit is not None:
                self.counters.dtmf_received += 1
                if self.on_dtmf is not None:
                    self.on_dtmf(digit)
            return
        if packet.payload_type not in self.accepted_pts:
            self.counters.foreign += 1
            return
        self.stats.update(packet.sequence, packet.timestamp, now, packet.ssrc)
        self.jitter.put(packet.sequence, packet.timestamp, packet.payload, packet.marker)

    def _rejected(self, addr: Address, reason: str) -> None:
        log.info(
            "event=rtp_source_rejected local=%s source=%s:%d reason=%s peer=%s",
            self.local,
            addr[0],
            addr[1],
            reason,
            self.source.current,
        )
        if self.on_rejected_source is not None:
            self.on_rejected_source(addr, reason)

    def pop(self) -> tuple[Status, bytes]:
        """This tick's payload from the jitter buffer."""
        return self.jitter.pop()

    # -- sending ----------------------------------------------------------------------

    def send(self, payload: bytes, *, marker: bool = False, ticks: int | None = None) -> None:
        """Send one frame's payload (a DTMF event packet instead, while one is queued)."""
        step = self.frame_ticks if ticks is None else ticks
        if self.dtmf_sender.active and self.dtmf_pt is not None:
            event, starting = self.dtmf_sender.next_packet()
            if event is not None:
                if starting:
                    self._event_timestamp = self._timestamp
                self._emit(self.dtmf_pt, event.payload, event.marker, self._event_timestamp)
                self._timestamp = (self._timestamp + step) & 0xFFFFFFFF
                return
        self._emit(self.payload_type, payload, marker, self._timestamp)
        self._timestamp = (self._timestamp + step) & 0xFFFFFFFF

    def skip(self, ticks: int | None = None) -> None:
        """Advance the timestamp without sending (silence, hold)."""
        self._timestamp = (self._timestamp + (ticks or self.frame_ticks)) & 0xFFFFFFFF

    def send_dtmf(self, digits: str, duration_ms: int = 100) -> None:
        if self.dtmf_pt is None:
            raise ValueError("the peer did not negotiate telephone-event")
        self.dtmf_sender.queue(digits, duration_ms)

    def _emit(self, pt: int, payload: bytes, marker: bool, timestamp: int) -> None:
        if self._sock is None or self.remote is None or self.closed:
            return
        packet = (
            _HEADER.pack(0x80, (0x80 if marker else 0) | pt, self._seq, timestamp, self.ssrc)
            + payload
        )
        self._seq = (self._seq + 1) & 0xFFFF
        try:
            self._sock.sendto(packet, self.remote)
        except (BlockingIOError, InterruptedError):
            self.counters.dropped += 1
            return
        except OSError as exc:  # unreachable peer (ICMP), bad address: count, go on
            self.counters.send_errors += 1
            log.debug("event=rtp_send_error remote=%s error=%s", self.remote, exc)
            return
        self.counters.sent += 1
        self.counters.sent_octets += len(payload)

    # -- RTCP -------------------------------------------------------------------------

    def _schedule_rtcp(self) -> None:
        interval = rtcp_interval(
            members=2,
            senders=1 if self.counters.sent else 0,
            rtcp_bandwidth=self._rtcp_bandwidth,
            we_sent=self.counters.sent > 0,
            avg_rtcp_size=100.0,
            initial=self._rtcp_initial,
            rng=random.Random(),
        )
        self._rtcp_initial = False
        self._rtcp_timer = asyncio.get_running_loop().call_later(interval, self._rtcp_due)

    def _rtcp_due(self) -> None:
        if self.closed:
            return
        self._send_rtcp()
        self._schedule_rtcp()

    def rtcp_packets(self, *, bye: bool = False) -> list[RtcpPacket]:
        now = time.monotonic()
        blocks = (self.stats.report_block(now),) if self.stats.received else ()
        counters = self.counters
        sent = (ntp_timestamp(time.time()), self._timestamp, counters.sent, counters.sent_octets)
        return report_packets(
            self.ssrc, self.cname, blocks, sent if counters.sent else None, bye=bye
        )

    def _send_rtcp(self, *, bye: bool = False) -> None:
        if self._rtcp_transport is None or self.remote_rtcp is None:
            return
        data = build_compound(self.rtcp_packets(bye=bye))
        self._rtcp_transport.sendto(data, self.remote_rtcp)
        self.counters.rtcp_sent += 1

    def _on_rtcp(self, data: bytes, addr: Address) -> None:
        try:
            packets = parse_rtcp(data)
        except PacketError:
            self.counters.malformed += 1
            return
        verdict = self.source.check_rtcp(addr, time.monotonic())
        if not verdict.accept:
            self.counters.foreign += 1
            if verdict.report:
                self._rejected(addr, verdict.reason or "")
            return
        self.counters.rtcp_received += 1
        if self.symmetric:
            self.remote_rtcp = addr
        for packet in packets:
            if isinstance(packet, SenderReport):
                self.stats.on_sender_report(packet.ntp_timestamp, time.monotonic())
            if isinstance(packet, SenderReport | ReceiverReport):
                for block in packet.reports:
                    if block.ssrc == self.ssrc:
                        self.peer_report = block
            elif isinstance(packet, Bye) and self.on_bye is not None:
                self.on_bye()


def send_payloads(sessions: list[Session], payloads: list[bytes]) -> None:
    """``payloads[i]`` sent by ``sessions[i]``, each from its own socket to its own peer,
    exactly as ``sessions[i].send(payloads[i])`` would with no RFC 4733 event queued (the
    caller checks), in one tight pass: a media engine's relays and hold-music fan-out pay
    one ``sendto`` per packet and little else. One packet per socket per tick leaves
    nothing for ``sendmmsg`` to batch (it sends from one socket); the per-call Python
    work is what this saves."""
    pack = _HEADER.pack
    for s, payload in zip(sessions, payloads, strict=True):
        timestamp = s._timestamp
        s._timestamp = (timestamp + s.frame_ticks) & 0xFFFFFFFF
        sock, remote = s._sock, s.remote
        if sock is None or remote is None or s.closed:
            continue
        seq = s._seq
        s._seq = (seq + 1) & 0xFFFF
        try:
            sock.sendto(pack(0x80, s.payload_type, seq, timestamp, s.ssrc) + payload, remote)
        except (BlockingIOError, InterruptedError):
            s.counters.dropped += 1
            continue
        except OSError as exc:  # unreachable peer (ICMP), bad address: count, go on
            s.counters.send_errors += 1
            log.debug("event=rtp_send_error remote=%s error=%s", remote, exc)
            continue
        counters = s.counters
        counters.sent += 1
        counters.sent_octets += len(payload)
