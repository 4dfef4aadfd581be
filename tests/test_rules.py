"""Call-handling rules and business hours, pure: facts and time in, decision out."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from softswitch import config as cfg
from softswitch.config import BusinessHours
from softswitch.hours import is_open
from softswitch.rules import (
    CallFacts,
    Match,
    Rule,
    blocked_by,
    conflicts,
    first_match,
    matches,
    overlap,
    parse_weekly,
)

from .netutil import ROOT

numbers = st.from_regex(r"\+?[0-9]{3,12}", fullmatch=True)
moments = st.datetimes(datetime(2026, 1, 1), datetime(2027, 12, 31))


def facts(
    caller: str = "0612345678", called: str = "101", when: datetime | None = None
) -> CallFacts:
    return CallFacts(caller, called, when or datetime(2026, 11, 30, 10, 0))


def test_weekly_specs() -> None:
    assert parse_weekly("mon-fri 12:00-14:00") == (frozenset(range(5)), (720, 840))
    assert parse_weekly("sat") == (frozenset({5}), (0, 1440))
    assert parse_weekly("fri-mon 22:00-24:00")[0] == frozenset({4, 5, 6, 0})
    for bad in ("mon 14:00-12:00", "someday", "mon 9-10"):
        with pytest.raises(ValueError):
            parse_weekly(bad)


def test_matching_each_condition() -> None:
    assert matches(Match(caller="+3361234*"), facts("+33612345678"))
    assert not matches(Match(caller="+3361234*"), facts("+33699999999"))
    assert matches(Match(caller="anonymous"), facts("anonymous"))
    assert not matches(Match(caller="06*"), facts("anonymous"))
    assert matches(Match(called=["0140000000", "101"]), facts(called="101"))
    monday_noon = datetime(2026, 11, 30, 12, 30)
    assert matches(Match(weekly="mon-fri 12:00-14:00"), facts(when=monday_noon))
    assert not matches(Match(weekly="sat-sun"), facts(when=monday_noon))
    assert matches(Match(dates="2026-11-29..2026-12-01"), facts(when=monday_noon))
    both = Match(caller="06*", weekly="mon 12:00-13:00")
    assert matches(both, facts(when=monday_noon))
    assert not matches(both, facts("07", when=monday_noon))


@settings(max_examples=200)
@given(moments, numbers, st.integers(0, 400), st.integers(0, 30))
def test_a_date_range_matches_exactly_its_days(
    when: datetime, caller: str, start_day: int, length: int
) -> None:
    first = date(2026, 1, 1) + timedelta(days=start_day)
    last = first + timedelta(days=length)
    match = Match(dates=f"{first}..{last}")
    assert matches(match, facts(caller, when=when)) == (first <= when.date() <= last)


@settings(max_examples=200)
@given(moments, numbers, st.lists(st.sampled_from(["+33*", "06*", "0612*", "anonymous"])))
def test_first_match_is_the_first_rule_that_matches(
    when: datetime, caller: str, prefixes: list[str]
) -> None:
    rules = [
        Rule(name=f"r{i}", match=Match(caller=p), action="101") for i, p in enumerate(prefixes)
    ]
    found = first_match(rules, facts(caller, when=when))
    expected = next((r for r in rules if matches(r.match, facts(caller, when=when))), None)
    assert found is expected


@settings(max_examples=300)
@given(
    moments,
    st.sampled_from(["0612345678", "+33612345678", "anonymous", "101"]),
    st.sampled_from([None, "06*", "+336*", "anonymous", "0612345678"]),
    st.sampled_from([None, "06*", "+33*", "101"]),
    st.sampled_from([None, "mon-fri 09:00-12:00", "sat-sun", "mon 11:00-13:00", "wed"]),
    st.sampled_from([None, "mon-fri 10:00-11:00", "sun 08:00-09:00", "tue-thu"]),
    st.sampled_from([None, "2026-12-24..2026-12-26", "2027-01-01"]),
)
def test_rules_that_both_match_a_call_are_reported_as_overlapping(
    when: datetime,
    caller: str,
    caller_a: str | None,
    caller_b: str | None,
    weekly_a: str | None,
    weekly_b: str | None,
    dates_a: str | None,
) -> None:
    """overlap() never misses a conflict: if one call matches both, they overlap."""
    a = Match(caller=caller_a, weekly=weekly_a, dates=dates_a)
    b = Match(caller=caller_b, weekly=weekly_b)
    f = facts(caller, when=when)
    if matches(a, f) and matches(b, f):
        assert overlap(a, b) and overlap(b, a)


def test_disjoint_rules_do_not_conflict() -> None:
    assert not overlap(Match(caller="06*"), Match(caller="07*"))
    assert not overlap(Match(weekly="mon 09:00-10:00"), Match(weekly="mon 10:00-11:00"))
    assert not overlap(Match(dates="2026-12-24"), Match(weekly="wed"))  # a Thursday
    assert overlap(Match(dates="2026-12-24"), Match(weekly="thu 10:00-11:00"))
    family = Rule(name="family", match=Match(caller="+3361234*"), action="102")
    holidays = Rule(
        name="holidays", match=Match(dates="2026-12-24..2026-12-26"), action="voicemail"
    )
    [report] = conflicts([family, holidays])
    assert "'family'" in report and "'holidays'" in report and "'family' wins" in report


def test_block_lists() -> None:
    assert blocked_by(["0899*"], facts("0899123456"), external=True) == "0899*"
    assert blocked_by(["anonymous"], facts("anonymous"), external=True) == "anonymous"
    assert blocked_by(["external"], facts("101"), external=False) is None
    assert blocked_by(["external", "0899*"], facts("0612"), external=True) == "external"


def test_business_hours_in_their_time_zone() -> None:
    hours = BusinessHours(
        timezone="Europe/Paris", monday=["09:00-12:00", "14:00-18:00"], closed=["2026-12-25"]
    )
    monday = datetime(2026, 11, 30, 8, 30, tzinfo=UTC)  # 09:30 in Paris
    assert is_open(hours, monday)
    assert not is_open(hours, monday + timedelta(hours=3))  # 12:30: lunch
    assert not is_open(hours, monday - timedelta(hours=1))  # 08:30
    assert not is_open(hours, datetime(2026, 12, 25, 9, 0, tzinfo=UTC))  # closed (Friday)
    assert is_open(None, monday)  # no hours: always open


def test_check_prints_rule_conflicts(tmp_path: Path) -> None:
    office = tmp_path / "office.toml"
    office.write_text(
        cfg.DEMO
        + """
[[users.rules]]
name = "family"
match = { caller = "+3361234*" }
action = "101"
[[users.rules]]
name = "holidays"
match = { dates = ["2026-12-24..2026-12-26"] }
action = "voicemail"
"""
    )
    result = subprocess.run(
        [sys.executable, "-m", "softswitch.cli", "check", str(office)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "warning:" in result.stderr and "users[2] (102): rules 'family'" in result.stderr
    assert "can match the same call: 'family' wins" in result.stderr
