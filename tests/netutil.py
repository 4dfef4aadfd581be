"""Test helpers: a lossy UDP relay, free ports, subprocess daemons."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# Ports handed to servers a test starts come from below the kernel's ephemeral range
# (32768-60999) and from under every RTP range the tests and the default config use
# (20000 and up): an outgoing connection's or a daemon's RTP port can then never take a
# port between the moment it is chosen here and the moment its server binds it. Only even
# ports are handed out: the odd one above stays free for what servers take beside their
# port (baresip listens for TLS on its SIP port + 1).
# Test runs side by side (pytest-xdist workers) each take their own share of the range,
# so that two workers never hand out the same port between its check and its bind.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % _WORKERS
_PORTS = range(10000 + 2 * _WORKER, 20000, 2 * _WORKERS)
_cursor = random.randrange(len(_PORTS))


def worker_rtp(base: int) -> int:
    """A test's fixed RTP range start moved into this worker's share of 30000-39999 (the
    same start when tests run one at a time)."""
    if _WORKERS == 1:
        return base
    share = 10000 // _WORKERS
    return 30000 + _WORKER * share + (base - 30000) % (share - 400) // 2 * 2


def rtp_base(span: int = 400, low: int = 30000, high: int = 40000) -> int:
    """A random even start for an RTP range of ``span`` ports in this worker's share of
    ``low``-``high`` (a daemon skips ports it cannot bind, but two side by side would
    keep fighting over the same ones)."""
    share = (high - low) // _WORKERS
    first = low + _WORKER * share
    return first + random.randrange(0, max(2, share - span), 2)


def free_port(kind: int = socket.SOCK_DGRAM, host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host``, not handed out before in this run
    (unless the whole range has been)."""
    global _cursor
    for _ in range(len(_PORTS)):
        port = _PORTS[_cursor]
        _cursor = (_cursor + 1) % len(_PORTS)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind((host, port))
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


@dataclass
class Seen:
    at: float
    direction: str  # "up" (client -> server) or "down"
    first_line: str
    dropped: bool


@dataclass
class LossyRelay:
    """Forwards UDP between one client and ``server``; drops the first ``drop`` datagrams
    of each direction and records every datagram with its arrival time."""

    server: tuple[str, int]
    drop: int
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _client: tuple[str, int] | None = None
    _counts: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})
    _front: asyncio.DatagramTransport | None = None
    _back: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        relay = self

        class Front(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                relay._client = addr
                relay._forward("up", data)

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                relay._forward("down", data)

        front, _ = await loop.create_datagram_endpoint(Front, local_addr=("127.0.0.1", 0))
        back, _ = await loop.create_datagram_endpoint(Back, local_addr=("127.0.0.1", 0))
        self._front = front
        self._back = back
        self.port = self._front.get_extra_info("sockname")[1]

    def _forward(self, direction: str, data: bytes) -> None:
        self._counts[direction] += 1
        dropped = self._counts[direction] <= self.drop
        line = data.split(b"\r\n", 1)[0].decode(errors="replace")
        self.seen.append(Seen(asyncio.get_running_loop().time(), direction, line, dropped))
        if dropped:
            return
        if direction == "up":
            assert self._back is not None
            self._back.sendto(data, self.server)
        elif self._client is not None:
            assert self._front is not None
            self._front.sendto(data, self._client)

    def times(self, direction: str, prefix: str) -> list[float]:
        return [
            s.at for s in self.seen if s.direction == direction and s.first_line.startswith(prefix)
        ]

    def close(self) -> None:
        for t in (self._front, self._back):
            if t is not None:
                t.close()


@dataclass
class Daemon:
    proc: subprocess.Popen[str]
    lines: list[str]

    def wait_for(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """The first output line matching ``pattern`` (waits for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = re.search(pattern, line)
                if m is not None:
                    return m
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r} in: {''.join(self.lines)[-2000:]}")


@contextlib.contextmanager
def daemon(args: list[str], ready: str, timeout: float = 15.0) -> Iterator[Daemon]:
    """Run ``python args...`` until its stdout prints a line containing ``ready``."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if ready in line:
            break
    else:
        proc.kill()
        raise RuntimeError(f"{args} did not start: {''.join(lines)}")
    if proc.poll() is not None:
        raise RuntimeError(f"{args} exited: {''.join(lines)}")
    # keep draining output so the daemon never blocks on a full pipe
    drain = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    drain.start()
    try:
        yield Daemon(proc, lines)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
