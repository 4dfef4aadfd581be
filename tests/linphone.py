"""Drive linphonec (Debian ``linphone-cli``, liblinphone 5.1: its own SIP and media
stacks, belle-sip and mediastreamer2) headless over its standard input.

Pitfalls it settles (found on liblinphone 5.1): it never gets going without
``$HOME/.local/share/linphone`` (no REGISTER, no error), so each phone has a HOME of its
own; it rewrites its configuration file on exit; ``ports sip N`` would replace its TLS
listener with UDP; registration prints nothing (``status register`` is polled); a call
is up once "Media streams established" (it may print "connected." and then refuse the
answer's SDP). ``nat_address`` + ``firewall_policy`` keep 127.0.0.1 in its Contact and
SDP, ``bind_address`` and ``use_ipv6=0`` keep its media on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

CONFIG = """\
[net]
nat_address=127.0.0.1
firewall_policy=1
[rtp]
audio_rtp_port={rtp_port}
bind_address=127.0.0.1
[sound]
echocancellation=0
[sip]
use_ipv6=0
ipv6_migration_done=1
sip_port=0
sip_tcp_port=0
sip_tls_port={tls_port}
root_ca={root_ca}
media_encryption={encryption}
media_encryption_mandatory={mandatory}
contact=sip:{user}@127.0.0.1
guess_hostname=0
"""


def linphonec_binary() -> str:
    path = shutil.which("linphonec")
    if path is None:
        raise RuntimeError("linphonec is not installed: run scripts/system-deps.sh")
    return path


@dataclass
class Linphone:
    """A linphonec phone over TLS, SRTP mandatory unless ``encryption`` says "none"."""

    directory: Path
    user: str
    tls_port: int
    rtp_port: int
    root_ca: Path  # the server's certificate (linphonec checks it)
    encryption: str = "srtp"
    lines: list[str] = field(default_factory=list)
    proc: asyncio.subprocess.Process | None = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        home = self.directory / "home"
        (home / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        config = self.directory / "linphonerc"
        config.write_text(
            CONFIG.format(
                rtp_port=self.rtp_port,
                tls_port=self.tls_port,
                root_ca=self.root_ca,
                encryption=self.encryption,
                mandatory=int(self.encryption != "none"),
                user=self.user,
            )
        )
        self.proc = await asyncio.create_subprocess_exec(
            linphonec_binary(),
            "-c",
            str(config),
            "-d",
            "0",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        )
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with (self.directory / "linphonec.log").open("w") as log:
            while line := await self.proc.stdout.readline():
                text = line.decode(errors="replace").rstrip("\n")
                self.lines.append(text)
                log.write(f"{time.monotonic():.2f} {text}\n")
                log.flush()

    async def command(self, text: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()

    async def wait_for(self, pattern: str, timeout: float = 15.0, since: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[since:]:
                if re.search(pattern, line):
                    return line
            await asyncio.sleep(0.05)
        raise TimeoutError(f"linphonec {self.user}: no {pattern!r} in {self.lines[-15:]}")

    async def register(self, proxy: str, password: str, timeout: float = 10.0) -> None:
        await self.command(f"register sip:{self.user}@127.0.0.1 {proxy} {password}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mark = len(self.lines)
            await self.command("status register")
            with contextlib.suppress(TimeoutError):
                await self.wait_for(r"registered, identity=", 0.5, since=mark)
                return
        raise TimeoutError(f"linphonec {self.user}: not registered ({self.lines[-10:]})")

    async def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ConnectionError):
            await self.command("quit")
        try:
            await asyncio.wait_for(self.proc.wait(), 8)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        if self._task is not None:
            await asyncio.wait_for(self._task, 5)
