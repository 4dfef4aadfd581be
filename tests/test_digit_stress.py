"""Thousands of keys into ``collect_digits`` across call set-up races: none lost.

A feature of the test's own answers number 790 and collects the caller's keys, or, on
791, rings extension 101 and collects the keys of whoever answers. Callers press keys the
moment the 200 OK arrives (SIP INFO, pipelined; or RFC 4733 events on the RTP stream
they start at once); the callee presses its keys by INFO right after sending its 200, so
they reach the PBX before the PBX has even seen the answer through. Every call must
collect exactly what was pressed, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import Awaitable, Mapping
from pathlib import Path

import sip
from ivr.digits import collect_digits
from rtp import Session
from softswitch.feature import BaseFeature, Dial, Done, Handler, Outcome, Target
from softswitch.features import builtin

from .office import demo_pbx

COLLECTED: dict[str, str] = {}  # the caller's Call-ID -> the keys collected
KEYS = "0123456789*#ABCD"


class DigitSink(BaseFeature):
    name = "digit_sink"

    def numbers(self) -> Mapping[str, Handler]:
        return {"790": self.caller_keys, "791": self.callee_keys}

    async def caller_keys(self, dial: Dial) -> Outcome:
        expected = int(dial.party.call.invite.headers.get("X-Keys") or "0")
        if await self.services.answer(dial.party):
            keys = await collect_digits(
                dial.party.leg, max_digits=expected, terminator=None, first_timeout=10
            )
            COLLECTED[dial.party.call.call_id] = keys
        return Done()

    async def callee_keys(self, dial: Dial) -> Outcome:
        expected = int(dial.party.call.invite.headers.get("X-Keys") or "0")
        result = await self.services.ring(dial.party, [Target("user", "101")], 10)
        if result.party is not None:
            keys = await collect_digits(
                result.party.leg, max_digits=expected, terminator=None, first_timeout=10
            )
            COLLECTED[dial.party.call.call_id] = keys
            await result.party.call.hangup()
        return Done()


def keys(n: int, rng: random.Random) -> str:
    return "".join(rng.choice(KEYS) for _ in range(n))


async def test_no_key_is_lost_across_call_setup(tmp_path: Path) -> None:
    pbx = await demo_pbx(tmp_path, features=[*builtin(), DigitSink], rtp=36000)
    port = pbx.ua.listeners[0].port
    rng = random.Random(19)
    COLLECTED.clear()
    pressed: dict[str, str] = {}
    callee_keys = keys(30, rng)  # what every answering callee presses
    async with (
        contextlib.AsyncExitStack() as stack,
        sip.UserAgent("udp:127.0.0.1:0", user="100") as caller,
        sip.UserAgent("udp:127.0.0.1:0", user="101") as callee,
    ):
        await callee.register(
            f"sip:127.0.0.1:{port}",
            aor="sip:101@softswitch.local",
            username="101",
            password="bob101",
            expires=300,
        )

        # The callee's SDP names a port this test holds: a made-up one could be the
        # ephemeral port of a caller's RTP socket, whose symmetric RTP would then follow
        # the PBX's media for this callee away from its own call (a rare CI failure).
        callee_rtp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        callee_rtp.bind(("127.0.0.1", 0))
        callee_port = callee_rtp.getsockname()[1]

        async def answer(call: sip.IncomingCall) -> None:
            offer = sip.parse_sdp(call.remote_sdp or b"")
            answer_sdp, _ = sip.answer(offer, "127.0.0.1", callee_port, (sip.PCMU,))
            call.answer(bytes(answer_sdp))
            # pressed at once: the PBX may not have processed this 200 OK yet
            await asyncio.gather(*(call.send_dtmf(k) for k in callee_keys))

        callee.on_invite = answer

        async def by_info(number: str, n: int) -> None:
            mine = keys(n, rng) if number == "790" else callee_keys
            session = Session(payload_type=0, rtcp=False)
            local = await session.open("127.0.0.1")
            offer = bytes(sip.make_offer("127.0.0.1", local[1], (sip.PCMU,)))
            call = await caller.invite(
                f"sip:{number}@127.0.0.1:{port}",
                offer,
                credentials=("100", "alice100"),
                headers=[("X-Keys", str(n))],
                wait=number == "790",  # 791 only rings the callee, then ends
                timeout=15,
            )
            pressed[call.call_id] = mine
            if number == "790":
                statuses = await asyncio.gather(*(call.send_dtmf(k) for k in mine))
                assert {r.status for r in statuses} == {200}
            await call.wait_ended(20)
            session.close()

        async def by_rfc4733(n: int) -> None:
            mine = keys(n, rng)
            session = Session(payload_type=0, dtmf_pt=101, rtcp=False)
            local = await session.open("127.0.0.1")
            offer_sdp = sip.make_offer("127.0.0.1", local[1], (sip.PCMU,))
            call = await caller.invite(
                f"sip:790@127.0.0.1:{port}",
                bytes(offer_sdp),
                credentials=("100", "alice100"),
                headers=[("X-Keys", str(n))],
                timeout=15,
            )
            pressed[call.call_id] = mine
            stream = sip.process_answer(offer_sdp, sip.parse_sdp(call.remote_sdp or b""))
            session.set_remote((stream.remote_address, stream.remote_port))
            session.send_dtmf(mine, 60)  # from the very first packet
            silence = b"\xff" * 160
            while call.state is not sip.CallState.ENDED:
                session.send(silence)
                await asyncio.sleep(0.02)
            session.close()

        jobs = [by_info("790", 50) for _ in range(40)]
        jobs += [by_rfc4733(25) for _ in range(16)]
        jobs += [by_info("791", 30) for _ in range(10)]
        rng.shuffle(jobs)

        async def later(delay: float, job: Awaitable[None]) -> None:
            await asyncio.sleep(delay)  # calls start over 3 s, not all in one millisecond
            await job

        await asyncio.gather(*(later(i * 0.05, job) for i, job in enumerate(jobs)))
    await pbx.stop()
    total = sum(len(v) for v in pressed.values())
    lost = {
        cid: (keys_, COLLECTED.get(cid))
        for cid, keys_ in pressed.items()
        if COLLECTED.get(cid) != keys_
    }
    assert total == 40 * 50 + 16 * 25 + 10 * 30
    assert not lost, f"{len(lost)} calls lost keys: {list(lost.values())[:3]}"
