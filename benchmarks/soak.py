"""Endurance: 10 000 calls through the PBX at a steady rate; does anything grow?

The daemon (``softswitch run``, its own process) serves SIPp callers that authenticate as
100 and call 101 (a SIPp uas registered from its port), as in ``b2bua_cps.py``; mixed in,
some callers put 101 on hold and resume (re-INVITEs), some transfer it blind (REFER) to
103, a SIPp callee that hangs up by itself; meanwhile 102 re-registers every two seconds
(a new Call-ID each time: the binding is rewritten in SQLite). Every second the daemon's
RSS, open file descriptors (``/proc``), asyncio tasks, RTP ports in use, transactions and
dialogs (its stats file) and the size of its SQLite files are sampled.

Reported per quantity: the idle baseline (before the first call), the peak, the slope over
the second half of the load (per minute: ~0 when nothing leaks), and the value after the
load once the transactions' timers ran out (``--settle``), as a ratio to the baseline.

    python benchmarks/soak.py [--calls 10000] [--rate 50] [--hold 2] [--settle 40]
                              [--json] [--plot benchmarks/out/soak.png]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from b2bua_cps import (
    CALLEE,
    CALLER,
    ROOT,
    _message_count,
    free_port,
    office,
    sipp_scenario,
    wait_line,
)

TARGET = ("103", "target-secret")
REFRESHER = ("102", "refresher-secret")
QUANTITIES = ("rss_mb", "fds", "tasks", "rtp_ports", "transactions", "dialogs", "sqlite_kb")


def users() -> str:
    return "".join(
        f'\n[[users]]\nextension = "{ext}"\nname = "User {ext}"\npassword = "{pw}"\n'
        f'pin = "1{ext}"\n'
        for ext, pw in (TARGET, REFRESHER)
    )


def argv(*parts: list[str]) -> list[str]:
    return [arg for part in parts for arg in part]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Sampler:
    pid: int
    stats: Path
    data: Path
    rows: list[dict[str, float]] = field(default_factory=list)
    start: float = field(default_factory=time.monotonic)

    def sample(self, phase: str) -> dict[str, float]:
        try:
            stats = json.loads(self.stats.read_text())
        except (OSError, ValueError):
            stats = {}
        # the registrations store (with its write-ahead log): bounded by the phones, not the
        # calls; the call history (cdr.sqlite) grows a row per call by design, up to its
        # retention, and is not counted here
        sqlite = sum(
            p.stat().st_size for p in self.data.glob("registrations.sqlite*") if p.is_file()
        )
        row = {
            "t": round(time.monotonic() - self.start, 1),
            "phase": {"idle": 0.0, "load": 1.0, "after": 2.0}[phase],
            "rss_mb": round(rss_mb(self.pid), 1),
            "fds": float(len(os.listdir(f"/proc/{self.pid}/fd"))),
            "tasks": float(stats.get("tasks", 0)),
            "rtp_ports": float(stats.get("rtp_ports", 0)),
            "transactions": float(stats.get("transactions", 0)),
            "dialogs": float(stats.get("dialogs", 0)),
            "sqlite_kb": round(sqlite / 1024, 1),
        }
        self.rows.append(row)
        return row


def slope_per_minute(rows: list[dict[str, float]], key: str) -> float:
    """Least-squares slope of ``key`` against time, per minute."""
    if len(rows) < 2:
        return 0.0
    ts = [r["t"] for r in rows]
    vs = [r[key] for r in rows]
    mt, mv = sum(ts) / len(ts), sum(vs) / len(vs)
    den = sum((t - mt) ** 2 for t in ts)
    return 60 * sum((t - mt) * (v - mv) for t, v in zip(ts, vs, strict=True)) / den if den else 0.0


def sipp(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["sipp", *args, "-nostdin"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=10000)
    ap.add_argument("--rate", type=float, default=50.0, help="calls/s, all kinds together")
    ap.add_argument("--hold", type=float, default=2.0, help="seconds of talk per call")
    ap.add_argument("--settle", type=float, default=40.0, help="seconds after the load")
    ap.add_argument("--plot", type=Path, default=ROOT / "benchmarks/out/soak.png")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--log", type=Path, help="keep the daemon's log there")
    ap.add_argument(
        "--sipp-errors", type=Path, help="keep the callers' SIPp error traces in this directory"
    )
    ap.add_argument("--only", help="one kind of call: plain, hold or transfer")
    args = ap.parse_args()
    hold_ms = str(int(args.hold * 1000))
    kinds = {"plain": 0.90, "hold": 0.06, "transfer": 0.04}
    if args.only:
        kinds = {args.only: 1.0}
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp_name:
        tmp = Path(tmp_name)
        port, data = free_port(), tmp / "data"
        (tmp / "soak.toml").write_text(office(port, data, 20000) + users())
        stats = tmp / "stats.json"
        log = tmp / "pbx.log"
        with log.open("wb") as err:
            pbx = subprocess.Popen(
                argv(
                    [sys.executable, "-m", "softswitch.cli", "run"],
                    ["--config", str(tmp / "soak.toml"), "--log-level", "info"],
                    ["--stats-file", str(stats)],
                ),
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        procs: list[subprocess.Popen[str]] = []
        try:
            wait_line(pbx, b"softswitch running")
            register = sipp_scenario("register.xml", {"EXPIRES": "86400"}, tmp)
            callees = {}
            for ext, password, scenario in (
                (CALLEE[0], CALLEE[1], None),
                (TARGET[0], TARGET[1], sipp_scenario("uas_hangup.xml", {"HOLD_MS": hold_ms}, tmp)),
            ):
                uas_port = free_port()
                done = subprocess.run(
                    argv(
                        ["sipp", f"127.0.0.1:{port}", "-sf", str(register), "-i", "127.0.0.1"],
                        ["-p", str(uas_port), "-s", ext, "-au", ext, "-ap", password, "-m", "1"],
                        ["-nostdin", "-timeout", "10s", "-timeout_error"],
                    ),
                    cwd=tmp,
                    capture_output=True,
                )
                assert done.returncode == 0, done.stdout[-500:]
                how = ["-sf", str(scenario)] if scenario else ["-sn", "uas"]
                procs.append(sipp([*how, "-i", "127.0.0.1", "-p", str(uas_port)], tmp))
                callees[ext] = uas_port
            sampler = Sampler(pbx.pid, stats, data)
            time.sleep(2.0)
            for _ in range(5):
                print_row(sampler.sample("idle"))
                time.sleep(1.0)
            duration = args.calls / args.rate
            refresher = sipp(
                argv(
                    [f"127.0.0.1:{port}", "-sf"],
                    [str(sipp_scenario("register.xml", {"EXPIRES": "60"}, tmp))],
                    ["-i", "127.0.0.1", "-p", str(free_port()), "-s", REFRESHER[0]],
                    ["-au", REFRESHER[0], "-ap", REFRESHER[1], "-r", "1", "-rp", "2000"],
                    ["-m", str(int(duration / 2) + 1)],
                ),
                tmp,
            )
            callers: dict[str, subprocess.Popen[str]] = {}
            for kind, share in kinds.items():
                names = {"plain": "b2bua_uac.xml", "hold": "soak_hold.xml"}
                name = names.get(kind, "soak_transfer.xml")
                scenario = sipp_scenario(name, {"NUMBER": CALLEE[0], "TARGET": TARGET[0]}, tmp)
                scenario.write_text(scenario.read_text().replace("HOLD_MS", hold_ms))
                rate, calls = args.rate * share, round(args.calls * share)
                callers[kind] = sipp(
                    argv(
                        [f"127.0.0.1:{port}", "-sf", str(scenario), "-i", "127.0.0.1"],
                        ["-p", str(free_port()), "-s", CALLER[0], "-au", CALLER[0]],
                        ["-ap", CALLER[1], "-r", f"{rate:.3f}", "-m", str(calls)],
                        ["-l", str(int(rate * (args.hold + 10)) + 20)],
                        ["-timeout", f"{duration + 120:.0f}s", "-timeout_error"],
                        ["-trace_err"] if args.sipp_errors else [],
                    ),
                    tmp,
                )
            print(f"load: {args.calls} calls at {args.rate:g}/s ({duration:.0f} s)", flush=True)
            next_print = 0.0
            while any(p.poll() is None for p in callers.values()):
                row = sampler.sample("load")
                if row["t"] >= next_print:
                    print_row(row)
                    next_print = row["t"] + 10
                time.sleep(1.0)
            refresher.terminate()
            outputs = {k: p.communicate()[0] for k, p in callers.items()}
            settle_end = time.monotonic() + args.settle
            while time.monotonic() < settle_end:
                row = sampler.sample("after")
                time.sleep(1.0)
            print_row(row)
        finally:
            for proc in procs:
                proc.terminate()
            pbx.send_signal(signal.SIGTERM)
            pbx.wait(30)
        if args.log:
            args.log.write_bytes(log.read_bytes())
        if args.sipp_errors:
            args.sipp_errors.mkdir(parents=True, exist_ok=True)
            for trace in tmp.glob("*_errors.log"):
                shutil.copy(trace, args.sipp_errors / trace.name)
        errors = sum(
            1
            for line in log.read_text(errors="replace").splitlines()
            if " ERROR " in line or "Traceback" in line or "never retrieved" in line
        )
    summary = summarise(sampler.rows, outputs, errors, args)
    if args.plot:
        plot(sampler.rows, args.plot)
        print(f"plot: {args.plot}")
    if args.json:
        print(json.dumps({"benchmark": "soak", **summary, "samples": sampler.rows}))


def print_row(row: dict[str, float]) -> None:
    print(
        f"t={row['t']:6.0f}s rss={row['rss_mb']:6.1f} MB fds={row['fds']:5.0f} "
        f"tasks={row['tasks']:5.0f} rtp_ports={row['rtp_ports']:5.0f} "
        f"transactions={row['transactions']:5.0f} dialogs={row['dialogs']:5.0f} "
        f"sqlite={row['sqlite_kb']:7.1f} kB",
        flush=True,
    )


def summarise(
    rows: list[dict[str, float]], outputs: dict[str, str], errors: int, args: argparse.Namespace
) -> dict[str, object]:
    idle = [r for r in rows if r["phase"] == 0.0]
    load = [r for r in rows if r["phase"] == 1.0]
    after = [r for r in rows if r["phase"] == 2.0]
    second_half = load[len(load) // 2 :]
    calls: dict[str, dict[str, int]] = {}
    for kind, out in outputs.items():
        failed = [int(x) for x in re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", out)]
        ok = [int(x) for x in re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", out)]
        # a call refused by overload control (503 to either INVITE) ends at the scenario's
        # "refused" label: a successful call to SIPp, counted apart here
        refused = _message_count(out, "503", 0) + _message_count(out, "503", 1)
        calls[kind] = {
            "ok": (ok[-1] if ok else 0) - refused,
            "failed": failed[-1] if failed else -1,
            "refused": refused,
        }
    print(f"\ncalls: {calls}; error lines in the daemon's log: {errors}")
    print(
        f"{'quantity':13} {'idle':>9} {'peak':>9} {'slope/min':>10} {'(2nd half)':>10} "
        f"{'after':>9} {'after/idle':>10}"
    )
    table: dict[str, dict[str, float]] = {}
    for key in QUANTITIES:
        base = sum(r[key] for r in idle) / len(idle) if idle else 0.0
        peak = max((r[key] for r in load), default=0.0)
        slope = slope_per_minute(second_half, key)
        end = after[-1][key] if after else 0.0
        ratio = end / base if base else (0.0 if end == 0 else float("inf"))
        table[key] = {
            "idle": round(base, 1),
            "peak": round(peak, 1),
            "slope_per_min_second_half": round(slope, 2),
            "after": round(end, 1),
            "after_over_idle": round(ratio, 3),
        }
        print(f"{key:13} {base:9.1f} {peak:9.1f} {slope:10.2f} {'':10} {end:9.1f} {ratio:10.3f}")
    return {
        "calls_offered": args.calls,
        "rate": args.rate,
        "hold_s": args.hold,
        "calls": calls,
        "failed": sum(max(0, c["failed"]) for c in calls.values()),
        "log_errors": errors,
        "quantities": table,
    }


def plot(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 7), sharex=True)
    t = [r["t"] for r in rows]
    for ax, keys in zip(
        axes.flat,
        (("rss_mb",), ("fds", "rtp_ports"), ("tasks", "transactions", "dialogs"), ("sqlite_kb",)),
        strict=True,
    ):
        for key in keys:
            ax.plot(t, [r[key] for r in rows], label=key)
        starts = [r["t"] for r in rows if r["phase"] == 1.0]
        if starts:
            ax.axvspan(starts[0], starts[-1], color="grey", alpha=0.1)
        ax.legend()
    axes[1][0].set_xlabel("seconds (shaded: load)")
    axes[1][1].set_xlabel("seconds (shaded: load)")
    fig.suptitle("soak: the daemon over time")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
