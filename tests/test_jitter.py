from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from rtp import JitterBuffer, Status


@st.composite
def arrivals(draw: st.DrawFn) -> tuple[int, int, list[list[int]], set[int]]:
    """Frames 0..n-1, each delayed 0..depth-1 ticks, some lost, some duplicated."""
    depth = draw(st.integers(1, 6))
    n = draw(st.integers(1, 120))
    start = draw(st.integers(0, 65535))
    lost = set(draw(st.lists(st.integers(0, n - 1), max_size=n // 3)))
    ticks: list[list[int]] = [[] for _ in range(n + depth + 2)]
    for seq in range(n):
        if seq in lost:
            continue
        delay = draw(st.integers(0, depth - 1))
        ticks[seq + delay].append(seq)
        if draw(st.integers(0, 9)) == 0:  # a duplicate, a little later
            ticks[min(len(ticks) - 1, seq + delay + draw(st.integers(0, depth)))].append(seq)
    for bucket in ticks:
        order = draw(st.permutations(bucket))
        bucket[:] = order
    return depth, start, ticks, lost


@given(arrivals())
@settings(max_examples=300)
def test_every_frame_played_once_in_order(case: tuple[int, int, list[list[int]], set[int]]) -> None:
    depth, start, ticks, lost = case
    jb = JitterBuffer(depth=depth, max_depth=max(depth, 8), adaptive=False)
    played: list[int] = []
    for tick, bucket in enumerate(ticks):
        for seq in bucket:
            jb.put(
                (start + seq) & 0xFFFF, ((start + seq) * 160) & 0xFFFFFFFF, seq.to_bytes(4, "big")
            )
        status, payload = jb.pop()
        if status is Status.FRAME:
            played.append(int.from_bytes(payload, "big"))
        del tick
    for _ in range(depth + 2):  # drain
        status, payload = jb.pop()
        if status is Status.FRAME:
            played.append(int.from_bytes(payload, "big"))
    first_arrived = min(seq for bucket in ticks for seq in bucket) if any(ticks) else None
    expected = [s for s in range(len(ticks)) if s not in lost and any(s in b for b in ticks)]
    if first_arrived is not None:
        expected = [s for s in expected if s >= first_arrived]
    assert played == expected
    assert len(set(played)) == len(played)


def test_reorder_duplicate_late() -> None:
    jb = JitterBuffer(depth=2, adaptive=False)
    jb.put(10, 1600, b"a")
    assert jb.pop() == (Status.WAITING, b"")
    jb.put(12, 1920, b"c")
    jb.put(11, 1760, b"b")
    jb.put(11, 1760, b"b")  # duplicate
    assert [jb.pop() for _ in range(3)] == [
        (Status.FRAME, b"a"),
        (Status.FRAME, b"b"),
        (Status.FRAME, b"c"),
    ]
    assert jb.put(11, 1760, b"b") is False  # too late
    jb.put(14, 2240, b"e")
    assert jb.pop() == (Status.LOST, b"")  # 13 never came
    assert jb.pop() == (Status.FRAME, b"e")
    assert (jb.stats.duplicates, jb.stats.late, jb.stats.lost) == (1, 1, 1)


def test_depth_adapts_to_jitter_within_bounds() -> None:
    rng = random.Random(4)
    jb = JitterBuffer(depth=1, min_depth=1, max_depth=6)
    pending: dict[int, list[int]] = {}
    # each frame is delayed 0..3 ticks: a depth of 1 loses frames, so the depth grows
    for tick in range(1000):
        pending.setdefault(tick + rng.randint(0, 3), []).append(tick)
        for seq in pending.pop(tick, []):
            jb.put(seq & 0xFFFF, seq * 160, b"x")
        jb.pop()
    assert 3 <= jb.target <= 6 and jb.stats.grown + jb.stats.underruns >= 2
    late_before = jb.stats.late + jb.stats.lost
    for tick in range(1000, 2000):
        pending.setdefault(tick + rng.randint(0, 3), []).append(tick)
        for seq in pending.pop(tick, []):
            jb.put(seq & 0xFFFF, seq * 160, b"x")
        jb.pop()
    assert jb.stats.late + jb.stats.lost - late_before < 20  # adapted: few losses now
    grown = jb.latency
    # then a smooth stream for a while -> it shrinks back, never below min_depth
    seq = 2000
    for _ in range(3000):
        for s in pending.pop(seq, []):
            jb.put(s & 0xFFFF, s * 160, b"x")
        jb.put(seq & 0xFFFF, seq * 160, b"x")
        seq += 1
        jb.pop()
    assert 1 <= jb.latency < grown and jb.stats.shrunk >= 1 and jb.target <= 2


def test_a_gap_wider_than_max_depth_is_skipped_at_once() -> None:
    """After an outage (or a peer whose NAT moved) the stream resumes with the next
    packet instead of playing the gap out and keeping it as latency."""
    jb = JitterBuffer(depth=2, max_depth=8)
    for seq in range(10):
        jb.put(seq, seq * 160, b"a")
        jb.pop()
    for _ in range(30):  # 30 packets lost: the buffer runs dry
        jb.pop()
    statuses = []
    for seq in range(40, 50):
        jb.put(seq, seq * 160, b"b")
        statuses.append(jb.pop()[0])
    assert statuses.count(Status.FRAME) >= 9 and jb.latency <= 2
    assert jb.stats.resynced == 1 and jb.stats.lost == 30
