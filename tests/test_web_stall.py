"""Hole 1 of the daemon's web servers: an unauthenticated client must not stall the calls.

Four parallel ``POST /login`` to the web console, each 8 MB of ``&`` sent chunked, while
a call is up through the daemon (``softswitch run``, a subprocess on loopback). The call's
two ends are user agents here, each sending a PCMU packet every 20 ms from a thread that
also sends the daemon an OPTIONS every 20 ms; the kernel stamps the arrival of every packet
the daemon relays back and of every answer. The attack runs in a child process. During
the attack the call's RTP may have no gap over 60 ms, and the OPTIONS round trip's median
must stay under 5 ms (one never answered counts as endless).

``benchmarks/web_stall.py`` measures this and four other attacks with ratios to a
baseline; tests import nothing from benchmarks, so the few pieces needed are here.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import sip
from softswitch.callprobe import Probe

from .netutil import daemon, free_port

# they time the calls while an attack runs: alone (pyproject: serial)
pytestmark = pytest.mark.serial

HOST = "127.0.0.1"
DOMAIN = "stall.test"
CALLER = ("100", "caller-secret")
CALLEE = ("101", "callee-secret")

BODY_BYTES = 8 << 20
CHUNK_BYTES = 64 << 10
CONNECTIONS = 4
ATTACK_TIMEOUT = 20.0  # the parse took ~7 s with the server in the PBX's loop
MIN_WINDOW = 2.0  # an attack refused at once is still watched this long

MAX_GAP_MS = 60.0
MAX_RTT_MEDIAN_MS = 5.0


def office(tmp: Path) -> tuple[Path, int, int]:
    sip_port, console_port = free_port(), free_port()
    rtp = sip_port * 2 % 20000 + 30000
    config = tmp / "stall.toml"
    config.write_text(f"""
[server]
listen = ["udp:{HOST}:{sip_port}"]
domain = "{DOMAIN}"
data_dir = "{tmp / "data"}"
rtp_ports = [{rtp}, {rtp + 100}]
keepalive_interval = 3600

[console]
listen = "{HOST}:{console_port}"

[[users]]
extension = "{CALLER[0]}"
name = "Caller"
password = "{CALLER[1]}"
pin = "1100"

[[users]]
extension = "{CALLEE[0]}"
name = "Callee"
password = "{CALLEE[1]}"
pin = "1101"
""")
    return config, sip_port, console_port


def wait_listening(port: int, timeout: float = 10.0) -> None:
    """Until the console accepts a connection (its server may start after the daemon
    says it runs, in a process of its own)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {HOST}:{port}"
            time.sleep(0.05)


async def call_up(sip_port: int, probe: Probe, stack: contextlib.AsyncExitStack) -> list[sip.Call]:
    """100 calls 101 through the daemon; both user agents here, RTP on the probe's ends."""
    caller_end, callee_end = probe.ends
    calls: list[sip.Call] = []
    # no overload control: this process's loop is not what is measured
    caller = sip.UserAgent(f"udp:{HOST}:0", user=CALLER[0], overload=None)
    callee = sip.UserAgent(f"udp:{HOST}:0", user=CALLEE[0], overload=None)
    await stack.enter_async_context(caller)
    await stack.enter_async_context(callee)

    def answer(call: sip.IncomingCall) -> None:
        offer = sip.parse_sdp(call.remote_sdp or b"")
        sdp, stream = sip.answer(offer, HOST, callee_end.port, (sip.PCMU,))
        assert stream is not None
        callee_end.remote = (stream.remote_address, stream.remote_port)
        calls.append(call)
        call.answer(bytes(sdp))

    callee.on_invite = answer
    await callee.register(
        f"sip:{HOST}:{sip_port}",
        aor=f"sip:{CALLEE[0]}@{DOMAIN}",
        username=CALLEE[0],
        password=CALLEE[1],
        expires=3600,
    )
    offer = sip.make_offer(HOST, caller_end.port, (sip.PCMU,))
    call = await caller.invite(
        f"sip:{CALLEE[0]}@{HOST}:{sip_port}", bytes(offer), credentials=CALLER, timeout=5
    )
    calls.append(call)
    stream = sip.process_answer(offer, sip.parse_sdp(call.remote_sdp or b""))
    caller_end.remote = (stream.remote_address, stream.remote_port)
    return calls


def chunked_login_flood(console_port: int) -> tuple[float, float, list[str]]:
    """The attack, run in a child process at the lowest priority: an attacker's CPU is
    its own, elsewhere (threads here would hold this process's GIL while the scheduler
    keeps them waiting, and delay the probe). Returns its start and end on the
    system-wide monotonic clock and what each connection got (a status, or how it ended).
    """
    os.nice(19)
    chunk = b"%x\r\n" % CHUNK_BYTES + b"&" * CHUNK_BYTES + b"\r\n"
    wire = (
        (
            f"POST /login HTTP/1.1\r\nHost: {HOST}:{console_port}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        + chunk * (BODY_BYTES // CHUNK_BYTES)
        + b"0\r\n\r\n"
    )
    outcomes: list[str] = []
    started = time.monotonic()
    deadline = started + ATTACK_TIMEOUT

    def one() -> None:
        try:
            s = socket.create_connection((HOST, console_port), timeout=ATTACK_TIMEOUT)
        except OSError as exc:
            outcomes.append(f"connect: {exc}")
            return
        with s:
            with contextlib.suppress(OSError):  # refused part-way: read what it said
                s.sendall(wire)
            data = b""
            while b"\r\n" not in data and time.monotonic() < deadline:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    chunk = s.recv(4096)
                except OSError as exc:
                    outcomes.append(type(exc).__name__)
                    return
                if not chunk:
                    break
                data += chunk
            outcomes.append(data.split(b"\r\n")[0].decode(errors="replace") or "closed")

    threads = [threading.Thread(target=one) for _ in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return started, time.monotonic(), outcomes


async def until(
    condition: Callable[[], bool], timeout: float, what: str, *, fail: bool = True
) -> None:
    """Until ``condition`` holds; after ``timeout`` fail with ``what`` (or just return)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            assert not fail, what
            return
        await asyncio.sleep(0.02)


def summary(w: dict[str, Any]) -> str:
    return (
        f"worst RTP gap {w['worst_gap_ms']} ms, packets {w['packets']}/{w['expected_packets']},"
        f" OPTIONS median {w['options_rtt_median_ms']:.2f} ms max {w['options_rtt_max_ms']:.1f}"
        f" ms ({w['options_lost']} of {w['options_sent']} unanswered) over {w['seconds']} s"
        f" (this process sent up to {w['probe_late_max_ms']} ms late)"
    )


async def test_chunked_login_flood_does_not_stall_a_call(tmp_path: Path) -> None:
    config, sip_port, console_port = office(tmp_path)
    command = ["-m", "softswitch.cli", "run", "--config", str(config), "--log-level", "warning"]
    with daemon(command, "softswitch running"):
        wait_listening(console_port)
        probe = Probe(sip_port)
        probe.start()
        try:
            async with contextlib.AsyncExitStack() as stack:
                calls = await asyncio.wait_for(call_up(sip_port, probe, stack), 10)
                await until(lambda: probe.flowing(25), 5, "no RTP relayed back to both ends")
                # the baseline: the next 50 packets at each end (a second)
                before = time.monotonic()
                marks = [len(e.arrivals) + 50 for e in probe.ends]
                await until(
                    lambda: all(
                        len(e.arrivals) >= m for e, m in zip(probe.ends, marks, strict=True)
                    ),
                    3,
                    "RTP stopped before the attack",
                )
                baseline = probe.window(before, time.monotonic())
                with ProcessPoolExecutor(
                    1, mp_context=multiprocessing.get_context("spawn")
                ) as pool:
                    start, end, outcomes = await asyncio.get_running_loop().run_in_executor(
                        pool, chunked_login_flood, console_port
                    )
                # an attack refused at once is still watched for MIN_WINDOW: a measurement
                # window, not a wait for something to happen
                end = max(end, start + MIN_WINDOW)
                await asyncio.sleep(max(0.0, end - time.monotonic()))
                await until(  # the window's late answers count as late, not as lost
                    lambda: all(n in probe.answered for n in probe.asked(start, end)),
                    2,
                    "",
                    fail=False,
                )
                attack = probe.window(start, end)
                for call in calls:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(call.hangup(), 2)
        finally:
            probe.stop()
    seen = f"during the attack: {summary(attack)}; before it: {summary(baseline)}; {outcomes}"
    print(seen)
    assert attack["worst_gap_ms"] <= MAX_GAP_MS, seen
    assert attack["options_rtt_median_ms"] < MAX_RTT_MEDIAN_MS, seen
