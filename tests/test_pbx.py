"""The PBX daemon with foreign phones (baresip) and SIPp, over loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import soundfile

from softswitch.features.hold_music import builtin_music

from .audio import active, best_correlation, dominant_frequency
from .baresip import Phone
from .office import Office, frequency, segment, started, stop_all

pytestmark = pytest.mark.interop


@pytest.fixture
async def office(tmp_path: Path) -> AsyncIterator[Office]:
    o = Office(tmp_path)
    yield o
    o.stop()


async def test_two_phones_call_each_other(office: Office) -> None:
    office.start()
    alice = office.phone("alice", "100", 1000.0)
    bob = office.phone("bob", "101", 600.0)
    await started(alice, bob)
    try:
        await alice.command("dial", f"sip:101@127.0.0.1:{office.port}")
        await alice.wait_event("CALL_ESTABLISHED")
        await bob.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(3)
        await alice.command("hangup")
        await bob.wait_event("CALL_CLOSED")
    finally:
        await stop_all(alice, bob)
    assert abs(frequency(alice.recording(), 0.5) - 600) < 10  # Alice hears Bob's tone
    assert abs(frequency(bob.recording(), 0.5) - 1000) < 10  # and Bob hears Alice's


async def test_hold_plays_music_and_resume_restores(office: Office, tmp_path: Path) -> None:
    music = builtin_music(8000)
    moh = tmp_path / "moh.wav"
    soundfile.write(moh, music, 8000, subtype="PCM_16")
    office.extra = f'[hold_music]\ndefault = "{moh}"\n'
    office.start()
    alice = office.phone("alice", "100", 1000.0)
    bob = office.phone("bob", "101", 600.0)
    await started(alice, bob)
    try:
        await alice.command("dial", f"sip:101@127.0.0.1:{office.port}")
        await alice.wait_event("CALL_ESTABLISHED")
        t0 = time.monotonic()
        await bob.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(2.5)
        await bob.command("hold")  # Bob puts Alice on hold: re-INVITE a=sendonly
        t_hold = time.monotonic() - t0
        await asyncio.sleep(5)
        await bob.command("resume")
        t_resume = time.monotonic() - t0
        await asyncio.sleep(3)
        await alice.command("hangup")
        await bob.wait_event("CALL_CLOSED")
    finally:
        await stop_all(alice, bob)
    recording = alice.recording()
    assert abs(frequency(recording, 0.5, t_hold - 0.3) - 600) < 10
    held, _ = segment(recording, t_hold + 1.0, t_resume - 0.5)
    assert best_correlation(held, music[8000:24000]) > 0.6  # the hold music, not silence
    assert abs(frequency(recording, t_resume + 1.0) - 600) < 10  # Bob again


async def test_blind_transfer_to_third_extension(office: Office) -> None:
    office.start()
    alice = office.phone("alice", "100", 1000.0)
    bob = office.phone("bob", "101", 600.0)
    carol = office.phone("carol", "102", 800.0)
    await started(alice, bob, carol)
    try:
        await alice.command("dial", f"sip:101@127.0.0.1:{office.port}")
        await alice.wait_event("CALL_ESTABLISHED")
        t0 = time.monotonic()  # Alice's recording starts about now
        await bob.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(2.0)
        t_refer = time.monotonic() - t0
        await bob.command("transfer", f"sip:102@127.0.0.1:{office.port}")  # REFER
        await carol.wait_event("CALL_ESTABLISHED")
        t_carol = time.monotonic() - t0
        await bob.wait_event("CALL_CLOSED")  # the transferor is released
        await asyncio.sleep(3)
        await alice.command("hangup")
        await carol.wait_event("CALL_CLOSED")
    finally:
        await stop_all(alice, bob, carol)
    recording = alice.recording()  # one call for Alice from start to end
    assert abs(frequency(recording, 0.3, t_refer - 0.2) - 600) < 10  # Bob first
    assert abs(frequency(recording, t_carol + 0.5) - 800) < 10  # then Carol
    assert abs(frequency(carol.recording(), 0.5) - 1000) < 10  # Carol hears Alice


async def leave_message(office: Office, caller: Phone, callee_ext: str, seconds: float) -> None:
    await caller.command("dial", f"sip:{callee_ext}@127.0.0.1:{office.port}")
    await caller.wait_event("CALL_ESTABLISHED", timeout=30)
    await asyncio.sleep(8.5 + seconds)  # greeting (~7 s) and beep, then the tone
    await caller.command("hangup")
    await caller.wait_event("CALL_CLOSED")


async def test_busy_and_no_answer_forward_to_voicemail_mwi_and_restart(office: Office) -> None:
    office.user_extra = {"101": "[users.forward]\nno_answer_after = 10\n"}
    office.start()
    alice = office.phone("alice", "100", 1000.0)
    carol = office.phone("carol", "102", 700.0)
    bob = office.phone("bob", "101", 600.0, answer="manual", mwi=True)
    await started(alice, carol, bob)
    try:
        await asyncio.sleep(1.0)
        first_mwi = await bob.wait_event("MWI_NOTIFY")
        assert "Messages-Waiting: no" in first_mwi.get("param", "")
        # busy: Bob's phone rejects the call (486), Alice reaches voicemail
        busy = asyncio.ensure_future(leave_message(office, alice, "101", 3))
        await bob.wait_event("CALL_INCOMING")
        await bob.command("hangup")
        await busy
        notify = await bob.wait_event("MWI_NOTIFY", count=2, timeout=10)
        assert "Messages-Waiting: yes" in notify["param"]
        assert "Voice-Message: 1/0" in notify["param"]
        # no answer: Bob's phone rings 10 s, then Carol reaches voicemail
        await asyncio.sleep(1.2)
        started_at = time.monotonic()
        await leave_message(office, carol, "101", 3)
        assert time.monotonic() - started_at > 10
        notify = await bob.wait_event("MWI_NOTIFY", count=3, timeout=10)
        assert "Voice-Message: 2/0" in notify["param"]
    finally:
        await stop_all(alice, carol, bob)

    office.restart()  # voicemail is on disk and in SQLite: nothing is lost
    bob = office.phone("bob2", "101", 600.0)
    await started(bob)
    try:
        await bob.command("dial", f"sip:*97@127.0.0.1:{office.port}")
        await bob.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(4.0)  # "Please enter your PIN, followed by the pound key."
        for digit in "1101#":
            await bob.command("sndcode", digit)
            await asyncio.sleep(0.3)
        await asyncio.sleep(3.5 + 4.0)  # "You have two new messages", the first message
        await bob.command("hangup")
    finally:
        await stop_all(bob)
    heard, rate = segment(bob.recording(), 8.0, 14.0)
    assert abs(dominant_frequency(active(heard), rate) - 1000) < 10  # Alice's message


# -- security: refused passwords, and no toll fraud through the trunk ---------------------


def test_sipp_wrong_password_is_refused(office: Office, tmp_path: Path) -> None:
    from .netutil import free_port
    from .test_sipp import SCENARIOS, counts, run_sipp

    office.start()
    for password, expected in (("wrong", 403), ("bob101", 200)):
        scenario = tmp_path / f"register-{expected}.xml"
        scenario.write_text(
            (SCENARIOS / "register_auth.xml").read_text().replace("EXPECTED", str(expected))
        )
        result = run_sipp(
            [
                f"127.0.0.1:{office.port}",
                "-sf",
                str(scenario),
                "-s",
                "101",
                "-au",
                "101",
                "-ap",
                password,
                "-i",
                "127.0.0.1",
                "-p",
                str(free_port()),
                "-m",
                "1",
            ]
        )
        assert result.returncode == 0 and counts(result.stdout) == (1, 0), result.stdout[-2000:]


async def test_unauthenticated_calls_never_reach_the_trunk(office: Office, tmp_path: Path) -> None:
    """A SIPp UAS stands in for the provider. A stranger's INVITE to an external number
    is challenged and never forwarded; an authenticated user with the permission gets
    through (so the provider does count INVITEs when they come)."""
    import sip

    from .netutil import free_port
    from .test_sipp import SCENARIOS, counts, run_sipp, sipp

    provider_port = free_port()
    office.extra = (
        f'[[trunks]]\nname = "provider"\nproxy = "sip:127.0.0.1:{provider_port}"\n'
        f'addresses = ["192.0.2.99"]\n'
    )
    office.start()
    provider = await asyncio.create_subprocess_exec(
        sipp(),
        "-sn",
        "uas",
        "-i",
        "127.0.0.1",
        "-p",
        str(provider_port),
        "-nostdin",
        "-timeout",
        "60s",
        "-trace_stat",
        "-stf",
        str(tmp_path / "provider.csv"),
        "-fd",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=str(tmp_path),
    )
    await asyncio.sleep(0.5)
    try:
        # a stranger (no credentials) dials a national number: 407, nothing else
        scenario = tmp_path / "stranger.xml"
        scenario.write_text(
            (SCENARIOS / "invite_expect.xml")
            .read_text()
            .replace("EXPECTED", "407")
            .replace("NUMBER", "0123456789")
        )
        result = await asyncio.to_thread(
            run_sipp,
            [
                f"127.0.0.1:{office.port}",
                "-sf",
                str(scenario),
                "-i",
                "127.0.0.1",
                "-p",
                str(free_port()),
                "-m",
                "3",
            ],
        )
        assert result.returncode == 0 and counts(result.stdout) == (3, 0), result.stdout[-2000:]
        async with sip.UserAgent("udp:127.0.0.1:0", user="101") as ua:

            async def dial(number: str, password: str) -> sip.OutgoingCall:
                return await ua.invite(
                    f"sip:{number}@127.0.0.1:{office.port}",
                    bytes(sip.make_offer("127.0.0.1", 40000)),
                    credentials=("101", password),
                    timeout=10,
                )

            # wrong password, international number: challenged, then refused
            with pytest.raises(sip.RequestFailed) as info:
                await dial("0044123456789", "guess")
            assert info.value.status == 403
            # Bob (national permission) may not call abroad even with his password
            with pytest.raises(sip.RequestFailed) as info:
                await dial("0044123456789", "bob101")
            assert info.value.status == 403
            assert await provider_invites(tmp_path) == 0
            # and with his password, a national call goes out through the trunk
            call = await dial("0123456789", "bob101")
            await call.bye()
    finally:
        provider.terminate()
        await provider.wait()
    assert await provider_invites(tmp_path) == 1


async def provider_invites(tmp_path: Path) -> int:
    """Calls SIPp's uas has seen, from its statistics file (refreshed every second)."""
    await asyncio.sleep(1.2)
    rows = (tmp_path / "provider.csv").read_text().splitlines()
    header = rows[0].split(";")
    column = header.index("IncomingCall(C)")
    return int(rows[-1].split(";")[column])
