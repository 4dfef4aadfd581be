from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest

from media import codecs
from media.stream import AudioStream
from media.tones import sine_mix
from rtp import PortAllocator, RtpPacket, Session, Status, build_compound, parse_rtcp
from rtp.packet import ReceiverReport, SenderReport

from .audio import dominant_frequency


async def pair() -> tuple[Session, Session]:
    a = Session(payload_type=0, rtcp=True)
    b = Session(payload_type=0, rtcp=True)
    la = await a.open("127.0.0.1")
    lb = await b.open("127.0.0.1")
    a.set_remote(lb)
    b.set_remote(la)
    return a, b


async def test_audio_flows_and_decodes() -> None:
    a, b = await pair()
    try:
        sa, sb = AudioStream(a, codecs.PCMU), AudioStream(b, codecs.PCMU)
        tone = sine_mix((1000.0,), 8000, 8000, -10)
        received = []
        for i in range(50):
            sa.write(tone[i * 160 : (i + 1) * 160])
            await asyncio.sleep(0.002)
            received.append(sb.read())
        for _ in range(5):
            received.append(sb.read())
        audio = np.concatenate(received)
        assert abs(dominant_frequency(audio[800:], 8000) - 1000) < 10
        assert b.stats.received == 50 and b.stats.lost == 0
    finally:
        a.close()
        b.close()


async def test_symmetric_rtp_latches_to_real_source() -> None:
    """The SDP said port X; packets come from Y (NAT): we answer to Y."""
    a = Session(payload_type=0, rtcp=False)
    la = await a.open("127.0.0.1")
    a.set_remote(("127.0.0.1", 9))  # what the (wrong) SDP said
    nat = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    nat.bind(("127.0.0.1", 0))
    nat.setblocking(False)
    try:
        nat.sendto(bytes(RtpPacket(0, 1, 160, 42, b"\xff" * 160)), la)
        await asyncio.sleep(0.05)
        assert a.remote == nat.getsockname()
        a.send(b"\xff" * 160)
        await asyncio.sleep(0.05)
        data = nat.recv(2048)
        assert len(data) == 172
        # a stray sender with the latched peer's SSRC from elsewhere is ignored
        stray = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stray.sendto(bytes(RtpPacket(0, 2, 320, 42, b"\xff" * 160)), la)
        await asyncio.sleep(0.05)
        stray.close()
        assert a.remote == nat.getsockname() and a.counters.foreign == 1
    finally:
        a.close()
        nat.close()


async def test_strangers_are_refused_and_reported_once() -> None:
    """Strict RTP: a source on an IP signalling never named gets nothing, and its audio,
    keys and RTCP are dropped; the hook hears of each refused source once per burst."""
    a = Session(payload_type=0, rtcp=True)
    la = await a.open("127.0.0.1")
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    a.set_remote(peer.getsockname(), signalling="127.0.0.1")
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.9", 0))
    stranger.setblocking(False)
    reports: list[tuple[tuple[str, int], str]] = []
    a.on_rejected_source = lambda addr, reason: reports.append((addr, reason))
    digits: list[str] = []
    a.on_dtmf = digits.append
    try:
        peer.sendto(bytes(RtpPacket(0, 1, 160, 42, b"\xff" * 160)), la)
        await asyncio.sleep(0.05)
        for seq in range(30):  # in sequence, audio and a key, and RTCP
            stranger.sendto(bytes(RtpPacket(0, 100 + seq, seq * 160, 7, b"\x00" * 160)), la)
        stranger.sendto(bytes(RtpPacket(101, 200, 9999, 7, b"\x0b\x8a\x03\x20")), la)
        stranger.sendto(build_compound([ReceiverReport(7, ())]), (la[0], la[1] + 1))
        await asyncio.sleep(0.05)
        a.send(b"\xff" * 160)
        a._send_rtcp()
        await asyncio.sleep(0.05)
        with pytest.raises(BlockingIOError):
            stranger.recv(2048)
        assert a.remote == peer.getsockname() and a.remote_rtcp == (
            la[0],
            peer.getsockname()[1] + 1,
        )
        assert digits == [] and a.counters.received == 1 and a.counters.foreign == 32
        assert a.source.counters.foreign_ip == 31 and a.source.counters.rtcp_foreign == 1
        assert reports == [(stranger.getsockname(), "foreign_ip")]  # its RTCP too: one source
    finally:
        a.close()
        peer.close()
        stranger.close()


async def test_ssrc_change_restarts_the_stream() -> None:
    a = Session(payload_type=0, rtcp=False, jitter_depth=1)
    la = await a.open("127.0.0.1")
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for seq in range(5):
            sender.sendto(bytes(RtpPacket(0, 1000 + seq, seq * 160, 1, b"\x01" * 160)), la)
        await asyncio.sleep(0.05)
        assert a.pop()[0] is Status.FRAME
        # a new source restarts at an unrelated sequence number: not "late", not "lost"
        for seq in range(5):
            sender.sendto(bytes(RtpPacket(0, 7 + seq, 99999 + seq * 160, 2, b"\x02" * 160)), la)
        await asyncio.sleep(0.05)
        status, payload = a.pop()
        assert status is Status.FRAME and payload == b"\x02" * 160
        assert a.counters.ssrc_changes == 1 and a.jitter.stats.late == 0
    finally:
        a.close()
        sender.close()


async def test_rfc4733_between_sessions() -> None:
    a, b = await pair()
    digits: list[str] = []
    b.on_dtmf = digits.append
    try:
        a.send_dtmf("12#", 60)
        for _ in range(40):
            a.send(b"\xff" * 160)
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)
        assert "".join(digits) == "12#"
    finally:
        a.close()
        b.close()


async def test_rtcp_reports_loss_and_cname() -> None:
    a, b = await pair()
    try:
        for i in range(100):
            if i % 10 != 3:  # lose 10 %
                a.send(b"\xff" * 160)
            else:
                a.skip()
                a._seq = (a._seq + 1) & 0xFFFF
        await asyncio.sleep(0.05)
        report = b.rtcp_packets()
        assert isinstance(report[0], ReceiverReport)
        block = report[0].reports[0]
        assert block.ssrc == a.ssrc and block.cumulative_lost == 10
        packets = parse_rtcp(build_compound(report))
        assert packets[1].cname(b.ssrc) == b.cname  # type: ignore[union-attr]
        b._send_rtcp()
        a._send_rtcp()
        await asyncio.sleep(0.05)
        assert a.peer_report is not None and a.peer_report.cumulative_lost == 10
        assert isinstance(a.rtcp_packets()[0], SenderReport)
    finally:
        a.close()
        b.close()


async def test_port_allocator_pairs() -> None:
    alloc = PortAllocator(40000, 40010)
    sessions = []
    for _ in range(5):
        s = Session(payload_type=0)
        local = await s.open_from(alloc, "127.0.0.1")
        assert local[1] % 2 == 0
        sessions.append(s)
    with pytest.raises(OSError, match="no free RTP port"):
        await Session(payload_type=0).open_from(alloc, "127.0.0.1")
    sessions[2].close()
    await asyncio.sleep(0)  # the transport closes its socket on the next loop pass
    again = Session(payload_type=0)
    assert (await again.open_from(alloc, "127.0.0.1"))[1] == sessions[2].local[1]  # type: ignore[index]
    for s in [*sessions, again]:
        s.close()
    assert alloc.in_use == 0


async def test_malformed_packets_counted() -> None:
    a = Session(payload_type=0, rtcp=False)
    la = await a.open("127.0.0.1")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(b"\x00\x01junk", la)
        s.sendto(bytes(RtpPacket(96, 1, 1, 1, b"x")), la)  # not a negotiated type
        await asyncio.sleep(0.05)
        assert a.counters.malformed == 1 and a.counters.foreign == 1
    finally:
        a.close()
        s.close()
