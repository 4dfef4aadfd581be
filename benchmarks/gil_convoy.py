"""Why HTTP runs in a process of its own, not a thread: a media-like tick beside a thread.

An asyncio loop runs a 20 ms tick that sends one datagram from each of ``--sockets``
sockets (the per-leg sends of a media tick) and reads what came back; its lateness is
measured alone, then beside a thread that parses and computes without pause (what a
request handler does with a large body), at the default GIL switch interval and at 1 ms.
Every system call of the tick lets the GIL go, and the busy thread then keeps it up to the
switch interval, so the tick's lateness grows with its number of system calls (the
"convoy effect"). The ratio to the same run's tick alone is the figure.

    python benchmarks/gil_convoy.py [--sockets 200] [--ticks 100] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import threading
from typing import Any


def busy(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        for i in range(1000):
            x += i * i
        "&".join(["a"] * 2000).split("&")  # a form body's worth of parsing


async def ticks(sockets: int, count: int) -> list[float]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    target = rx.getsockname()
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(sockets)]
    loop = asyncio.get_running_loop()
    late: list[float] = []
    start = loop.time()
    try:
        for k in range(count):
            due = start + (k + 1) * 0.02
            await asyncio.sleep(max(0.0, due - loop.time()))
            for s in senders:
                s.sendto(b"\x80" * 172, target)
            while True:
                try:
                    rx.recv(2048)
                except BlockingIOError:
                    break
            late.append(loop.time() - due)  # done this long after it was due
    finally:
        rx.close()
        for s in senders:
            s.close()
    return late


def measure(sockets: int, count: int, thread: bool, interval: float) -> dict[str, Any]:
    sys.setswitchinterval(interval)
    stop = threading.Event()
    worker = threading.Thread(target=busy, args=(stop,), daemon=True) if thread else None
    if worker is not None:
        worker.start()
    try:
        late = asyncio.run(ticks(sockets, count))
    finally:
        stop.set()
        if worker is not None:
            worker.join()
        sys.setswitchinterval(0.005)
    late.sort()
    return {
        "busy_thread": thread,
        "switch_interval_ms": interval * 1000,
        "late_median_ms": round(statistics.median(late) * 1000, 2),
        "late_max_ms": round(late[-1] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--ticks", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs = [
        measure(args.sockets, args.ticks, False, 0.005),
        measure(args.sockets, args.ticks, True, 0.005),
        measure(args.sockets, args.ticks, True, 0.001),
    ]
    alone = max(runs[0]["late_median_ms"], 0.01)
    for run in runs:
        run["ratio_to_alone"] = round(run["late_median_ms"] / alone, 1)
    if args.json:
        print(json.dumps({"sockets": args.sockets, "ticks": args.ticks, "runs": runs}))
        return
    print(f"a 20 ms tick sending from {args.sockets} sockets, {args.ticks} ticks")
    print(f"{'beside':<22}{'switch ms':>10}{'late p50 ms':>13}{'late max ms':>13}{'x alone':>9}")
    for run in runs:
        beside = "a busy thread" if run["busy_thread"] else "nothing"
        print(
            f"{beside:<22}{run['switch_interval_ms']:>10.0f}{run['late_median_ms']:>13.1f}"
            f"{run['late_max_ms']:>13.1f}{run['ratio_to_alone']:>9.1f}"
        )


if __name__ == "__main__":
    main()
