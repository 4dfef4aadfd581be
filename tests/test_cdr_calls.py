"""Call history rows as a user reads them, for calls that go through features: the bridge,
``*97``, a ring group, the receptionist, a forward, blind and attended transfers.

One office in this process (its history read from the feature), baresip phones for Dave
(103, who calls), Alice (100), Bob (101) and Carol (102), and this project's UA for
Frank (105), whose attended transfers (REFER with Replaces) baresip 1.0 cannot make.
Each call lasts a few seconds; a row's duration is compared with what the phones saw.

A transfer ends the row of the conversation it breaks and starts a row for the one it
makes (as Asterisk's CDRs do since version 12; the rows share the first call's call_id):
each row's seconds are the time those two parties talked, so the transferor's history
shows its own part, the target's its own, and the rows of a call add up instead of
counting the same minutes twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from softswitch.features.cdr import CallHistory, CallRecord, Filter
from softswitch.pbx import Pbx

from .baresip import Phone
from .office import Office, started, stop_all
from .test_pbx_inprocess import SoftPhone

pytestmark = pytest.mark.interop

TALK = 2.0  # seconds each conversation lasts
TOLERANCE = 0.8  # signalling and the phones' event reports, on a busy machine
OFFICE = """
[[ring_groups]]
extension = "600"
name = "Sales"
steps = [ { targets = ["100"], ring_seconds = 10 }, { targets = ["101"], ring_seconds = 10 } ]

[[ivr]]
extension = "500"
name = "Reception"
greeting = "Welcome. For Bob press 2."
[ivr.keys]
"2" = "101"

[[users]]
extension = "104"
name = "Eve Absent"
password = "eve104"
pin = "1104"
[users.forward]
unreachable = "102"

[[users]]
extension = "105"
name = "Frank Desk"
password = "frank105"
pin = "1105"
"""


def expect(phone: Phone, kind: str, timeout: float = 15.0) -> Awaitable[dict[str, Any]]:
    """The phone's next ``kind`` event (counted now, before the action that causes it)."""
    return phone.wait_event(kind, len(phone.seen(kind)) + 1, timeout)


class History:
    """The rows the office writes, each call's taken as it ends."""

    def __init__(self, pbx: Pbx) -> None:
        feature = pbx.registry.feature("cdr")
        assert isinstance(feature, CallHistory)
        self.feature: CallHistory = feature
        self.seen: int = 0

    async def new(self, count: int, timeout: float = 5.0) -> list[CallRecord]:
        """The next ``count`` rows, in the order they were written."""
        deadline = time.monotonic() + timeout
        while True:
            rows = sorted(self.feature.query(Filter(limit=1000)), key=lambda r: r.id)
            if len(rows) >= self.seen + count or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        got, self.seen = rows[self.seen :], len(rows)
        assert len(got) == count, [r.row() for r in got]
        return got


def check(
    row: CallRecord,
    caller: str,
    dialled: str,
    destination: str,
    chain: str,
    seconds: float,
    disposition: str = "answered",
) -> None:
    """One row as the user reads it: who called what, where it went, its seconds."""
    seen = (row.caller, row.dialled, row.destination, row.chain, row.disposition)
    assert seen == (caller, dialled, destination, chain, disposition), row.row()
    assert row.answer is not None and row.start <= row.answer <= row.end, row.row()
    assert abs(row.duration - seconds) < TOLERANCE, (round(row.duration, 2), seconds, row.row())


async def test_call_history_of_feature_calls_and_transfers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    office = Office(tmp_path, extra=OFFICE)
    office.user_extra["103"] = 'conference_host_code = "7301"'
    pbx = await office.start_inprocess()
    history = History(pbx)
    dave = office.phone("dave", "103", 1000.0, password="dave103")
    alice = office.phone("alice", "100", 600.0, answer="manual")
    bob = office.phone("bob", "101", 800.0, answer="manual")
    carol = office.phone("carol", "102", 1200.0, answer="manual")
    frank = SoftPhone("105", "frank105", pbx.ua.listeners[0].port, 1500.0)
    target = f"127.0.0.1:{office.port}"

    async def dave_calls(number: str) -> float:
        established = expect(dave, "CALL_ESTABLISHED")
        await dave.command("dial", f"sip:{number}@{target}")
        return float((await established)["at"])

    async def answers(phone: Phone, incoming: Awaitable[dict[str, Any]]) -> float:
        await incoming
        established = expect(phone, "CALL_ESTABLISHED")
        await phone.command("accept")
        return float((await established)["at"])

    async def dave_hangs_up(other: Phone | None = None) -> float:
        closed = expect(other or dave, "CALL_CLOSED")
        await asyncio.sleep(TALK)
        hung_up = time.monotonic()
        await dave.command("hangup")
        await closed
        return hung_up

    await started(dave, alice, bob, carol)
    await frank.start()
    try:
        # the bridge: Dave types his host code and is in his room until he hangs up
        answered = await dave_calls("800")
        for key in "7301#":
            await dave.command("sndcode", key)
            await asyncio.sleep(0.2)
        for _ in range(100):
            if (room := pbx.conference.rooms.get("103")) is not None and room.members:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("Dave never joined his conference")
        end = await dave_hangs_up()
        [row] = await history.new(1)
        check(row, "103", "800", "800", "800", end - answered)

        # *97: his own voicemail answers (Dave listens to the PIN prompt, hangs up)
        answered = await dave_calls("*97")
        end = await dave_hangs_up()
        [row] = await history.new(1)
        check(row, "103", "*97", "*97", "*97", end - answered)

        # the ring group: Alice (step 1) declines, Bob (step 2) answers
        alice_rings, bob_rings = expect(alice, "CALL_INCOMING"), expect(bob, "CALL_INCOMING")
        await dave.command("dial", f"sip:600@{target}")
        await alice_rings
        await alice.command("hangup")
        answered = await answers(bob, bob_rings)
        end = await dave_hangs_up(bob)
        [row] = await history.new(1)
        check(row, "103", "600", "101", "600 > 101", end - answered)

        # the receptionist answers; key 2 puts Dave through to Bob
        bob_rings = expect(bob, "CALL_INCOMING")
        answered = await dave_calls("500")
        await asyncio.sleep(0.5)
        await dave.command("sndcode", "2")
        await answers(bob, bob_rings)
        end = await dave_hangs_up(bob)
        [row] = await history.new(1)
        check(row, "103", "500", "101", "500 > 101", end - answered)

        # a forward: Eve (104) has no phone registered, her calls go to Carol
        carol_rings = expect(carol, "CALL_INCOMING")
        await dave.command("dial", f"sip:104@{target}")
        answered = await answers(carol, carol_rings)
        end = await dave_hangs_up(carol)
        [row] = await history.new(1)
        check(row, "103", "104", "102", "104 > 102", end - answered)

        # blind transfer: Bob answers, then sends Dave to Carol (REFER)
        bob_rings, carol_rings = expect(bob, "CALL_INCOMING"), expect(carol, "CALL_INCOMING")
        bob_gone = expect(bob, "CALL_CLOSED")
        await dave.command("dial", f"sip:101@{target}")
        answered = await answers(bob, bob_rings)
        await asyncio.sleep(TALK)
        referred = time.monotonic()
        await bob.command("transfer", f"sip:102@{target}")
        taken = await answers(carol, carol_rings)
        await bob_gone
        end = await dave_hangs_up(carol)
        first, second = await history.new(2)
        check(first, "103", "101", "101", "101", referred - answered)  # Bob's part
        check(second, "103", "102", "102", "101 > 102", end - taken)  # Carol's part
        assert first.call_id == second.call_id and second.start >= first.end - 0.01

        # attended transfer: Dave calls Frank, Frank consults Carol, then joins them
        answered = await dave_calls("105")
        await asyncio.sleep(TALK)
        carol_rings = expect(carol, "CALL_INCOMING")
        consulting = asyncio.ensure_future(frank.call("102"))
        consulted = await answers(carol, carol_rings)
        to_carol = await consulting
        await asyncio.sleep(TALK)
        [to_dave] = [c for c in frank.calls if c is not to_carol]
        joined = time.monotonic()
        assert (await to_dave.refer(f"sip:102@{target}", replaces=to_carol)).status == 202
        await to_dave.wait_ended(5)
        await to_carol.wait_ended(5)
        end = await dave_hangs_up(carol)
        first, consultation, third = await history.new(3)
        check(first, "103", "105", "105", "105", joined - answered)  # Frank's part
        check(consultation, "105", "102", "102", "102", joined - consulted)
        check(third, "103", "102", "102", "105 > 102", end - joined)  # Carol's part
        assert first.call_id == third.call_id != consultation.call_id

        # attended, both legs Frank's own calls: Bob and Carol talk on, a row of theirs
        bob_rings, carol_rings = expect(bob, "CALL_INCOMING"), expect(carol, "CALL_INCOMING")
        calling = asyncio.ensure_future(frank.call("101"))
        answered = await answers(bob, bob_rings)
        to_bob = await calling
        consulting = asyncio.ensure_future(frank.call("102"))
        consulted = await answers(carol, carol_rings)
        to_carol = await consulting
        await asyncio.sleep(TALK)
        joined = time.monotonic()
        bob_gone, carol_gone = expect(bob, "CALL_CLOSED"), expect(carol, "CALL_CLOSED")
        assert (await to_bob.refer(f"sip:102@{target}", replaces=to_carol)).status == 202
        await to_bob.wait_ended(5)
        await to_carol.wait_ended(5)
        await asyncio.sleep(TALK)
        end = time.monotonic()
        await bob.command("hangup")
        await bob_gone
        await carol_gone
        first, consultation, joined_row = await history.new(3)
        check(first, "105", "101", "101", "101", joined - answered)
        check(consultation, "105", "102", "102", "102", joined - consulted)
        check(joined_row, "101", "102", "102", "105 > 102", end - joined)
        assert joined_row.caller_name == "Bob Durand" and joined_row.call_id == first.call_id
        assert not [r for r in caplog.records if "listener_failed" in r.getMessage()]
    finally:
        await frank.stop()
        await stop_all(dave, alice, bob, carol)
        await pbx.stop()
