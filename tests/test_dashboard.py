"""What the dashboard and ``softswitch status`` count: a call's time from its start (not
from when someone first looked), and a conference member as a call into the bridge."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from media.clock import MediaClock
from softswitch.control import render
from softswitch.control import snapshot as status
from softswitch.features.console.live import snapshot
from softswitch.pbx import Pbx

from .office import demo_pbx
from .softphone import USERS, phone

HOST_CODE = "1001"  # the demo's: Alice's room, as its host


@pytest.fixture
async def pbx(tmp_path: Path) -> AsyncIterator[Pbx]:
    p = await demo_pbx(tmp_path, extra=USERS, rtp=37400)
    yield p
    await p.stop()


async def until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not check():
            await asyncio.sleep(0.02)


async def test_call_time_counts_from_the_call_and_bridge_members_are_calls(pbx: Pbx) -> None:
    clock = MediaClock()
    clock.start()
    a, b, c = (phone(pbx, clock, 200 + i, "PCMU", f) for i, f in enumerate((1000.0, 600.0, 700.0)))
    try:
        for p in (a, b, c):
            await p.start()
        await a.call("201")
        await until(lambda: bool(b.legs))
        await asyncio.sleep(1.2)  # nobody looks at the dashboard yet
        calls = snapshot(pbx.svc)["calls"]
        assert len(calls) == 1 and calls[0]["state"] == "talking"
        assert calls[0]["seconds"] >= 1  # counted from the call, not from this first look

        leg = await c.call("800")
        for key in HOST_CODE + "#":
            await leg.call.send_dtmf(key)
        service = pbx.conference
        await until(lambda: service.members() == 1)
        calls = snapshot(pbx.svc)["calls"]
        assert len(calls) == 2
        bridge = next(call for call in calls if call["state"] == "conference")
        assert bridge["from"]["number"] == "202" and bridge["to"]["name"] == "conference 100"
        shown = render(status(pbx, time.monotonic()))
        assert "calls: 2" in shown and "202 (host)" in shown
    finally:
        for p in (a, b, c):
            await p.stop()
        await clock.stop()
