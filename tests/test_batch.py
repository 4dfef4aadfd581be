"""The batched media layer against the per-packet path it replaces.

- rtp.batch: recvmmsg/sendmmsg give the same datagrams, lengths and addresses as one
  recvfrom_into/sendto per packet (IPv4 and IPv6, over loopback), truncation refused;
- rtp.columns: the header columns say what rtp.packet.parse_rtp says, row by row, for
  well-formed packets (CSRCs, extensions, padding) and for garbage;
- rtp.jitter_rows against rtp.JitterBuffer(adaptive=False), tick by tick;
- the conference engine end to end: any mix of packet sizes, sources, reordering, loss,
  duplicates and SSRC changes, sent over loopback to the bridge's port, gives every leg
  the same decoded (and concealed) frames as rtp.JitterBuffer + media.stream.AudioStream
  fed the same packets one by one.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sip
from media import codecs
from media.clock import MediaClock
from media.stream import AudioStream
from rtp import JitterBuffer, PacketError, PortAllocator, Status, parse_rtp
from rtp.batch import Batch, BatchSocket, address_bytes, mmsg_available
from rtp.columns import parse
from rtp.jitter_rows import FRAME, LOST, WAITING, JitterRows
from softswitch.media_engine import MediaEngine

HEADER = struct.Struct("!BBHII")
CAPACITY, DEPTH, MAX_DEPTH = 16, 3, 12


def rtp_packet(
    pt: int, seq: int, ts: int, ssrc: int, payload: bytes, *, csrc: int = 0, ext: int = -1
) -> bytes:
    first = 0x80 | csrc
    body = b"".join(struct.pack("!I", i) for i in range(csrc))
    if ext >= 0:
        first |= 0x10
        body += struct.pack("!HH", 0xBEDE, ext) + bytes(4 * ext)
    return HEADER.pack(first, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + body + payload


# -- rtp.batch ---------------------------------------------------------------------------


@contextmanager
def pair(family: int, host: str) -> Iterator[tuple[socket.socket, socket.socket]]:
    a = socket.socket(family, socket.SOCK_DGRAM)
    b = socket.socket(family, socket.SOCK_DGRAM)
    try:
        a.bind((host, 0))
        b.bind((host, 0))
        b.setblocking(False)
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize(
    ("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]
)
@given(sizes=st.lists(st.integers(0, 1400), min_size=0, max_size=40))
@settings(max_examples=30, deadline=None)
def test_batched_and_per_packet_io_agree(family: int, host: str, sizes: list[int]) -> None:
    seen: list[list[tuple[bytes, int, bytes, int]]] = []
    for batched in (True, False):
        with pair(family, host) as (rx_sock, tx_sock):
            rx = BatchSocket(rx_sock, batched=batched)
            packets = [bytes([i & 0xFF]) * n for i, n in enumerate(sizes)]
            for p in packets:
                tx_sock.sendto(p, rx_sock.getsockname()[:2])
            batch = Batch(64)
            assert rx.receive(batch) == len(packets)
            rows = [
                (
                    batch.data[i, : batch.length[i]].tobytes(),
                    int(batch.length[i]),
                    batch.ip[i].tobytes(),
                    int(batch.port[i]),
                )
                for i in range(batch.count)
            ]
            assert [r[0] for r in rows] == packets
            assert {r[2] for r in rows} <= {address_bytes(host)}
            assert {r[3] for r in rows} <= {tx_sock.getsockname()[1]}
            # and back: every other row, to where it came from
            back = np.arange(0, batch.count, 2)
            assert rx.send(batch, back) == len(back)
            echoed = []
            while True:
                try:
                    echoed.append(tx_sock.recv(2048))
                except BlockingIOError:
                    break
            assert echoed == packets[::2]
            seen.append(rows)
    assert [r[:3] for r in seen[0]] == [r[:3] for r in seen[1]]


def test_one_call_per_direction_and_truncation_refused() -> None:
    with pair(socket.AF_INET, "127.0.0.1") as (rx_sock, tx_sock):
        rx = BatchSocket(rx_sock)
        for n in (172, 172, 900, 172):
            tx_sock.sendto(bytes(n), rx_sock.getsockname())
        batch = Batch(16, slot=512)
        assert rx.receive(batch) == 4
        assert batch.length[:4].tolist() == [172, 172, 0, 172]  # cut by the kernel: refused
        if mmsg_available():
            assert rx.calls == 1
            rx.send(batch, np.array([0, 1, 3]))
            assert rx.calls == 2


def test_a_source_address_per_packet() -> None:
    """A load generator plays phones on several loopback IPs from one socket."""
    with pair(socket.AF_INET, "127.0.0.1") as (tx_sock, rx_sock):
        tx = BatchSocket(tx_sock)
        batch = Batch(4)
        batch.count = 3
        batch.length[:3] = 5
        batch.ip[:3] = np.frombuffer(address_bytes("127.0.0.1"), dtype=np.uint8)
        batch.port[:3] = rx_sock.getsockname()[1]
        sources = np.array([[127, 0, 5, i + 1] for i in range(3)], dtype=np.uint8)
        assert tx.send(batch, source=sources) == 3
        got = [rx_sock.recvfrom(64)[1][0] for _ in range(3)]
        assert got == ["127.0.5.1", "127.0.5.2", "127.0.5.3"]


# -- rtp.columns ----------------------------------------------------------------------------


packets = st.one_of(
    st.binary(max_size=80),
    st.builds(
        lambda pt, seq, ts, ssrc, payload, csrc, ext, pad: (
            rtp_packet(pt, seq, ts, ssrc, payload, csrc=csrc, ext=ext)
            if pad == 0
            else bytes([0xA0 | csrc])[0:0]
            + _padded(rtp_packet(pt, seq, ts, ssrc, payload, csrc=csrc, ext=ext), pad)
        ),
        st.integers(0, 127),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFFFFFF),
        st.integers(0, 0xFFFFFFFF),
        st.binary(max_size=40),
        st.integers(0, 3),
        st.integers(-1, 3),
        st.integers(0, 60),
    ),
)


def _padded(packet: bytes, pad: int) -> bytes:
    """Padding flag set; the last byte says how many (may lie: then it is refused)."""
    return bytes([packet[0] | 0x20]) + packet[1:] + bytes([pad % 7]) * (pad % 5) + bytes([pad])


@given(st.lists(packets, min_size=1, max_size=20))
def test_header_columns_match_parse_rtp(rows: list[bytes]) -> None:
    data = np.zeros((len(rows), 256), dtype=np.uint8)
    for i, p in enumerate(rows):
        data[i, : len(p)] = np.frombuffer(p, dtype=np.uint8)
    h = parse(data, np.array([len(p) for p in rows], dtype=np.int64))
    for i, p in enumerate(rows):
        try:
            packet = parse_rtp(p)
        except PacketError:
            assert not h.valid[i], p
            continue
        assert h.valid[i], p
        assert (h.pt[i], h.seq[i], h.ts[i], h.ssrc[i], bool(h.marker[i])) == (
            packet.payload_type,
            packet.sequence,
            packet.timestamp,
            packet.ssrc,
            packet.marker,
        )
        assert data[i, h.start[i] : h.end[i]].tobytes() == packet.payload


# -- streams: sizes, reordering, loss, duplicates, SSRC changes ------------------------------


@dataclass
class Stream:
    codec: str
    packets: list[tuple[int, int, bytes]]  # (ssrc, seq, payload) in arrival order
    per_tick: list[int]  # how many arrive at each tick
    arrivals: list[list[tuple[int, int, bytes]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        queue = list(self.packets)
        for n in self.per_tick:
            self.arrivals.append(queue[:n])
            queue = queue[n:]
        while queue:
            self.arrivals.append(queue[:2])
            queue = queue[2:]


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    rnd = random.Random(draw(st.integers(0, 2**32)))
    count = draw(st.integers(1, 60))
    first = draw(st.integers(0, 0xFFFF))  # wraps past 65535 often enough
    sizes = draw(st.sampled_from([[160], [160, 160, 160, 80], [160, 240, 1, 0, 200]]))
    loss = draw(st.sampled_from([0.0, 0.1, 0.4]))
    shuffle = draw(st.integers(0, 6))  # how far a packet may arrive out of order
    switch = draw(st.sampled_from([None, count // 2]))  # a new SSRC half way
    out: list[tuple[float, tuple[int, int, bytes]]] = []
    for i in range(count):
        if rnd.random() < loss:
            continue
        ssrc = 0x1234 if switch is None or i < switch else 0x9876
        size = rnd.choice(sizes)
        payload = bytes(rnd.randrange(256) for _ in range(size))
        key = i + rnd.uniform(0, shuffle)
        out.append((key, (ssrc, (first + i) & 0xFFFF, payload)))
        if rnd.random() < 0.05:  # a duplicate, a little later
            out.append((key + rnd.uniform(0, 3), (ssrc, (first + i) & 0xFFFF, payload)))
    out.sort(key=lambda item: item[0])
    ticks = [rnd.choice([0, 1, 1, 1, 2, 3]) for _ in range(count + 10)]
    return Stream(draw(st.sampled_from(["PCMU", "PCMA"])), [p for _, p in out], ticks)


class _Reference:
    """The per-packet path: parse_rtp, a JitterBuffer per SSRC, AudioStream's decoding and
    concealment."""

    def __init__(self, codec: str) -> None:
        self.jitter = self._buffer()
        self.ssrc: int | None = None
        self.stream = AudioStream(cast(Any, self), codecs.codec(codec))

    @staticmethod
    def _buffer() -> JitterBuffer:
        return JitterBuffer(
            depth=DEPTH, max_depth=MAX_DEPTH, capacity=CAPACITY, adaptive=False, frame_ticks=160
        )

    def set_clock(self, clock_rate: int, frame_ticks: int) -> None:
        pass

    def pop(self) -> tuple[Status, bytes]:
        return self.jitter.pop()

    def put(self, data: bytes) -> None:
        packet = parse_rtp(data)
        if packet.ssrc != self.ssrc:
            if self.ssrc is not None:
                self.jitter = self._buffer()
            self.ssrc = packet.ssrc
        self.jitter.put(packet.sequence, packet.timestamp, packet.payload)

    def frame(self) -> np.ndarray:
        return self.stream.read()


@given(st.lists(streams(), min_size=1, max_size=3))
@settings(max_examples=40, deadline=None)
def test_jitter_rows_play_what_the_per_packet_buffer_plays(legs: list[Stream]) -> None:
    rows = JitterRows(len(legs), payload=320, depth=DEPTH, max_depth=MAX_DEPTH, capacity=CAPACITY)
    refs = [_Reference(s.codec) for s in legs]
    for tick in range(max(len(s.arrivals) for s in legs) + 20):
        r, ssrc, seq, pay, size = [], [], [], [], []
        for i, s in enumerate(legs):
            for p_ssrc, p_seq, payload in s.arrivals[tick] if tick < len(s.arrivals) else []:
                refs[i].put(rtp_packet(0, p_seq, p_seq * 160, p_ssrc, payload))
                r.append(i)
                ssrc.append(p_ssrc)
                seq.append(p_seq)
                buf = np.zeros(320, dtype=np.uint8)
                buf[: len(payload)] = np.frombuffer(payload, dtype=np.uint8)
                pay.append(buf)
                size.append(len(payload))
        if r:
            rows.put(
                np.array(r),
                np.array(ssrc),
                np.array(seq),
                np.array(pay, dtype=np.uint8),
                np.array(size),
            )
        out = rows.pop(np.arange(len(legs)))
        k = 0
        for i, ref in enumerate(refs):
            status, payload = ref.jitter.pop()
            want = {Status.FRAME: FRAME, Status.LOST: LOST, Status.WAITING: WAITING}[status]
            assert out.status[i] == want, (tick, i)
            if want == FRAME:
                assert out.payload[k, : out.length[k]].tobytes() == payload
                k += 1


# -- the media engine end to end ----------------------------------------------------------


def _leg_stream(codec: str, port: int) -> sip.AudioStream:
    c = sip.PCMU if codec == "PCMU" else sip.PCMA
    return sip.AudioStream(c, c.static_pt or 0, "127.0.0.1", port, "sendrecv")


@given(st.lists(streams(), min_size=1, max_size=4))
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_engine_decodes_what_the_per_packet_path_decodes(legs: list[Stream]) -> None:
    """Legs whose audio a mixer needs (conference members) are decoded in one batch per
    tick: the same frames as the per-packet path, loss concealment included."""
    base = random.randrange(20000, 60000, 2)
    engine = MediaEngine(MediaClock(), PortAllocator(base, base + 40))
    senders: list[socket.socket] = []
    try:
        refs, members = [], []
        for i, s in enumerate(legs):
            # every leg a phone of its own on its own loopback IP: all on the shared port
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((f"127.0.{7 + i}.1", 0))
            senders.append(sock)
            stream = _leg_stream(s.codec, sock.getsockname()[1])
            stream.remote_address = f"127.0.{7 + i}.1"
            leg = engine._add(engine._shared_pair("127.0.0.1"))
            leg.configure(stream, signalling=stream.remote_address)
            engine.need_audio(leg, True)
            assert not leg.own_port
            refs.append(_Reference(s.codec))
            members.append(leg)
        for tick in range(max(len(s.arrivals) for s in legs) + 20):
            for i, s in enumerate(legs):
                for p_ssrc, p_seq, payload in s.arrivals[tick] if tick < len(s.arrivals) else []:
                    data = rtp_packet(members[i].payload_type, p_seq, p_seq * 160, p_ssrc, payload)
                    senders[i].sendto(data, members[i].local)
                    refs[i].put(data)
            engine._tick(tick)
            for i, ref in enumerate(refs):
                want = ref.frame()
                row = members[i].row
                assert engine.decoded_at[row] == engine.tick_count  # in the tick's batch
                got = engine.frames[row, :160] if engine.heard[row] else np.zeros(160, np.int16)
                assert np.array_equal(got, want), (tick, i)
                assert np.array_equal(members[i].frame_in, want)
        assert engine.stats["strays"] == 0
    finally:
        engine.close()
        for sock in senders:
            sock.close()


async def test_a_second_leg_learning_at_an_ip_gets_a_port_of_its_own() -> None:
    """Two phones behind one NAT (private SDP addresses, SIP from one public IP): the
    shared port could not tell their packets apart while both learn their ports, so the
    second gets its own port, and each hears only its own caller."""
    base = random.randrange(20000, 60000, 2)
    engine = MediaEngine(MediaClock(), PortAllocator(base, base + 40))
    nat = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    try:
        legs = []
        for i, sock in enumerate(nat):
            sock.bind(("127.0.9.1", 0))
            leg = await engine.new_leg("127.0.0.1", {"127.0.9.1", ("192.168.1.10", 4000 + i)})
            stream = sip.AudioStream(sip.PCMU, 0, "192.168.1.10", 4000 + i, "sendrecv")
            leg.configure(stream, signalling="127.0.9.1")
            legs.append(leg)
        assert not legs[0].own_port and legs[1].own_port
        assert legs[0].local != legs[1].local
        tones = [b"\x10" * 160, b"\x90" * 160]
        for n in range(6):
            for i, sock in enumerate(nat):
                sock.sendto(rtp_packet(0, n, n * 160, 0x100 + i, tones[i]), legs[i].local)
            engine._tick(n)
            frames = [leg.frame_in.copy() for leg in legs]
        for i, leg in enumerate(legs):
            assert leg.policy.current == ("127.0.9.1", nat[i].getsockname()[1])
            assert np.array_equal(frames[i], codecs.codec("PCMU").decoder().decode(tones[i]))
    finally:
        engine.close()
        for sock in nat:
            sock.close()
