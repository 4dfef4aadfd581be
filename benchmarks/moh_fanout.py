"""CPU per 20 ms tick to stream hold music to 1, 100, 500, 1000 held callers.

Each held caller is a real anchored leg (an RTP session on its own UDP socket, sending to
a sink) in the PBX's media engine, whose source is the shared hold-music stream: one
decode (a slice of the pre-decoded file) and one encoding per codec per tick, then one
``sendto`` per leg. The baseline, measured in the same run, gives every caller its own
player (what a PBX without sharing does: a decode and an encoding per caller per tick).
Half the callers use PCMU, half PCMA.

    python benchmarks/moh_fanout.py [--callers 1,100,500,1000] [--ticks 250] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sip
from media.clock import MediaClock
from rtp import PortAllocator, Session
from softswitch.features.hold_music import HoldMusic, builtin_music
from softswitch.media_engine import MediaEngine, MediaLeg


async def build(callers: int, sink: tuple[str, int]) -> tuple[MediaEngine, list[MediaLeg]]:
    engine = MediaEngine(MediaClock(), PortAllocator(40000, 40000 + 4 * callers + 8))
    legs = []
    for i in range(callers):
        session = Session(payload_type=0, rtcp=False)
        await session.open("127.0.0.1", 0)
        leg = MediaLeg(engine, session)
        engine.legs.add(leg)
        codec = sip.PCMU if i % 2 == 0 else sip.PCMA
        leg.configure(sip.AudioStream(codec, codec.static_pt or 0, sink[0], sink[1], "sendrecv"))
        legs.append(leg)
    return engine, legs


async def measure(callers: int, ticks: int, shared: bool) -> dict[str, float]:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    engine, legs = await build(callers, sink.getsockname())
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
    cpu0 = time.process_time()
    for n in range(20, 20 + ticks):
        start = time.perf_counter()
        engine._tick(n)
        times.append(time.perf_counter() - start)
    cpu = (time.process_time() - cpu0) / ticks
    engine.close()
    sink.close()
    ms = float(np.median(times) * 1000)
    return {
        "callers": callers,
        "shared": shared,
        "tick_ms": round(ms, 4),
        "tick_p99_ms": round(float(np.percentile(times, 99) * 1000), 4),
        "cpu_ms_per_tick": round(cpu * 1000, 4),
        "core_pct": round(cpu / 0.020 * 100, 2),
        "packets_per_s": round(callers * 50),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--callers", default="1,100,500,1000")
    ap.add_argument("--ticks", type=int, default=250)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    print(
        f"{'callers':>7} {'shared ms':>9} {'p99':>7} {'core %':>7} {'own-player ms':>13} "
        f"{'core %':>7} {'ratio':>6}"
    )
    for callers in (int(c) for c in args.callers.split(",")):
        shared = asyncio.run(measure(callers, args.ticks, True))
        own = asyncio.run(measure(callers, args.ticks, False))
        ratio = shared["cpu_ms_per_tick"] / own["cpu_ms_per_tick"] if own["cpu_ms_per_tick"] else 0
        rows.append(
            {"callers": callers, "shared": shared, "own_player": own, "ratio": round(ratio, 3)}
        )
        print(
            f"{callers:7d} {shared['cpu_ms_per_tick']:9.3f} {shared['tick_p99_ms']:7.3f} "
            f"{shared['core_pct']:7.2f} {own['cpu_ms_per_tick']:13.3f} {own['core_pct']:7.2f} "
            f"{ratio:6.3f}",
            flush=True,
        )
    print(
        "ms = CPU per 20 ms tick (decode, encode, sendto for every caller); core % of one core;"
        " ratio = shared / own player, same run"
    )
    if args.json:
        print(json.dumps({"benchmark": "moh_fanout", "ticks": args.ticks, "rows": rows}))


if __name__ == "__main__":
    main()
