"""The failed-auth throttle (softswitch.authguard), pure: time is an argument."""

from __future__ import annotations

import sip
from softswitch.authguard import (
    UNANSWERED,
    UNKNOWN_USER,
    WRONG_PASSWORD,
    AuthGuard,
    Report,
    Verdict,
)

PASSWORDS = {"100": "alice", "101": "bob", "102": "carol"}
NAT = "203.0.113.9"  # an office behind one address


def register(user: str) -> sip.Request:
    return sip.parse(
        (
            f"REGISTER sip:pbx SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKg{user}\r\n"
            f"From: <sip:{user}@pbx>;tag=1\r\nTo: <sip:{user}@pbx>\r\nCall-ID: c-{user}\r\n"
            "CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )  # type: ignore[return-value]


def login(
    guard: AuthGuard, user: str, password: str, source: str, now: float, port: int = 5060
) -> Verdict:
    """A phone's REGISTER: challenged, then answered with ``password``."""
    request = register(user)
    first = guard.check(request, source, now, port=port)
    if first.status != 401:
        return first
    challenge = sip.parse_challenge(first.headers[0][1])
    answer = sip.DigestClient(user, password).answer(challenge, "REGISTER", "sip:pbx")
    request.headers.set("Authorization", str(answer))
    return guard.check(request, source, now, port=port)


def test_wrong_passwords_throttle_the_user_at_that_source_only() -> None:
    """Finding 5: 2000 wrong passwords for one user from an address locked out every user
    at that address. Now that user is refused there; colleagues there and the user
    elsewhere are not."""
    guard = AuthGuard("pbx", PASSWORDS.get, max_failures=10, window=60.0)
    verdicts = [login(guard, "100", f"guess{i}", NAT, i / 1000, 40000) for i in range(2000)]
    assert [v.status for v in verdicts] == [403] * 2000
    assert sum(not v.throttled for v in verdicts) == 10  # digest work: 10 times only
    assert guard.challenged == 10  # a throttled user is not challenged again
    assert login(guard, "101", "bob", NAT, 3.0).user == "101"  # a colleague
    assert login(guard, "102", "carol", NAT, 3.0).user == "102"
    assert login(guard, "100", "alice", "198.51.100.1", 3.0).user == "100"  # elsewhere
    refused = login(guard, "100", "alice", NAT, 3.0)
    assert refused.throttled and refused.reason == "Forbidden (too many failed attempts)"
    assert len(guard) <= 4  # one counter per user and source, one throttle


def test_unknown_users_throttle_the_whole_source() -> None:
    guard = AuthGuard("pbx", PASSWORDS.get, max_failures=10, window=60.0)
    for i in range(10):
        verdict = login(guard, f"9{i:02d}", "x", NAT, float(i))
        assert verdict.status == 403 and not verdict.throttled
    assert guard.throttled_source(NAT, 10.0)
    assert login(guard, "101", "bob", NAT, 10.0).throttled  # names cannot be probed
    assert login(guard, "101", "bob", "198.51.100.1", 10.0).user == "101"


def test_reports_say_which_failure_and_when_a_throttle_starts_and_ends() -> None:
    guard = AuthGuard("pbx", PASSWORDS.get, max_failures=3, window=60.0)
    reports: list[Report] = []
    for i in range(5):
        reports += login(guard, "100", "guess", NAT, float(i), 40000 + i).reports
    reports += login(guard, "nobody", "x", "198.51.100.7", 5.0, 5070).reports
    assert reports == [
        Report("auth_failed", NAT, 40000, "100", "REGISTER", WRONG_PASSWORD),
        Report("auth_failed", NAT, 40001, "100", "REGISTER", WRONG_PASSWORD),
        Report("auth_failed", NAT, 40002, "100", "REGISTER", WRONG_PASSWORD),
        Report("auth_throttled", NAT, 40002, "100", "REGISTER", WRONG_PASSWORD),
        Report("auth_failed", "198.51.100.7", 5070, "nobody", "REGISTER", UNKNOWN_USER),
    ]  # the two attempts while throttled are counted, not reported
    assert guard.deadline == 60.0  # the first failure is a window old
    assert guard.expire(59.9) == []
    assert guard.expire(60.0) == [
        Report("auth_throttle_ended", NAT, 40002, "100", "REGISTER", "wrong_password,refused:2")
    ]
    assert guard.deadline is None
    assert login(guard, "100", "alice", NAT, 60.0).user == "100"


def test_unanswered_challenges_refuse_the_source_until_it_answers() -> None:
    """Finding 3: a challenge was not counted. A source challenged ``max_unanswered``
    times in a row, answering none, gets 403s instead of challenges."""
    guard = AuthGuard("pbx", PASSWORDS.get, max_unanswered=20, window=60.0)
    request = register("100")
    statuses = [guard.check(request, NAT, i / 100, port=5062).status for i in range(50)]
    assert statuses == [401] * 20 + [403] * 30
    assert guard.challenged == 20
    refused = guard.check(request, NAT, 1.0)
    assert refused.reason == "Forbidden (too many unanswered challenges)"
    assert guard.throttled_source(NAT, 1.0)
    assert login(guard, "101", "bob", "198.51.100.1", 1.0).user == "101"  # others: fine
    # a phone that answers its challenges never gets there
    for i in range(100):
        assert login(guard, "101", "bob", "198.51.100.1", 2.0 + i / 100).user == "101"
    # credentials on a nonce the flooder got earlier: it answers, the throttle lifts
    nonce = sip.parse_challenge(guard.check(request, "192.0.2.1", 1.0).headers[0][1])
    answer = sip.DigestClient("100", "alice").answer(nonce, "REGISTER", "sip:pbx")
    request.headers.set("Authorization", str(answer))
    assert guard.check(request, NAT, 3.0).user == "100"
    assert guard.expire(3.0) == [
        Report("auth_throttle_ended", NAT, 5062, None, "REGISTER", f"{UNANSWERED},refused:31")
    ]
    request.headers.remove("Authorization")
    assert guard.check(request, NAT, 3.0).status == 401


def test_memory_is_bounded_under_a_spoofed_flood() -> None:
    """Failures naming unknown users need no nonce: spoofed sources can make them."""
    guard = AuthGuard("pbx", PASSWORDS.get, max_failures=2, max_sources=500)
    request = register("100")
    garbage = 'Digest username="x", realm="pbx", nonce="n", uri="sip:pbx", response="0"'
    request.headers.set("Authorization", garbage)
    reports: list[Report] = []
    for i in range(5000):
        source = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        for _ in range(2):
            reports += guard.check(request, source, i / 1000).reports
    assert len(guard) <= 3 * 500
    started = sum(r.event == "auth_throttled" for r in reports)
    ended = sum(r.event == "auth_throttle_ended" for r in reports)
    assert started == 5000 and started - ended == 500  # the oldest made room
