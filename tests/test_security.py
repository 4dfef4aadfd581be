"""The security event log: line format, per-source bursts, summaries, bounded memory."""

from __future__ import annotations

import logging
import re

import pytest

from sip.errors import SipUsageError
from sip.security import SecurityEvents, SecurityLog, clean

# what a fail2ban filter for these lines matches (<HOST> simplified)
FAIL2BAN = re.compile(r"^event=(?:auth_failed|malformed) src=(\[[0-9a-f:]+\]|[0-9.]+):")


def test_line_format_and_key_order() -> None:
    core = SecurityEvents()
    [line] = core.event(
        "auth_failed",
        ("udp", "192.0.2.7", 5060),
        0.0,
        user="100",
        method="REGISTER",
        reason="wrong password",
    )
    assert line == (
        "event=auth_failed src=192.0.2.7:5060 user=100 method=REGISTER reason=wrong_password"
    )
    [line] = core.event("malformed", ("::1", 5062), 0.0)
    assert line == "event=malformed src=[::1]:5062 user=- method=- reason=-"
    m = FAIL2BAN.match(line)
    assert m is not None and m.group(1) == "[::1]"


def test_a_peer_cannot_forge_a_line_or_a_second_source() -> None:
    core = SecurityEvents()
    forged = "x\r\nevent=auth_failed src=6.6.6.6:5060 user=y"
    [line] = core.event(
        "malformed", ("udp", "192.0.2.9", 1), 0.0, user=forged, reason='a\x00b=c%"\\ é'
    )
    assert "\n" not in line and "\r" not in line and "\x00" not in line
    assert line.count("src=") == 1 and line.count(" ") == 4  # five key=value fields
    assert [m.group(1) for m in re.finditer(r"src=([^ :]+):", line)] == ["192.0.2.9"]
    assert line.endswith("reason=a%00b%3Dc%25%22%5C_%C3%A9")


def test_values_are_bounded() -> None:
    assert clean(None) == "-" and clean("") == "-"
    assert clean("u" * 30_000, 64) == "u" * 64 + "..."
    assert clean("é" * 100, 20) == "%C3%A9" * 3 + "..."  # never a broken escape
    core = SecurityEvents()
    [line] = core.event("auth_failed", ("10.0.0.1", 1), 0.0, user="a" * 30_000, reason="r" * 999)
    assert len(line) < 400


def test_a_burst_is_logged_then_summarised_once_per_window() -> None:
    core = SecurityEvents(window=60.0, burst=10)
    source = ("udp", "203.0.113.5", 5060)
    lines: list[str] = []
    now = 0.0
    for _ in range(2000 * 150):  # 2000 events/s for 150 s
        lines += core.event("auth_failed", source, now, user="100", reason="wrong_password")
        now += 1 / 2000
    lines += core.flush(now + 60.0)
    singles = [line for line in lines if "suppressed=" not in line]
    summaries = [line for line in lines if "suppressed=" in line]
    assert len(singles) == 30  # 10 in each of the three windows started
    assert len(summaries) == 3
    assert summaries[0].startswith("event=auth_failed src=203.0.113.5:* suppressed=119990 ")
    assert "window=60s user=100 method=- reason=wrong_password" in summaries[0]
    counted = sum(int(s.split("suppressed=")[1].split()[0]) for s in summaries)
    assert counted + len(singles) == 2000 * 150  # nothing lost: logged or counted
    assert all(FAIL2BAN.match(line) for line in lines)


def test_sources_and_events_are_limited_separately() -> None:
    core = SecurityEvents(burst=3)
    for _ in range(5):
        core.event("auth_failed", ("192.0.2.1", 1), 0.0)
    assert len(core.event("auth_failed", ("192.0.2.2", 1), 0.0)) == 1  # another source
    assert len(core.event("malformed", ("192.0.2.1", 1), 0.0)) == 1  # another event
    assert core.event("auth_failed", ("192.0.2.1", 2), 0.0) == []  # same IP, other port


def test_quiet_window_logs_no_summary_and_deadline_follows_windows() -> None:
    core = SecurityEvents(window=10.0, burst=5)
    assert core.deadline is None
    core.event("tcp_idle", ("192.0.2.1", 1), 3.0)
    assert core.deadline == 13.0
    assert core.flush(12.9) == []
    assert core.flush(13.0) == []  # below the burst: nothing to summarise
    assert core.deadline is None and len(core) == 0


def test_tracked_sources_are_bounded_and_evictions_counted() -> None:
    core = SecurityEvents(window=60.0, burst=1, max_sources=100, rate=1e9, capacity=10**9)
    lines: list[str] = []
    for i in range(10_000):
        host = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
        lines += core.event("malformed", ("udp", host, 5060), i * 0.001)
        lines += core.event("malformed", ("udp", host, 5060), i * 0.001)  # suppressed
        assert len(core) <= 100
    lines += core.flush(100.0)
    overflow = [line for line in lines if line.startswith("event=malformed src=*:*")]
    assert len(overflow) == 1 and "suppressed=9900 " in overflow[0]
    assert "reason=log_rate_limit" in overflow[0]


def test_spoofed_sources_cannot_flood_the_log() -> None:
    """One line per new source would be unbounded: the per-event bucket caps them."""
    core = SecurityEvents(window=60.0, rate=20.0, capacity=200)
    lines: list[str] = []
    now = 0.0
    for i in range(2000 * 30):  # 2000 new sources/s for 30 s
        host = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
        lines += core.event("malformed", (host, 5060), now)
        now += 1 / 2000
    assert len(lines) <= 200 + 20 * 30 + 1
    assert len(core.event("auth_failed", ("192.0.2.1", 1), now)) == 1  # its own bucket


def test_event_names_are_tokens() -> None:
    core = SecurityEvents()
    with pytest.raises(SipUsageError):
        core.event("auth failed src=1.2.3.4:", ("192.0.2.1", 1), 0.0)
    with pytest.raises(SipUsageError):
        SecurityEvents(burst=0)


def test_adapter_logs_warnings_and_announces_deadlines(caplog: pytest.LogCaptureFixture) -> None:
    log = SecurityLog(SecurityEvents(window=5.0, burst=1))
    deadlines: list[float] = []
    log.on_deadline = deadlines.append
    with caplog.at_level(logging.WARNING, logger="security"):
        log.event("tcp_refused", ("tcp", "192.0.2.3", 40000), 1.0, reason="max_per_address")
        log.event("tcp_refused", ("tcp", "192.0.2.3", 40001), 2.0, reason="max_per_address")
        assert deadlines == [6.0]  # announced once
        log.flush(6.0)
    records = [r for r in caplog.records if r.name == "security"]
    assert [r.levelno for r in records] == [logging.WARNING] * 2
    assert records[0].getMessage() == (
        "event=tcp_refused src=192.0.2.3:40000 user=- method=- reason=max_per_address"
    )
    assert records[1].getMessage().startswith("event=tcp_refused src=192.0.2.3:* suppressed=1 ")
    assert log.deadline is None


def test_close_logs_the_open_windows_summaries(caplog: pytest.LogCaptureFixture) -> None:
    """A daemon that stops loses no count: the summaries still open are logged at once."""
    log = SecurityLog(SecurityEvents(window=60.0, burst=2, rate=1.0, capacity=3))
    with caplog.at_level(logging.WARNING, logger="security"):
        for n in range(5):
            log.event("auth_failed", ("192.0.2.1", 5060), 0.0, user="100", reason="wrong_password")
            log.event("malformed", (f"192.0.2.{10 + n}", 5060), 0.0)  # the bucket runs dry
        log.close()
        log.close()  # nothing left the second time
    lines = [r.getMessage() for r in caplog.records if r.name == "security"]
    assert len(lines) == 2 + 3 + 3  # 2 auth_failed (burst), 3 malformed (bucket), summaries
    assert lines[-3:] == [
        "event=auth_failed src=192.0.2.1:* suppressed=3 window=60s "
        "user=100 method=- reason=wrong_password",
        "event=malformed src=192.0.2.13:* suppressed=1 window=60s user=- method=- reason=-",
        "event=malformed src=192.0.2.14:* suppressed=1 window=60s user=- method=- reason=-",
    ]
    assert log.deadline is None
