"""Calls per second the example UAS sustains under SIPp with 0 failed calls.

SIPp's built-in ``uac`` scenario (INVITE, 100/180/200, ACK, BYE/200) is run at rising
rates against ``examples/uas.py`` (an echo UAS that also opens an RTP socket per call),
and, as the baseline in the same run, against SIPp's own C++ ``uas``. For each rate:
calls that succeeded and failed, the rate SIPp achieved, and the server's CPU use. The
figure is the highest rate with 0 failed calls, and its ratio to the baseline's.

    python benchmarks/sip_cps.py [--rates 50,100,200,400] [--seconds 5] [--transport udp]
                                 [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def start_server(kind: str, port: int, transport: str) -> subprocess.Popen[bytes]:
    if kind == "softswitch":
        cmd = [
            sys.executable,
            "examples/uas.py",
            "--listen",
            f"127.0.0.1:{port}",
            "--transport",
            transport,
        ]
    else:
        cmd = ["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-nostdin"]
        cmd += ["-t", "t1"] if transport == "tcp" else []
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    return proc


def run_load(port: int, rate: int, seconds: float, transport: str) -> dict[str, float]:
    calls = int(rate * seconds)
    cmd = [
        "sipp",
        "-sn",
        "uac",
        f"127.0.0.1:{port}",
        "-i",
        "127.0.0.1",
        "-p",
        str(free_port()),
        "-r",
        str(rate),
        "-m",
        str(calls),
        "-nostdin",
        "-timeout",
        f"{seconds * 4 + 30:.0f}s",
        "-timeout_error",
        "-l",
        str(max(100, rate * 4)),
    ]
    cmd += ["-t", "t1"] if transport == "tcp" else []
    start = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd="/tmp").stdout
    elapsed = time.monotonic() - start
    ok = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", out)
    failed = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", out)
    achieved = re.findall(r"Call Rate\s*\|[^|]*\|\s*([\d.]+) cps", out)
    return {
        "calls": calls,
        "ok": int(ok[-1]) if ok else 0,
        "failed": int(failed[-1]) if failed else calls,
        "achieved_cps": float(achieved[-1]) if achieved else 0.0,
        "elapsed_s": elapsed,
    }


def measure(kind: str, rates: list[int], seconds: float, transport: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for rate in rates:
        port = free_port()
        server = start_server(kind, port, transport)
        try:
            cpu0 = cpu_seconds(server.pid)
            result = run_load(port, rate, seconds, transport)
            cpu = (cpu_seconds(server.pid) - cpu0) / result["elapsed_s"] * 100
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        per_call = cpu / 100 * result["elapsed_s"] / max(1, result["ok"]) * 1000
        rows.append(
            {
                "server": kind,
                "rate": rate,
                **result,
                "server_cpu_pct": round(cpu, 1),
                "cpu_ms_per_call": round(per_call, 3),
            }
        )
        print(
            f"{kind:10} {rate:6d} {result['ok']:7.0f} {result['failed']:7.0f} "
            f"{result['achieved_cps']:9.1f} {cpu:8.1f} {per_call:9.3f}",
            flush=True,
        )
        if result["failed"]:
            break  # the next rate would fail too
    return rows


def best(rows: list[dict[str, object]]) -> float:
    """The highest rate SIPp achieved in a run with 0 failed calls."""
    rates = [float(str(r["achieved_cps"])) for r in rows if r["failed"] == 0]
    return max(rates, default=0.0)


def cpu_ratio(ours: list[dict[str, object]], base: list[dict[str, object]]) -> float:
    """Our CPU per call over the baseline's, at the rates both handled without failure."""
    theirs = {r["rate"]: float(str(r["cpu_ms_per_call"])) for r in base if r["failed"] == 0}
    pairs = [
        (float(str(r["cpu_ms_per_call"])), theirs[r["rate"]])
        for r in ours
        if r["failed"] == 0 and theirs.get(r["rate"])
    ]
    return sum(a for a, _ in pairs) / sum(b for _, b in pairs) if pairs else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rates", default="100,200,400,800,1600")
    ap.add_argument("--seconds", type=float, default=5.0, help="load duration per rate")
    ap.add_argument("--transport", default="udp", choices=["udp", "tcp"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if shutil.which("sipp") is None:
        sys.exit("sipp is not installed (Debian package sip-tester)")
    rates = [int(r) for r in args.rates.split(",")]
    print(f"SIPp uac load, {args.seconds:.0f} s per rate, {args.transport.upper()}")
    print(
        f"{'server':10} {'rate':>6} {'ok':>7} {'failed':>7} {'achieved':>9} {'cpu %':>8} "
        f"{'cpu ms/call':>9}"
    )
    ours = measure("softswitch", rates, args.seconds, args.transport)
    base = measure("sipp-uas", rates, args.seconds, args.transport)
    best_ours, best_base = best(ours), best(base)
    ratio = best_ours / best_base if best_base else 0.0
    cost = cpu_ratio(ours, base)
    print(
        f"highest achieved rate with 0 failed calls: softswitch {best_ours:.0f} cps, "
        f"SIPp uas {best_base:.0f} cps (ratio {ratio:.2f}); "
        f"CPU per call softswitch/SIPp uas: {cost:.1f}x"
    )
    if args.json:
        print(
            json.dumps(
                {
                    "benchmark": "sip_cps",
                    "transport": args.transport,
                    "seconds_per_rate": args.seconds,
                    "max_cps_zero_failed": best_ours,
                    "baseline_max_cps_zero_failed": best_base,
                    "ratio": round(ratio, 3),
                    "cpu_per_call_ratio": round(cost, 2),
                    "rows": ours + base,
                }
            )
        )


if __name__ == "__main__":
    main()
