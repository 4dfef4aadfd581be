"""CPU per 20 ms tick to stream hold music to 1, 100, 500, 1000 held callers.

Each held caller is a real anchored leg (an RTP session on its own UDP socket, sending to
a sink) in the PBX's media engine, whose source is the shared hold-music stream: one
decode (a slice of the pre-decoded file) and one encoding per codec per tick, then one
``sendto`` per leg. The baseline, measured in the same run, gives every caller its own
player (what a PBX without sharing does: a decode and an encoding per caller per tick).
Half the callers use PCMU, half PCMA.

The callers' phones are one receiver process (``--phones``) that drains every leg's
packets with recvmmsg, as real phones would take them off the wire; its CPU is reported
as ``generator_cpu_pct`` (the other side of the load). The I/O floor is measured in the
same run against the same receiver: the same number of packets per tick (a 12-byte
header and 160 bytes each, sequence and timestamp advanced as columns) sent by one
``sendmmsg`` from one socket (``floor_cpu_pct``; ``ratio_to_floor`` is the engine's CPU
over it), and, for reference, by one ``sendto`` per packet from a socket per caller,
the least the engine can do while every held caller keeps the port its SDP named
(``floor_per_socket_cpu_pct``).

    python benchmarks/moh_fanout.py [--callers 1,100,500,1000] [--ticks 250] [--json]
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sip
from media.clock import MediaClock
from rtp import PortAllocator
from rtp.batch import Batch, BatchSocket, address_bytes
from rtp.columns import write_headers
from softswitch.features.hold_music import HoldMusic, builtin_music
from softswitch.media_engine import MediaEngine, MediaLeg

TICKS = os.sysconf("SC_CLK_TCK")
PHONES = """
import socket, sys
from rtp.batch import Batch, BatchSocket
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
rx, batch = BatchSocket(sock), Batch(4096, 256)
import select
while True:
    select.select([sock], [], [])
    batch.count = 0
    rx.receive(batch)
"""


class Phones:
    """The held callers' side: a process draining one port with recvmmsg."""

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PHONES],
            cwd=root,
            env={**os.environ, "PYTHONPATH": root},
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.address = ("127.0.0.1", int(self.proc.stdout.readline()))

    def cpu(self) -> float:
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(stat[11]) + int(stat[12])) / TICKS

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def build(callers: int, sink: tuple[str, int]) -> tuple[MediaEngine, list[MediaLeg]]:
    engine = MediaEngine(MediaClock(), PortAllocator(40000, 40000 + 4 * callers + 8))
    legs = []
    for i in range(callers):
        leg = await engine.new_leg("127.0.0.1")
        codec = sip.PCMU if i % 2 == 0 else sip.PCMA
        leg.configure(sip.AudioStream(codec, codec.static_pt or 0, sink[0], sink[1], "sendrecv"))
        legs.append(leg)
    return engine, legs


async def measure(callers: int, ticks: int, shared: bool, phones: Phones) -> dict[str, float]:
    engine, legs = await build(callers, phones.address)
    music = HoldMusic(engine, {})
    samples = builtin_music(8000)
    for leg in legs:
        if shared:
            leg.source = music.source("default")
        else:
            leg.play(samples, loop=True)  # a player of its own
    for n in range(20):  # warm-up
        engine._tick(n)
    times = []
    cpu0, phones0, wall0 = time.process_time(), phones.cpu(), time.monotonic()
    for n in range(20, 20 + ticks):
        start = time.perf_counter()
        engine._tick(n)
        times.append(time.perf_counter() - start)
        await paced(wall0, n - 20)
    cpu = (time.process_time() - cpu0) / ticks
    wall = time.monotonic() - wall0
    phones_pct = (phones.cpu() - phones0) / wall * 100
    engine.close()
    ms = float(np.median(times) * 1000)
    return {
        "callers": callers,
        "shared": shared,
        "tick_ms": round(ms, 4),
        "tick_p99_ms": round(float(np.percentile(times, 99) * 1000), 4),
        "cpu_ms_per_tick": round(cpu * 1000, 4),
        "core_pct": round(cpu / 0.020 * 100, 2),
        "packets_per_s": round(callers * 50),
        "generator_cpu_pct": round(phones_pct, 1),
    }


async def paced(start: float, n: int) -> None:
    """Hold the 20 ms pace, so the phones' receiver sees a real packet rate."""
    delay = start + (n + 1) * 0.02 - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def floor(callers: int, ticks: int, phones: Phones, batched: bool) -> dict[str, float]:
    """The same packets to the same receiver with nothing else done: one sendmmsg per
    tick from one socket (``batched``), or one sendto per packet from a socket per
    caller."""
    payload = np.frombuffer(bytes(160), dtype=np.uint8)
    rows = np.arange(callers)
    seq = np.arange(callers, dtype=np.int64) * 7 & 0xFFFF
    ts = np.arange(callers, dtype=np.int64) * 1000
    ssrc = np.arange(callers, dtype=np.int64) + 0x10000
    pt = np.where(rows % 2 == 0, 0, 8)
    batch = Batch(max(callers, 1), 12 + 160)
    batch.data[:callers, 12:] = payload
    batch.length[:callers] = 12 + 160
    batch.ip[:callers] = np.frombuffer(address_bytes(phones.address[0]), dtype=np.uint8)
    batch.port[:callers] = phones.address[1]
    socks: list[socket.socket] = []
    out: BatchSocket | None = None
    if batched:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        out = BatchSocket(s)
    else:
        for _ in range(callers):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            socks.append(s)

    views = [batch.data[i, :172].data for i in range(len(socks))]  # rows, in place

    def tick() -> None:
        nonlocal seq, ts
        write_headers(batch.data, rows, pt, seq, ts, ssrc)
        seq, ts = (seq + 1) & 0xFFFF, (ts + 160) & 0xFFFFFFFF
        if out is not None:
            out.send(batch, rows)
            return
        address = phones.address
        for sock, packet in zip(socks, views, strict=True):
            try:
                sock.sendto(packet, address)
            except (BlockingIOError, InterruptedError):
                continue

    for _ in range(20):
        tick()
    cpu0, phones0, wall0 = time.process_time(), phones.cpu(), time.monotonic()
    for n in range(ticks):
        tick()
        await paced(wall0, n)
    cpu = (time.process_time() - cpu0) / ticks
    phones_pct = (phones.cpu() - phones0) / (time.monotonic() - wall0) * 100
    if out is not None:
        out.close()
    for sock in socks:
        sock.close()
    return {"core_pct": round(cpu / 0.020 * 100, 2), "generator_cpu_pct": round(phones_pct, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--callers", default="1,100,500,1000")
    ap.add_argument("--ticks", type=int, default=250)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    print(
        f"{'callers':>7} {'shared ms':>9} {'p99':>7} {'core %':>7} {'own-player ms':>13} "
        f"{'core %':>7} {'ratio':>6} {'floor %':>7} {'/floor':>6} {'sock fl %':>9} "
        f"{'phones %':>8}"
    )
    phones = Phones()
    try:
        for callers in (int(c) for c in args.callers.split(",")):
            shared = asyncio.run(measure(callers, args.ticks, True, phones))
            own = asyncio.run(measure(callers, args.ticks, False, phones))
            base = asyncio.run(floor(callers, args.ticks, phones, True))
            per_socket = asyncio.run(floor(callers, args.ticks, phones, False))
            cpu = shared["cpu_ms_per_tick"]
            ratio = cpu / own["cpu_ms_per_tick"] if own["cpu_ms_per_tick"] else 0
            to_floor = shared["core_pct"] / base["core_pct"] if base["core_pct"] else 0
            rows.append(
                {
                    "callers": callers,
                    "shared": shared,
                    "own_player": own,
                    "ratio": round(ratio, 3),
                    "floor_cpu_pct": base["core_pct"],
                    "floor_per_socket_cpu_pct": per_socket["core_pct"],
                    "ratio_to_floor": round(to_floor, 2),
                    "generator_cpu_pct": shared["generator_cpu_pct"],
                    "floor_generator_cpu_pct": base["generator_cpu_pct"],
                }
            )
            print(
                f"{callers:7d} {cpu:9.3f} {shared['tick_p99_ms']:7.3f} "
                f"{shared['core_pct']:7.2f} {own['cpu_ms_per_tick']:13.3f} "
                f"{own['core_pct']:7.2f} {ratio:6.3f} {base['core_pct']:7.2f} {to_floor:6.2f} "
                f"{per_socket['core_pct']:9.2f} {shared['generator_cpu_pct']:8.1f}",
                flush=True,
            )
    finally:
        phones.close()
    print(
        "ms = CPU per 20 ms tick (decode, encode, sendto for every caller); core % of one core;"
        " ratio = shared / own player; floor = the same packets by one sendmmsg per tick"
        " (/floor = shared / floor), sock fl = one sendto per packet from a socket per caller;"
        " phones = the receiver's CPU; all in the same run"
    )
    if args.json:
        print(json.dumps({"benchmark": "moh_fanout", "ticks": args.ticks, "rows": rows}))


if __name__ == "__main__":
    main()
