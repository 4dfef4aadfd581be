"""What the daemon writes under its data directory is private (issue 9, finding 9):
files 0600, directories 0700, whatever the umask."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile

from media.tones import sine_mix
from softswitch.private_files import private_dir, private_file, write_private_text

from .office import demo_pbx, voicemail_store
from .rtp_peers import Phone, until


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_helpers_ignore_the_umask(tmp_path: Path) -> None:
    with umask(0):
        d = private_dir(tmp_path / "a" / "b")
        f = private_file(d / "x.wav", exclusive=True)
        write_private_text(d / "codes.json", "{}")
    assert mode(tmp_path / "a") == mode(d) == 0o700
    assert mode(f) == mode(d / "codes.json") == 0o600
    assert (d / "codes.json").read_text() == "{}"
    assert sorted(os.listdir(d)) == ["codes.json", "x.wav"]  # no temporary file left
    with pytest.raises(FileExistsError):
        private_file(f, exclusive=True)


def test_files_the_daemon_owns_are_tightened(tmp_path: Path) -> None:
    (tmp_path / "voicemail").mkdir(mode=0o755)
    os.chmod(tmp_path / "voicemail", 0o755)
    (tmp_path / "voicemail.sqlite").write_bytes(b"")
    os.chmod(tmp_path / "voicemail.sqlite", 0o644)
    os.chmod(tmp_path, 0o750)  # the data directory an administrator made: theirs
    private_dir(tmp_path / "voicemail")
    private_file(tmp_path / "voicemail.sqlite")
    private_dir(tmp_path, own=False)
    assert mode(tmp_path / "voicemail") == 0o700 and mode(tmp_path / "voicemail.sqlite") == 0o600
    assert mode(tmp_path) == 0o750


async def test_voicemail_codes_and_recordings_are_private(tmp_path: Path) -> None:
    """Under umask 000 (the worst case): a voicemail left, conference codes generated
    (users 101 and 102 have none in the demo), a conference recording made."""
    greeting = tmp_path / "greeting.wav"
    soundfile.write(greeting, sine_mix((700.0,), 4000, 8000, -12), 8000)
    extra = f"""
[[users]]
extension = "103"
name = "Dan Vide"
password = "dan103pass"
pin = "1103"
greeting = "{greeting}"
"""
    with umask(0):
        pbx = await demo_pbx(tmp_path, extra=extra)
        alice = Phone("100", "alice100", pbx.ua.listeners[0].port, 1000.0)
        try:
            await alice.start()
            call = await alice.dial("103")
            await asyncio.sleep(0.5 + 0.25 + 1.5)  # greeting, beep, a message
            await call.bye()
            store = voicemail_store(pbx)
            assert store is not None
            await until(lambda: store.messages("103"), 3.0)
            room = pbx.conference.room("100")
            recording = room.start_recording()
            room.stop_recording()
        finally:
            await alice.stop()
            await pbx.stop()
    data = tmp_path / "data"
    files = [p for p in data.rglob("*") if p.is_file()]
    dirs = [data, *(p for p in data.rglob("*") if p.is_dir())]
    names = {p.relative_to(data).as_posix() for p in files}
    assert {"voicemail.sqlite", "conference-codes.json"} <= names
    assert any(n.startswith("voicemail/103/") and n.endswith(".wav") for n in names)
    assert recording in files
    assert {p.relative_to(data).as_posix(): oct(mode(p)) for p in files if mode(p) != 0o600} == {}
    assert {p.as_posix(): oct(mode(p)) for p in dirs if mode(p) != 0o700} == {}
