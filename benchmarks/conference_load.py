"""1000 legs in one conference: the daemon under a real load, measured from outside.

The daemon (`softswitch run`, its own process) serves the bridge; a load generator in
another process (`python -m softswitch.loadgen`, built on this project's sip + rtp) places
N calls over loopback, each entering the conference code by RFC 4733 and then sending a
20 ms G.711 packet every tick: 3 legs talk (400, 1000, 1700 Hz tones), the others send
silence. One listener's received audio is kept and checked for the talkers' tones.

Reported: join time for all legs, the daemon's late media ticks (target < 1 %), its CPU
as % of one core, its RSS, and the listener check; a table, a PNG plot over time and,
with --json, one JSON object.

The I/O floor is measured in the same invocation on the same generator: the same legs
call benchmarks/io_floor.py, a bare receiver that answers and echoes every packet with
one recvmmsg and one sendmmsg per tick. ``ratio_to_floor`` is the daemon's CPU over the
floor's (target <= 1.5 at 1000 legs); the generator's own CPU is reported (it must stay
below the daemon's: it batches its sends the same way). ``--legs 100,250,500,1000,2000``
sweeps, with a plot of CPU and ratio against legs.

With ``--wideband 10``, 10 % of the legs are G.722 (16 kHz) phones, so the room mixes at
16 kHz too (media.mixer: each band's sum converted once per tick; one G.722 encoding of
the full mix shared by the wideband listeners); the same load all-G.711 runs first, in
the same invocation, and the CPU ratio between the two is the cost of the 16 kHz mix.

    python benchmarks/conference_load.py [--legs 1000 | --legs 100,250,500] [--seconds 60]
                                         [--json] [--no-floor]
                                         [--wideband PCT] [--no-baseline]
                                         [--plot benchmarks/out/conference_load.png]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
TALKERS = (400.0, 1000.0, 1700.0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def started(command: list[str], ready: str) -> subprocess.Popen[str]:
    """``command`` run from the repository, once it has printed a line holding ``ready``."""
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if ready in line:
            break
    return proc


def start_daemon(config: Path, stats_path: Path) -> subprocess.Popen[str]:
    """The daemon on ``config``, writing its counters to ``stats_path`` every second."""
    command = [sys.executable, "-m", "softswitch.cli", "run", "--config", str(config)]
    command += ["--log-level", "warning", "--stats-file", str(stats_path)]
    return started(command, "softswitch running")


def start_floor(port: int, rtp: int) -> subprocess.Popen[str]:
    """The bare recvmmsg/sendmmsg echo (benchmarks/io_floor.py) in the daemon's place."""
    command = [sys.executable, str(ROOT / "benchmarks" / "io_floor.py")]
    command += ["--listen", f"127.0.0.1:{port}", "--rtp-port", str(rtp)]
    return started(command, "floor running")


def read_stats(path: Path) -> dict[str, float]:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def tone_level(audio: np.ndarray, freq: float) -> float:
    x = audio.astype(np.float64)
    if len(x) < 800:
        return 0.0
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / 8000)
    near = spectrum[(freqs > freq - 15) & (freqs < freq + 15)]
    return float(near.max() / (np.sqrt(np.mean(x * x)) * len(x) + 1e-9))


def generator_command(
    target: str, legs: int, seconds: float, work: Path, wideband: float
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "softswitch.loadgen",
        "--target",
        target,
        "--user",
        "100",
        "--password",
        "host-secret",
        "--code",
        "2001",
        "--host-code",
        "1001",
        "--legs",
        str(legs),
        "--talkers",
        "3",
        "--seconds",
        str(seconds),
        "--record",
        str(legs // 2),
        "--save-prefix",
        str(work / "heard-"),
        "--wideband",
        str(wideband),
    ]


class Lines:
    """A child's output lines, read by a thread (the main loop only samples CPU)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        import threading

        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line)

    def joined(self) -> bool:
        return any('"joined"' in line for line in self.lines)

    def text(self) -> str:
        self._thread.join(5)
        return "".join(self.lines)


def run_floor(legs: int, seconds: float, work: Path, wideband: float = 0.0) -> dict[str, float]:
    """The same generator against the bare batched echo: the floor's and the generator's
    CPU while all legs are in."""
    port, rtp = free_port(), free_port()
    floor = start_floor(port, rtp)
    generator = subprocess.Popen(
        generator_command(f"sip:800@127.0.0.1:{port}", legs, seconds, work, wideband),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = Lines(generator)
    steady: list[tuple[float, float, float]] = []
    while generator.poll() is None:
        time.sleep(1.0)
        if out.joined():
            try:
                steady.append(
                    (time.monotonic(), cpu_seconds(floor.pid), cpu_seconds(generator.pid))
                )
            except (OSError, IndexError):
                break
    floor.terminate()
    floor.wait(30)
    out.text()
    if len(steady) < 3:
        return {}
    (t0, f0, g0), (t1, f1, g1) = steady[1], steady[-2]  # whole seconds inside the window
    return {
        "floor_cpu_pct": round((f1 - f0) / (t1 - t0) * 100, 1),
        "floor_generator_cpu_pct": round((g1 - g0) / (t1 - t0) * 100, 1),
        "floor_measured_s": round(t1 - t0, 1),
    }


def run(legs: int, seconds: float, work: Path, wideband: float = 0.0) -> dict[str, object]:
    port = free_port()
    rtp = random.randrange(30000, 50000, 2)
    config = work / "load.toml"
    config.write_text(f"""
[server]
listen = ["udp:127.0.0.1:{port}"]
domain = "load.test"
data_dir = "{work / "data"}"
rtp_ports = [{rtp}, {rtp + 200}]
max_calls = {legs + 100}

[conference]
max_legs = {legs + 10}
max_legs_total = {legs + 50}

[[users]]
extension = "100"
name = "Host"
password = "host-secret"
pin = "1234"
conference_host_code = "1001"
conference_code = "2001"
""")
    stats_path = work / "stats.json"
    daemon = start_daemon(config, stats_path)
    daemon_log = Lines(daemon)  # drained: a full pipe would stall the daemon's loop
    listener = legs // 2
    generator = subprocess.Popen(
        generator_command(f"sip:800@127.0.0.1:{port}", legs, seconds, work, wideband),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = Lines(generator)
    started = time.monotonic()
    samples: list[dict[str, float]] = []
    joined_at = None
    # (time, daemon CPU seconds, stats) while all legs are in: the steady window measured
    steady: list[tuple[float, float, dict[str, float]]] = []
    generator_cpu: list[float] = []
    last_cpu, last_t = cpu_seconds(daemon.pid), time.monotonic()
    while generator.poll() is None:
        time.sleep(1.0)
        now = time.monotonic()
        cpu = cpu_seconds(daemon.pid)
        try:
            gen_cpu = cpu_seconds(generator.pid)
        except (OSError, IndexError):
            break
        stats = read_stats(stats_path)
        samples.append(
            {
                "t": round(now - started, 2),
                "cpu_pct": round((cpu - last_cpu) / (now - last_t) * 100, 1),
                "rss_mb": round(rss_mb(daemon.pid), 1),
                "members": stats.get("conference_members", 0),
                "late_ticks": stats.get("late_ticks", 0),
                "ticks": stats.get("ticks", 0),
                "rtp_kernel_drops": stats.get("rtp_kernel_drops", 0),
            }
        )
        last_cpu, last_t = cpu, now
        if stats.get("conference_members", 0) >= legs:
            if joined_at is None:
                joined_at = now - started
            steady.append((now, cpu, stats))
            generator_cpu.append(gen_cpu)
    out = lines.text()
    peak_rss = max((s["rss_mb"] for s in samples), default=0.0)
    last_stats = read_stats(stats_path)
    daemon.terminate()
    try:
        daemon.wait(30)
    except subprocess.TimeoutExpired:
        daemon.kill()
    log = daemon_log.text()
    result: dict[str, object] = {"legs": legs, "seconds": seconds, "samples": samples}
    result["overload_refused"] = last_stats.get("overload_refused", 0)
    result["daemon_tracebacks"] = log.count("Traceback")
    result["overload_episodes"] = [
        line.split("event=overload", 1)[1].strip()
        for line in log.splitlines()
        if "event=overload state=start" in line
    ][:10]
    every = round(1 / wideband) if wideband > 0 else 0
    result["wideband_pct"] = round(wideband * 100, 1)
    result["wideband_legs"] = sum(
        1 for i in range(3, legs) if every and i % every == every - 1 and i != listener
    )
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    joined: dict[str, object] = next((e for e in events if e.get("event") == "joined"), {})
    result["answered"] = joined.get("answered", 0)
    result["generator_join_s"] = joined.get("seconds")
    result["join_all_s"] = round(joined_at, 2) if joined_at is not None else None
    if len(steady) >= 2:
        (t0, cpu0, stats0), (t1, cpu1, stats1) = steady[0], steady[-1]
        ticks = stats1.get("ticks", 0) - stats0.get("ticks", 0)
        late = stats1.get("late_ticks", 0) - stats0.get("late_ticks", 0)
        result["measured_s"] = round(t1 - t0, 1)
        result["cpu_pct_of_one_core"] = round((cpu1 - cpu0) / (t1 - t0) * 100, 1)
        result["generator_cpu_pct"] = round(
            (generator_cpu[-1] - generator_cpu[0]) / (t1 - t0) * 100, 1
        )
        result["ticks"] = ticks
        result["late_ticks"] = late
        result["late_pct"] = round(late / ticks * 100, 3) if ticks else None
        result["skipped_ticks"] = stats1.get("skipped_ticks", 0) - stats0.get("skipped_ticks", 0)
        result["late_ticks_joining"] = stats0.get("late_ticks", 0)
        result["rtp_kernel_drops_joining"] = stats0.get("rtp_kernel_drops", 0)
        result["rtp_kernel_drops"] = stats1.get("rtp_kernel_drops", 0) - stats0.get(
            "rtp_kernel_drops", 0
        )
    result["peak_rss_mb"] = peak_rss
    heard_file = work / f"heard-{listener}.npy"
    if heard_file.exists():
        heard = np.load(heard_file)
        result["listener_seconds"] = round(len(heard) / 8000, 1)
        tail = heard[-8000 * 5 :]
        levels = {str(int(f)): round(tone_level(tail, f), 3) for f in (*TALKERS, 2300.0)}
        result["listener_tone_levels"] = levels
        result["listener_hears_talkers"] = all(levels[str(int(f))] > 0.05 for f in TALKERS)
    result["generator_output"] = out[-500:]
    return result


def plot(result: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    assert isinstance(samples, list)
    t = [s["t"] for s in samples]
    fig, ax = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    ax[0].plot(t, [s["cpu_pct"] for s in samples], color="tab:red")
    ax[0].axhline(50, color="gray", lw=0.8, ls="--")
    ax[0].set_ylabel("daemon CPU %\n(one core)")
    ax[1].plot(t, [s["members"] for s in samples], color="tab:blue")
    ax[1].set_ylabel("members")
    ax[2].plot(t, [s["late_ticks"] for s in samples], color="tab:orange")
    ax[2].set_ylabel("late ticks\n(cumulative)")
    ax[2].set_xlabel("seconds since the first call")
    fig.suptitle(f"Conference of {result['legs']} legs, 3 talkers")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def with_floor(legs: int, seconds: float, wideband: float, floor: bool) -> dict[str, object]:
    """The daemon's run, then the floor's on the same generator, and their ratio."""
    with tempfile.TemporaryDirectory() as tmp:
        result = run(legs, seconds, Path(tmp), wideband)
    if floor:
        with tempfile.TemporaryDirectory() as tmp:
            result.update(run_floor(legs, seconds, Path(tmp), wideband))
        cpu, base = result.get("cpu_pct_of_one_core"), result.get("floor_cpu_pct")
        if isinstance(cpu, float) and isinstance(base, float) and base:
            result["ratio_to_floor"] = round(cpu / base, 2)
    return result


def plot_sweep(results: list[dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    legs = [r["legs"] for r in results]
    fig, ax = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for key, label in (
        ("cpu_pct_of_one_core", "daemon"),
        ("floor_cpu_pct", "I/O floor (batched echo)"),
        ("generator_cpu_pct", "load generator"),
    ):
        ax[0].plot(legs, [r.get(key) for r in results], marker="o", label=label)
    ax[0].set_ylabel("CPU, % of one core")
    ax[0].legend()
    ax[1].plot(legs, [r.get("ratio_to_floor") for r in results], marker="o", color="tab:red")
    ax[1].axhline(1.5, color="gray", lw=0.8, ls="--")
    ax[1].set_ylabel("daemon / floor")
    ax[1].set_xlabel("legs in one conference (3 talkers)")
    fig.suptitle("Conference load against the I/O floor, same run")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--legs", default="1000", help="a number, or a list to sweep: 100,250,500")
    ap.add_argument("--seconds", type=float, default=60.0, help="talking time after joining")
    ap.add_argument("--plot", default="benchmarks/out/conference_load.png")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--wideband", type=float, default=0.0, help="%% of legs on G.722 (16 kHz)")
    ap.add_argument(
        "--no-baseline", action="store_true", help="with --wideband: skip the all-G.711 run"
    )
    ap.add_argument("--no-floor", action="store_true", help="skip the I/O floor run")
    args = ap.parse_args()
    counts = [int(x) for x in str(args.legs).split(",")]
    if len(counts) > 1:
        sweep = [
            with_floor(n, args.seconds, args.wideband / 100, not args.no_floor) for n in counts
        ]
        print(
            f"{'legs':>5} {'daemon %':>8} {'floor %':>8} {'ratio':>6} {'gen %':>6} "
            f"{'late %':>7} {'skipped':>7} {'join s':>7} {'RSS MB':>7} {'hears':>5}"
        )
        for r in sweep:
            print(
                f"{r['legs']:>5} {r.get('cpu_pct_of_one_core')!s:>8} {r.get('floor_cpu_pct')!s:>8}"
                f" {r.get('ratio_to_floor')!s:>6} {r.get('generator_cpu_pct')!s:>6}"
                f" {r.get('late_pct')!s:>7} {r.get('skipped_ticks')!s:>7}"
                f" {r.get('join_all_s')!s:>7} {r.get('peak_rss_mb')!s:>7}"
                f" {r.get('listener_hears_talkers')!s:>5}"
            )
        if args.plot:
            plot_sweep(sweep, Path(args.plot))
            print(f"plot: {args.plot}")
        if args.json:
            kept = [
                {k: v for k, v in r.items() if k not in ("generator_output", "samples")}
                for r in sweep
            ]
            print(json.dumps({"benchmark": "conference_load", "sweep": kept}))
        return
    legs = counts[0]
    baseline: dict[str, object] | None = None
    if args.wideband > 0 and not args.no_baseline:
        with tempfile.TemporaryDirectory() as tmp:
            baseline = run(legs, args.seconds, Path(tmp))
        print(
            f"baseline, all G.711: CPU {baseline.get('cpu_pct_of_one_core')} % of one core, "
            f"late {baseline.get('late_pct')} %",
            flush=True,
        )
    result = with_floor(legs, args.seconds, args.wideband / 100, not args.no_floor)
    if baseline is not None:
        base_cpu, cpu = baseline.get("cpu_pct_of_one_core"), result.get("cpu_pct_of_one_core")
        result["narrowband_baseline"] = {
            k: baseline.get(k)
            for k in ("cpu_pct_of_one_core", "late_pct", "late_ticks", "ticks", "peak_rss_mb")
        }
        if isinstance(base_cpu, float) and isinstance(cpu, float) and base_cpu:
            result["cpu_ratio_to_narrowband"] = round(cpu / base_cpu, 3)
    print(
        f"legs {result['legs']}: answered {result['answered']}, all joined after "
        f"{result['join_all_s']} s"
    )
    rows = [
        ("wideband (G.722) legs", f"{result['wideband_legs']} ({result['wideband_pct']} %)"),
        (
            "CPU ratio to all-G.711 run",
            f"{result.get('cpu_ratio_to_narrowband')} {result.get('narrowband_baseline')}",
        ),
        ("measured (after the join)", f"{result.get('measured_s')} s"),
        ("daemon CPU, % of one core", f"{result.get('cpu_pct_of_one_core')}"),
        ("I/O floor CPU (same generator)", f"{result.get('floor_cpu_pct')}"),
        ("daemon / floor", f"{result.get('ratio_to_floor')} (target <= 1.5)"),
        (
            "generator CPU (daemon run, floor run)",
            f"{result.get('generator_cpu_pct')}, {result.get('floor_generator_cpu_pct')}",
        ),
        (
            "late ticks (all legs in)",
            f"{result.get('late_ticks')} of {result.get('ticks')} = "
            f"{result.get('late_pct')} % (target < 1 %)",
        ),
        ("late ticks while joining", f"{result.get('late_ticks_joining')}"),
        (
            "RTP dropped by the kernel (joining, all in)",
            f"{result.get('rtp_kernel_drops_joining')}, {result.get('rtp_kernel_drops')}",
        ),
        ("INVITEs refused by overload control", f"{result.get('overload_refused')}"),
        ("daemon log: tracebacks", f"{result.get('daemon_tracebacks')}"),
        ("skipped ticks", f"{result.get('skipped_ticks')}"),
        ("peak RSS", f"{result.get('peak_rss_mb')} MB"),
        (
            "listener hears the 3 talkers",
            f"{result.get('listener_hears_talkers')} {result.get('listener_tone_levels')}",
        ),
    ]
    for name, value in rows:
        print(f"  {name:38} {value}")
    if args.plot:
        plot(result, Path(args.plot))
        print(f"plot: {args.plot}")
    if args.json:
        print(
            json.dumps(
                {
                    "benchmark": "conference_load",
                    **{k: v for k, v in result.items() if k != "generator_output"},
                }
            )
        )


if __name__ == "__main__":
    main()
