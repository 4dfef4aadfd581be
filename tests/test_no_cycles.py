"""An ended call is freed by reference counting, not by the cycle collector.

A full collection walks every live object (the transactions RFC 3261 keeps for 32 s
included): at 50 calls/s it paused the daemon 150-390 ms, long enough for overload control
to refuse calls. So the calls of a busy office must leave no cyclic garbage behind: here a
call with session timers (both sides agree on them), put on hold and resumed, then
transferred blindly, and a plain call, each ended; the collector must then find none of
this project's objects (SIP calls, dialogs, parties, media legs, tasks of them).
"""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import sip
from media.clock import MediaClock
from softswitch.pbx import Pbx

from .office import demo_pbx
from .softphone import USERS, phone

OURS = ("sip.", "softswitch.", "rtp.", "media.", "ivr.")


@pytest.fixture
async def pbx(tmp_path: Path) -> AsyncIterator[Pbx]:
    p = await demo_pbx(tmp_path, extra=USERS, rtp=37000)
    yield p
    await p.stop()


def ours(objects: list[object]) -> Counter[str]:
    """The objects of this project's modules among ``objects``, and the coroutines and
    tasks running its code, by type."""
    found: Counter[str] = Counter()
    for o in objects:
        module = type(o).__module__ or ""
        if module.startswith(OURS):
            found[type(o).__qualname__] += 1
        elif isinstance(o, asyncio.Task):
            code = getattr(o.get_coro(), "cr_code", None)
            if code is not None and code.co_filename.split("/")[-2] in ("sip", "softswitch"):
                found[f"Task {code.co_qualname}"] += 1
    return found


async def test_ended_calls_leave_no_cyclic_garbage(pbx: Pbx) -> None:
    clock = MediaClock()
    clock.start()
    a, b, c = (phone(pbx, clock, 200 + i, "PCMU", f) for i, f in enumerate((1000.0, 600.0, 700.0)))
    for p in (a, b, c):
        await p.start()
        p.ua.session_timers = sip.TimerSettings()  # the phones ask for timers too
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds is kept for us to look at
    try:
        leg = await a.call("201")
        for _ in range(100):
            if b.legs:
                break
            await asyncio.sleep(0.05)
        assert leg.call.session_timer is not None  # the PBX agreed on a session timer
        held = sip.make_offer("127.0.0.1", 4000, (sip.PCMU,), direction="sendonly")
        await leg.call.reinvite(bytes(held))
        await asyncio.sleep(0.3)
        await leg.call.reinvite(bytes(sip.make_offer("127.0.0.1", 4000, (sip.PCMU,))))
        await b.legs[0].call.refer("sip:202@demo.softswitch")  # a now talks to c
        for _ in range(100):
            if c.legs:
                break
            await asyncio.sleep(0.05)
        assert c.legs, "the transfer never reached 202"
        await asyncio.sleep(0.5)
        await c.legs[0].call.bye()
        plain = await b.call("202")
        await asyncio.sleep(0.5)
        await plain.call.bye()
        await asyncio.sleep(1.0)  # BYEs answered, legs closed, tasks done
        assert not pbx.parties
        gc.collect()
        found = ours(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        for p in (a, b, c):
            await p.stop()
        await clock.stop()
    assert not found, f"freed only by the cycle collector: {found.most_common(12)}"
