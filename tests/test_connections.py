"""Stream connection limits as a pure table: caps, eviction order, idle and slow peers."""

from __future__ import annotations

import pytest

from sip.connections import ConnectionLimits, ConnectionTable
from sip.errors import SipUsageError


def table(**kw: float) -> ConnectionTable[str]:
    return ConnectionTable(ConnectionLimits(**kw))  # type: ignore[arg-type]


def test_per_address_cap_refuses_only_that_address() -> None:
    t = table(max_per_address=2)
    assert t.admit("a1", "192.0.2.1", 0.0).accepted
    assert t.admit("a2", "192.0.2.1", 0.0).accepted
    refused = t.admit("a3", "192.0.2.1", 0.0)
    assert not refused.accepted and refused.reason == "max_per_address"
    assert "a3" not in t
    assert t.admit("b1", "192.0.2.2", 0.0).accepted
    t.remove("a1")
    assert t.inbound_from("192.0.2.1") == 1
    assert t.admit("a4", "192.0.2.1", 0.0).accepted


def test_total_cap_evicts_the_oldest_idle_connection() -> None:
    t = table(max_connections=3)
    t.admit("used", "192.0.2.1", 0.0)
    t.received("used", 5.0, messages=1, partial=False)
    t.admit("silent-old", "192.0.2.2", 1.0)
    t.admit("silent-new", "192.0.2.3", 2.0)
    t.received("silent-new", 6.0, messages=0, partial=False)  # pings only: no message
    # never carried a message comes first, least recently active among those
    admission = t.admit("newcomer", "192.0.2.4", 7.0)
    assert admission.accepted and admission.evict == "silent-old"
    assert "silent-old" not in t and len(t) == 3
    assert t.admit("next", "192.0.2.5", 8.0).evict == "silent-new"
    assert t.admit("third", "192.0.2.6", 9.0).evict == "newcomer"
    assert t.inbound_from("192.0.2.2") == 0


def test_outbound_connections_are_counted_but_never_evicted() -> None:
    t = table(max_connections=1)
    t.add_outbound("ours", "192.0.2.9", 0.0)
    refused = t.admit("theirs", "192.0.2.1", 1.0)
    assert not refused.accepted and refused.reason == "max_connections"
    assert "ours" in t


def test_idle_connections_expire() -> None:
    t = table(idle_timeout=30.0)
    t.admit("a", "192.0.2.1", 0.0)
    t.admit("b", "192.0.2.1", 0.0)
    t.received("b", 20.0, messages=1, partial=False)
    assert t.deadline == 30.0
    assert t.expired(29.9) == []
    assert t.expired(30.0) == [("a", "idle_timeout")]
    assert "a" not in t and t.deadline == 50.0


def test_a_message_must_complete_in_time_whatever_trickles_in() -> None:
    t = table(message_timeout=10.0, idle_timeout=600.0)
    t.admit("slow", "192.0.2.1", 0.0)
    t.admit("fine", "192.0.2.2", 0.0)
    for second in range(1, 10):  # one byte a second: active, but never complete
        t.received("slow", float(second), messages=0, partial=True)
    t.received("fine", 1.0, messages=0, partial=True)
    t.received("fine", 9.0, messages=1, partial=True)  # done; the next one started at 9
    assert t.deadline == 11.0
    assert t.expired(11.0) == [("slow", "message_timeout")]
    assert t.expired(18.9) == []
    t.received("fine", 12.0, messages=1, partial=False)
    assert t.expired(300.0) == []  # complete messages: only the idle timeout applies


def test_limits_are_validated() -> None:
    with pytest.raises(SipUsageError):
        ConnectionLimits(idle_timeout=0)
    with pytest.raises(SipUsageError):
        ConnectionLimits(max_per_address=0)
