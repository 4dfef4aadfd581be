"""Drive baresip (a SIP softphone this project did not write) headless, over ctrl_tcp.

Each phone gets a private config directory, plays a WAV file as its microphone (aufile),
records what it receives (sndfile: ``*-dec.wav``), and is scripted with ctrl_tcp JSON
netstrings; the events it streams (CALL_INCOMING, CALL_ESTABLISHED, MWI_NOTIFY, ...) are
collected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG = """\
poll_method epoll
sip_listen 127.0.0.1:{sip_port}
net_interface 127.0.0.1
audio_player aufile,/dev/null
audio_source aufile,{source}
audio_alert aufile,/dev/null
audio_channels 1
audio_srate {srate}
jitter_buffer_delay 2-10
rtp_ports {rtp_start}-{rtp_end}
module_path /usr/lib/baresip/modules
module g711.so
{codec_modules}module aufile.so
module sndfile.so
module_app account.so
module_app menu.so
module_app contact.so
module_app ctrl_tcp.so
{extra_modules}ctrl_tcp_listen 127.0.0.1:{ctrl_port}
snd_path {records}
"""

# baresip's Opus: asks for at most 16 kbit/s (maxaveragebitrate) and for in-band FEC
OPUS_CONFIG = ("opus_bitrate 16000", "opus_inbandfec yes")


def baresip_binary() -> str:
    path = shutil.which("baresip")
    if path is None:
        raise RuntimeError("baresip is not installed: run scripts/system-deps.sh")
    return path


# pids of the baresip processes started and not yet stopped: tests/conftest.py kills what a
# failing test left behind, so that it cannot disturb the next tests
RUNNING: set[int] = set()


@dataclass
class Phone:
    name: str
    directory: Path
    account: str
    source: Path  # WAV played as the microphone
    sip_port: int
    ctrl_port: int
    rtp_start: int
    mwi: bool = False  # load baresip's mwi module (subscribes to message-summary)
    srate: int = 8000  # baresip's audio rate (source file, player, sndfile)
    modules: tuple[str, ...] = ()  # codec modules beside g711.so, e.g. ("g722.so",)
    events: list[dict[str, Any]] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)
    proc: asyncio.subprocess.Process | None = None
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _task: asyncio.Task[None] | None = None
    _token: int = 0

    @property
    def records(self) -> Path:
        return self.directory / "records"

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.records.mkdir(exist_ok=True)
        (self.directory / "config").write_text(
            CONFIG.format(
                sip_port=self.sip_port,
                source=self.source,
                ctrl_port=self.ctrl_port,
                records=self.records,
                rtp_start=self.rtp_start,
                rtp_end=self.rtp_start + 20,
                extra_modules="module_app mwi.so\n" if self.mwi else "",
                srate=self.srate,
                codec_modules="".join(f"module {m}\n" for m in self.modules)
                + (
                    "".join(f"{line}\n" for line in OPUS_CONFIG)
                    if "opus.so" in self.modules
                    else ""
                ),
            )
        )
        # The account is added over ctrl_tcp once we listen to events: we then see its
        # REGISTER_OK, and baresip 1.0's mwi module, which loops forever when an account
        # registers within a millisecond of its start-up timer, subscribes only once.
        (self.directory / "accounts").write_text("")
        (self.directory / "contacts").write_text("")
        log = open(self.directory / "baresip.log", "wb")  # noqa: SIM115 (kept for the process)
        self.proc = await asyncio.create_subprocess_exec(
            baresip_binary(),
            "-f",
            str(self.directory),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        RUNNING.add(self.proc.pid)
        deadline = time.monotonic() + 10
        while True:
            try:
                self._reader, self._writer = await asyncio.open_connection(
                    "127.0.0.1", self.ctrl_port
                )
                break
            except OSError:
                if self.proc.returncode is not None or time.monotonic() > deadline:
                    log.flush()
                    tail = (self.directory / "baresip.log").read_text(errors="replace")[-1500:]
                    raise RuntimeError(
                        f"{self.name}: baresip ctrl_tcp did not open on {self.ctrl_port} "
                        f"(exit status {self.proc.returncode}); its log ends:\n{tail}"
                    ) from None
                await asyncio.sleep(0.1)
        self._task = asyncio.create_task(self._read())
        await asyncio.sleep(0.05)
        await self.command("uanew", self.account)

    async def _read(self) -> None:
        assert self._reader is not None
        while True:
            try:
                length = await self._reader.readuntil(b":")
                data = await self._reader.readexactly(int(length[:-1]))
                await self._reader.readexactly(1)  # ","
            except (asyncio.IncompleteReadError, ValueError, ConnectionError):
                return
            message = json.loads(data)
            message["at"] = time.monotonic()  # when the test saw it
            if message.get("event"):
                self.events.append(message)
            elif message.get("response"):
                self.responses.append(message)

    async def command(self, command: str, params: str = "") -> None:
        assert self._writer is not None
        self._token += 1
        body = json.dumps({"command": command, "params": params, "token": str(self._token)})
        self._writer.write(f"{len(body)}:{body},".encode())
        await self._writer.drain()

    def seen(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]

    async def wait_event(self, kind: str, count: int = 1, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while len(self.seen(kind)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name}: no {kind} (events: {[e.get('type') for e in self.events]})"
                )
            await asyncio.sleep(0.05)
        return self.seen(kind)[count - 1]

    def recording(self) -> Path:
        """The newest recording of received audio."""
        files = sorted(self.records.glob("*-dec.wav"), key=lambda p: p.stat().st_mtime)
        if not files:
            raise FileNotFoundError(f"{self.name}: no recording in {self.records}")
        return files[-1]

    async def stop(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self.command("quit")
            self._writer.close()
        if self.proc is not None:
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
            RUNNING.discard(self.proc.pid)
        if self._task is not None:
            self._task.cancel()
