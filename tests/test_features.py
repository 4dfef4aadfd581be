"""Features on the plugin seam, with baresip phones and SIPp over loopback: ring groups
(simultaneous, sequential, external steps), call flip, transfers that follow the target's
rules."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import soundfile

from softswitch.features.hold_music import builtin_music

from .audio import active, best_correlation, dominant_frequency
from .baresip import Phone
from .office import Office, frequency, segment, started, stop_all
from .test_pbx import office, provider_invites
from .test_sipp import sipp

pytestmark = pytest.mark.interop
__all__ = ["office"]  # the fixture


def caller(office: Office) -> Phone:
    return office.phone("caller", "103", 1000.0, password="dave103")


def at(phone: Phone, kind: str, count: int = 1) -> float:
    return float(phone.seen(kind)[count - 1]["at"])


def voicemail_frequency(office: Office, mailbox: str) -> float:
    [message] = list((office.data_dir / "voicemail" / mailbox).glob("*.wav"))
    audio, rate = segment(message, 0.3)
    return dominant_frequency(active(audio), rate)


async def test_ring_group_rings_members_together_first_answer_wins(office: Office) -> None:
    office.extra = """
[[ring_groups]]
extension = "600"
name = "Sales"
steps = [ { targets = ["100", "101", "102"], ring_seconds = 20 } ]
"""
    office.start()
    dave = caller(office)
    members = [
        office.phone("alice", "100", 600.0, answer="manual"),
        office.phone("bob", "101", 800.0, answer="manual"),
        office.phone("carol", "102", 1200.0, answer="manual"),
    ]
    await started(dave, *members)
    try:
        await dave.command("dial", f"sip:600@127.0.0.1:{office.port}")
        for member in members:
            await member.wait_event("CALL_INCOMING")
        await members[1].command("accept")
        await members[1].wait_event("CALL_ESTABLISHED")
        await dave.wait_event("CALL_ESTABLISHED")
        await members[0].wait_event("CALL_CLOSED")  # the others got CANCEL
        await members[2].wait_event("CALL_CLOSED")
        await asyncio.sleep(3)
        await dave.command("hangup")
        await members[1].wait_event("CALL_CLOSED")
    finally:
        await stop_all(dave, *members)
    assert abs(frequency(dave.recording(), 0.5) - 800) < 10  # Dave hears Bob
    assert abs(frequency(members[1].recording(), 0.5) - 1000) < 10  # and Bob hears Dave
    assert not members[0].seen("CALL_ESTABLISHED") and not members[2].seen("CALL_ESTABLISHED")


async def test_ring_group_steps_follow_their_ring_times_then_voicemail(
    office: Office, tmp_path: Path
) -> None:
    """Sequential steps, the caller hearing music while they ring, then voicemail."""
    music = builtin_music(8000)
    soundfile.write(tmp_path / "moh.wav", music, 8000, subtype="PCM_16")
    office.extra = f"""
[hold_music]
default = "{tmp_path / "moh.wav"}"

[[ring_groups]]
extension = "601"
name = "Support"
steps = [ {{ targets = ["101"], ring_seconds = 5 }}, {{ targets = ["102"], ring_seconds = 5 }} ]
no_answer = "voicemail:100"
caller_hears = "music"
"""
    office.start()
    dave = caller(office)
    bob = office.phone("bob", "101", 800.0, answer="manual")
    carol = office.phone("carol", "102", 1200.0, answer="manual")
    await started(dave, bob, carol)
    try:
        t0 = time.monotonic()
        await dave.command("dial", f"sip:601@127.0.0.1:{office.port}")
        await bob.wait_event("CALL_INCOMING")
        await carol.wait_event("CALL_INCOMING", timeout=10)
        await dave.wait_event("CALL_ESTABLISHED", timeout=10)  # voicemail answers
        await bob.wait_event("CALL_CLOSED")
        await asyncio.sleep(11)  # greeting (~7 s), beep, then a message
        await dave.command("hangup")
        await dave.wait_event("CALL_CLOSED")
    finally:
        await stop_all(dave, bob, carol)
    t_bob, t_carol = at(bob, "CALL_INCOMING"), at(carol, "CALL_INCOMING")
    t_vm = at(dave, "CALL_ESTABLISHED")
    assert t_bob - t0 < 0.5
    assert abs(t_carol - t_bob - 5) < 0.5 and abs(at(bob, "CALL_CLOSED") - t_carol) < 0.5
    assert abs(t_vm - t_carol - 5) < 0.5
    assert abs(voicemail_frequency(office, "100") - 1000) < 10  # the caller's message
    ringing, _ = segment(dave.recording(), 1.0, t_vm - t0 - 2.5)  # early media: the music
    assert best_correlation(ringing, music[8000:24000]) > 0.6


async def test_ring_group_external_step_only_when_the_group_may_call_out(
    office: Office, tmp_path: Path
) -> None:
    from .netutil import free_port

    provider_port = free_port()
    office.extra = f"""
[[trunks]]
name = "provider"
proxy = "sip:127.0.0.1:{provider_port}"

[[ring_groups]]
extension = "602"
name = "Internal only"
steps = [ {{ targets = ["0123456789"], ring_seconds = 5 }} ]

[[ring_groups]]
extension = "603"
name = "Mobile"
permission = "national"
steps = [ {{ targets = ["0123456789"], ring_seconds = 5 }} ]
"""
    office.start()
    provider = await asyncio.create_subprocess_exec(
        sipp(),
        *("-sn", "uas", "-i", "127.0.0.1", "-p", str(provider_port), "-nostdin"),
        *("-timeout", "60s", "-trace_stat", "-stf", str(tmp_path / "provider.csv"), "-fd", "1"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=str(tmp_path),
    )
    dave = caller(office)
    await started(dave)
    try:
        await dave.command("dial", f"sip:602@127.0.0.1:{office.port}")
        await dave.wait_event("CALL_CLOSED")  # nothing may ring: the group gives up
        assert not dave.seen("CALL_ESTABLISHED")
        assert await provider_invites(tmp_path) == 0
        await dave.command("dial", f"sip:603@127.0.0.1:{office.port}")
        await dave.wait_event("CALL_ESTABLISHED")  # SIPp's uas answers as the mobile
        await dave.command("hangup")
        await dave.wait_event("CALL_CLOSED", 2)
        assert await provider_invites(tmp_path) == 1
    finally:
        provider.terminate()
        await provider.wait()
        await stop_all(dave)


FLIP_DEVICES = """
[[users.devices]]
name = "desk"
username = "100-desk"
password = "desk-secret"
flip = 1
[[users.devices]]
name = "soft"
username = "100-soft"
password = "soft-secret"
flip = 2
"""


async def test_call_flip_moves_the_call_to_another_device(office: Office) -> None:
    office.user_extra["100"] = FLIP_DEVICES
    office.start()
    bob = office.phone("bob", "101", 800.0)
    desk = office.phone("desk", "100-desk", 600.0, password="desk-secret")
    soft = office.phone("soft", "100-soft", 1200.0, password="soft-secret", answer="manual")
    await started(bob, desk, soft)
    try:
        t0 = time.monotonic()
        await bob.command("dial", f"sip:100@127.0.0.1:{office.port}")
        await desk.wait_event("CALL_ESTABLISHED")  # the desk answers, the soft phone stops
        await soft.wait_event("CALL_CLOSED")
        await asyncio.sleep(1.5)
        await desk.command("sndcode", "*9")  # not a flip code: relayed to Bob
        await asyncio.sleep(0.5)
        await desk.command("sndcode", "*")  # a lone star: relayed after the window
        await asyncio.sleep(3.0)
        await desk.command("sndcode", "*2")  # flip to device 2
        await soft.wait_event("CALL_INCOMING", 2)  # its second ringing
        await soft.command("accept")
        await soft.wait_event("CALL_ESTABLISHED")
        t_flip = time.monotonic() - t0
        await desk.wait_event("CALL_CLOSED")  # the first device got BYE
        await asyncio.sleep(3)
        await bob.command("hangup")
        await soft.wait_event("CALL_CLOSED")
    finally:
        await stop_all(bob, desk, soft)
    keys = [e.get("param") for e in bob.events if e.get("type") == "CALL_DTMF_START"]
    assert keys == ["*", "9", "*"], bob.events
    recording = bob.recording()
    assert abs(frequency(recording, 0.5, 2.0) - 600) < 10  # the desk first
    assert abs(frequency(recording, t_flip + 0.5) - 1200) < 10  # then the soft phone
    assert len(bob.seen("CALL_ESTABLISHED")) == 1  # one call for Bob all along


async def test_blind_transfer_to_unregistered_extension_reaches_its_voicemail(
    office: Office,
) -> None:
    office.start()
    alice = office.phone("alice", "100", 1000.0)
    bob = office.phone("bob", "101", 600.0)
    await started(alice, bob)  # 102 has no phone: its unreachable rule is voicemail
    try:
        await alice.command("dial", f"sip:101@127.0.0.1:{office.port}")
        await alice.wait_event("CALL_ESTABLISHED")
        await bob.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(1.0)
        await bob.command("transfer", f"sip:102@127.0.0.1:{office.port}")
        await bob.wait_event("CALL_CLOSED")  # the transfer succeeded: Bob is released
        await asyncio.sleep(11)  # Alice hears the greeting (~7 s) and leaves her tone
        await alice.command("hangup")
        await alice.wait_event("CALL_CLOSED")
    finally:
        await stop_all(alice, bob)
    assert abs(voicemail_frequency(office, "102") - 1000) < 10
