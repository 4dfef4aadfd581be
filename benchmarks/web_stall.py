"""What an unauthenticated web client costs the calls in progress: the daemon's HTTP
servers (web console, REST API, provisioning) against a call's RTP and SIP OPTIONS.

The daemon (`softswitch run`, its own process, loopback only, a temporary data directory)
runs an office with ``[console]`` and ``[provisioning]`` on ports of their own. This
process is both phones of a call through it (100 calls 101, PCMU relayed packet for
packet): a thread sends each end's packet every 20 ms against absolute deadlines and an
OPTIONS to the daemon every 20 ms; another receives, the kernel stamping each datagram's
arrival (SO_TIMESTAMPNS), so a late wake-up here is not counted as the daemon's delay
(``probe_late_max_ms`` says how late the sender itself ran). The attacks run in child
processes (this file with ``--attack``) at nice 19: an attacker's CPU is its own, on
another machine, and a busy client must not hold this process's GIL.

Phases, each a few seconds and each on a call of its own (what an attack leaves in a
call's jitter buffers does not count against the next phase):

- ``baseline``: nothing else;
- ``a_chunked_login``: 4 parallel ``POST /login`` to the console, each 8 MB of ``&``
  sent ``Transfer-Encoding: chunked`` (64 KiB chunks): what each got back, and when;
- ``b_idle_connections``: 100 TCP connections to the console opened and held without a
  byte, then a legitimate ``GET /login`` from the same address and one from another
  (127.0.0.2: limits per address tell them apart), their status and time, and how many
  of the 100 the server closed;
- ``c_slow_body``: ``POST /login`` with ``Content-Length: 1000``, 10 bytes sent, then
  nothing: whether and when (within 12 s) the server answers or closes;
- ``d_provisioning_logins``: 200 wrong-password digest requests for a phone's file on
  the provisioning port (4 keep-alive connections): the statuses and the time;
- ``e_login_pages``: 50 clients, each from its own loopback address (127.0.1.x), fetching
  ``GET /login`` (the rendered page) over and over for the phase: statuses, latency.

Per phase: the worst gap between two relayed RTP packets at either end (ms), the packets
received against those expected (50/s per end), the OPTIONS round trip's median and max
(ms, over those answered; ``options_lost``: never answered), the gap's and the median's
ratio to the baseline of the same run, the attack's own outcome, whether the daemon's
overload control started, and the next call placed once the daemon answers OPTIONS
promptly again (``next_call``: 503s met, retried after Retry-After as phones do). A
phase's window starts when its attack starts and lasts while the attack runs (at least
``--phase-seconds``). Everything goes to 127.0.0.1; the whole run is bounded (under
90 s: phases that would not fit are skipped) and every process it starts is stopped,
on Ctrl-C and errors too.

    python benchmarks/web_stall.py [--json] [--phase-seconds 4] [--only a,c]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import itertools
import json
import os
import random
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softswitch.callprobe import Probe

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
DOMAIN = "stall.test"
CALLER = ("100", "caller-secret")
CALLEE = ("101", "callee-secret")
PROVISIONING = ("prov", "prov-secret")
PHONE_MAC = "0004f2aabbcc"

RUN_BUDGET = 85.0  # seconds: phases that would not fit are skipped
DAEMON_START_TIMEOUT = 10.0
SETTLE_TIMEOUT = 2.0

# the attacks
LOGIN_BODY_BYTES = 8 << 20
LOGIN_CHUNK_BYTES = 64 << 10
LOGIN_CONNECTIONS = 4
LOGIN_TIMEOUT = 15.0
IDLE_CONNECTIONS = 100
LEGIT_TIMEOUT = 3.0
SLOW_BODY_WAIT = 12.0  # past a 10 s body timeout, if there is one
PROVISIONING_REQUESTS = 200
PROVISIONING_CONNECTIONS = 4
PROVISIONING_TIMEOUT = 8.0
PAGE_CLIENTS = 50
PAGE_TIMEOUT = 3.0
LEGIT_SOURCE = "127.0.0.2"


# -- ports and the daemon -----------------------------------------------------------------


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Office:
    config: Path
    sip_port: int
    console_port: int
    provisioning_port: int


def write_office(work: Path) -> Office:
    sip_port = free_port()
    console_port = free_port(socket.SOCK_STREAM)
    provisioning_port = free_port(socket.SOCK_STREAM)
    while provisioning_port == console_port:
        provisioning_port = free_port(socket.SOCK_STREAM)
    rtp = random.randrange(20000, 30000, 2)
    config = work / "stall.toml"
    config.write_text(f"""
[server]
listen = ["udp:{HOST}:{sip_port}"]
domain = "{DOMAIN}"
data_dir = "{work / "data"}"
rtp_ports = [{rtp}, {rtp + 100}]
keepalive_interval = 3600

[console]
listen = "{HOST}:{console_port}"

[provisioning]
listen = "{HOST}:{provisioning_port}"
username = "{PROVISIONING[0]}"
password = "{PROVISIONING[1]}"

[[phones]]
mac = "{PHONE_MAC}"
model = "VVX 450"
user = "{CALLER[0]}"

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
    return Office(config, sip_port, console_port, provisioning_port)


def wait_listening(port: int, deadline: float) -> None:
    """Until a TCP connection to ``port`` is accepted (the HTTP servers may come up after
    the daemon says it runs, in another process)."""
    while True:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {HOST}:{port}") from None
            time.sleep(0.05)


@contextlib.contextmanager
def running_daemon(office: Office) -> Iterator[list[str]]:
    """``softswitch run`` on ``office`` until the block ends (also on Ctrl-C and errors);
    yields its output lines, read by a thread so it never blocks on a full pipe."""
    command = [sys.executable, "-m", "softswitch.cli", "run", "--config", str(office.config)]
    proc = subprocess.Popen(
        [*command, "--log-level", "warning"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "softswitch running" in line:
                ready.set()
        ready.set()  # it exited

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + DAEMON_START_TIMEOUT
        if not ready.wait(DAEMON_START_TIMEOUT) or proc.poll() is not None:
            raise RuntimeError(f"the daemon did not start: {''.join(lines)[-2000:]}")
        wait_listening(office.console_port, deadline)
        wait_listening(office.provisioning_port, deadline)
        yield lines
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# -- the probe: a call's RTP and OPTIONS round trips, timed outside asyncio ---------------


class Phones:
    """Extensions 100 and 101, both user agents here, their RTP the probe's two ends:
    :meth:`dial` puts a call from 100 to 101 up through the daemon, :meth:`hang_up`
    ends it (a call per phase: what an attack leaves in a call's jitter buffers does not
    count against the next phase)."""

    def __init__(self, sip_port: int, probe: Probe) -> None:
        import sip

        self.sip_port = sip_port
        self.probe = probe
        # no overload control: this process's loop is not what is measured
        self.caller = sip.UserAgent(f"udp:{HOST}:0", user=CALLER[0], overload=None)
        self.callee = sip.UserAgent(f"udp:{HOST}:0", user=CALLEE[0], overload=None)
        self.calls: list[Any] = []

    async def start(self) -> None:
        import sip

        callee_end = self.probe.ends[1]

        def answer(call: sip.IncomingCall) -> None:
            offer = sip.parse_sdp(call.remote_sdp or b"")
            sdp, stream = sip.answer(offer, HOST, callee_end.port, (sip.PCMU,))
            if stream is None:
                call.reject(488)
                return
            callee_end.remote = (stream.remote_address, stream.remote_port)
            self.calls.append(call)
            call.answer(bytes(sdp))

        await self.caller.start()
        await self.callee.start()
        self.callee.on_invite = answer
        await asyncio.wait_for(
            self.callee.register(
                f"sip:{HOST}:{self.sip_port}",
                aor=f"sip:{CALLEE[0]}@{DOMAIN}",
                username=CALLEE[0],
                password=CALLEE[1],
                expires=3600,
            ),
            5,
        )

    async def dial(self, timeout: float = 12.0) -> dict[str, Any]:
        """A new call, once both ends have heard half a second of the other. A 503 (the
        daemon's overload control) is tried again after its Retry-After, as phones do.
        How long it took and how many 503s came first."""
        import sip

        started = time.monotonic()
        deadline = started + timeout
        caller_end = self.probe.ends[0]
        for end in self.probe.ends:
            end.ssrc += 1  # a new stream
        offer = sip.make_offer(HOST, caller_end.port, (sip.PCMU,))
        refused = 0
        while True:
            try:
                call = await self.caller.invite(
                    f"sip:{CALLEE[0]}@{HOST}:{self.sip_port}",
                    bytes(offer),
                    credentials=CALLER,
                    timeout=max(0.5, deadline - time.monotonic()),
                )
                break
            except sip.RequestFailed as exc:
                if exc.status != 503 or time.monotonic() > deadline:
                    raise
                refused += 1
                retry = (exc.response.headers.get("Retry-After") or "1").split(";")[0].strip()
                wait = float(retry) if retry.isdigit() else 1.0
                await asyncio.sleep(min(wait, max(0.0, deadline - time.monotonic())))
        self.calls.append(call)
        stream = sip.process_answer(offer, sip.parse_sdp(call.remote_sdp or b""))
        caller_end.remote = (stream.remote_address, stream.remote_port)
        answered = time.monotonic() - started
        marks = [len(end.arrivals) + 25 for end in self.probe.ends]
        while any(len(e.arrivals) < m for e, m in zip(self.probe.ends, marks, strict=True)):
            if time.monotonic() > deadline + 2:
                raise RuntimeError("the call is up but its RTP does not come back")
            await asyncio.sleep(0.02)
        return {"answered_after_s": round(answered, 2), "refused_503": refused}

    async def hang_up(self) -> None:
        for end in self.probe.ends:
            end.remote = None
        calls, self.calls = self.calls, []
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                asyncio.gather(*(c.hangup() for c in calls), return_exceptions=True), 3
            )

    async def close(self) -> None:
        await self.hang_up()
        for ua in (self.caller, self.callee):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ua.close(), 3)


# -- the attacks (each runs in a child process: ``--attack NAME``) -------------------------


def read_status(sock: socket.socket, deadline: float) -> str:
    """The status code of the response on ``sock``, or how the wait for it ended:
    ``closed`` (no response), ``reset`` or ``timeout``."""
    data = b""
    while b"\r\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout"
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            return "timeout"
        except OSError:
            return "reset"
        if not chunk:
            return "closed" if not data else "partial"
        data += chunk
    parts = data.split(b" ", 2)
    return parts[1].decode(errors="replace") if len(parts) > 1 else "garbled"


def tally(outcomes: list[str]) -> str:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o] = counts.get(o, 0) + 1
    return " ".join(f"{n}x{o}" for o, n in sorted(counts.items()))


def chunked_login(args: argparse.Namespace) -> dict[str, Any]:
    body = b"&" * LOGIN_CHUNK_BYTES
    chunk = b"%x\r\n" % len(body) + body + b"\r\n"
    wire = chunk * (LOGIN_BODY_BYTES // LOGIN_CHUNK_BYTES) + b"0\r\n\r\n"
    head = (
        f"POST /login HTTP/1.1\r\nHost: {HOST}:{args.console_port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    results: list[tuple[str, float, str]] = []
    started = time.monotonic()
    deadline = started + LOGIN_TIMEOUT

    def one() -> None:
        sent = "sent"
        try:
            sock = socket.create_connection((HOST, args.console_port), timeout=LOGIN_TIMEOUT)
        except OSError as exc:
            results.append((f"connect:{type(exc).__name__}", time.monotonic() - started, ""))
            return
        with sock:
            try:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                sock.sendall(head + wire)
            except TimeoutError:
                sent = "send_timeout"
            except OSError as exc:  # refused part-way: read what the server said
                sent = f"send:{type(exc).__name__}"
            status = read_status(sock, deadline)
            results.append((status, time.monotonic() - started, sent))

    threads = [threading.Thread(target=one) for _ in range(LOGIN_CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ended = time.monotonic()
    unsent = [r[2] for r in results if r[2] != "sent"]
    return {
        "started": started,
        "ended": ended,
        "statuses": [r[0] for r in results],
        "answered_after_s": [round(r[1], 2) for r in results],
        "send_errors": unsent,
        "outcome": f"{tally([r[0] for r in results])} in {ended - started:.1f} s"
        + (f" ({len(unsent)} body cut short)" if unsent else ""),
    }


def get_login(port: int, timeout: float, source: str = HOST) -> tuple[str, float, int]:
    """``GET /login`` on a new connection from ``source`` (a loopback address): status
    (or the error), seconds, body bytes."""
    t = time.monotonic()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request("GET", "/login")
        response = conn.getresponse()
        body = response.read()
        return str(response.status), time.monotonic() - t, len(body)
    except TimeoutError:
        return "timeout", time.monotonic() - t, 0
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__, time.monotonic() - t, 0
    finally:
        conn.close()


def idle_connections(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    held: list[socket.socket] = []
    refused = 0
    for _ in range(IDLE_CONNECTIONS):
        try:
            held.append(socket.create_connection((HOST, args.console_port), timeout=2))
        except OSError:
            refused += 1
    # a user at the attacker's address, and one at another (limits per address tell them
    # apart): all of loopback's 127/8 reaches 127.0.0.1
    status, took, size = get_login(args.console_port, LEGIT_TIMEOUT)
    other, other_took, _ = get_login(args.console_port, LEGIT_TIMEOUT, LEGIT_SOURCE)
    hold_until = started + args.phase_seconds
    while time.monotonic() < hold_until:
        time.sleep(0.05)
    closed = 0
    for sock in held:
        sock.setblocking(False)
        try:
            closed += sock.recv(4096) == b""  # data (a 408, a 503) is a close to come
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        sock.close()
    return {
        "started": started,
        "ended": time.monotonic(),
        "connections_open": len(held),
        "connections_refused": refused,
        "closed_by_server": closed,
        "legit_status": status,
        "legit_ms": round(took * 1000, 1),
        "legit_bytes": size,
        "legit_other_address_status": other,
        "legit_other_address_ms": round(other_took * 1000, 1),
        "outcome": f"GET /login {status} in {took * 1000:.0f} ms, from {LEGIT_SOURCE} "
        f"{other} in {other_took * 1000:.0f} ms; {len(held)} held, {closed} closed by server",
    }


def slow_body(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    sock = socket.create_connection((HOST, args.console_port), timeout=2)
    with sock:
        sock.sendall(
            (
                f"POST /login HTTP/1.1\r\nHost: {HOST}:{args.console_port}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                "Content-Length: 1000\r\n\r\nname=admin"
            ).encode()
        )
        status = read_status(sock, started + SLOW_BODY_WAIT)
    ended = time.monotonic()
    if status == "timeout":
        outcome = f"no answer in {SLOW_BODY_WAIT:.0f} s (still open)"
    else:
        outcome = f"{status} after {ended - started:.1f} s"
    return {
        "started": started,
        "ended": ended,
        "status": status,
        "after_s": round(ended - started, 2),
        "outcome": outcome,
    }


def digest_challenge(port: int, path: str) -> dict[str, str]:
    conn = http.client.HTTPConnection(HOST, port, timeout=PROVISIONING_TIMEOUT)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        header = response.getheader("WWW-Authenticate") or ""
    finally:
        conn.close()
    return {k.lower(): v for k, v in re.findall(r'(\w+)="?([^",]*)"?', header)}


def wrong_digest(challenge: dict[str, str], path: str, nc: int) -> str:
    """An Authorization header for ``path`` with the right user and a wrong password."""

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    user, realm, nonce = PROVISIONING[0], challenge.get("realm", ""), challenge.get("nonce", "")
    ha1, ha2 = md5(f"{user}:{realm}:wrong-password"), md5(f"GET:{path}")
    cnonce, count = secrets.token_hex(8), f"{nc:08x}"
    response = md5(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{ha2}")
    header = (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{path}", '
        f'response="{response}", algorithm=MD5, qop=auth, nc={count}, cnonce="{cnonce}"'
    )
    if "opaque" in challenge:
        header += f', opaque="{challenge["opaque"]}"'
    return header


def provisioning_logins(args: argparse.Namespace) -> dict[str, Any]:
    path = f"/{PHONE_MAC}.cfg"
    started = time.monotonic()
    deadline = started + PROVISIONING_TIMEOUT
    challenge = digest_challenge(args.provisioning_port, path)
    counter = itertools.count(1)
    statuses: list[str] = []
    per_connection = PROVISIONING_REQUESTS // PROVISIONING_CONNECTIONS

    def one() -> None:
        conn = http.client.HTTPConnection(HOST, args.provisioning_port, timeout=2)
        for _ in range(per_connection):
            if time.monotonic() > deadline:
                statuses.append("not_sent")
                continue
            try:
                auth = wrong_digest(challenge, path, next(counter))
                conn.request("GET", path, headers={"Authorization": auth})
                response = conn.getresponse()
                response.read()
                statuses.append(str(response.status))
            except TimeoutError:
                statuses.append("timeout")
                conn.close()
            except (OSError, http.client.HTTPException) as exc:
                statuses.append(type(exc).__name__)
                conn.close()  # a closed keep-alive: the next request reconnects
        conn.close()

    threads = [threading.Thread(target=one) for _ in range(PROVISIONING_CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ended = time.monotonic()
    return {
        "started": started,
        "ended": ended,
        "challenge": bool(challenge.get("nonce")),
        "statuses": tally(statuses),
        "outcome": f"{tally(statuses)} in {ended - started:.1f} s",
    }


def login_pages(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    until = started + args.phase_seconds
    statuses: list[str] = []
    latencies: list[float] = []  # of the pages served

    def one(index: int) -> None:
        # a client per loopback address: rendering is measured, not a per-address limit
        source = (f"127.0.1.{index + 1}", 0)
        conn = http.client.HTTPConnection(
            HOST, args.console_port, timeout=PAGE_TIMEOUT, source_address=source
        )
        while time.monotonic() < until:
            t = time.monotonic()
            try:
                conn.request("GET", "/login")
                response = conn.getresponse()
                response.read()
                statuses.append(str(response.status))
                if response.status == 200:
                    latencies.append(time.monotonic() - t)
                continue
            except TimeoutError:
                statuses.append("timeout")
            except (OSError, http.client.HTTPException) as exc:
                statuses.append(type(exc).__name__)
            conn.close()
            time.sleep(0.05)  # refused: as a browser would, not a connect spin
        conn.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(PAGE_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ended = time.monotonic()
    p50 = statistics.median(latencies) * 1000 if latencies else 0.0
    worst = max(latencies, default=0.0) * 1000
    return {
        "started": started,
        "ended": ended,
        "requests": len(statuses),
        "statuses": tally(statuses),
        "page_latency_median_ms": round(p50, 1),
        "page_latency_max_ms": round(worst, 1),
        "outcome": f"{tally(statuses)}; pages in median {p50:.0f} ms, max {worst:.0f} ms",
    }


Attack = Callable[[argparse.Namespace], dict[str, Any]]
ATTACKS: dict[str, tuple[Attack, float]] = {  # name -> (attack, its longest run in s)
    "a_chunked_login": (chunked_login, LOGIN_TIMEOUT + 2),
    "b_idle_connections": (idle_connections, 4.0 + 2 * LEGIT_TIMEOUT + 4),
    "c_slow_body": (slow_body, SLOW_BODY_WAIT + 2),
    "d_provisioning_logins": (provisioning_logins, PROVISIONING_TIMEOUT + 4),
    "e_login_pages": (login_pages, 4.0 + PAGE_TIMEOUT + 3),
}


# -- the run ------------------------------------------------------------------------------


async def run_attack(name: str, office: Office, phase_seconds: float) -> dict[str, Any]:
    """The attack in a child process (its client work never shares this process's GIL);
    its result, with its start and end on the system-wide monotonic clock."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).resolve()),
        "--attack",
        name,
        "--console-port",
        str(office.console_port),
        "--provisioning-port",
        str(office.provisioning_port),
        "--phase-seconds",
        str(phase_seconds),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    limit = ATTACKS[name][1] + phase_seconds
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        return {"outcome": f"attack did not end in {limit:.0f} s (killed)"}
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode(errors="replace").strip()
    try:
        result: dict[str, Any] = json.loads(text.splitlines()[-1])
    except (ValueError, IndexError):
        return {"outcome": f"attack failed: {text[-300:]}"}
    return result


async def settle(probe: Probe, baseline_ms: float) -> None:
    """Until the OPTIONS round trips are back near the baseline (bounded)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        recent = probe.recent_rtt_ms()
        if recent is not None and recent < max(5.0, 3 * baseline_ms):
            return
        await asyncio.sleep(0.05)


async def measure(
    office: Office, log: list[str], phase_seconds: float, began: float, only: set[str]
) -> list[dict[str, Any]]:
    """Baseline, then each attack, each on a call of its own; a dict per phase."""
    import sip

    probe = Probe(office.sip_port)
    probe.start()
    phones = Phones(office.sip_port, probe)
    phases: list[dict[str, Any]] = []
    try:
        await phones.start()
        await phones.dial()
        dial_budget = 12.0 + 2
        t0 = time.monotonic()
        await asyncio.sleep(phase_seconds)  # the baseline is a stretch of time
        t1 = time.monotonic()
        await settle(probe, 1.0)  # its last OPTIONS answered
        baseline = {"name": "baseline", **probe.window(t0, t1), "outcome": "-"}
        phases.append(baseline)
        base_rtt = baseline["options_rtt_median_ms"] or 1.0
        for name, (_, longest) in ATTACKS.items():
            if only and name not in only and name.split("_")[0] not in only:
                continue
            need = longest + phase_seconds + 2 * SETTLE_TIMEOUT + dial_budget
            if time.monotonic() + need > began + RUN_BUDGET:
                phases.append({"name": name, "outcome": "skipped: over the time budget"})
                continue
            if not phones.calls:  # the call placed after the previous phase failed
                try:
                    await phones.dial()
                except (OSError, RuntimeError, TimeoutError, sip.RequestFailed) as exc:
                    phases.append({"name": name, "outcome": f"skipped: no call: {exc!r}"})
                    continue
            mark = len(log)
            result = await run_attack(name, office, phase_seconds)
            start = float(result.pop("started", time.monotonic()))
            end = max(float(result.pop("ended", start)), start + phase_seconds)
            while time.monotonic() < end + 0.1:  # the window's last packets
                await asyncio.sleep(0.05)
            await settle(probe, base_rtt)  # late answers still count for the window
            window = probe.window(start, end)
            await phones.hang_up()
            # right after the attack, a new call (the next phase's): refused meanwhile?
            try:
                next_call: dict[str, Any] = await phones.dial()
            except (OSError, RuntimeError, TimeoutError, sip.RequestFailed) as exc:
                next_call = {"failed": repr(exc)}
            # the daemon's own overload control noticing (it refuses new calls with 503)
            overload = sum("event=overload state=start" in line for line in log[mark:])
            phases.append(
                {
                    "name": name,
                    **window,
                    "overload_episodes": overload,
                    "next_call": next_call,
                    **result,
                }
            )
    finally:
        await phones.close()
        probe.stop()
    base_gap, base_median = baseline_of(phases)
    for phase in phases:
        gap, rtt = phase.get("worst_gap_ms"), phase.get("options_rtt_median_ms")
        phase["gap_ratio"] = round(gap / base_gap, 1) if gap and base_gap else None
        phase["rtt_ratio"] = round(rtt / base_median, 1) if rtt and base_median else None
    return phases


def baseline_of(phases: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    base = phases[0] if phases and phases[0]["name"] == "baseline" else {}
    return base.get("worst_gap_ms"), base.get("options_rtt_median_ms")


def table(phases: list[dict[str, Any]]) -> str:
    rows = [
        f"{'phase':<22} {'gap ms':>7} {'packets':>9} {'rtt p50':>7} {'rtt max':>7} "
        f"{'gap x':>6} {'rtt x':>6}  outcome"
    ]
    for p in phases:
        if "worst_gap_ms" not in p:
            rows.append(
                f"{p['name']:<22} {'':>7} {'':>9} {'':>7} {'':>7} {'':>6} {'':>6}  {p['outcome']}"
            )
            continue
        packets = f"{p['packets']}/{p['expected_packets']}"
        notes = [f"{p['options_lost']} OPTIONS unanswered"] if p["options_lost"] else []
        if p["probe_late_max_ms"] > 10:  # part of the gap is this process's, not the daemon's
            notes.append(f"probe sent up to {p['probe_late_max_ms']} ms late")
        if p.get("overload_episodes"):
            notes.append("daemon overload control on")
        after = p.get("next_call", {})
        if "failed" in after:
            notes.append(f"a new call right after failed: {after['failed']}")
        elif after.get("refused_503"):
            notes.append(
                f"a new call right after: {after['refused_503']}x503, "
                f"up after {after['answered_after_s']} s"
            )
        lost = f" ({'; '.join(notes)})" if notes else ""
        rows.append(
            f"{p['name']:<22} {p['worst_gap_ms']:>7} {packets:>9} "
            f"{p['options_rtt_median_ms']!s:>7} {p['options_rtt_max_ms']!s:>7} "
            f"{p['gap_ratio']!s:>6} {p['rtt_ratio']!s:>6}  {p['outcome']}{lost}"
        )
    return "\n".join(rows)


def main() -> None:
    try:
        run(parse_args())
    except KeyboardInterrupt:  # the daemon and the attack were stopped on the way out
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON document instead")
    ap.add_argument("--phase-seconds", type=float, default=4.0, help="each phase at least")
    ap.add_argument("--only", default="", help="these attacks only: a,c or a_chunked_login,...")
    ap.add_argument("--attack", choices=sorted(ATTACKS), help=argparse.SUPPRESS)
    ap.add_argument("--console-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--provisioning-port", type=int, help=argparse.SUPPRESS)
    return ap.parse_args()


def run(args: argparse.Namespace) -> None:
    if args.attack:
        # the lowest priority: an attacker's CPU is its own (elsewhere), not the probe's
        os.nice(19)
        print(json.dumps(ATTACKS[args.attack][0](args)), flush=True)
        return
    began = time.monotonic()
    args.phase_seconds = min(max(args.phase_seconds, 1.0), 6.0)  # within the run's budget
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="web-stall-") as tmp:
        office = write_office(Path(tmp))
        with running_daemon(office) as log:
            only = {x.strip() for x in args.only.split(",") if x.strip()}
            phases = asyncio.run(measure(office, log, args.phase_seconds, began, only))
        errors = sum(1 for line in log if " ERROR " in line or "Traceback" in line)
    if args.json:
        document = {"benchmark": "web_stall", "phases": phases, "daemon_errors": errors}
        print(json.dumps(document))
        return
    print(table(phases))
    print(
        "gap = worst interval between relayed RTP packets at either end of the call;"
        " packets = received/expected (50/s per end); rtt = SIP OPTIONS round trip (ms);"
        " x = ratio to the baseline phase"
        + (f"; {errors} ERROR lines in the daemon's log" if errors else "")
    )
    print(f"whole run: {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
