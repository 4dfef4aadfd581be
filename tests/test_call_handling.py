"""Call handling with baresip phones, SIPp and a trunk caller on 127.0.0.2: business and
after hours on an injected clock, custom rules, blocked callers, call screening, external
forwarding that must be accepted with 1, voicemail to e-mail."""

from __future__ import annotations

import asyncio
import contextlib
import email
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile
from aiosmtpd.controller import Controller

import sip
from media import g711
from media.audio import load_audio
from rtp.packet import parse_rtp
from softswitch.media_engine import prompt_path
from softswitch.pbx import Pbx

from .audio import active, best_correlation, dominant_frequency
from .netutil import free_port
from .office import Office, frequency, started, stop_all
from .test_sipp import SCENARIOS, counts, run_sipp

pytestmark = pytest.mark.interop

OPEN = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)  # Monday, 11:00 in Paris
CLOSED = datetime(2026, 11, 30, 20, 0, tzinfo=UTC)  # Monday, 21:00
CHRISTMAS_EVE = datetime(2026, 12, 24, 10, 0, tzinfo=UTC)  # a Thursday, business hours
TRUNK_IP = "127.0.0.2"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def handling_office(tmp_path: Path, provider_port: int, smtp_port: int) -> Office:
    office = Office(
        tmp_path,
        extra=f"""
[business_hours]
timezone = "Europe/Paris"
monday = ["09:00-18:00"]
thursday = ["09:00-18:00"]

[[trunks]]
name = "provider"
proxy = "sip:127.0.0.1:{provider_port}"
addresses = ["{TRUNK_IP}"]
inbound_extension = "100"

[blocking]
numbers = ["0899*"]
anonymous = true

[smtp]
host = "127.0.0.1"
port = {smtp_port}
sender = "pbx@office.test"
retry_first = 0.5
retry_max = 1.0
""",
    )
    office.user_extra = {
        "100": """after_hours = "voicemail"
email = { address = "alice@office.test" }
[[users.rules]]
name = "family"
match = { caller = "+3361234*" }
action = "102"
[[users.rules]]
name = "holidays"
match = { dates = ["2026-12-24..2026-12-26"] }
action = "voicemail"
""",
        "101": 'screening = "all"\n',
        "102": """[users.forward]
confirm_external = true
steps = [ { targets = ["0612345678"], ring_seconds = 10 },
          { targets = ["101"], ring_seconds = 10 } ]
""",
    }
    return office


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.provider_port = free_port()
        self.smtp_port = free_port()
        self.clock = Clock(OPEN)
        self.office = handling_office(tmp_path, self.provider_port, self.smtp_port)
        self.pbx: Pbx | None = None

    async def start(self) -> Pbx:
        self.pbx = await self.office.start_inprocess(wallclock=self.clock)
        return self.pbx


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    s = Setup(tmp_path)
    await s.start()
    yield s
    assert s.pbx is not None
    await s.pbx.stop()


async def test_business_hours_rules_and_holidays(setup: Setup) -> None:
    office = setup.office
    alice = office.phone("alice", "100", 600.0, answer="manual")
    bob = office.phone("bob", "101", 800.0)
    carol = office.phone("carol", "102", 1200.0)
    await started(alice, bob, carol)
    try:
        await bob.command("dial", f"sip:100@127.0.0.1:{office.port}")  # open: Alice rings
        await alice.wait_event("CALL_INCOMING")
        await bob.command("hangup")
        await alice.wait_event("CALL_CLOSED")
        for when in (CLOSED, CHRISTMAS_EVE):  # after hours, and the holiday rule
            setup.clock.now = when
            calls = len(bob.seen("CALL_ESTABLISHED"))
            await bob.command("dial", f"sip:100@127.0.0.1:{office.port}")
            await bob.wait_event("CALL_ESTABLISHED", calls + 1)  # voicemail answers
            await asyncio.sleep(1.0)
            await bob.command("hangup")
            await bob.wait_event("CALL_CLOSED", calls + 1)
        assert len(alice.seen("CALL_INCOMING")) == 1  # her phone rang in hours only
        # a caller-ID rule: SIPp, as the provider's trunk, calls Alice from +33612345678
        setup.clock.now = OPEN
        scenario = setup.tmp / "family.xml"
        scenario.write_text(
            (SCENARIOS / "invite_call.xml")
            .read_text()
            .replace("NUMBER", "100")
            .replace("CALLER", "+33612345678")
        )
        args = [f"127.0.0.1:{office.port}", "-sf", str(scenario), "-m", "1", "-i", TRUNK_IP]
        args += ["-p", str(free_port(host=TRUNK_IP))]
        result = await asyncio.to_thread(run_sipp, args)
        assert result.returncode == 0 and counts(result.stdout) == (1, 0), result.stdout[-1500:]
        assert len(carol.seen("CALL_ESTABLISHED")) == 1  # the rule sent it to Carol
        assert len(alice.seen("CALL_INCOMING")) == 1
    finally:
        await stop_all(alice, bob, carol)


class RtpCapture(asyncio.DatagramProtocol):
    """Every RTP packet that arrives, decoded in sequence order at the end (no jitter
    buffer and no clock of ours between the PBX and the check)."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets.append(data)

    def audio(self) -> np.ndarray:
        packets = sorted((parse_rtp(p) for p in self.packets), key=lambda p: p.sequence)
        payload = b"".join(p.payload for p in packets if p.payload_type == 0)
        return g711.ulaw_decode(np.frombuffer(payload, np.uint8))


async def trunk_call(setup: Setup, caller: str, seconds: float) -> tuple[np.ndarray, bool]:
    """A call from the trunk's address to 100 as ``caller``: what it heard, and whether
    the PBX ended it."""
    loop = asyncio.get_running_loop()
    capture = RtpCapture()
    transport, _ = await loop.create_datagram_endpoint(lambda: capture, local_addr=(TRUNK_IP, 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        async with sip.UserAgent(f"udp:{TRUNK_IP}:0", user=caller) as ua:
            call = await ua.invite(
                f"sip:100@127.0.0.1:{setup.office.port}",
                bytes(sip.make_offer(TRUNK_IP, port, (sip.PCMU,))),
                from_=f"<sip:{caller}@{TRUNK_IP}>",
                timeout=10,
            )
            with contextlib.suppress(TimeoutError):
                await call.wait_ended(seconds)
            ended_by_pbx = call.state is sip.CallState.ENDED
            await call.hangup()
    finally:
        transport.close()
    return capture.audio(), ended_by_pbx


async def test_blocked_callers_hear_the_message_and_nothing_rings(setup: Setup) -> None:
    alice = setup.office.phone("alice", "100", 600.0)
    await started(alice)
    try:
        message = load_audio(prompt_path("blocked"), 8000)
        for caller in ("0899123456", "anonymous"):
            heard, ended = await trunk_call(setup, caller, len(message) / 8000 + 2.0)
            assert ended  # the PBX hung up after the message
            assert best_correlation(message, active(heard)) > 0.8
        assert not alice.seen("CALL_INCOMING")
        assert setup.pbx is not None and setup.pbx.counters["blocked"] == 2
    finally:
        await stop_all(alice)


async def test_screening_the_callee_hears_the_name_then_chooses(setup: Setup) -> None:
    office = setup.office
    voice = setup.tmp / "carol-voice.wav"
    subprocess.run(
        ["espeak-ng", "-w", str(setup.tmp / "raw.wav"), "Carol Dupont calling about the invoice"],
        check=True,
    )
    spoken = load_audio(setup.tmp / "raw.wav", 8000)
    # baresip ends a call when its source file ends: a minute of Carol saying it again
    soundfile.write(voice, np.tile(spoken, 30), 8000, subtype="PCM_16")
    bob = office.phone("bob", "101", 800.0, answer="manual")
    carol = office.phone("carol", "102", 1200.0)
    carol.source = voice  # Carol speaks; she says her name when asked
    await started(bob, carol)
    try:
        for n, key in enumerate(("1", "2"), 1):
            await carol.command("dial", f"sip:101@127.0.0.1:{office.port}")
            await bob.wait_event("CALL_INCOMING", n, timeout=20)  # after her name
            await bob.command("accept")
            await bob.wait_event("CALL_ESTABLISHED", n)
            await asyncio.sleep(3.0)
            await bob.command("sndcode", key)
            if key == "1":
                await asyncio.sleep(2.5)  # bridged: Carol hears Bob
                assert abs(frequency(carol.recording(), -2.0) - 800) < 10
                await carol.command("hangup")
                await bob.wait_event("CALL_CLOSED", n)
                heard, rate = soundfile.read(bob.recording(), dtype="int16")
                # "call from" (~0.6 s), then 3 s of Carol (her looped file): her voice
                name = heard[int(1.0 * rate) : int(2.5 * rate)]
                assert best_correlation(np.tile(spoken, 3), name) > 0.6
            else:
                await bob.wait_event("CALL_CLOSED", n)  # 2: Bob is released
                await asyncio.sleep(1.0)
                assert carol.seen("CALL_ESTABLISHED")[-1]  # Carol stays: voicemail
                await carol.command("hangup")
    finally:
        await stop_all(bob, carol)


async def test_external_forward_needs_a_key_else_the_next_step_rings(setup: Setup) -> None:
    office = setup.office
    provider = await asyncio.create_subprocess_exec(
        "sipp",
        *("-sn", "uas", "-i", "127.0.0.1", "-p", str(setup.provider_port), "-nostdin"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=str(setup.tmp),
    )
    alice = office.phone("alice", "100", 600.0)
    bob = office.phone("bob", "101", 800.0)
    await started(alice, bob)  # Carol (102) has no phone: her steps ring the mobile
    try:
        await alice.command("dial", f"sip:102@127.0.0.1:{office.port}")
        # SIPp's uas answers as the mobile but never presses 1: after the prompt and
        # the wait, that is no answer, and the next step rings Bob
        await bob.wait_event("CALL_ESTABLISHED", timeout=40)  # (Bob auto-answers)
    finally:
        provider.terminate()
        await provider.wait()
        await stop_all(alice, bob)


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))  # type: ignore[attr-defined]
        return "250 OK"


async def test_voicemail_by_email_waits_for_the_server(setup: Setup) -> None:
    office = setup.office
    setup.clock.now = CLOSED  # Alice's after-hours rule: voicemail
    bob = office.phone("bob", "101", 800.0)
    await started(bob)
    try:
        await bob.command("dial", f"sip:100@127.0.0.1:{office.port}")
        await bob.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(11)  # greeting (~7 s), beep, then Bob's tone
        await bob.command("hangup")
        await bob.wait_event("CALL_CLOSED")
    finally:
        await stop_all(bob)
    await asyncio.sleep(1.5)  # the SMTP server is down: retries
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=setup.smtp_port)
    controller.start()
    try:
        for _ in range(50):
            if inbox.messages:
                break
            await asyncio.sleep(0.1)
    finally:
        controller.stop()
    [mail] = inbox.messages
    assert mail["To"] == "alice@office.test"
    [attachment] = [part for part in mail.walk() if part.get_filename() == "message.wav"]
    wav = setup.tmp / "attached.wav"
    data = attachment.get_payload(decode=True)
    assert isinstance(data, bytes)
    wav.write_bytes(data)
    audio, rate = soundfile.read(wav, dtype="int16")
    assert abs(dominant_frequency(active(audio[int(0.3 * rate) :]), rate) - 800) < 10
    assert list((office.data_dir / "voicemail" / "100").glob("*.wav"))  # still in the box
