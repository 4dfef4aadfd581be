"""The media engine (softswitch.media_engine: shared port, rows, relays and shared
encodings copied as arrays, one sendmmsg a tick) against the per-packet path it replaced
(tests/reference_media.py): any mix of legs (hold music per codec, relays of identical
codecs, PCMU <-> PCMA and G.711 <-> G.722 bridges, Opus, held legs, RFC 4733 and in-band
keys sent to a phone, lost packets from the phones) gives every phone the same packets,
byte for byte, in the same order. Relayed payloads leave untouched.

The reference's sockets are recorders; the engine's phones are real sockets on loopback
addresses (127.0.9.x), read after each tick, which the test drives by hand (no clock).
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sip
from media import codecs as media_codecs
from media.clock import MediaClock
from media.tones import sine_mix
from rtp import PortAllocator, Session
from rtp.jitter import JitterBuffer
from softswitch.media_engine import LegSource, MediaEngine, MediaLeg
from tests import reference_media as ref

HEADER = struct.Struct("!BBHII")
CODECS = {"PCMU": sip.PCMU, "PCMA": sip.PCMA, "G722": sip.G722, "OPUS": sip.OPUS}
PT = {"PCMU": 0, "PCMA": 8, "G722": 9, "OPUS": 111}
Sent = list[list[tuple[bytes, tuple[str, int]]]]


@dataclass
class Wire:
    """A reference leg's socket: what it sent, where."""

    sent: list[tuple[bytes, tuple[str, int]]] = field(default_factory=list)

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        self.sent.append((bytes(data), address))
        return len(data)


@dataclass(frozen=True)
class Plan:
    music: list[str]  # codecs of held callers hearing the shared music
    bridges: list[tuple[str, str]]  # codec pairs of bridged calls
    held: list[int]  # legs (in creation order) that their phone holds (sendonly from it)
    keys: list[tuple[int, int, bool]]  # (tick, leg, rfc4733) a key played to that phone
    loss: float
    seed: int
    ticks: int


def music(rate: int) -> np.ndarray:
    return sine_mix((440.0, 660.0), rate * 2, rate, -12)


def stream(codec: str, phone: tuple[str, int], rfc4733: bool = True) -> sip.AudioStream:
    c, pt = CODECS[codec], PT[codec]
    return sip.AudioStream(
        c,
        pt,
        phone[0],
        phone[1],
        "sendrecv",
        dtmf_payload_type=101 if rfc4733 else None,
        codecs=[(pt, c)],
    )


def start(n: int) -> tuple[int, int, int]:
    """A leg's SSRC, first sequence number (near the wrap) and timestamp."""
    return 0x5000 + n, 65530 - n, 2**32 - 800 + n


def voices(codecs: list[str]) -> list[list[bytes]]:
    """What each phone sends: a tone of its own, encoded with its codec."""
    out = []
    for i, name in enumerate(codecs):
        c = media_codecs.codec(name)
        encoder = c.encoder()
        rate = c.sample_rate
        samples = sine_mix((300.0 + 100 * i,), rate * 2, rate, -15)
        step = rate // 50
        out.append([encoder.encode(samples[k : k + step]) for k in range(0, len(samples), step)])
    return out


def order(plan: Plan) -> list[str]:
    codecs = list(plan.music)
    for a, b in plan.bridges:
        codecs += [a, b]
    return codecs


def packets(plan: Plan, voice: list[list[bytes]]) -> Iterator[tuple[int, list[bytes | None]]]:
    """Per tick, each phone's packet (None: lost on the way)."""
    rnd = random.Random(plan.seed)
    codecs = order(plan)
    for tick in range(plan.ticks):
        row: list[bytes | None] = []
        for i, name in enumerate(codecs):
            if rnd.random() < plan.loss:
                row.append(None)
                continue
            step = 960 if name == "OPUS" else 160
            payload = voice[i][tick % len(voice[i])]
            row.append(HEADER.pack(0x80, PT[name], tick, tick * step, 0x9000 + i) + payload)
        yield tick, row


def keys_at(plan: Plan, tick: int, legs: list) -> None:  # type: ignore[type-arg]
    for t, index, rfc4733 in plan.keys:
        if t == tick and index < len(legs):
            target = legs[index]
            if not rfc4733:
                if isinstance(target, MediaLeg):
                    target.dtmf_pt = None
                else:
                    target.session.dtmf_pt = None
            target.send_digit("5")


def connect(plan: Plan, legs: list[Any], shared: Any, bridge: Any) -> None:
    """The plan's legs as it says: the first ones on the music, the rest bridged in
    pairs (``bridge``: the engine's LegSource class), the held ones held by their phone."""
    for m in legs[: len(plan.music)]:
        m.source = shared
    bridged = legs[len(plan.music) :]
    for a, b in zip(bridged[::2], bridged[1::2], strict=True):
        a.source, b.source = bridge(b), bridge(a)
        a.dtmf_peer, b.dtmf_peer = b, a
    for index in plan.held:
        if index < len(legs):
            legs[index].sending = False


def run_reference(plan: Plan) -> Sent:
    engine = ref.MediaEngine(MediaClock(), PortAllocator(40000, 40100), batched=False)
    legs: list[ref.MediaLeg] = []
    wires: list[Wire] = []
    codecs = order(plan)
    phones = [(f"127.0.9.{n + 1}", 30000 + 2 * n) for n in range(len(codecs))]
    for n, name in enumerate(codecs):
        session = Session(payload_type=0, rtcp=False)
        wire = Wire()
        session._sock = wire  # type: ignore[assignment]
        m = ref.MediaLeg(engine, session)
        engine.legs.add(m)
        m.configure(stream(name, phones[n]), signalling=phones[n][0])
        session.jitter = JitterBuffer(frame_ticks=session.frame_ticks, depth=3, adaptive=False)
        session.ssrc, session._seq, session._timestamp = start(n)
        legs.append(m)
        wires.append(wire)
    shared = engine.shared("music", music)
    shared.player(8000), shared.player(16000)  # made in this order whatever the legs' order
    connect(plan, legs, shared, ref.LegSource)
    for tick, row in packets(plan, voices(codecs)):
        keys_at(plan, tick, legs)
        for m, packet, phone in zip(legs, row, phones, strict=True):
            if packet is not None:
                m.session._on_rtp(packet, phone)
        engine._tick(tick)
    return [w.sent for w in wires]


class Phones:
    """The engine's phones: a socket each on its own loopback address."""

    def __init__(self, count: int) -> None:
        self.socks: list[socket.socket] = []
        for n in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((f"127.0.9.{n + 1}", 0))
            s.setblocking(False)
            self.socks.append(s)
        self.heard: Sent = [[] for _ in range(count)]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [s.getsockname() for s in self.socks]

    def drain(self) -> None:
        for s, heard in zip(self.socks, self.heard, strict=True):
            while True:
                try:
                    data, source = s.recvfrom(2048)
                except BlockingIOError:
                    break
                heard.append((data, source))

    def close(self) -> None:
        for s in self.socks:
            s.close()


def run_engine(plan: Plan) -> tuple[Sent, list[MediaLeg], MediaEngine]:
    engine = MediaEngine(MediaClock(), PortAllocator(41000, 41200))
    codecs = order(plan)
    phones = Phones(len(codecs))
    legs: list[MediaLeg] = []
    try:
        for n, name in enumerate(codecs):
            address = phones.addresses[n]
            m = engine._add(engine._shared_pair("127.0.0.1"))
            m.configure(stream(name, address), signalling=address[0])
            m.ssrc, seq, ts = start(n)
            engine.ssrc[m.row], engine.seq[m.row], engine.ts[m.row] = m.ssrc, seq, ts
            legs.append(m)
        shared = engine.shared("music", music)
        shared.player(8000), shared.player(16000)
        connect(plan, legs, shared, LegSource)
        for tick, row in packets(plan, voices(codecs)):
            keys_at(plan, tick, legs)
            for m, packet, s in zip(legs, row, phones.socks, strict=True):
                if packet is not None:
                    s.sendto(packet, m.local)
            engine._tick(tick)
            phones.drain()
        return phones.heard, legs, engine
    finally:
        phones.close()
        engine.close()


plans = st.builds(
    Plan,
    music=st.lists(st.sampled_from(["PCMU", "PCMA", "G722", "OPUS"]), max_size=5),
    bridges=st.lists(
        st.tuples(
            st.sampled_from(["PCMU", "PCMA", "G722", "OPUS"]),
            st.sampled_from(["PCMU", "PCMA", "G722"]),
        ),
        max_size=3,
    ),
    held=st.lists(st.integers(0, 10), max_size=2),
    keys=st.lists(st.tuples(st.integers(0, 20), st.integers(0, 10), st.booleans()), max_size=3),
    loss=st.sampled_from([0.0, 0.1, 0.3]),
    seed=st.integers(0, 2**16),
    ticks=st.integers(8, 30),
)


@given(plans)
@settings(max_examples=30, deadline=None)
def test_every_phone_gets_the_packets_of_the_reference(plan: Plan) -> None:
    heard, legs, _ = run_engine(plan)
    reference = run_reference(plan)
    for n, (got, want) in enumerate(zip(heard, reference, strict=True)):
        assert [p for p, _ in got] == [p for p, _ in want], f"leg {n}"
        assert all(source == legs[n].local for _, source in got)  # from the port its SDP named
    for m, got in zip(legs, heard, strict=True):
        if not m.sending:
            assert got == []  # held by its phone: nothing goes to it


def test_relays_and_music_are_copied_rows() -> None:
    """Two PCMU phones bridged: each gets the other's payloads byte for byte, by the
    engine's row copy (no per-leg source call); held callers of one codec share one
    encoding; every leg sends from the one shared port."""
    plan = Plan(["PCMU", "PCMU", "PCMA"], [("PCMU", "PCMU")], [], [], 0.0, 1, 12)
    heard, _, _ = run_engine(plan)
    voice = voices(order(plan))
    payloads_a = [data[12:] for data, _ in heard[3]]
    payloads_b = [data[12:] for data, _ in heard[4]]
    assert len(payloads_a) >= 8 and len(payloads_b) >= 8
    assert payloads_a == voice[4][: len(payloads_a)]  # b's phone's frames, untouched
    assert payloads_b == voice[3][: len(payloads_b)]
    music_u = [data[12:] for data, _ in heard[0]]
    assert music_u == [data[12:] for data, _ in heard[1]]  # one encoding for both
    assert music_u != [data[12:] for data, _ in heard[2]]  # PCMA has its own
    assert len({source for packets in heard for _, source in packets}) == 1
    for i, packets in enumerate(heard):
        seqs = [HEADER.unpack_from(d)[2] for d, _ in packets]
        assert seqs == [(65530 - i + k) & 0xFFFF for k in range(len(seqs))]
        assert {HEADER.unpack_from(d)[4] for d, _ in packets} == {0x5000 + i}


async def test_a_prompt_on_a_leg_that_closes_ends_for_whoever_waits() -> None:
    """A call that hangs up during a prompt: whoever awaits the prompt goes on (it used to
    wait forever: a task and its call kept per hang-up), and a prompt started on a leg
    already closed ends at once."""
    engine = MediaEngine(MediaClock(), PortAllocator(40000, 40100))
    leg = await engine.new_leg("127.0.0.1")
    playing = leg.play(np.zeros(8000, np.int16))
    assert not playing.done.is_set()
    leg.close()
    assert playing.done.is_set()
    assert leg.play(np.zeros(8000, np.int16)).done.is_set()
    engine.close()


@pytest.mark.parametrize("codec", ["PCMU", "G722"])
def test_rows_grow_past_the_first_capacity(codec: str) -> None:
    """More legs than the engine's first arrays: they grow, and earlier legs keep their
    state (a bridge set up before the growth still relays)."""
    plan = Plan([codec] * 70, [(codec, codec)], [], [], 0.0, 3, 10)
    heard, _, engine = run_engine(plan)
    assert engine.capacity >= 72
    assert (
        len(heard[70]) >= 6
        and [d[12:] for d, _ in heard[70]] == voices(order(plan))[71][: len(heard[70])]
    )


def test_a_tick_with_more_packets_than_the_batch_reads_them_all_as_sent() -> None:
    """300 phones press 5 in the same tick, more packets than the engine's first receive
    batch holds: the batch widens for the next tick, and every key of this one is read
    from the packets that came (widening during the tick once made every step after it
    read an empty batch: keys as 0, sources as [::]:0)."""
    from rtp.dtmf import TelephoneEvent

    count = 300
    engine = MediaEngine(MediaClock(), PortAllocator(41500, 41600))
    phones: list[socket.socket] = []
    try:
        legs = []
        for n in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((f"127.0.{10 + n // 200}.{n % 200 + 1}", 0))
            phones.append(s)
            m = engine._add(engine._shared_pair("127.0.0.1"))
            m.configure(stream("PCMU", s.getsockname()), signalling=s.getsockname()[0])
            legs.append(m)
        assert engine.rx.capacity < count
        silence = b"\xff" * 160
        for n, (s, m) in enumerate(zip(phones[:200], legs, strict=False)):  # latched
            s.sendto(HEADER.pack(0x80, 0, 0, 0, n) + silence, m.local)
        engine._tick(0)
        for tick in range(1, 4):  # the event's start, its middle and its end
            for n, (s, m) in enumerate(zip(phones, legs, strict=True)):
                event = TelephoneEvent(5, tick == 3, 10, 160 * tick).pack()
                marker = 0x80 if tick == 1 else 0
                s.sendto(HEADER.pack(0x80, marker | 101, tick, 160, n) + event, m.local)
            engine._tick(tick)
        for m in legs:
            assert [m.dtmf.get_nowait() for _ in range(m.dtmf.qsize())] == ["5"]
        assert engine.stats["strays"] == 0
    finally:
        for s in phones:
            s.close()
        engine.close()


def test_rtcp_reports_both_ways() -> None:
    """A leg reports on its phone's stream (RFC 3550 SR with a reception block: the loss
    the phone's sequence numbers show) from the RTCP port next to the shared one, and
    keeps the phone's own report on our stream; RTCP from a stranger is refused."""
    from rtp.packet import ReceiverReport, ReportBlock, SenderReport, build_compound, parse_rtcp

    engine = MediaEngine(MediaClock(), PortAllocator(41300, 41400))
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone_rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        phone.bind(("127.0.9.7", 0))
        port = phone.getsockname()[1]
        phone_rtcp.bind(("127.0.9.7", port + 1))
        stranger.bind(("127.0.9.8", 0))
        phone_rtcp.setblocking(False)
        leg = engine._add(engine._shared_pair("127.0.0.1"))
        leg.configure(stream("PCMU", ("127.0.9.7", port)), signalling="127.0.9.7")
        leg.source = engine.tone_source("ringback")
        rtcp_port = (leg.local[0], leg.local[1] + 1)
        for n in range(30):
            if n % 10 != 3:  # one packet in ten lost on the way
                phone.sendto(HEADER.pack(0x80, 0, n, n * 160, 0x7777) + b"\xff" * 160, leg.local)
            if n == 20:  # the phone's report on our stream, and a stranger's forgery
                ours = ReportBlock(leg.ssrc, 12, 3, 100, 5, 0, 0)
                phone_rtcp.sendto(build_compound([ReceiverReport(0x7777, (ours,))]), rtcp_port)
                forged = ReportBlock(leg.ssrc, 255, 999, 1, 1, 0, 0)
                stranger.sendto(build_compound([ReceiverReport(0x6666, (forged,))]), rtcp_port)
            engine._tick(n)
        assert leg.peer_report is not None and leg.peer_report.fraction_lost == 12
        assert engine.stats["strays_rtcp_foreign"] >= 1
        engine.rtcp_due[leg.row] = 0.0  # due now
        engine._tick(30)
        data = phone_rtcp.recv(2048)
        report = parse_rtcp(data)[0]
        assert isinstance(report, SenderReport) and report.ssrc == leg.ssrc
        (block,) = report.reports
        assert block.ssrc == 0x7777
        assert block.cumulative_lost == 3 and block.highest_sequence & 0xFFFF == 29
    finally:
        engine.close()
        for s in (phone, phone_rtcp, stranger):
            s.close()
