"""RTP packets per second one process receives and sends through ``rtp.Session``s.

A generator process sends 172-byte RTP packets (20 ms of G.711) round-robin to the
sessions' ports as fast as it can. The measured process relays: every packet a session
receives (parsed, statistics, jitter buffer) makes it send one packet (header built,
sendto). The figure is received + sent per second. The baseline, in the same run and
with the same generator, is a plain blocking-socket loop: ``recv`` then ``sendto`` on one
socket, no parsing — the ceiling of Python's socket calls on this machine.

    python benchmarks/rtp_fanout.py [--sessions 1,100,1000] [--seconds 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import contextlib

from rtp import RtpPacket, Session
from rtp.packet import parse_rtp

TICKS = os.sysconf("SC_CLK_TCK")


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def generator(ports: list[int], seconds: float) -> None:
    """Blast packets at ``ports`` for ``seconds``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    packet = bytearray(bytes(RtpPacket(0, 0, 0, 0x1234, b"\xff" * 160)))
    targets = [("127.0.0.1", p) for p in ports]
    end = time.monotonic() + seconds
    seq = 0
    while time.monotonic() < end:
        for target in targets:
            packet[2:4] = (seq & 0xFFFF).to_bytes(2, "big")
            packet[4:8] = ((seq * 160) & 0xFFFFFFFF).to_bytes(4, "big")
            with contextlib.suppress(OSError):
                sock.sendto(packet, target)
        seq += 1


def start_generator(ports: list[int], seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--generate",
            ",".join(map(str, ports)),
            "--seconds",
            str(seconds),
        ]
    )


class Relay(Session):
    """A session that answers every packet it receives with one packet."""

    def _on_rtp(self, data: bytes, addr: tuple[str, int]) -> None:
        super()._on_rtp(data, addr)
        self.send(b"\xff" * 160)


async def measure_sessions(count: int, seconds: float) -> dict[str, float]:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))  # relayed packets go here and are dropped by the kernel
    sessions = []
    for _ in range(count):
        s = Relay(payload_type=0, rtcp=False, symmetric=False, remote=sink.getsockname())
        await s.open("127.0.0.1")
        sessions.append(s)
    ports = [s.local[1] for s in sessions if s.local]
    gen = start_generator(ports, seconds + 1.0)
    await asyncio.sleep(0.5)  # warm-up
    r0 = sum(s.counters.received for s in sessions)
    s0 = sum(s.counters.sent for s in sessions)
    c0, t0 = cpu(), time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - t0
    busy = cpu() - c0
    received = sum(s.counters.received for s in sessions) - r0
    sent = sum(s.counters.sent for s in sessions) - s0
    gen.wait()
    for s in sessions:
        s.close()
    sink.close()
    return {
        "received": received / elapsed,
        "sent": sent / elapsed,
        "pps": (received + sent) / elapsed,
        "cpu_pct": busy / elapsed * 100,
    }


def measure_blocking(seconds: float, parse: bool) -> dict[str, float]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(("127.0.0.1", 0))
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    dest = sink.getsockname()
    gen = start_generator([sock.getsockname()[1]], seconds + 1.0)
    sock.settimeout(2.0)
    sock.recv(2048)
    time.sleep(0.0)
    received = sent = 0
    c0, t0 = cpu(), time.monotonic()
    end = t0 + seconds
    while True:
        data = sock.recv(2048)
        if parse:
            parse_rtp(data)
        received += 1
        sock.sendto(data, dest)
        sent += 1
        if received % 256 == 0 and time.monotonic() >= end:
            break
    elapsed = time.monotonic() - t0
    busy = cpu() - c0
    gen.wait()
    sock.close()
    sink.close()
    return {
        "received": received / elapsed,
        "sent": sent / elapsed,
        "pps": (received + sent) / elapsed,
        "cpu_pct": busy / elapsed * 100,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sessions", default="1,100,1000")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--generate", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate:
        generator([int(p) for p in args.generate.split(",")], args.seconds)
        return
    rows = []
    baseline = measure_blocking(args.seconds, parse=False)
    rows.append({"path": "blocking socket loop", "sessions": 1, **baseline, "ratio": 1.0})
    parsed = measure_blocking(args.seconds, parse=True)
    rows.append(
        {
            "path": "blocking loop + parse_rtp",
            "sessions": 1,
            **parsed,
            "ratio": parsed["pps"] / baseline["pps"],
        }
    )
    for count in (int(x) for x in args.sessions.split(",")):
        r = asyncio.run(measure_sessions(count, args.seconds))
        rows.append(
            {
                "path": "rtp.Session relay",
                "sessions": count,
                **r,
                "ratio": r["pps"] / baseline["pps"],
            }
        )
    print(
        f"{'path':28} {'sessions':>8} {'recv/s':>9} {'sent/s':>9} {'pps':>9} {'cpu %':>6} "
        f"{'ratio':>6}"
    )
    for row in rows:
        print(
            f"{row['path']:28} {row['sessions']:8d} {row['received']:9.0f} {row['sent']:9.0f} "
            f"{row['pps']:9.0f} {row['cpu_pct']:6.1f} {row['ratio']:6.3f}"
        )
    print("pps = received + sent per second; ratio = pps / blocking socket loop's, same run")
    if args.json:
        print(
            json.dumps(
                {
                    "benchmark": "rtp_fanout",
                    "seconds": args.seconds,
                    "rows": [
                        {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
                        for r in rows
                    ],
                }
            )
        )


if __name__ == "__main__":
    main()
