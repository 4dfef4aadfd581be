"""What an attacker's flood costs the daemon: bytes sent back, memory, log volume.

Starts ``softswitch run`` (the demo office, its own process, loopback) and floods it from
one UDP socket at a fixed rate:

- ``invite``: unauthenticated INVITEs (with SDP), each a new transaction, never ACKed.
  Reported: bytes back / bytes sent (the amplification toward a possibly spoofed
  source) counted until ``--linger`` seconds after the flood, responses per INVITE, and the
  daemon's RSS before, right after and at the end of the linger.
- ``malformed``: requests with a broken header line (answerable with a 400). Reported:
  the daemon's log bytes per second during the flood and the 400s received.

``--root`` runs the daemon from another checkout (e.g. to measure a baseline).

    python benchmarks/sip_flood.py [--mode invite|malformed] [--rate 959] [--seconds 20]
                                   [--linger 35] [--root DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SDP = (
    "v=0\r\no=- 8000 8000 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n"
)


def invite(n: int, port: int, local: int) -> bytes:
    lines = [
        f"INVITE sip:101@127.0.0.1:{port} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKflood{n}x;rport",
        "Max-Forwards: 70",
        f"From: <sip:100@127.0.0.1>;tag=f{n}",
        f"To: <sip:101@127.0.0.1:{port}>",
        f"Call-ID: flood-{n}-{os.getpid()}@127.0.0.1",
        "CSeq: 1 INVITE",
        f"Contact: <sip:100@127.0.0.1:{local}>",
        "User-Agent: flood/1",
        "Content-Type: application/sdp",
        f"Content-Length: {len(SDP)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n" + SDP).encode()


def malformed(n: int, port: int, local: int) -> bytes:
    lines = [
        f"OPTIONS sip:101@127.0.0.1:{port} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKbad{n}x",
        "Max-Forwards: 70",
        f"From: <sip:100@127.0.0.1>;tag=b{n}",
        f"To: <sip:101@127.0.0.1:{port}>",
        f"Call-ID: bad-{n}@127.0.0.1",
        "CSeq: 1 OPTIONS",
        "this line is not a header field",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """``softswitch run`` on the demo office; its output is counted as it comes."""

    def __init__(self, root: Path, port: int, data: Path) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "softswitch.cli",
                "run",
                "--listen",
                f"127.0.0.1:{port}",
                "--data-dir",
                str(data),
            ],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        self.log_bytes = 0
        self.log_lines = 0
        self.tail: list[bytes] = []
        for line in self.proc.stdout:
            if b"softswitch running" in line:
                break
        else:
            raise RuntimeError("the daemon did not start")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log_bytes += len(line)
            self.log_lines += 1
            self.tail = [*self.tail[-4:], line]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Result:
    mode: str
    rate: float
    seconds: float
    sent: int = 0
    bytes_out: int = 0  # from the attacker
    bytes_in: int = 0  # back to the attacker
    responses: int = 0
    ratio: float = 0.0
    rss_before_mb: float = 0.0
    rss_after_flood_mb: float = 0.0
    rss_end_mb: float = 0.0
    log_bytes_per_s: float = 0.0
    log_lines: int = 0


def flood(
    sock: socket.socket,
    make: object,
    port: int,
    rate: float,
    seconds: float,
    result: Result,
) -> None:
    assert callable(make)
    local = sock.getsockname()[1]
    start = time.monotonic()
    n = 0
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= seconds:
            break
        due = int(elapsed * rate)
        while n < due:
            data = make(n, port, local)
            sock.sendto(data, ("127.0.0.1", port))
            result.bytes_out += len(data)
            n += 1
        drain(sock, result)
        time.sleep(0.002)
    result.sent = n


def drain(sock: socket.socket, result: Result) -> None:
    while True:
        try:
            data = sock.recv(65535)
        except BlockingIOError:
            return
        result.bytes_in += len(data)
        result.responses += 1


def run(args: argparse.Namespace) -> Result:
    port = free_port()
    result = Result(args.mode, args.rate, args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(Path(args.root).resolve(), port, Path(tmp) / "data")
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            time.sleep(1.0)
            result.rss_before_mb = rss_mb(daemon.proc.pid)
            log_before = daemon.log_bytes
            lines_before = daemon.log_lines
            make = invite if args.mode == "invite" else malformed
            flood(sock, make, port, args.rate, args.seconds, result)
            result.rss_after_flood_mb = rss_mb(daemon.proc.pid)
            time.sleep(0.5)
            drain(sock, result)
            if args.mode == "malformed":
                result.log_bytes_per_s = (daemon.log_bytes - log_before) / args.seconds
                result.log_lines = daemon.log_lines - lines_before
            end = time.monotonic() + args.linger
            while time.monotonic() < end:
                drain(sock, result)
                time.sleep(0.01)
            result.rss_end_mb = rss_mb(daemon.proc.pid)
            result.ratio = result.bytes_in / max(1, result.bytes_out)
            sock.close()
        finally:
            daemon.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("invite", "malformed"), default="invite")
    parser.add_argument("--rate", type=float, default=959.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--linger", type=float, default=35.0, help="keep counting after")
    parser.add_argument("--root", default=str(ROOT), help="checkout to run the daemon from")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(asdict(result)))
        return
    rows = [
        ("mode", result.mode),
        ("requests sent", f"{result.sent} ({result.rate:.0f}/s for {result.seconds:.0f} s)"),
        ("bytes sent / back", f"{result.bytes_out} / {result.bytes_in}"),
        (
            "responses back",
            f"{result.responses} ({result.responses / max(1, result.sent):.2f} per request)",
        ),
        ("amplification (back/sent)", f"{result.ratio:.2f}"),
        (
            "daemon RSS MB (before/flood end/linger end)",
            f"{result.rss_before_mb:.0f} / {result.rss_after_flood_mb:.0f} / "
            f"{result.rss_end_mb:.0f}",
        ),
    ]
    if result.mode == "malformed":
        rows += [
            ("log bytes/s during flood", f"{result.log_bytes_per_s:.0f}"),
            ("log lines during flood", str(result.log_lines)),
        ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
