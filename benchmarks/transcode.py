"""CPU per 20 ms frame to carry audio across a bridge, for each pair of codecs.

Real anchored legs of the PBX's media engine (softswitch.media_engine), bridged in
pairs: each tick, every receiving leg gets one packet of its codec (put straight into its
jitter buffer: no socket cost on the way in), and the engine's tick does what it does in a
call: pop, decode, convert the rate if needed, encode for the other leg's codec (or relay
the packet untouched when both legs share a codec) and send it to a sink socket. The CPU
time of the tick divided by the bridges is the cost of one frame in one direction. The
baseline, in the same run, is a plain G.711 relay (PCMU to PCMU: no decode, no encode).

    python benchmarks/transcode.py [--bridges 200] [--ticks 100] [--codecs PCMU,PCMA,G722,OPUS]
                                   [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

import sip
from media import codecs
from media.clock import MediaClock
from media.tones import sine_mix
from rtp import PortAllocator
from softswitch import codec_policy
from softswitch.media_engine import MAX_PAYLOAD, LegSource, MediaEngine, MediaLeg


def frames(codec: codecs.Codec, seconds: float = 2.0) -> list[bytes]:
    """A voice-band tone encoded as one stream of 20 ms packets."""
    n = codec.samples_per_frame()
    samples = sine_mix((440.0, 1320.0), int(codec.sample_rate * seconds), codec.sample_rate, -15)
    encoder = codec.encoder()
    return [encoder.encode(samples[i : i + n]) for i in range(0, len(samples), n)]


async def measure(a: str, b: str, bridges: int, ticks: int) -> dict[str, object]:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)  # never read: dropped
    host, port = sink.getsockname()
    engine = MediaEngine(MediaClock(), PortAllocator(42000, 42000 + 8 * bridges + 16))
    inbound: list[MediaLeg] = []  # the legs whose phones talk
    for _ in range(bridges):
        pair = []
        for name in (a, b):
            leg = await engine.new_leg("127.0.0.1")
            sdp = codec_policy.SIP_CODECS[name]
            pt = sdp.static_pt if sdp.static_pt is not None else 96
            leg.configure(sip.AudioStream(sdp, pt, host, port, "sendrecv", codecs=[(pt, sdp)]))
            pair.append(leg)
        sender, receiver = pair  # the far phone of ``sender`` talks; ``receiver`` hears it
        receiver.source = LegSource(sender)
        inbound.append(sender)
    payloads = frames(codecs.codec(a))
    seq = 0
    rows = np.array([leg.row for leg in inbound], dtype=np.int64)
    ssrc = np.full(len(rows), 0x1234, dtype=np.int64)
    block = np.zeros((len(rows), MAX_PAYLOAD), dtype=np.uint8)

    def feed() -> None:  # what the engine's receive pass queues from the phones' packets
        nonlocal seq
        payload = payloads[seq % len(payloads)]
        block[:, : len(payload)] = np.frombuffer(payload, dtype=np.uint8)
        size = np.full(len(rows), len(payload), dtype=np.int64)
        engine.jitter.put(rows, ssrc, np.full(len(rows), seq & 0xFFFF), block, size)
        seq += 1

    for n in range(10):  # warm-up: the jitter buffers start playing out
        feed()
        engine._tick(n)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for n in range(10, 10 + ticks):
        feed()
        engine._tick(n)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    engine.close()
    sink.close()
    return {
        "from": a,
        "to": b,
        "relay": a == b,
        "us_per_frame": round(cpu / ticks / bridges * 1e6, 2),
        "wall_us_per_frame": round(wall / ticks / bridges * 1e6, 2),
        "core_pct_per_1000_streams": round(cpu / ticks / bridges * 1000 / 0.020 * 100, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bridges", type=int, default=200)
    ap.add_argument("--ticks", type=int, default=100)
    ap.add_argument("--codecs", default=",".join(codecs.available()))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    names = [codecs.codec(n).name for n in args.codecs.split(",")]
    baseline = asyncio.run(measure("PCMU", "PCMU", args.bridges, args.ticks))
    base = float(baseline["us_per_frame"])  # type: ignore[arg-type]
    rows = []
    print(
        f"{'from':>5} -> {'to':<5} {'what':<16} {'us/frame':>9} {'x relay':>8} {'core %/1000':>12}"
    )
    for a, b in itertools.product(names, names):
        row = asyncio.run(measure(a, b, args.bridges, args.ticks))
        row["ratio_to_g711_relay"] = round(float(row["us_per_frame"]) / base, 2)  # type: ignore[arg-type]
        rows.append(row)
        what = "relay" if a == b else "transcode"
        if a != b and codecs.codec(a).sample_rate != codecs.codec(b).sample_rate:
            what += " + rate"
        print(
            f"{a:>5} -> {b:<5} {what:<16} {row['us_per_frame']:>9.2f} "
            f"{row['ratio_to_g711_relay']:>8.2f} {row['core_pct_per_1000_streams']:>12.1f}",
            flush=True,
        )
    print(
        f"us/frame = CPU per 20 ms frame, one direction (receive, decode, convert, encode, "
        f"send); x relay = ratio to a plain G.711 relay measured in the same run "
        f"({base:.2f} us); core %/1000 = one core's share for 1000 such streams"
    )
    if args.json:
        print(
            json.dumps(
                {
                    "benchmark": "transcode",
                    "bridges": args.bridges,
                    "ticks": args.ticks,
                    "g711_relay_us_per_frame": base,
                    "rows": rows,
                }
            )
        )


if __name__ == "__main__":
    main()
