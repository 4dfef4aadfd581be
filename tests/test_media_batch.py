"""The media engine's batched send (softswitch.media_engine.Outbox, rtp.session.send_payloads)
against the per-leg path it replaces: any mix of legs (hold music per codec, relays of
identical codecs, PCMU <-> PCMA and G.711 <-> G.722 bridges, Opus, held legs, RFC 4733 and
in-band keys sent to a phone, lost and late packets from the phones) gives every phone the
same packets, byte for byte, in the same order. Relayed payloads leave untouched.

Pure: the legs' sockets are recorders (no network); packets from the phones are handed
to each session's receive path as its socket would.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import sip
from media.clock import MediaClock
from media.tones import sine_mix
from rtp import PortAllocator, Session
from softswitch.media_engine import LegSource, MediaEngine, MediaLeg

HEADER = struct.Struct("!BBHII")
CODECS = {"PCMU": sip.PCMU, "PCMA": sip.PCMA, "G722": sip.G722, "OPUS": sip.OPUS}
PT = {"PCMU": 0, "PCMA": 8, "G722": 9, "OPUS": 111}


@dataclass
class Wire:
    """A leg's socket: what it sent, where."""

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


def run(
    plan: Plan, batched: bool
) -> tuple[list[list[tuple[bytes, tuple[str, int]]]], list[MediaLeg]]:
    engine = MediaEngine(MediaClock(), PortAllocator(40000, 40100), batched=batched)
    legs: list[MediaLeg] = []
    wires: list[Wire] = []
    phones: list[tuple[str, int]] = []

    def leg(codec: str, rfc4733: bool = True) -> MediaLeg:
        n = len(legs)
        session = Session(payload_type=0, rtcp=False)
        wire = Wire()
        session._sock = wire  # type: ignore[assignment]
        session.closed = False
        m = MediaLeg(engine, session)
        engine.legs.add(m)
        phone = (f"127.0.9.{n + 1}", 30000 + 2 * n)
        c = CODECS[codec]
        pt = PT[codec]
        m.configure(
            sip.AudioStream(
                c,
                pt,
                phone[0],
                phone[1],
                "sendrecv",
                dtmf_payload_type=101 if rfc4733 else None,
                codecs=[(pt, c)],
            ),
            signalling=phone[0],
        )
        session.ssrc, session._seq, session._timestamp = 0x5000 + n, 65530 - n, 2**32 - 800 + n
        legs.append(m)
        wires.append(wire)
        phones.append(phone)
        return m

    rnd = random.Random(plan.seed)
    shared = engine.shared("music", music)
    shared.player(8000), shared.player(16000)  # made in this order whatever the legs' order
    for codec in plan.music:
        leg(codec).source = shared
    pairs = []
    for a_codec, b_codec in plan.bridges:
        a, b = leg(a_codec), leg(b_codec)
        a.source, b.source = LegSource(b), LegSource(a)
        a.dtmf_peer, b.dtmf_peer = b, a
        pairs.append((a, b))
    for index in plan.held:
        if index < len(legs):
            legs[index].sending = False
    # what each phone sends: a tone, encoded with its codec, from the address its SDP named
    voices = []
    for i, m in enumerate(legs):
        assert m.codec is not None
        encoder = m.codec.encoder()
        samples = sine_mix((300.0 + 100 * i,), m.rate * 2, m.rate, -15)
        step = m.rate // 50
        voices.append([encoder.encode(samples[k : k + step]) for k in range(0, len(samples), step)])
    for tick in range(plan.ticks):
        for t, index, rfc4733 in plan.keys:
            if t == tick and index < len(legs):
                target = legs[index]
                if not rfc4733:
                    target.session.dtmf_pt = None
                target.send_digit("5")
        for i, m in enumerate(legs):
            if rnd.random() < plan.loss:
                continue
            payload = voices[i][tick % len(voices[i])]
            assert m.stream is not None
            step = m.session.frame_ticks
            packet = (
                HEADER.pack(
                    0x80, PT[m.codec.name.upper()] if m.codec else 0, tick, tick * step, 0x9000 + i
                )
                + payload
            )
            m.session._on_rtp(packet, phones[i])
        engine._tick(tick)
    return [w.sent for w in wires], legs


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
@settings(max_examples=40, deadline=None)
def test_batched_send_gives_every_phone_the_same_packets(plan: Plan) -> None:
    batched, legs = run(plan, batched=True)
    reference, _ = run(plan, batched=False)
    assert batched == reference
    for m, sent in zip(legs, batched, strict=True):
        if not m.sending:
            assert sent == []  # held by its phone: nothing goes to it


def test_relays_and_music_leave_untouched_and_batched() -> None:
    """Two PCMU phones bridged: each gets the other's payloads byte for byte; held
    callers of one codec share one encoding. The packets go through the outbox (the
    batched path), not one send per leg."""
    plan = Plan(["PCMU", "PCMU", "PCMA"], [("PCMU", "PCMU")], [], [], 0.0, 1, 12)
    sent, legs = run(plan, batched=True)
    a = legs[3]
    assert isinstance(a.source, LegSource) and a.source.relays(a)
    payloads_a = [data[12:] for data, _ in sent[3]]
    payloads_b = [data[12:] for data, _ in sent[4]]
    assert len(payloads_a) >= 8 and len(payloads_b) >= 8
    # the phones' own frames, as they sent them (the voices of legs 4 and 3)
    enc = sip.PCMU
    assert enc is not None
    assert all(len(p) == 160 for p in payloads_a + payloads_b)
    assert set(payloads_a).isdisjoint(payloads_b)
    music_u = [data[12:] for data, _ in sent[0]]
    assert music_u == [data[12:] for data, _ in sent[1]]  # one encoding for both
    assert music_u != [data[12:] for data, _ in sent[2]]  # PCMA has its own
    # headers: each leg's own SSRC, sequence numbers wrapping at 65535, from its port
    for i, packets in enumerate(sent):
        seqs = [HEADER.unpack_from(d)[2] for d, _ in packets]
        assert seqs == [(65530 - i + k) & 0xFFFF for k in range(len(seqs))]
        assert {HEADER.unpack_from(d)[4] for d, _ in packets} == {0x5000 + i}


async def test_a_prompt_on_a_leg_that_closes_ends_for_whoever_waits() -> None:
    """A call that hangs up during a prompt: whoever awaits the prompt goes on (it used to
    wait forever: a task and its call kept per hang-up), and a prompt started on a leg
    already closed ends at once."""
    engine = MediaEngine(MediaClock(), PortAllocator(40000, 40100))
    leg = MediaLeg(engine, Session(payload_type=0, rtcp=False))
    engine.legs.add(leg)
    playing = leg.play(np.zeros(8000, np.int16))
    assert not playing.done.is_set()
    leg.close()
    assert playing.done.is_set()
    assert leg.play(np.zeros(8000, np.int16)).done.is_set()
    engine.close()
