"""An ordinary day logs no trouble: a baresip call with hold and resume, phones that
refuse unsolicited MWI — the daemon's log has no WARNING, and a phone that answers an MWI
NOTIFY with 481 gets no more until it subscribes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import sip
from softswitch.features.voicemail import Voicemail

from .baresip import Phone
from .office import Office, demo_pbx

pytestmark = pytest.mark.interop


@pytest.fixture
async def office(tmp_path: Path) -> AsyncIterator[Office]:
    o = Office(tmp_path)
    yield o
    o.stop()


async def test_a_call_with_hold_logs_no_warning(office: Office) -> None:
    daemon = office.start()
    alice = office.phone("alice", "100", 1000.0)
    bob = office.phone("bob", "101", 600.0)
    phones: list[Phone] = [alice, bob]
    try:
        for p in phones:
            await p.start()
        for p in phones:
            await p.wait_event("REGISTER_OK")
        await alice.command("dial", f"sip:101@127.0.0.1:{office.port}")
        await alice.wait_event("CALL_ESTABLISHED")
        await bob.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(2)  # RTP and RTCP both ways (baresip sends RTCP every ~5 s)
        await bob.command("hold")
        await asyncio.sleep(2)
        await bob.command("resume")
        await asyncio.sleep(6)
        await alice.command("hangup")
        await bob.wait_event("CALL_CLOSED")
    finally:
        for p in phones:
            await p.stop()
    warnings = [line for line in daemon.lines if " WARNING " in line or " ERROR " in line]
    assert not warnings, "".join(warnings)


async def test_a_phone_that_refuses_unsolicited_mwi_is_not_told_again_until_it_subscribes(
    tmp_path: Path,
) -> None:
    pbx = await demo_pbx(tmp_path, rtp=35200)
    port = pbx.ua.listeners[0].port
    voicemail = pbx.registry.feature("voicemail")
    assert isinstance(voicemail, Voicemail)
    unsolicited: list[sip.Request] = []
    try:
        async with sip.UserAgent("udp:127.0.0.1:0", user="100") as phone:

            def refuse(incoming: sip.IncomingRequest) -> None:
                if incoming.request.to.tag:  # the subscription's own (in its dialog)
                    incoming.respond(200)
                    return
                unsolicited.append(incoming.request)
                incoming.respond(481)  # out of any dialog: baresip 1.0 does this

            phone.handlers["NOTIFY"] = refuse
            await phone.register(
                f"sip:127.0.0.1:{port}",
                aor="sip:100@demo.softswitch",
                username="100",
                password="alice100",
                expires=300,
            )
            await voicemail.notify("100")
            assert len(unsolicited) == 1
            await voicemail.notify("100")  # a new message, a registration refresh...
            assert len(unsolicited) == 1  # ...tells it nothing more
            sub = await phone.subscribe(
                f"sip:100@127.0.0.1:{port}",
                "message-summary",
                credentials=("100", "alice100"),
            )
            await sub.close()  # it subscribed once: unsolicited NOTIFYs may come again
            await voicemail.notify("100")
            assert len(unsolicited) == 2
    finally:
        await pbx.stop()
