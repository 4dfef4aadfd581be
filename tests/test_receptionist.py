"""The virtual receptionist with baresip phones: keys, barge-in, dial-by-name, direct
extension dialling, the spoken greeting, retries, after hours (an injected clock)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import soundfile

from ivr import Speech
from media.audio import load_audio
from media.tones import sine_mix
from softswitch.pbx import Pbx

from .audio import best_correlation
from .baresip import Phone
from .netutil import daemon, free_port, rtp_base
from .office import Office, frequency, segment, started, stop_all
from .test_features import caller

pytestmark = pytest.mark.interop

GREETING = "Welcome to the office. For Alice press 1. For Bob press 2. To dial by name press 9."
CLOSED = "We are closed. Press 1 for the duty phone."
RECEPTIONIST = f"""
[business_hours]
timezone = "Europe/Paris"
monday = ["09:00-18:00"]
tuesday = ["09:00-18:00"]

[[ivr]]
extension = "500"
name = "Reception"
greeting = "{GREETING}"
dial_extension = true
default = "102"
[ivr.keys]
"1" = "100"
"2" = "101"
"9" = "dial_by_name"
[ivr.after_hours]
greeting = "{CLOSED}"
keys = {{ "1" = "101" }}
"""
OPEN = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)  # a Monday, 11:00 in Paris
CLOSED_AT = datetime(2026, 11, 29, 22, 0, tzinfo=UTC)  # a Sunday night


class Reception:
    def __init__(self, office: Office, pbx: Pbx) -> None:
        self.office, self.pbx = office, pbx
        self.dave = caller(office)
        self.alice = office.phone("alice", "100", 600.0)
        self.bob = office.phone("bob", "101", 800.0)
        self.carol = office.phone("carol", "102", 1200.0)
        self.phones = [self.dave, self.alice, self.bob, self.carol]

    async def call(self, keys: list[tuple[float, str]], reached: Phone) -> float:
        """Dave calls 500 and types ``keys`` (each after a pause); ``reached`` answers.
        Returns when (after the answer) the keys were sent, relative to Dave's answer."""
        dave = self.dave
        calls = len(dave.seen("CALL_ESTABLISHED"))
        answered = len(reached.seen("CALL_ESTABLISHED"))
        await dave.command("dial", f"sip:500@127.0.0.1:{self.office.port}")
        await dave.wait_event("CALL_ESTABLISHED", calls + 1)
        t0 = time.monotonic()
        sent = 0.0
        for pause, digits in keys:
            await asyncio.sleep(pause)
            sent = time.monotonic() - t0
            await dave.command("sndcode", digits)
        await reached.wait_event("CALL_ESTABLISHED", answered + 1, timeout=20)
        await asyncio.sleep(2.5)
        await dave.command("hangup")
        await reached.wait_event("CALL_CLOSED", answered + 1)
        await asyncio.sleep(0.3)
        return sent


@pytest.fixture
async def reception(tmp_path: Path) -> AsyncIterator[Reception]:
    office = Office(tmp_path, extra=RECEPTIONIST)
    pbx = await office.start_inprocess(wallclock=lambda: OPEN)
    r = Reception(office, pbx)
    await started(*r.phones)
    yield r
    await stop_all(*r.phones)
    await pbx.stop()


async def test_a_key_cuts_the_greeting_and_reaches_the_extension(reception: Reception) -> None:
    r = reception
    pressed = await r.call([(1.5, "2")], r.bob)
    recording = r.dave.recording()
    assert abs(frequency(recording, pressed + 0.6, pressed + 2.5) - 800) < 10  # Bob, at once
    assert abs(frequency(r.bob.recording(), 0.5) - 1000) < 10  # and Bob hears Dave


async def test_dial_by_name_one_match_and_a_choice(reception: Reception) -> None:
    r = reception
    # 9 acts after the pause in which it could have started an extension
    await r.call([(1.0, "9"), (2.5, "627")], r.alice)  # MAR: Alice Martin alone
    await r.call([(1.0, "9"), (2.5, "387"), (1.0, "2")], r.carol)  # DUR/DUP: choose


async def test_direct_dial_invalid_extension_and_retries(reception: Reception) -> None:
    r = reception
    await r.call([(1.0, "102")], r.carol)
    await r.call([(1.0, "999"), (4.0, "2")], r.bob)  # invalid, the menu again, then 2
    await r.call([(1.0, "#"), (2.0, "*"), (2.0, "#")], r.carol)  # three invalid: default


async def test_the_caller_hears_the_rendered_greeting(reception: Reception) -> None:
    r = reception
    spoken = load_audio(Speech(r.office.data_dir / "tts").path(GREETING), 8000)
    seconds = len(spoken) / 8000
    await r.call([(seconds + 0.5, "2")], r.bob)  # listen to all of it, then 2
    heard, _ = segment(r.dave.recording(), 0.0, seconds + 0.5)
    assert best_correlation(heard, spoken) > 0.8


async def test_after_hours_the_after_hours_menu_answers(tmp_path: Path) -> None:
    office = Office(tmp_path, extra=RECEPTIONIST)
    pbx = await office.start_inprocess(wallclock=lambda: CLOSED_AT)
    r = Reception(office, pbx)
    await started(*r.phones)
    try:
        await r.call([(1.0, "1")], r.bob)  # "1" is Bob after hours (Alice in the day)
        spoken = load_audio(Speech(office.data_dir / "tts").path(CLOSED), 8000)
        heard, _ = segment(r.dave.recording(), 0.0, 1.0)
        assert best_correlation(heard, spoken[:8000]) > 0.8
    finally:
        await stop_all(*r.phones)
        await pbx.stop()


def direct_phone(tmp_path: Path, name: str, tone_hz: float) -> Phone:
    """A baresip phone with no registrar: reached at its own address, auto-answers."""
    directory = tmp_path / f"phone-{name}"
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / "tone.wav"
    soundfile.write(source, sine_mix((tone_hz,), 8000 * 60, 8000, -12), 8000, subtype="PCM_16")
    sip_port = free_port()
    account = f"<sip:{name}@127.0.0.1:{sip_port}>;regint=0;answermode=auto;audio_codecs=PCMU"
    return Phone(
        name, directory, account, source, sip_port, free_port(), rtp_base(low=40000, high=50000)
    )


async def test_auto_attendant_example_transfers_a_baresip_call_by_refer(tmp_path: Path) -> None:
    """examples/auto_attendant.py: no PBX; key 2 sends the caller to Bob with REFER."""
    dave = direct_phone(tmp_path, "dave", 1000.0)
    bob = direct_phone(tmp_path, "bob", 800.0)
    port = free_port()
    args = ["examples/auto_attendant.py", "--listen", f"127.0.0.1:{port}"]
    args += ["--key", "1=sip:nobody@127.0.0.1:9", "--key", f"2=sip:bob@127.0.0.1:{bob.sip_port}"]
    args += ["--cache", str(tmp_path / "tts"), "--rtp-start", "36000", "--rtp-end", "36100"]
    for phone in (dave, bob):
        await phone.start()
    try:
        with daemon(args, "auto_attendant listening") as proc:
            await dave.command("dial", f"sip:attendant@127.0.0.1:{port}")
            await dave.wait_event("CALL_ESTABLISHED")
            await asyncio.sleep(1.5)
            await dave.command("sndcode", "2")  # during the greeting: barge-in
            await bob.wait_event("CALL_ESTABLISHED")  # Dave's phone followed the REFER
            proc.wait_for(r"REFER to sip:bob@127.0.0.1:\d+: 202")
            await asyncio.sleep(2.0)
            await dave.command("hangup")
            await bob.wait_event("CALL_CLOSED")
    finally:
        await stop_all(dave, bob)
    assert abs(frequency(bob.recording(), 0.5) - 1000) < 10  # Bob hears Dave
