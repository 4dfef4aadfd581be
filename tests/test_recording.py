"""Call recording, archiving, extension kinds and voicemail completeness, with baresip
phones and this project's UA over loopback, and an SFTP server (asyncssh) started here."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncssh
import numpy as np
import pytest
import soundfile

from media.audio import load_audio
from softswitch.features.recording import CallRecording
from softswitch.media_engine import prompt_path

from .audio import active, best_correlation, dominant_frequency
from .baresip import Phone
from .office import Office, demo_pbx, started, stop_all
from .test_pbx_inprocess import SoftPhone

pytestmark = pytest.mark.interop

CLOSED = datetime(2026, 11, 30, 20, 0, tzinfo=UTC)  # Monday 21:00 in Paris


def recordings(data_dir: Path) -> list[tuple[str, str, float, str]]:
    with sqlite3.connect(data_dir / "recordings.sqlite") as db:
        return db.execute("SELECT path, parties, seconds, started_by FROM recordings").fetchall()


def level(audio: np.ndarray, hz: float, rate: int = 8000) -> float:
    """The share of ``audio``'s energy within 20 Hz of ``hz``."""
    x = audio.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spectrum[np.abs(freqs - hz) < 20].sum() / (spectrum.sum() + 1e-9))


async def test_on_demand_recording_both_channels_announcement_and_refusal(
    tmp_path: Path,
) -> None:
    office = Office(tmp_path)
    office.user_extra["100"] = '[users.recording]\nmode = "on_demand"\nannounce = true\n'
    office.start()
    alice = office.phone("alice", "100", 600.0)
    bob = office.phone("bob", "101", 1000.0)
    await started(alice, bob)
    try:
        await alice.command("dial", f"sip:101@127.0.0.1:{office.port}")
        await alice.wait_event("CALL_ESTABLISHED")
        await bob.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(1.5)
        t_refused = time.monotonic()
        await bob.command("sndcode", "*9")  # Bob may not record: a refusal tone
        await asyncio.sleep(2.0)
        t_start = time.monotonic()
        await alice.command("sndcode", "*9")  # Alice starts recording: both hear so
        await asyncio.sleep(5.0)
        await alice.command("sndcode", "*9")  # and stops it
        await asyncio.sleep(1.0)
        await alice.command("hangup")
        await bob.wait_event("CALL_CLOSED")
    finally:
        await stop_all(alice, bob)
        office.stop()
    [(path, parties, seconds, by)] = recordings(office.data_dir)  # Bob's *9 made none
    assert by == "100" and parties == "100,101" and 2.5 < seconds < 5.5
    audio, rate = soundfile.read(path, dtype="int16")
    assert audio.shape[1] == 2  # stereo: one channel per party
    talk = audio[int(2.5 * rate) :]  # after the announcement
    assert abs(dominant_frequency(active(talk[:, 0]), rate) - 600) < 10  # Alice's channel
    assert abs(dominant_frequency(active(talk[:, 1]), rate) - 1000) < 10  # Bob's channel
    notice = load_audio(prompt_path("rec-started"), 8000)
    for phone in (alice, bob):
        heard, rate = soundfile.read(phone.recording(), dtype="int16")
        # the recording starts with the media, up to a second before the event: a wide window
        start = t_start - float(phone.seen("CALL_ESTABLISHED")[0]["at"])
        window = heard[max(0, int((start - 1.5) * rate)) : int((start + 3.5) * rate)]
        assert best_correlation(window, notice) > 0.6  # both hear the announcement
    heard, rate = soundfile.read(bob.recording(), dtype="int16")
    refused = t_refused - float(bob.seen("CALL_ESTABLISHED")[0]["at"])
    tone_share = max(  # the congestion tone (480 + 620 Hz), to Bob, in 0.5 s slices around
        level(heard[int(t * rate) : int((t + 0.5) * rate)], 620)
        for t in np.arange(max(0.0, refused - 1.5), refused + 1.5, 0.1)
    )
    assert tone_share > 0.3


class SftpServer:
    """An SFTP server on loopback (asyncssh), rooted in a directory, password login."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.key = asyncssh.generate_private_key("ssh-ed25519")
        self.server: asyncssh.SSHAcceptor | None = None

    def known_hosts(self, path: Path) -> Path:
        public = self.key.export_public_key().decode().strip()
        path.write_text(f"[127.0.0.1]:{self.port} {public}\n")
        return path

    async def start(self) -> None:
        root = str(self.root).encode()

        class Login(asyncssh.SSHServer):
            def begin_auth(self, username: str) -> bool:
                return True

            def password_auth_supported(self) -> bool:
                return True

            def validate_password(self, username: str, password: str) -> bool:
                return username == "rec" and password == "rec-secret"

        class Rooted(asyncssh.SFTPServer):
            def __init__(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
                super().__init__(chan, chroot=root)

        self.server = await asyncssh.listen(
            "127.0.0.1",
            self.port,
            server_host_keys=[self.key],
            server_factory=Login,
            sftp_factory=Rooted,
        )

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_always_record_archive_when_the_server_comes_and_retention(tmp_path: Path) -> None:
    from .netutil import free_port

    sftp_root = tmp_path / "sftp"
    sftp_root.mkdir()
    server = SftpServer(sftp_root, free_port())
    known = server.known_hosts(tmp_path / "known_hosts")
    pbx = await demo_pbx(
        tmp_path,
        extra=f"""
[users.recording]
mode = "always"

[recording]
retention_days = 30
[recording.archive]
host = "127.0.0.1"
port = {server.port}
username = "rec"
password = "rec-secret"
known_hosts = "{known}"
remote_dir = "calls"
interval_seconds = 1.0
retry_first = 0.3
retry_max = 1.0
""",  # the demo's last user, 102, records every call
    )
    feature = pbx.registry.feature("recording")
    assert isinstance(feature, CallRecording)
    port = pbx.ua.listeners[0].port
    alice = SoftPhone("100", "alice100", port, 600.0)
    carol = SoftPhone("102", "carol102", port, 1000.0)
    for phone in (alice, carol):
        await phone.start()
    try:
        call = await alice.call("102")  # Carol records every call: no key
        await asyncio.sleep(2.0)
        await call.bye()
        await asyncio.sleep(0.5)
        [(path, _, seconds, by)] = recordings(pbx.data_dir)
        assert by == "always:102" and seconds > 1.0
        local = Path(path)
        audio, rate = soundfile.read(local, dtype="int16")
        assert abs(dominant_frequency(active(audio[:, 1]), rate) - 1000) < 10
        assert feature.archiver is not None
        await asyncio.sleep(1.0)  # the server is down: the archiver retries
        assert feature.archiver.archived == 0 and local.exists()
        await server.start()
        for _ in range(60):
            if feature.archiver.archived:
                break
            await asyncio.sleep(0.1)
        copy = sftp_root / "calls" / local.name
        assert copy.read_bytes() == local.read_bytes()
        assert (
            hashlib.sha256(copy.read_bytes()).hexdigest()
            == hashlib.sha256(local.read_bytes()).hexdigest()
        )
        assert local.exists()  # kept until retention
        assert feature.expire(time.time() + 29 * 86400) == 0
        assert feature.expire(time.time() + 31 * 86400) == 1 and not local.exists()
    finally:
        for phone in (alice, carol):
            await phone.stop()
        server.close()
        await pbx.stop()


def spoken(tmp_path: Path, name: str, text: str) -> Path:
    raw = tmp_path / f"{name}-raw.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True)
    out = tmp_path / f"{name}.wav"
    soundfile.write(out, load_audio(raw, 8000), 8000, subtype="PCM_16")
    return out


async def test_message_only_after_hours_greeting_forwarding_and_caller_id(tmp_path: Path) -> None:
    info = spoken(tmp_path, "info", "You have reached the information line. Leave a message.")
    closed = spoken(tmp_path, "closed", "Bob is away this evening. Please leave a message.")
    office = Office(
        tmp_path,
        extra=f"""
[business_hours]
timezone = "Europe/Paris"
monday = ["09:00-18:00"]

[[ring_groups]]
extension = "600"
name = "Sales"
steps = [ {{ targets = ["101", "102"], ring_seconds = 10 }} ]

[[users]]
extension = "700"
name = "Info line"
kind = "message_only"
password = "info-line-700"
pin = "7700"
greeting = "{info}"
""",
    )
    office.user_extra["101"] = (
        f'caller_id_display = "dialled"\n[users.greetings]\nafter_hours = "{closed}"\n'
    )
    pbx = await office.start_inprocess(wallclock=lambda: CLOSED)
    alice = office.phone("alice", "100", 600.0, mwi=True)
    bob = office.phone("bob", "101", 1000.0, answer="manual")
    carol = office.phone("carol", "102", 800.0, answer="manual")
    line = office.phone("line", "700", 300.0, password="info-line-700")
    await started(alice, bob, carol, line)
    late: list[Phone] = []  # phones started on the way: stopped whatever happens
    try:
        # the information line: its greeting, a message, and its phone never rings
        await alice.command("dial", f"sip:700@127.0.0.1:{office.port}")
        await alice.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(len(load_audio(info)) / 8000 + 3.0)
        await alice.command("hangup")
        await alice.wait_event("CALL_CLOSED")
        heard, rate = soundfile.read(alice.recording(), dtype="int16")
        assert best_correlation(heard, load_audio(info)[:16000]) > 0.8
        assert not line.seen("CALL_INCOMING")
        # after hours, Bob's unanswered calls get his after-hours greeting
        await carol.command("dial", f"sip:101@127.0.0.1:{office.port}")
        await bob.wait_event("CALL_INCOMING")
        assert "sip:102@" in bob.seen("CALL_INCOMING")[0].get("param", "")  # a direct call
        await asyncio.sleep(0.5)
        await carol.command("hangup")
        # the ring group: Bob chose to see the number dialled, Carol the caller
        await alice.command("dial", f"sip:600@127.0.0.1:{office.port}")
        await bob.wait_event("CALL_INCOMING", 2)
        await carol.wait_event("CALL_INCOMING")
        assert "sip:600@" in bob.seen("CALL_INCOMING")[1].get("param", "")
        assert "sip:100@" in carol.seen("CALL_INCOMING")[0].get("param", "")
        await alice.command("hangup")
        await asyncio.sleep(1.0)
        # after hours, Bob's voicemail says his after-hours greeting
        mwi = len(alice.seen("MWI_NOTIFY"))
        await bob.stop()  # unreachable: straight to voicemail
        calls = len(carol.seen("CALL_ESTABLISHED"))
        await carol.command("dial", f"sip:101@127.0.0.1:{office.port}")
        await carol.wait_event("CALL_ESTABLISHED", calls + 1)
        await asyncio.sleep(len(load_audio(closed)) / 8000 + 3.5)
        await carol.command("hangup")
        heard, rate = soundfile.read(carol.recording(), dtype="int16")
        assert best_correlation(heard, load_audio(closed)[:16000]) > 0.8
        # Bob forwards Carol's message to Alice with an introduction, from a new phone
        bob2 = office.phone("bob2", "101", 1000.0)
        late.append(bob2)
        await started(bob2)
        await bob2.command("dial", f"sip:*97@127.0.0.1:{office.port}")
        await bob2.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(3.5)  # "Please enter your PIN..."
        await bob2.command("sndcode", "1101#")
        await asyncio.sleep(3.0 + 3.5)  # "You have 1 new message", the message
        await asyncio.sleep(6.0)  # the message menu
        await bob2.command("sndcode", "8")
        await asyncio.sleep(4.5)  # "Enter the mailbox..."
        await bob2.command("sndcode", "100#")
        await asyncio.sleep(4.0 + 4.0)  # "Enter the mailbox", "Record an introduction", beep
        await asyncio.sleep(2.0)  # Bob's tone as the introduction
        await bob2.command("sndcode", "#")
        await alice.wait_event("MWI_NOTIFY", mwi + 1, timeout=20)
        assert "Messages-Waiting: yes" in alice.seen("MWI_NOTIFY")[-1].get("param", "")
        await bob2.command("hangup")
    finally:
        await stop_all(alice, bob, carol, line, *late)
        await pbx.stop()
    [forwarded] = list((office.data_dir / "voicemail" / "100").glob("*.wav"))
    audio, rate = soundfile.read(forwarded, dtype="int16")
    assert abs(dominant_frequency(active(audio[: int(1.5 * rate)]), rate) - 1000) < 10  # Bob
    assert abs(dominant_frequency(active(audio[-int(1.5 * rate) :]), rate) - 800) < 10  # Carol
