"""Call-handling rules, pure: call facts and the time in, the matching rule out.

A rule matches on the caller's number (exact, a prefix ending in ``*``, or ``anonymous``),
the number that was called (a DID or an extension), a weekly schedule (``mon-fri
12:00-14:00``, ``sat``) and dates (``2026-12-24``, ``2026-12-24..2026-12-26``); every
condition given must hold, any value of a list will do. Rules are tried in order and the
first match wins, before the business-hours / after-hours handling. Two rules that can
match the same call at the same time are a *conflict*: not an error (the order decides)
but ``softswitch check`` reports it, with why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from pydantic import Field, field_validator

from .model import Strict

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WHOLE_DAY = (0, 24 * 60)
_CALLER = r"^(anonymous|\+?[0-9]{1,20}\*?|\*)$"


def _listed(value: str | list[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else value


def parse_weekly(text: str) -> tuple[frozenset[int], tuple[int, int]]:
    """``mon-fri 12:00-14:00`` -> ({0..4}, (720, 840)); ``sat`` is the whole day."""
    parts = text.split()
    if not parts or len(parts) > 2:
        raise ValueError(f"{text!r}: expected 'mon-fri 12:00-14:00' or 'sat'")
    first, _, last = parts[0].lower().partition("-")
    if first not in DAYS or (last and last not in DAYS):
        raise ValueError(f"{text!r}: days are {', '.join(DAYS)}")
    a, b = DAYS.index(first), DAYS.index(last or first)
    days = frozenset((a + i) % 7 for i in range((b - a) % 7 + 1))
    if len(parts) == 1:
        return days, WHOLE_DAY
    start, sep, end = parts[1].partition("-")
    try:
        if not sep:
            raise ValueError
        span = (_minutes(start), _minutes(end))
    except ValueError:
        raise ValueError(f"{text!r}: times are HH:MM-HH:MM") from None
    if span[0] >= span[1]:
        raise ValueError(f"{text!r}: ends before it starts")
    return days, span


def _minutes(text: str) -> int:
    hours, _, minutes = text.partition(":")
    value = int(hours) * 60 + int(minutes)
    if not (0 <= int(minutes) < 60 and 0 <= value <= 24 * 60):
        raise ValueError(text)
    return value


def parse_dates(text: str) -> tuple[date, date]:
    first, _, last = text.partition("..")
    try:
        a = date.fromisoformat(first)
        b = date.fromisoformat(last) if last else a
    except ValueError:
        raise ValueError(f"{text!r}: expected YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD") from None
    if b < a:
        raise ValueError(f"{text!r}: ends before it starts")
    return a, b


class Match(Strict):
    caller: str | list[str] | None = None
    called: str | list[str] | None = None
    weekly: str | list[str] | None = None
    dates: str | list[str] | None = None

    @field_validator("caller", "called")
    @classmethod
    def _numbers(cls, value: str | list[str] | None) -> str | list[str] | None:
        import re

        for item in _listed(value) or []:
            if not re.fullmatch(_CALLER, item):
                raise ValueError(f"{item!r}: a number, a prefix ending in '*', or 'anonymous'")
        return value

    @field_validator("weekly")
    @classmethod
    def _weekly(cls, value: str | list[str] | None) -> str | list[str] | None:
        for item in _listed(value) or []:
            parse_weekly(item)
        return value

    @field_validator("dates")
    @classmethod
    def _dates(cls, value: str | list[str] | None) -> str | list[str] | None:
        for item in _listed(value) or []:
            parse_dates(item)
        return value


class Rule(Strict):
    name: str = Field(min_length=1, max_length=64)
    match: Match
    # a destination, "ring" (as usual), "voicemail", "announce:<text or file>", "hangup"
    action: str = Field(min_length=1, max_length=2000)


@dataclass(frozen=True, slots=True)
class CallFacts:
    caller: str  # the caller's number, or "anonymous"
    called: str  # the number dialled (a DID, an extension)
    when: datetime  # local time, in the office's time zone


def number_matches(pattern: str, number: str) -> bool:
    if pattern == "anonymous" or number == "anonymous":
        return pattern == number
    if pattern.endswith("*"):
        return number.startswith(pattern[:-1])
    return number == pattern


def matches(match: Match, facts: CallFacts) -> bool:
    callers, called = _listed(match.caller), _listed(match.called)
    if callers is not None and not any(number_matches(p, facts.caller) for p in callers):
        return False
    if called is not None and not any(number_matches(p, facts.called) for p in called):
        return False
    day = facts.when.date()
    dates = _listed(match.dates)
    if dates is not None and not any(a <= day <= b for a, b in map(parse_dates, dates)):
        return False
    weekly = _listed(match.weekly)
    if weekly is None:
        return True
    minute = facts.when.hour * 60 + facts.when.minute
    return any(
        facts.when.weekday() in days and start <= minute < end
        for days, (start, end) in map(parse_weekly, weekly)
    )


def first_match(rules: list[Rule], facts: CallFacts) -> Rule | None:
    return next((rule for rule in rules if matches(rule.match, facts)), None)


# -- conflicts ----------------------------------------------------------------------------


def _patterns_overlap(a: str, b: str) -> bool:
    if "anonymous" in (a, b):
        return a == b
    if a.endswith("*") and b.endswith("*"):
        return a[:-1].startswith(b[:-1]) or b[:-1].startswith(a[:-1])
    if a.endswith("*"):
        return b.startswith(a[:-1])
    if b.endswith("*"):
        return a.startswith(b[:-1])
    return a == b


def _numbers_overlap(a: list[str] | None, b: list[str] | None) -> bool:
    if a is None or b is None:
        return True
    return any(_patterns_overlap(x, y) for x in a for y in b)


def _days(dates: list[tuple[date, date]] | None) -> set[int]:
    """Weekdays found in these date ranges (all of them when there are none)."""
    if dates is None:
        return set(range(7))
    days: set[int] = set()
    for a, b in dates:
        span = min((b - a).days + 1, 7)
        days |= {(a + timedelta(days=i)).weekday() for i in range(span)}
    return days


def _intersect_dates(
    a: list[tuple[date, date]] | None, b: list[tuple[date, date]] | None
) -> list[tuple[date, date]] | None:
    if a is None:
        return b
    if b is None:
        return a
    out = [(max(x[0], y[0]), min(x[1], y[1])) for x in a for y in b]
    return [(s, e) for s, e in out if s <= e]


def _spans(weekly: list[str] | None, day: int) -> list[tuple[int, int]]:
    if weekly is None:
        return [WHOLE_DAY]
    return [span for days, span in map(parse_weekly, weekly) if day in days]


def overlap(a: Match, b: Match) -> bool:
    """Can one call, at one moment, match both ``a`` and ``b``?"""
    if not _numbers_overlap(_listed(a.caller), _listed(b.caller)):
        return False
    if not _numbers_overlap(_listed(a.called), _listed(b.called)):
        return False
    da = [parse_dates(t) for t in _listed(a.dates) or []] if a.dates is not None else None
    db = [parse_dates(t) for t in _listed(b.dates) or []] if b.dates is not None else None
    dates = _intersect_dates(da, db)
    if dates is not None and not dates:
        return False
    wa, wb = _listed(a.weekly), _listed(b.weekly)
    for day in _days(dates):
        for s1, e1 in _spans(wa, day):
            for s2, e2 in _spans(wb, day):
                if max(s1, s2) < min(e1, e2):
                    return True
    return False


def describe(match: Match) -> str:
    parts = [
        f"{key} {', '.join(values)}"
        for key in ("caller", "called", "weekly", "dates")
        if (values := _listed(getattr(match, key))) is not None
    ]
    return "; ".join(parts) or "every call"


def conflicts(rules: list[Rule]) -> list[str]:
    """Pairs of rules that can match the same call and time (the first one wins)."""
    out = []
    for i, a in enumerate(rules):
        for b in rules[i + 1 :]:
            if overlap(a.match, b.match):
                out.append(
                    f"rules {a.name!r} ({describe(a.match)}) and {b.name!r} "
                    f"({describe(b.match)}) can match the same call: {a.name!r} wins"
                )
    return out


def blocked_by(patterns: list[str], facts: CallFacts, *, external: bool) -> str | None:
    """The block-list entry that refuses this caller (None: not blocked). ``external``:
    the call does not come from one of our users."""
    for pattern in patterns:
        if pattern == "external" and external:
            return pattern
        if pattern != "external" and number_matches(pattern, facts.caller):
            return pattern
    return None
