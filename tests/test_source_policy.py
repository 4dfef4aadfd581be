"""Strict RTP source handling (rtp.source_policy), pure: packet facts and time in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtp.source_policy import (
    FOREIGN_IP,
    PEER_ACTIVE,
    PROBATION,
    REASONS,
    RTCP_FOREIGN,
    UNEXPECTED,
    UNNAMED,
    Address,
    BurstGate,
    SourcePolicy,
    Verdict,
)

SDP = ("192.0.2.10", 4000)  # what the SDP names
SIG = "198.51.100.7"  # where the SIP messages come from (the phone's NAT)
NAT = (SIG, 61000)  # the phone's RTP as it arrives through its NAT
STRANGER = ("203.0.113.66", 5004)
PTIME = 0.02


def named(**kw: Any) -> SourcePolicy:
    p = SourcePolicy(learn_unnamed=False, **kw)
    p.expect(SDP, SIG, 0.0)
    return p


@dataclass
class Stream:
    """One sender: an address, an SSRC and a running sequence number."""

    addr: Address
    ssrc: int
    seq: int = 100

    def verdict(self, policy: SourcePolicy, now: float) -> Verdict:
        self.seq = (self.seq + 1) & 0xFFFF
        return policy.check(self.addr, self.ssrc, self.seq, now)

    def send(self, policy: SourcePolicy, now: float) -> bool:
        return self.verdict(policy, now).accept


def test_learns_only_what_signalling_named() -> None:
    for source in (SDP, (SDP[0], 4100), NAT):
        p = named()
        assert not p.check(STRANGER, 1, 1, 0.01).accept
        v = p.check(source, 2, 1, 0.02)
        assert v.accept and v.moved and p.current == source
        assert p.counters.learnt == 1 and p.counters.unexpected == 1


def test_a_leg_hears_nobody_before_the_sdp_names_its_peer() -> None:
    closed = SourcePolicy(learn_unnamed=False)
    v = closed.check(NAT, 1, 1, 0.0)
    assert not v.accept and v.reason == UNNAMED and closed.current is None
    bare = SourcePolicy()  # a bare session without an SDP learns its first source
    assert bare.check(STRANGER, 1, 1, 0.0).moved and bare.current == STRANGER


def test_a_stranger_never_takes_the_peer() -> None:
    p = named()
    peer, attacker = Stream(NAT, 1), Stream(STRANGER, 2)
    peer.send(p, 0.0)
    t = 0.0
    for _ in range(500):  # the peer silent for 10 s, the stranger in perfect sequence
        t += PTIME
        assert attacker.verdict(p, t).reason == FOREIGN_IP
    assert p.current == NAT and p.counters.foreign_ip == 500


def test_a_second_sender_at_the_peers_ip_waits_for_the_peers_silence() -> None:
    p = named()
    peer, other = Stream(NAT, 1), Stream((SIG, 62000), 2)
    reasons = []
    t = 0.0
    for _ in range(200):  # both send for 4 s
        t += PTIME
        assert peer.send(p, t)
        reasons.append(other.verdict(p, t + 0.001).reason)
    assert p.current == NAT
    assert reasons[:9] == [PROBATION] * 9 and set(reasons[9:]) == {PEER_ACTIVE}


def test_nat_rebinding_is_followed_after_the_old_port_falls_silent() -> None:
    p = named()
    old, new = Stream(NAT, 7), Stream((SIG, 62000), 7)
    t = 0.0
    for _ in range(100):
        t += PTIME
        old.send(p, t)
    last_old = t
    new.seq = old.seq  # the same phone: its sequence goes on
    while not new.send(p, (t := t + PTIME)):
        pass
    assert p.current == new.addr and p.counters.moved == 1
    assert p.silence <= t - last_old <= p.silence + PTIME + 1e-9
    assert not old.send(p, t + PTIME)  # the old mapping now needs probation too


def test_probation_restarts_on_a_gap_or_another_ssrc() -> None:
    p = named(silence=0.0, probation=3)
    p.check(NAT, 1, 1, 0.0)
    a = (SIG, 62000)
    assert [p.check(a, 9, s, 1.0).reason for s in (10, 11, 13, 14)] == [PROBATION] * 4
    assert p.check(a, 8, 15, 1.0).reason == PROBATION  # another SSRC: count from 1
    assert p.check(a, 8, 16, 1.0).reason == PROBATION
    assert p.check(a, 8, 17, 1.0).moved


def test_sequence_wraps() -> None:
    p = named(silence=0.0, probation=3)
    p.check(NAT, 1, 1, 0.0)
    a = (SIG, 62000)
    assert [p.check(a, 9, s, 1.0).accept for s in (65534, 65535, 0)] == [False, False, True]


def test_learning_window_prefers_the_sdp_address() -> None:
    p = named()
    p.check(NAT, 1, 1, 0.1)  # learnt through the signalling IP
    assert p.check(SDP, 1, 2, 0.2).moved  # the exact SDP address takes over at once
    assert not p.check(NAT, 1, 3, 0.3).accept  # a weaker match does not take it back
    late = named()
    late.check(NAT, 1, 1, 0.1)
    assert late.check(SDP, 1, 2, 3.5).reason == PROBATION  # after the window: probation


def test_expect_keeps_a_peer_still_named_and_forgets_one_that_is_not() -> None:
    p = named()
    p.check(NAT, 1, 1, 0.0)
    assert p.expect(SDP, SIG, 10.0) == NAT  # a re-INVITE from the same phone
    assert p.expect(("0.0.0.0", 4000), SIG, 11.0) == NAT  # hold with c=0.0.0.0
    assert p.expected == SDP
    moved = ("192.0.2.99", 5000)
    assert p.expect(moved, "192.0.2.99", 12.0) == moved  # the call moved elsewhere
    assert p.current is None
    assert p.check(NAT, 1, 2, 12.1).reason == UNEXPECTED


def test_rtcp_only_from_the_peers_ip() -> None:
    p = named()
    assert p.check_rtcp((SIG, 61001), 0.0).accept  # before learning: a named IP
    assert not p.check_rtcp((STRANGER[0], 5005), 0.0).accept
    p.check(NAT, 1, 1, 0.0)
    assert p.check_rtcp((SIG, 50123), 0.1).accept  # a NAT maps port+1 anywhere
    v = p.check_rtcp((SDP[0], 4001), 0.2)
    assert not v.accept and v.reason == RTCP_FOREIGN


def test_reports_once_per_source_per_burst() -> None:
    p = named(burst_gap=5.0)
    p.check(NAT, 1, 1, 0.0)
    reports = [p.check(STRANGER, 2, i, i * 0.02).report for i in range(100)]
    assert reports.count(True) == 1 and reports[0]
    assert p.check(STRANGER, 2, 100, 2.0 + 5.0).report  # a new burst after 5 s quiet
    assert p.check(("203.0.113.67", 1), 2, 1, 7.0).report  # another source: its own
    assert p.counters.foreign_ip == 102 == p.counters.dropped


def test_burst_gate_is_bounded() -> None:
    gate = BurstGate(gap=10.0, capacity=4)
    assert all(gate(("10.0.0.1", port), 0.0) for port in range(10))
    assert len(gate._last) == 4


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        SourcePolicy(probation=0)


# -- properties ----------------------------------------------------------------------------

SOURCES = [SDP, (SDP[0], 4002), NAT, (SIG, 62000), STRANGER, ("203.0.113.67", 4000)]
NAMED_IPS = {SDP[0], SIG}

packets = st.lists(
    st.tuples(
        st.sampled_from(SOURCES),
        st.integers(0, 3),  # SSRC
        st.integers(0, 0xFFFF),  # sequence
        st.floats(0.0, 0.7),  # time since the previous packet
        st.booleans(),  # RTCP instead of RTP
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(packets)
def test_property_only_named_ips_are_ever_the_peer(
    schedule: list[tuple[Address, int, int, float, bool]],
) -> None:
    p = named()
    t = 0.0
    drops = 0
    reported: dict[Address, float] = {}
    for source, ssrc, seq, dt, rtcp in schedule:
        t += dt
        v = p.check_rtcp(source, t) if rtcp else p.check(source, ssrc, seq, t)
        if not rtcp:
            assert v.accept == (p.current == source)
        if p.current is not None:
            assert p.current[0] in NAMED_IPS  # nothing is ever sent to a stranger
        if not v.accept:
            drops += 1
            assert v.reason in REASONS
            if v.report:  # at most once per source per burst
                last = reported.get(source)
                assert last is None or t - last >= 10.0
            reported[source] = t if v.report else reported.get(source, t)
    assert p.counters.dropped == drops


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(SOURCES[1:]), st.integers(0, 3), st.integers(0, 0xFFFF)),
        max_size=20,
    ),
    st.integers(60, 200),
)
def test_property_a_talking_peer_keeps_the_stream(
    noise: list[tuple[Address, int, int]], ticks: int
) -> None:
    """Whatever others send, in sequence or not, a peer that keeps sending keeps it."""
    p = named()
    peer = Stream(SDP, 5)
    in_sequence = [Stream(s, 9) for s, _, _ in noise]
    t = 0.0
    for i in range(ticks):
        t += PTIME
        assert peer.send(p, t)
        for j, (source, ssrc, seq) in enumerate(noise):
            if (i + j) % 2:
                p.check(source, ssrc, seq, t + 0.001)  # random sequence numbers
            else:
                in_sequence[j].send(p, t + 0.002)  # a disciplined attacker
        assert p.current == SDP


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 100), st.sampled_from([0.02, 0.03, 0.06]), st.integers(0, 0xFFFF))
def test_property_a_rebinding_recovers_within_silence_and_probation(
    before: int, ptime: float, start_seq: int
) -> None:
    p = named()
    phone = Stream(NAT, 3, start_seq)
    stranger = Stream(STRANGER, 4)
    t = 0.0
    for _ in range(before):
        t += ptime
        phone.send(p, t)
        stranger.send(p, t)
    moved_at = t
    phone.addr = (SIG, 62000)
    while not phone.send(p, (t := t + ptime)):
        stranger.send(p, t)
        assert t - moved_at < 2.0
    bound = max(p.silence, p.probation * ptime) + ptime + 1e-9
    assert t - moved_at <= bound and p.current == phone.addr
