"""What an idle daemon costs: `softswitch run` (the demo office, no call, no media) for a
while, its CPU as % of one core from /proc (target <= 0.5 %), and the media clock's
ticks meanwhile (it sleeps when no leg needs it).

    python benchmarks/idle.py [--seconds 30] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "stats.json"
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "softswitch.cli",
                "run",
                "--listen",
                f"127.0.0.1:{free_port()}",
                "--data-dir",
                tmp,
                "--quiet",
                "--log-level",
                "warning",
                "--stats-file",
                str(stats),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            time.sleep(5.0)  # start-up (imports, prompts) is not idling
            first = json.loads(stats.read_text())
            cpu0, t0 = cpu_seconds(daemon.pid), time.monotonic()
            time.sleep(args.seconds)
            cpu1, t1 = cpu_seconds(daemon.pid), time.monotonic()
            last = json.loads(stats.read_text())
        finally:
            daemon.terminate()
            daemon.wait(30)
    result = {
        "benchmark": "idle",
        "seconds": round(t1 - t0, 1),
        "cpu_pct_of_one_core": round((cpu1 - cpu0) / (t1 - t0) * 100, 3),
        "media_ticks": last.get("ticks", 0) - first.get("ticks", 0),
        "target_pct": 0.5,
    }
    print(
        f"idle daemon over {result['seconds']} s: CPU {result['cpu_pct_of_one_core']} % of one"
        f" core (target <= 0.5), media ticks meanwhile {result['media_ticks']}"
    )
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
