"""Call queues driven by this project's phones in the PBX's process (fast, every path):
order, rotation, wrap-up, the position announcement heard, max wait, leaving a message,
Do-Not-Disturb for queue calls, and agents logging in and out with the feature codes."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sip
from ivr import Prompt
from media.clock import MediaClock
from softswitch.feature import Target
from softswitch.features.cdr import CallHistory, Filter
from softswitch.features.queues.feature import Queues
from softswitch.pbx import Pbx

from .audio import best_correlation, dominant_frequency
from .office import demo_pbx
from .softphone import USERS, SoftPhone, phone

NS = {"d": "urn:ietf:params:xml:ns:dialog-info"}
QUEUES = """
[[queues]]
extension = "700"
name = "Support"
members = ["200", "201"]
strategy = "rotating"
ring_seconds = 5
wrap_up_seconds = 2
announce_position_seconds = 4
greeting = ""
leave_message = "voicemail:205"
max_wait_seconds = 20
overflow = "voicemail:205"

[[queues]]
extension = "701"
name = "Short"
members = ["210"]
max_wait_seconds = 3
overflow = "voicemail:205"
greeting = ""
announce_position_seconds = 0
"""


@pytest.fixture
async def pbx(tmp_path: Path) -> AsyncIterator[Pbx]:
    p = await demo_pbx(tmp_path, extra=USERS + QUEUES, rtp=38200)
    yield p
    await p.stop()


async def until(check: Callable[[], bool], seconds: float = 8.0) -> None:
    async with asyncio.timeout(seconds):
        while not check():
            await asyncio.sleep(0.02)


def queues(pbx: Pbx) -> Queues:
    feature = pbx.registry.feature("queues")
    assert isinstance(feature, Queues)
    return feature


def talking(p: SoftPhone) -> int:
    return sum(leg.call.state is sip.CallState.ESTABLISHED for leg in p.legs)


async def test_callers_are_answered_in_turn_by_rotating_agents(pbx: Pbx) -> None:
    clock = MediaClock()
    clock.start()
    agents = [phone(pbx, clock, 200 + i, "PCMU", f) for i, f in enumerate((600.0, 700.0))]
    callers = [phone(pbx, clock, 202 + i, "PCMU", f) for i, f in enumerate((900.0, 1100.0, 1300.0))]
    feature = queues(pbx)
    try:
        for p in (*agents, *callers):
            await p.start()
        first = await callers[0].call("700")
        await until(lambda: sum(talking(a) for a in agents) == 1)
        second = await callers[1].call("700")
        await until(lambda: sum(talking(a) for a in agents) == 2)
        assert [talking(a) for a in agents] == [1, 1]  # one each: rotating
        third = await callers[2].call("700")
        await asyncio.sleep(3.0)  # the third waits: both agents talk
        assert sum(talking(a) for a in agents) == 2
        board = feature.snapshot()["queues"][0]
        assert [w["number"] for w in board["waiting"]] == ["204"]
        assert {a["state"] for a in board["agents"]} == {"talking"}
        # the agents hear their callers and the callers their agents
        pairs = ((agents[0], first, 900.0), (agents[1], second, 1100.0))
        for agent, caller_leg, caller_freq in pairs:
            heard = agent.legs[0].heard(1.0)
            assert abs(dominant_frequency(heard[np.abs(heard) > 300], 8000) - caller_freq) < 30
            back = caller_leg.heard(1.5, 2.5)
            assert np.abs(back).max() > 300
        # the third heard "you are caller number one" over the music
        rate = 8000
        reference = np.concatenate(
            [
                pbx.svc.prompts.samples(Prompt("builtin", "queue-caller-number"), rate),
                pbx.svc.prompts.samples(Prompt("builtin", "num-1"), rate),
            ]
        )
        assert best_correlation(third.heard(0.0, 3.0), reference) > 0.8
        # the first agent hangs up: after its wrap-up (2 s) the third caller is offered
        ended_at = asyncio.get_running_loop().time()
        await agents[0].legs[0].call.hangup()
        await until(lambda: sum(talking(a) for a in agents) == 2, 10.0)
        waited = asyncio.get_running_loop().time() - ended_at
        assert waited >= 1.9
        stats = feature.snapshot()["queues"][0]["stats"]
        assert stats["answered"] == 3 and stats["abandoned"] == 0
    finally:
        for p in (*agents, *callers):
            await p.stop()
        await clock.stop()


def waiting(feature: Queues, index: int) -> list[dict[str, Any]]:
    queue: dict[str, Any] = feature.snapshot()["queues"][index]
    return list(queue["waiting"])


def history(pbx: Pbx) -> CallHistory:
    feature = pbx.registry.feature("cdr")
    assert isinstance(feature, CallHistory)
    return feature


async def test_the_line_moves_up_times_out_and_takes_messages(pbx: Pbx) -> None:
    clock = MediaClock()
    clock.start()
    # 210, the only agent of 701, never registers: nobody answers there
    a, b, c = (phone(pbx, clock, 206 + i, "PCMU", 800.0) for i in range(3))
    feature = queues(pbx)
    try:
        for p in (a, b, c):
            await p.start()
        first = await a.call("701")
        second = await b.call("701")
        board = feature.snapshot()["queues"][1]
        assert [(w["number"], w["position"]) for w in board["waiting"]] == [("206", 1), ("207", 2)]
        await first.call.hangup()  # the first gives up: the second moves up
        await until(lambda: [w["number"] for w in waiting(feature, 1)] == ["207"])
        # the second waits its 3 s, then lands in the queue's mailbox
        await until(lambda: not waiting(feature, 1), 6.0)
        stats = feature.snapshot()["queues"][1]["stats"]
        assert (stats["abandoned"], stats["timeout"]) == (1, 1)
        # a caller of 700 presses 1: to voicemail at once, the line left as "message"
        third = await c.call("700")
        await asyncio.sleep(0.3)
        await third.call.send_dtmf("1")
        await until(lambda: feature.snapshot()["queues"][0]["stats"]["message"] == 1)
        await asyncio.sleep(1.0)
        for leg in (second, third):
            await leg.call.hangup()
        await until(lambda: len(history(pbx).query(Filter())) >= 3)
        rows = {r.caller: r for r in history(pbx).query(Filter())}
        assert (rows["206"].queue, rows["206"].queue_outcome, rows["206"].disposition) == (
            "701",
            "abandoned",
            "no answer",
        )
        assert rows["207"].queue_outcome == "timeout" and rows["207"].disposition == "voicemail"
        assert rows["207"].queue_wait is not None and 2.9 <= rows["207"].queue_wait < 5
        assert rows["208"].queue_outcome == "message" and "voicemail:205" in rows["208"].chain
    finally:
        for p in (a, b, c):
            await p.stop()
        await clock.stop()


@pytest.fixture
async def dnd_pbx(tmp_path: Path) -> AsyncIterator[Pbx]:
    users = USERS.replace('extension = "201"\n', 'extension = "201"\ndnd = "no_queue"\n')
    p = await demo_pbx(tmp_path, extra=users + QUEUES, rtp=38600)
    yield p
    await p.stop()


async def test_dnd_for_queue_calls_and_the_login_codes(dnd_pbx: Pbx) -> None:
    pbx = dnd_pbx
    clock = MediaClock()
    clock.start()
    agent, refusing, caller, direct = (
        phone(pbx, clock, ext, "PCMU", 700.0) for ext in (200, 201, 202, 203)
    )
    feature = queues(pbx)

    def states() -> dict[str, str]:
        return {a["extension"]: a["state"] for a in feature.snapshot()["queues"][0]["agents"]}

    try:
        for p in (agent, refusing, caller, direct):
            await p.start()
        # the agent's BLF key on *45: lit while it is logged in
        port = pbx.ua.listeners[0].port
        lamp = await agent.ua.subscribe(
            f"sip:*45@127.0.0.1:{port}",
            "dialog",
            expires=600,
            accept="application/dialog-info+xml",
            credentials=("200", "pass200"),
        )

        async def lamp_state() -> str | None:
            notify = await asyncio.wait_for(lamp.notifications.get(), 5)
            return ET.fromstring(notify.body).findtext("d:dialog/d:state", namespaces=NS)

        assert await lamp_state() == "confirmed"
        await agent.call("*46")  # log out of the queues
        await until(lambda: states()["200"] == "logged_out")
        assert await lamp_state() == "terminated"
        waiting = await caller.call("700")
        await asyncio.sleep(1.5)
        assert states() == {"200": "logged_out", "201": "dnd"}
        assert not agent.legs[1:] and not refusing.legs  # nobody was offered the call
        await direct.call("201")  # "refuse queue calls" still takes direct calls
        await until(lambda: talking(refusing) == 1)
        await agent.call("*45")  # back in: the waiting caller is offered at once
        assert await lamp_state() == "confirmed"
        await lamp.close()
        # offered once its *45 call (the prompt) is over: not while it is on a call
        await until(lambda: states()["200"] == "talking", 10.0)
        assert feature.snapshot()["queues"][0]["stats"]["answered"] == 1
        assert waiting.call.state is sip.CallState.ESTABLISHED
        assert (pbx.svc.data_dir / "queues.json").exists()
    finally:
        for p in (agent, refusing, caller, direct):
            await p.stop()
        await clock.stop()


async def test_a_hostile_state_file_is_ignored_and_codes_need_a_queue(tmp_path: Path) -> None:
    """A queues.json nested 100 000 deep (or of the wrong types) must not keep the daemon
    from starting; a user in no queue hears "not a member" and changes nothing."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "queues.json").write_text("[" * 100_000)
    pbx = await demo_pbx(tmp_path, extra=USERS + QUEUES, rtp=38900)
    clock = MediaClock()
    clock.start()
    outsider = phone(pbx, clock, 212, "PCMU", 500.0)
    try:
        feature = queues(pbx)
        assert all(a.logged_in for a in feature.runtime.center.agents.values())
        await outsider.start()
        await outsider.call("*46")
        await until(lambda: outsider.legs[0].call.state is sip.CallState.ENDED)
        assert "212" not in feature.runtime.center.agents
        assert not (data / "queues.json").read_text().startswith("{")  # not rewritten
    finally:
        await outsider.stop()
        await clock.stop()
        await pbx.stop()


async def test_a_cancelled_ring_stops_the_phones_and_frees_its_leg(pbx: Pbx) -> None:
    """Services.ring cancelled while a phone rings (its caller's task ends: the PBX
    stops, a feature gives up): the phone gets CANCEL and the ring's media leg is closed."""
    clock = MediaClock()
    clock.start()
    caller = phone(pbx, clock, 208, "PCMU", 500.0)
    callee = phone(pbx, clock, 209, "PCMU", 500.0, answer=False)
    try:
        for p in (caller, callee):
            await p.start()
        await caller.call("701")  # waits in line: 701's only agent has no phone
        party = next(p for p in pbx.svc.parties if p.user is not None and p.user.extension == "208")
        legs = len(pbx.engine.legs)
        ring = asyncio.ensure_future(pbx.svc.ring(party, [Target("user", "209")], 20))
        await until(lambda: bool(callee.ringing))
        assert len(pbx.engine.legs) == legs + 1
        ring.cancel()
        await until(lambda: callee.ringing[0].state is sip.CallState.ENDED)
        assert len(pbx.engine.legs) == legs
    finally:
        for p in (caller, callee):
            await p.stop()
        await clock.stop()
