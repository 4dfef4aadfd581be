from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtp import (
    Bye,
    PacketError,
    ReceiverReport,
    ReportBlock,
    RtpPacket,
    SenderReport,
    SourceDescription,
    build_compound,
    parse_rtcp,
    parse_rtp,
)
from rtp.packet import SequenceWrap, is_rtcp
from rtp.stats import ReceiverStats

u32 = st.integers(0, 2**32 - 1)
packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 65535),
    timestamp=u32,
    ssrc=u32,
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrcs=st.lists(u32, max_size=15).map(tuple),
    extension=st.none()
    | st.tuples(
        st.integers(0, 65535), st.binary(max_size=12).map(lambda b: b + bytes(-len(b) % 4))
    ),
    padding=st.sampled_from([0, 1, 4, 7]),
)
blocks = st.builds(
    ReportBlock, u32, st.integers(0, 255), st.integers(-(2**23), 2**23 - 1), u32, u32, u32, u32
)
rtcp = st.one_of(
    st.builds(
        SenderReport,
        u32,
        st.integers(0, 2**64 - 1),
        u32,
        u32,
        u32,
        st.lists(blocks, max_size=3).map(tuple),
    ),
    st.builds(ReceiverReport, u32, st.lists(blocks, max_size=3).map(tuple)),
    st.builds(
        SourceDescription,
        st.lists(
            st.tuples(
                u32,
                st.lists(
                    st.tuples(st.integers(1, 8), st.binary(min_size=1, max_size=30)), max_size=3
                ).map(tuple),
            ),
            min_size=1,
            max_size=3,
        ).map(tuple),
    ),
    st.builds(
        Bye, st.lists(u32, min_size=1, max_size=3).map(tuple), st.text("abcxyz ", max_size=20)
    ),
)


@given(packets)
def test_rtp_round_trip(packet: RtpPacket) -> None:
    data = bytes(packet)
    assert parse_rtp(data) == packet
    assert not is_rtcp(data) or packet.payload_type >= 64


@given(st.lists(rtcp, min_size=1, max_size=4))
def test_rtcp_round_trip(packets: list[object]) -> None:
    data = build_compound(packets)  # type: ignore[arg-type]
    assert parse_rtcp(data) == packets
    assert is_rtcp(data)


@given(st.binary(max_size=300))
def test_garbage_raises_packet_error_only(data: bytes) -> None:
    for parse in (parse_rtp, parse_rtcp):
        with contextlib.suppress(PacketError):
            parse(data)


def test_rejects() -> None:
    with pytest.raises(PacketError):
        parse_rtp(b"\x40" + bytes(11))  # version 1
    with pytest.raises(PacketError):
        parse_rtp(bytes(RtpPacket(0, 1, 2, 3, b"abc"))[:11])
    with pytest.raises(PacketError):
        parse_rtp(b"\xa0" + bytes(10) + b"\x00" + b"\xff")  # padding longer than packet


@given(st.integers(0, 65535), st.lists(st.integers(-50, 300), max_size=200))
def test_sequence_wrap_is_monotonic_for_forward_steps(start: int, steps: list[int]) -> None:
    wrap = SequenceWrap()
    real = start
    assert wrap.extend(start) == start
    for step in steps:
        real += step
        if real < 0:
            real = 0
            continue
        assert wrap.extend(real & 0xFFFF) == real


def test_receiver_stats_loss_and_jitter() -> None:
    stats = ReceiverStats(8000)
    # 100 packets from seq 65500 (wraps), every 10th lost, 20 ms apart, no jitter
    for i in range(100):
        if i % 10 == 5:
            continue
        stats.update((65500 + i) & 0xFFFF, i * 160, i * 0.02, ssrc=7)
    assert stats.expected == 100 and stats.received == 90 and stats.lost == 10
    assert stats.highest == 65500 + 99
    assert stats.jitter < 1.0
    block = stats.report_block(2.0)
    assert block.fraction_lost == (10 << 8) // 100 and block.cumulative_lost == 10
    # jittery arrival: +-10 ms alternately -> jitter converges near 80 samples * ...
    jittery = ReceiverStats(8000)
    for i in range(400):
        jittery.update(i, i * 160, i * 0.02 + (0.01 if i % 2 else 0.0), ssrc=1)
    assert 60 < jittery.jitter < 100  # |D| = 80 timestamp units each packet
