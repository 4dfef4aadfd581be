"""RFC 4028 session timers, pure: negotiation from headers, refresh and expiry deadlines."""

from __future__ import annotations

import pytest

from sip import Headers, ParseError
from sip.session_timer import (
    Action,
    IntervalTooSmall,
    SessionTimer,
    TimerSettings,
    negotiate_uac,
    negotiate_uas,
    parse_session_expires,
    request_headers,
)


def headers(*lines: tuple[str, str]) -> Headers:
    h = Headers()
    for name, value in lines:
        h.add(name, value)
    return h


SETTINGS = TimerSettings(expires=1800, min_se=90)


def test_parse_session_expires() -> None:
    se = parse_session_expires("1800;refresher=uac")
    assert (se.interval, se.refresher) == (1800, "uac")
    assert str(se) == "1800;refresher=uac"
    assert parse_session_expires(" 90 ").refresher is None
    for bad in ("", "abc", "0", "99999999", "90;refresher=both"):
        with pytest.raises(ParseError):
            parse_session_expires(bad)


def test_uas_keeps_the_uac_as_refresher_when_it_supports_timers() -> None:
    got = negotiate_uas(
        headers(("Supported", "timer, replaces"), ("Session-Expires", "600")), SETTINGS
    )
    assert got is not None and (got.interval, got.refresher, got.we_refresh) == (600, "uac", False)
    assert got.response_headers() == [
        ("Session-Expires", "600;refresher=uac"),
        ("Require", "timer"),
    ]


def test_uas_refreshes_for_a_uac_without_timer_support() -> None:
    got = negotiate_uas(headers(("Session-Expires", "600;refresher=uac")), SETTINGS)
    assert got is not None and (got.refresher, got.we_refresh) == ("uas", True)
    assert ("Require", "timer") not in got.response_headers()
    # no Session-Expires at all: we still time the session, at our interval
    got = negotiate_uas(headers(), SETTINGS)
    assert got is not None and (got.interval, got.we_refresh) == (1800, True)
    assert negotiate_uas(headers(), TimerSettings(expires=0)) is None


def test_uas_shortens_to_its_interval_but_never_below_min_se() -> None:
    got = negotiate_uas(
        headers(("Supported", "timer"), ("Session-Expires", "7200"), ("Min-SE", "3600")),
        SETTINGS,
    )
    assert got is not None and got.interval == 3600


def test_too_small_an_interval_gets_422_with_our_min_se() -> None:
    with pytest.raises(IntervalTooSmall) as info:
        negotiate_uas(headers(("Session-Expires", "30")), SETTINGS)
    assert info.value.status == 422
    assert info.value.headers() == [("Min-SE", "90")]


def test_uac_side() -> None:
    assert request_headers(SETTINGS) == [
        ("Supported", "timer"),
        ("Session-Expires", "1800"),
        ("Min-SE", "90"),
    ]
    assert negotiate_uac(headers()) is None  # RFC 4028 §7.2: no expiration
    got = negotiate_uac(headers(("Session-Expires", "900;refresher=uas")))
    assert got is not None and not got.we_refresh
    got = negotiate_uac(headers(("Session-Expires", "900;refresher=uac")))
    assert got is not None and got.we_refresh


def test_refresher_acts_at_half_the_interval() -> None:
    got = negotiate_uas(headers(("Session-Expires", "120")), SETTINGS)
    assert got is not None and got.we_refresh
    timer = SessionTimer(got, now=1000.0)
    assert timer.deadline == 1060.0
    assert timer.on_timer(1059.9) is None
    assert timer.on_timer(1060.0) is Action.REFRESH
    timer.refreshed(1061.0)
    assert timer.deadline == 1121.0


def test_a_late_refresh_is_tolerated_then_the_session_expires() -> None:
    got = negotiate_uas(headers(("Supported", "timer"), ("Session-Expires", "90")), SETTINGS)
    assert got is not None and not got.we_refresh
    timer = SessionTimer(got, now=0.0)
    assert timer.deadline == 90 + 30  # interval + min(32, interval / 3)
    assert timer.on_timer(100.0) is None  # a Polycom refreshing late is still in time
    timer.refreshed(100.0)
    assert timer.on_timer(219.0) is None
    assert timer.on_timer(220.0) is Action.EXPIRE
