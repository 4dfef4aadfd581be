"""Calls per second through the PBX (a B2BUA with anchored media) under SIPp, and overload.

Each call: a SIPp uac authenticates as extension 100 (INVITE, 407, ACK, INVITE with
Proxy-Authorization) and calls 101; the PBX rings 101's binding, a SIPp uas that
registered as 101 from its own port, bridges the two legs (SDP rewritten, an RTP port
pair per leg, both legs on the media clock) and relays the BYE after ``--hold`` seconds.
A fresh daemon (``softswitch run``, its own process, loopback) serves each rate.

Per offered rate: calls answered, refused (503 from overload control), failed (SIPp's
count: timeouts, unexpected messages), retransmissions, achieved calls/s (answered per
second of offered load), the daemon's CPU per answered call, set-up time percentiles
(first INVITE to 200 OK, SIPp's response-time trace) and error lines in the daemon's log.
The figure is the highest achieved rate with 0 failed and 0 refused calls; its ratio is
taken to SIPp's own uas (SIPp's built-in uac into SIPp's built-in uas, same hold time)
measured in the same run. Then the PBX is offered ``--overload`` times that capacity:
goodput (answered calls/s) as a share of the peak, and answered calls that failed.

    python benchmarks/b2bua_cps.py [--rates 50,100,200,300,400,500] [--seconds 10]
        [--hold 2] [--overload 2,4] [--json] [--plot benchmarks/out/b2bua_cps.png]
        [--profile FILE] [--target pbx|uas]

``--target uas`` runs the same ladder and overload against ``examples/uas.py`` (SIPp's
built-in uac, no authentication). ``--profile FILE`` runs the daemon under cProfile at
the first rate only and writes the statistics to FILE.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = Path(__file__).resolve().parent / "sipp"
TICKS = os.sysconf("SC_CLK_TCK")
CALLER = ("100", "caller-secret")
CALLEE = ("101", "callee-secret")
ERROR_LINE = re.compile(r" (ERROR|CRITICAL) |Traceback|exception was never retrieved")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def office(port: int, data: Path, rtp: int) -> str:
    return f"""
[server]
listen = ["udp:127.0.0.1:{port}"]
domain = "bench.test"
data_dir = "{data}"
rtp_ports = [{rtp}, {rtp + 20000}]
max_calls = 10000
keepalive_interval = 3600
registration_max_expires = 86400
failed_auth_limit = 1000

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
"""


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    log: Path
    port: int
    extra: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self) -> None:
        for proc in [*self.extra, self.proc]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.extra, self.proc]:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def errors(self) -> int:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return sum(1 for line in text.splitlines() if ERROR_LINE.search(line))


def wait_line(proc: subprocess.Popen[bytes], text: bytes, timeout: float = 30.0) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if text in line:
            return
        if not line and proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}) before {text!r}")
    raise RuntimeError(f"no {text!r} within {timeout} s")


def start_pbx(tmp: Path, profile: Path | None) -> Server:
    port = free_port()
    data = tmp / "data"
    config = tmp / "bench.toml"
    config.write_text(office(port, data, 20000))
    log = tmp / "pbx.log"
    cmd = [sys.executable]
    if profile is not None:
        cmd += ["-m", "cProfile", "-o", str(profile)]
    cmd += ["-m", "softswitch.cli", "run", "--config", str(config), "--log-level", "info"]
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err)
    wait_line(proc, b"softswitch running")
    server = Server(proc, log, port)
    # the callee: a SIPp REGISTER from port P, then SIPp's uas on that same port
    uas_port = free_port()
    register = sipp_scenario("register.xml", {"EXPIRES": "86400"}, tmp)
    cmd = ["sipp", f"127.0.0.1:{port}", "-sf", str(register), "-i", "127.0.0.1"]
    cmd += ["-p", str(uas_port), "-s", CALLEE[0], "-au", CALLEE[0], "-ap", CALLEE[1]]
    cmd += ["-m", "1", "-nostdin", "-timeout", "10s", "-timeout_error"]
    done = subprocess.run(
        cmd,
        cwd=tmp,
        capture_output=True,
    )
    if done.returncode != 0:
        server.stop()
        raise RuntimeError(f"SIPp could not register {CALLEE[0]}: {done.stdout[-400:]!r}")
    uas = subprocess.Popen(
        ["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port), "-nostdin"],
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server.extra.append(uas)
    time.sleep(0.5)
    return server


def start_uas(tmp: Path, kind: str) -> Server:
    port = free_port()
    log = tmp / f"{kind}.log"
    if kind == "example-uas":
        cmd = [sys.executable, "examples/uas.py", "--listen", f"127.0.0.1:{port}"]
        cmd += ["--transport", "udp"]
    else:
        cmd = ["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-nostdin"]
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err)
    if kind == "example-uas":
        wait_line(proc, b"uas listening")
    else:
        time.sleep(1.0)
    return Server(proc, log, port)


def sipp_scenario(name: str, values: dict[str, str], tmp: Path) -> Path:
    text = (SCENARIOS / name).read_text()
    for key, value in values.items():
        text = text.replace(key, value)
    path = tmp / name
    path.write_text(text)
    return path


@dataclass
class Row:
    target: str
    rate: int
    calls: int
    answered: int = 0
    refused: int = 0
    failed: int = 0
    answered_failed: int = 0
    retransmissions: int = 0
    achieved_cps: float = 0.0
    cpu_pct: float = 0.0
    cpu_ms_per_call: float = 0.0
    setup_p50_ms: float = 0.0
    setup_p90_ms: float = 0.0
    setup_p99_ms: float = 0.0
    setup_max_ms: float = 0.0
    log_errors: int = 0
    phase: str = "ladder"


def _count(out: str, pattern: str) -> list[int]:
    return [int(x) for x in re.findall(pattern, out)]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_uac(target: str, server: Server, rate: int, seconds: float, hold: float, tmp: Path) -> Row:
    calls = max(1, int(rate * seconds))
    work = Path(tempfile.mkdtemp(dir=tmp))
    cmd = ["sipp", f"127.0.0.1:{server.port}", "-i", "127.0.0.1", "-p", str(free_port())]
    if target == "pbx":
        scenario = sipp_scenario("b2bua_uac.xml", {"NUMBER": CALLEE[0]}, work)
        scenario.write_text(scenario.read_text().replace("HOLD_MS", str(int(hold * 1000))))
        cmd += ["-sf", str(scenario), "-s", CALLER[0], "-au", CALLER[0], "-ap", CALLER[1]]
    else:
        cmd += ["-sn", "uac", "-d", str(int(hold * 1000))]
    cmd += ["-r", str(rate), "-m", str(calls), "-l", str(max(200, int(rate * (hold + 8))))]
    cmd += ["-nostdin", "-timeout", f"{seconds + hold + 60:.0f}s", "-timeout_error"]
    cmd += ["-trace_rtt", "-rtt_freq", "1", "-max_socket", "20000"]
    cpu0 = cpu_seconds(server.proc.pid)
    start = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=work).stdout
    elapsed = time.monotonic() - start
    cpu = cpu_seconds(server.proc.pid) - cpu0
    row = Row(target, rate, calls)
    failed = _count(out, r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)")
    row.failed = failed[-1] if failed else calls
    row.retransmissions = _retransmissions(out)
    if target == "pbx":
        row.answered = _message_count(out, "200", 0)  # the 200 to the authenticated INVITE
        row.refused = _message_count(out, "503", 0) + _message_count(out, "503", 1)
        completed = _message_count(out, "200", 1)  # the 200 to BYE
    else:
        ok = _count(out, r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)")
        row.answered = completed = ok[-1] if ok else 0
    row.answered_failed = max(0, row.answered - completed)
    dates, times = _rtts(work)
    # answered per second of wall clock: the answers that came within the offered
    # schedule's length from the first one (a PBX that falls behind answers fewer in it;
    # one straggler retransmitted 20 s later neither counts nor stretches the window)
    window = calls / rate
    first = min(dates, default=0.0)
    on_time = sum(1 for d in dates if d - first <= window * 1000)
    row.achieved_cps = round(min(row.answered, on_time) / window, 1)
    row.cpu_pct = round(cpu / elapsed * 100, 1)
    row.cpu_ms_per_call = round(cpu * 1000 / max(1, row.answered), 3)
    row.setup_p50_ms = round(percentile(times, 0.5), 1)
    row.setup_p90_ms = round(percentile(times, 0.9), 1)
    row.setup_p99_ms = round(percentile(times, 0.99), 1)
    row.setup_max_ms = round(max(times, default=0.0), 1)
    shutil.rmtree(work, ignore_errors=True)
    return row


def _final_screen(out: str) -> str:
    """SIPp prints its scenario screen repeatedly; the last one has the totals."""
    return out[out.rfind("Messages  Retrans") :] if "Messages  Retrans" in out else out


def _message_count(out: str, status: str, occurrence: int) -> int:
    """The count on the ``occurrence``-th receive line of ``status`` in the scenario."""
    pattern = rf"^\s*{status}\s*<-+\s+(?:E-RTD1\s+)?(\d+)"
    values = [int(v) for v in re.findall(pattern, _final_screen(out), re.M)]
    return values[occurrence] if occurrence < len(values) else 0


def _retransmissions(out: str) -> int:
    total = 0
    for line in _final_screen(out).splitlines():
        m = re.match(r"^\s*\S+\s*(?:-+>|<-+)\s+(?:[A-Z]-RTD\d\s+)?(\d+)\s+(\d+)", line)
        if m:
            total += int(m.group(2))
    return total


def _rtts(work: Path) -> tuple[list[float], list[float]]:
    """SIPp's -trace_rtt rows: (when each set-up ended, epoch ms; how long it took, ms)."""
    dates: list[float] = []
    times: list[float] = []
    for path in work.glob("*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2:
                with contextlib.suppress(ValueError):
                    date, took = float(parts[0]), float(parts[1])
                    dates.append(date)
                    times.append(took)
    return dates, times


def print_row(row: Row) -> None:
    print(
        f"{row.target:11} {row.phase:8} {row.rate:5d} {row.answered:7d} {row.refused:6d} "
        f"{row.failed:6d} {row.retransmissions:6d} {row.achieved_cps:8.1f} {row.cpu_pct:6.1f} "
        f"{row.cpu_ms_per_call:7.2f} {row.setup_p50_ms:7.1f} {row.setup_p90_ms:7.1f} "
        f"{row.setup_p99_ms:7.1f} {row.log_errors:5d}",
        flush=True,
    )


HEADER = (
    f"{'target':11} {'phase':8} {'rate':>5} {'answer':>7} {'503':>6} {'failed':>6} "
    f"{'retx':>6} {'cps':>8} {'cpu%':>6} {'ms/call':>7} {'p50 ms':>7} {'p90 ms':>7} "
    f"{'p99 ms':>7} {'errs':>5}"
)


@contextlib.contextmanager
def serving(target: str, tmp: Path, profile: Path | None = None) -> Iterator[Server]:
    server = start_pbx(tmp, profile) if target == "pbx" else start_uas(tmp, target)
    try:
        yield server
    finally:
        server.stop()


def one_rate(
    target: str, rate: int, args: argparse.Namespace, tmp: Path, profile: Path | None
) -> Row:
    run = Path(tempfile.mkdtemp(dir=tmp))
    with serving(target, run, profile) as server:
        time.sleep(0.5)
        row = run_uac(
            "pbx" if target == "pbx" else "uas", server, rate, args.seconds, args.hold, run
        )
        row.target = target
    row.log_errors = server.errors()
    if row.log_errors and args.show_errors:
        for line in server.log.read_text(errors="replace").splitlines():
            if ERROR_LINE.search(line):
                print("   ", line[:200])
    shutil.rmtree(run, ignore_errors=True)
    return row


def ladder(
    target: str, rates: list[int], args: argparse.Namespace, tmp: Path, profile: Path | None
) -> list[Row]:
    rows: list[Row] = []
    for i, rate in enumerate(rates):
        row = one_rate(target, rate, args, tmp, profile if i == 0 else None)
        print_row(row)
        rows.append(row)
        if row.failed or row.refused:
            break  # the next rate would fail too
    return rows


def best(rows: list[Row]) -> float:
    return max((r.achieved_cps for r in rows if not r.failed and not r.refused), default=0.0)


def plot(rows: list[Row], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
    for target in sorted({r.target for r in rows}):
        mine = sorted((r for r in rows if r.target == target), key=lambda r: r.rate)
        ax.plot([r.rate for r in mine], [r.achieved_cps for r in mine], "o-", label=target)
        bad = [r for r in mine if r.failed]
        ax.plot([r.rate for r in bad], [r.achieved_cps for r in bad], "rx", ms=10)
        if target != "sipp-uas":
            bx.plot(
                [r.rate for r in mine], [r.setup_p50_ms for r in mine], "o-", label=f"{target} p50"
            )
            bx.plot(
                [r.rate for r in mine], [r.setup_p99_ms for r in mine], "s--", label=f"{target} p99"
            )
    top = max((r.rate for r in rows), default=1)
    ax.plot([0, top], [0, top], ":", color="grey", label="offered")
    ax.set_xlabel("offered calls/s")
    ax.set_ylabel("answered calls/s (goodput)")
    ax.set_title(title)
    ax.legend()
    bx.set_xlabel("offered calls/s")
    bx.set_ylabel("set-up time, ms (INVITE to 200)")
    bx.set_yscale("log")
    bx.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rates", default="50,100,200,300,400,500,600")
    ap.add_argument("--baseline-rates", default="200,400,800,1600,3200")
    ap.add_argument("--seconds", type=float, default=10.0, help="offered load per rate")
    ap.add_argument("--hold", type=float, default=2.0, help="call duration, seconds")
    ap.add_argument(
        "--overload", default="2,4", help="multiples of capacity to offer (0: no overload runs)"
    )
    ap.add_argument("--target", default="pbx", choices=["pbx", "uas"])
    ap.add_argument("--profile", type=Path)
    ap.add_argument("--show-errors", action="store_true", help="print the daemon's error lines")
    ap.add_argument("--plot", type=Path, default=ROOT / "benchmarks/out/b2bua_cps.png")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if shutil.which("sipp") is None:
        sys.exit("sipp is not installed (Debian package sip-tester)")
    target = "pbx" if args.target == "pbx" else "example-uas"
    rates = [int(r) for r in args.rates.split(",")]
    print(f"SIPp load, {args.seconds:.0f} s per rate, {args.hold:.1f} s calls, UDP")
    print(HEADER)
    with tempfile.TemporaryDirectory(prefix="b2bua-cps-") as tmp_name:
        tmp = Path(tmp_name)
        ours = ladder(target, rates, args, tmp, args.profile)
        base = ladder("sipp-uas", [int(r) for r in args.baseline_rates.split(",")], args, tmp, None)
        capacity, baseline = best(ours), best(base)
        overload: list[Row] = []
        peak = max((r.achieved_cps for r in ours if not r.failed), default=0.0)
        # factors of 0 (or an empty list) skip the overload runs (a rate of 0 calls/s
        # used to end the benchmark in a ZeroDivisionError)
        for factor in [f for f in (float(x) for x in args.overload.split(",") if x) if f > 0]:
            if not capacity:
                break
            row = one_rate(target, int(capacity * factor), args, tmp, None)
            row.phase = f"{factor:g}x"
            print_row(row)
            overload.append(row)
    ratio = capacity / baseline if baseline else 0.0
    print(
        f"highest rate with 0 failed calls: {target} {capacity:.0f} calls/s, SIPp uas "
        f"{baseline:.0f} calls/s (ratio {ratio:.3f})"
    )
    for row in overload:
        print(
            f"offered {row.phase} capacity ({row.rate} calls/s): goodput {row.achieved_cps:.0f} "
            f"calls/s = {row.achieved_cps / peak if peak else 0:.2f} of the peak; "
            f"answered calls that failed: {row.answered_failed}; refused: {row.refused}"
        )
    rows = ours + base + overload
    if args.plot:
        plot(rows, args.plot, f"{target} vs SIPp uas, {args.hold:g} s calls")
        print(f"plot: {args.plot}")
    if args.json:
        print(
            json.dumps(
                {
                    "benchmark": "b2bua_cps",
                    "target": target,
                    "seconds_per_rate": args.seconds,
                    "hold_s": args.hold,
                    "max_cps_zero_failed": capacity,
                    "baseline_max_cps_zero_failed": baseline,
                    "ratio": round(ratio, 3),
                    "peak_goodput": peak,
                    "overload": [
                        {
                            "factor": r.phase,
                            "offered": r.rate,
                            "goodput": r.achieved_cps,
                            "goodput_ratio": round(r.achieved_cps / peak, 3) if peak else 0.0,
                            "answered_failed": r.answered_failed,
                            "refused": r.refused,
                        }
                        for r in overload
                    ],
                    "rows": [asdict(r) for r in rows],
                }
            )
        )


if __name__ == "__main__":
    main()
