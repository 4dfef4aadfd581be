"""Time per 20 ms tick to mix and encode a conference, by legs and talkers.

For each size (legs) and number of active talkers, one tick is: talker detection over
every leg, the sum of the talkers, an N-1 mix per talker, and the encodings: the shared
full mix once per codec in use (PCMU and PCMA legs are present), plus one encoding per
talker. Decoding every leg's payload (G.711, vectorised over the whole block) is shown
in its own column. The baseline, measured in the same run, is the naive mixer: every
leg gets its own N-1 mix and its own encoding.

    python benchmarks/mixer.py [--legs 10,100,500,1000,2000] [--talkers 1,3,10]
                               [--ticks 200] [--json] [--plot benchmarks/out/mixer.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media import g711
from media.codecs import PCMA, PCMU
from media.mixer import Mixer
from media.tones import sine_mix

FRAME = 160


def setup(legs: int, talkers: int) -> tuple[Mixer, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(legs * 31 + talkers)
    mixer = Mixer(legs)
    for _ in range(legs):
        mixer.add()
    voices = np.zeros((legs, FRAME), dtype=np.int16)
    for i in range(talkers):
        voices[i] = sine_mix((300.0 + 100 * i,), FRAME, 8000, -15)
    voices[talkers:] = rng.normal(0, 20, (legs - talkers, FRAME)).astype(np.int16)  # room noise
    payloads = g711.ulaw_encode(voices)  # what arrives from the legs
    alaw_legs = np.arange(legs) % 4 == 0  # a quarter of the legs use PCMA
    return mixer, payloads, alaw_legs


def tick(mixer: Mixer, payloads: np.ndarray, alaw: np.ndarray) -> tuple[float, float]:
    t0 = time.perf_counter()
    frames = g711.ulaw_decode(payloads)
    t1 = time.perf_counter()
    mixer.inputs[:] = frames
    mixer.has_input[:] = True
    out = mixer.mix()
    ulaw, alaw_enc = PCMU.encoder(), PCMA.encoder()
    out.shared_payload(PCMU, ulaw)
    out.shared_payload(PCMA, alaw_enc)
    for i, row in enumerate(out.talkers):
        (alaw_enc if alaw[row] else ulaw).encode(out.minus_one[i])
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def naive_tick(payloads: np.ndarray, alaw: np.ndarray) -> float:
    """Everyone gets an individual N-1 mix and encoding (no talker detection)."""
    t0 = time.perf_counter()
    frames = g711.ulaw_decode(payloads).astype(np.float32)
    total = frames.sum(axis=0)
    minus = np.clip(total[None, :] - frames, -32768, 32767).astype(np.int16)
    codes = np.where(alaw[:, None], g711.alaw_encode(minus), g711.ulaw_encode(minus))
    for row in range(len(codes)):
        codes[row].tobytes()  # one packet payload per leg
    return time.perf_counter() - t0


def measure(legs: int, talkers: int, ticks: int) -> dict[str, float]:
    mixer, payloads, alaw = setup(legs, talkers)
    for _ in range(10):
        tick(mixer, payloads, alaw)
    decode, mix = [], []
    for _ in range(ticks):
        d, m = tick(mixer, payloads, alaw)
        decode.append(d)
        mix.append(m)
    naive = [naive_tick(payloads, alaw) for _ in range(max(20, ticks // 4))]
    m_ms = float(np.median(mix) * 1000)
    n_ms = float(np.median(naive) * 1000)
    return {
        "legs": legs,
        "talkers": talkers,
        "mix_encode_ms": round(m_ms, 4),
        "mix_encode_p99_ms": round(float(np.percentile(mix, 99) * 1000), 4),
        "decode_ms": round(float(np.median(decode) * 1000), 4),
        "naive_ms": round(n_ms, 4),
        "ratio_vs_naive": round(m_ms / n_ms, 4) if n_ms else 0.0,
        "tick_budget_pct": round(m_ms / 20 * 100, 2),
    }


def plot(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for talkers in sorted({int(r["talkers"]) for r in rows}):
        sub = [r for r in rows if r["talkers"] == talkers]
        ax.plot(
            [r["legs"] for r in sub],
            [r["mix_encode_ms"] for r in sub],
            "o-",
            label=f"{talkers} talkers",
        )
    base = [r for r in rows if r["talkers"] == rows[0]["talkers"]]
    ax.plot(
        [r["legs"] for r in base],
        [r["naive_ms"] for r in base],
        "k--",
        label="naive: N-1 + encode for every leg",
    )
    ax.axhline(1.0, color="red", lw=0.8, label="1 ms target")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("legs in the conference")
    ax.set_ylabel("ms per 20 ms tick (median)")
    ax.set_title("Conference mix + encode per tick")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--legs", default="10,100,500,1000,2000")
    ap.add_argument("--talkers", default="1,3,10")
    ap.add_argument("--ticks", type=int, default=200)
    ap.add_argument("--plot", default="benchmarks/out/mixer.png")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    print(
        f"{'legs':>6} {'talkers':>7} {'mix+enc ms':>10} {'p99 ms':>8} {'decode ms':>9} "
        f"{'naive ms':>9} {'ratio':>6} {'% tick':>6}"
    )
    for legs in (int(x) for x in args.legs.split(",")):
        for talkers in (int(x) for x in args.talkers.split(",")):
            if talkers > legs:
                continue
            r = measure(legs, talkers, args.ticks)
            rows.append(r)
            print(
                f"{legs:6d} {talkers:7d} {r['mix_encode_ms']:10.3f} {r['mix_encode_p99_ms']:8.3f} "
                f"{r['decode_ms']:9.3f} {r['naive_ms']:9.3f} {r['ratio_vs_naive']:6.3f} "
                f"{r['tick_budget_pct']:6.2f}",
                flush=True,
            )
    print("ratio = mix+encode / naive (every leg its own N-1 and encoding), same run")
    if args.plot:
        plot(rows, Path(args.plot))
        print(f"plot: {args.plot}")
    if args.json:
        print(json.dumps({"benchmark": "mixer", "frame_ms": 20, "rows": rows}))


if __name__ == "__main__":
    main()
