"""RTP hijack attempts (issue 9, finding 1) on the PBX in-process, over loopback.

An attacker on another loopback address sends well-formed RTP — a 1500 Hz tone, RFC 4733
keys, RTCP — to the PBX's media ports, taken from the SDP, 50 packets/s per port, in
sequence. It must receive nothing, and its audio and keys must not enter the call; a
phone whose NAT mapping really changes mid-call must still be followed within ~1 s.
Audio is checked by frequency: alice 1000 Hz, bob 600 Hz, the greeting 700 Hz.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from media.tones import sine_mix, tone
from softswitch.pbx import Pbx

from .office import demo_pbx, voicemail_store
from .rtp_peers import ATTACKER_IP, Attacker, Nat, Phone, band_share, until

ATTACK_HZ = 1500.0
GREETING_S = 1.5
VOICEMAIL_USER = """
[[users]]
extension = "103"
name = "Dan Vide"
password = "dan103pass"
pin = "1103"
greeting = "{greeting}"
"""


@pytest.fixture
async def pbx(tmp_path: Path) -> AsyncIterator[Pbx]:
    greeting = tmp_path / "greeting.wav"
    soundfile.write(greeting, sine_mix((700.0,), int(8000 * GREETING_S), 8000, -12), 8000)
    p = await demo_pbx(tmp_path, extra=VOICEMAIL_USER.format(greeting=greeting))
    yield p
    await p.stop()


def _policy_counters(pbx: Pbx) -> dict[str, dict[str, int]]:
    """Each party's strict-RTP counters (for the report; empty on code without them)."""
    out: dict[str, dict[str, int]] = {}
    for party in pbx.parties:
        counters = party.leg.policy.counters.as_dict()
        out[party.label] = {k: v for k, v in counters.items() if v}
    return out


def rejected(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The security log's rtp_source_rejected lines."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "security" and r.getMessage().startswith("event=rtp_source_rejected ")
    ]


async def test_hijack_of_a_bridged_call(pbx: Pbx, caplog: pytest.LogCaptureFixture) -> None:
    port = pbx.ua.listeners[0].port
    alice, bob = Phone("100", "alice100", port, 1000.0), Phone("101", "bob101", port, 600.0)
    attacker = Attacker(ATTACK_HZ)
    for p in (alice, bob):
        await p.start()
    await attacker.start()
    loop = asyncio.get_running_loop()
    try:
        await alice.dial("101")
        await until(lambda: bob.pbx_media is not None)
        await asyncio.sleep(0.5)  # both legs have learnt their phones
        assert alice.pbx_media is not None and bob.pbx_media is not None
        caplog.set_level(logging.WARNING, logger="security")
        for target in (alice.pbx_media, bob.pbx_media):
            attacker.keys(target, "9#")
        start = loop.time()
        await attacker.attack([alice.pbx_media, bob.pbx_media], 2.0)
        end = loop.time()
        await asyncio.sleep(0.3)
        bob_heard, alice_heard = bob.audio(start + 0.2, end), alice.audio(start + 0.2, end)
        print(
            f"\nbridged: attacker sent={attacker.sent} received={len(attacker.received)}"
            f" bob hears 1000Hz={band_share(bob_heard, 1000):.3f}"
            f" {ATTACK_HZ:.0f}Hz={band_share(bob_heard, ATTACK_HZ):.4f};"
            f" alice hears 600Hz={band_share(alice_heard, 600):.3f}"
            f" {ATTACK_HZ:.0f}Hz={band_share(alice_heard, ATTACK_HZ):.4f};"
            f" keys at bob={bob.digits} at alice={alice.digits}"
            f" counters={_policy_counters(pbx)}"
        )
        assert attacker.received == []
        assert band_share(bob_heard, 1000) > 0.8 and band_share(bob_heard, ATTACK_HZ) < 0.01
        assert band_share(alice_heard, 600) > 0.8 and band_share(alice_heard, ATTACK_HZ) < 0.01
        assert bob.digits == [] and alice.digits == []
        # both legs are on the one shared port, where no leg owns the attacker's IP: in
        # the security log one line per refused source (its RTP, its RTCP), not per packet
        src = re.compile(rf"src={re.escape(ATTACKER_IP)}:\d+ user=(\S+) method=- reason=(\S+)$")
        lines = rejected(caplog)
        assert sorted(m.groups() for line in lines if (m := src.search(line))) == [
            ("-", "rtcp_foreign"),
            ("-", "unexpected"),
        ], lines
        stats = pbx.engine.stats  # every forged packet counted, RTCP included
        assert stats["strays_unexpected"] >= 190 and stats["strays_rtcp_foreign"] >= 6
        for party in pbx.parties:
            leg = party.leg
            assert leg.remote is not None and leg.remote[0] == "127.0.0.1"
            assert leg.remote_rtcp is not None and leg.remote_rtcp[0] == "127.0.0.1"
    finally:
        attacker.close()
        for p in (alice, bob):
            await p.stop()


async def test_hijack_of_a_voicemail_call(pbx: Pbx) -> None:
    """The caller keeps silent during the greeting (no packets: voice activity detection),
    which is when three forged packets used to take the whole greeting."""
    port = pbx.ua.listeners[0].port
    alice = Phone("100", "alice100", port, 1000.0)
    alice.talking = False
    attacker = Attacker(ATTACK_HZ)
    await alice.start()
    await attacker.start()
    loop = asyncio.get_running_loop()
    talk = 2.0
    try:
        call = await alice.dial("103")  # no device registered: straight to voicemail
        answered = loop.time()
        assert alice.pbx_media is not None
        target = alice.pbx_media
        party = next(p for p in pbx.parties if p.label == "100")
        beep = len(tone("beep", "us")[0]) / 8000
        attack = asyncio.ensure_future(attacker.attack([target], GREETING_S + beep + talk + 0.8))
        await asyncio.sleep(0.3)
        attacker.keys(target, "#")  # during the greeting
        await asyncio.sleep(GREETING_S + beep + 0.2)
        alice.talking = True  # the recording has started
        await asyncio.sleep(0.4)
        attacker.keys(target, "#")  # '#' would end the message
        await asyncio.sleep(talk - 0.4)
        await call.bye()
        await attack
        store = voicemail_store(pbx)
        assert store is not None
        with contextlib.suppress(AssertionError):
            await until(lambda: store.messages("103"), 3.0)
        messages = store.messages("103")
        seconds = messages[0].seconds if messages else 0.0
        recorded = (
            soundfile.read(messages[0].path, dtype="int16")[0]
            if messages
            else np.zeros(0, np.int16)
        )
        greeting = alice.audio(answered + 0.3, answered + GREETING_S - 0.1)
        print(
            f"\nvoicemail: attacker sent={attacker.sent} received={len(attacker.received)}"
            f" alice hears greeting 700Hz={band_share(greeting, 700):.3f};"
            f" message {seconds:.2f}s 1000Hz={band_share(recorded, 1000):.3f}"
            f" {ATTACK_HZ:.0f}Hz={band_share(recorded, ATTACK_HZ):.4f}"
            f" keys taken={party.leg.counters.dtmf_received}"
            f" strays={pbx.engine.stats['strays_unexpected']}"
        )
        assert attacker.received == []  # none of the greeting
        assert band_share(greeting, 700) > 0.8
        assert seconds >= talk - 0.3  # the forged '#' did not end it
        assert party.leg.counters.dtmf_received == 0
        assert band_share(recorded, 1000) > 0.8 and band_share(recorded, ATTACK_HZ) < 0.01
        assert pbx.engine.stats["strays_unexpected"] >= 50  # nobody's on the shared port
    finally:
        attacker.close()
        await alice.stop()


async def test_hijack_of_a_conference_leg(pbx: Pbx, caplog: pytest.LogCaptureFixture) -> None:
    """A packet that reaches the bridge before the caller's first RTP does not take the
    leg; the attacker's keys (the host code) are not taken."""
    port = pbx.ua.listeners[0].port
    alice = Phone("100", "alice100", port, 1000.0)
    alice.talking = False
    attacker = Attacker(ATTACK_HZ)
    await alice.start()
    await attacker.start()
    try:
        await alice.dial("800")
        assert alice.pbx_media is not None and alice.session is not None
        attacker.keys(alice.pbx_media, "1001#")  # Alice's host code
        caplog.set_level(logging.WARNING, logger="security")
        attack = asyncio.ensure_future(attacker.attack([alice.pbx_media], 1.5))
        await asyncio.sleep(0.3)
        alice.talking = True  # her first RTP comes after the attacker's
        await attack
        await asyncio.sleep(0.3)
        assert pbx.conference is not None
        engine = pbx.engine
        member = next(iter(pbx.conference.legs))
        leg = member.leg
        heard = np.concatenate([f for _, f in alice.heard])
        print(
            f"\nconference: attacker sent={attacker.sent} received={len(attacker.received)}"
            f" leg source={leg.policy.current} alice={alice.session.local}"
            f" leg received={leg.received}"
            f" alice heard peak={int(np.abs(heard).max())} rooms={list(pbx.conference.rooms)}"
            f" engine={ {k: v for k, v in engine.stats.items() if v} }"
        )
        assert attacker.received == []
        assert leg.policy.current == alice.session.local
        assert np.abs(heard).max() > 1000  # she hears the "enter your code" prompt
        assert member.room is None and not pbx.conference.rooms  # the forged code was not taken
        assert engine.stats["strays_unexpected"] >= 70
        # once per burst and source (its RTP, its RTCP: the bridge reads RTCP since
        # issue 17), in the security log
        lines = rejected(caplog)
        assert len(lines) == 2, lines
        for line in lines:
            assert re.match(rf"event=rtp_source_rejected src={re.escape(ATTACKER_IP)}:\d+ ", line)
        assert sorted(line.rsplit("reason=", 1)[1] for line in lines) == [
            "rtcp_foreign",
            "unexpected",
        ]
        assert all(" user=- method=- reason=" in line for line in lines)
    finally:
        attacker.close()
        await alice.stop()


async def test_nat_rebinding_mid_call_is_followed(pbx: Pbx) -> None:
    """Alice's NAT gives her RTP a new port mid-call and the old one falls silent: the
    PBX follows within about a second, both ways, and the call goes on."""
    port = pbx.ua.listeners[0].port
    alice, bob = Phone("100", "alice100", port, 1000.0), Phone("101", "bob101", port, 600.0)
    nat = Nat()
    await nat.start()
    for p in (alice, bob):
        await p.start()
    loop = asyncio.get_running_loop()
    try:
        await alice.dial("101", nat=nat)
        await until(lambda: bob.pbx_media is not None)
        await asyncio.sleep(1.0)
        before = nat.outer
        assert band_share(bob.audio(loop.time() - 0.5, loop.time()), 1000) > 0.8
        await nat.rebind()
        rebound = loop.time()
        await asyncio.sleep(2.0)
        bob_back = bob.first_heard(1000, rebound)
        alice_back = alice.first_heard(600, rebound)
        party = next(p for p in pbx.parties if p.label == "100")
        print(
            f"\nnat rebinding: {before} -> {nat.outer}; bob hears alice again after"
            f" {None if bob_back is None else round(bob_back - rebound, 3)}s, alice hears bob"
            f" after {None if alice_back is None else round(alice_back - rebound, 3)}s;"
            f" pbx sends to {party.leg.remote} counters={_policy_counters(pbx)}"
        )
        # about a second: 0.5 s of silence from the old port (the probation runs meanwhile),
        # then two jitter buffers and ten clean frames in a row; measured 0.5-0.8 s
        assert bob_back is not None and bob_back - rebound < 1.2
        assert alice_back is not None and alice_back - rebound < 1.2
        assert party.leg.remote == nat.outer
        now = loop.time()
        assert band_share(bob.audio(now - 0.8, now), 1000) > 0.8  # and it goes on
        assert band_share(alice.audio(now - 0.8, now), 600) > 0.8
        assert party.leg.policy.counters.moved == 1
    finally:
        for p in (alice, bob):
            await p.stop()
