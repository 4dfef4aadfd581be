"""When the daemon's cycle collector may pause the event loop.

A full collection walks every live object. Under load most of them are the transactions
RFC 3261 keeps for 32 s after they complete (~7500 at 50 transfers/s, ~350 k objects), and
CPython starts one each time the old generation grows by a quarter: measured with
``benchmarks/soak.py --only transfer``, a 150-390 ms stall every few seconds, long enough
for SIP sockets to back up and overload control to refuse calls. The call paths make no
cyclic garbage (tests/test_no_cycles.py), so the young generations, which are cheap,
collect as usual, and the full pass runs here instead: at once when no call is up (then
the C heap's free pages go back to the system too), else at most every ``longest``
seconds, each one logged with its pause. What start-up built is frozen out of the
collector's reach first.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("softswitch.collector")

NEVER = 1 << 30  # a gen-2 threshold the young collections never reach


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim: SIP datagrams and bodies (over 512 bytes) live in the C heap,
    which keeps what a busy hour freed until asked to return it (after 3000 soak calls:
    RSS 158 -> 149 MB; the rest is CPython's own arenas, kept while partly used)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc
    return trim


_malloc_trim = _find_malloc_trim()


class FullCollections:
    """Full collections on our schedule: ``calls_up()`` says whether a pause would be
    heard; every ``check`` seconds a quiet daemon is collected, a busy one once
    ``longest`` seconds have passed since the last pass."""

    def __init__(
        self, calls_up: Callable[[], bool], *, check: float = 30.0, longest: float = 600.0
    ) -> None:
        self.calls_up, self.check, self.longest = calls_up, check, longest
        self._task: asyncio.Task[None] | None = None
        self._thresholds = gc.get_threshold()

    def start(self) -> None:
        gc.collect()
        gc.freeze()
        young, middle, _ = self._thresholds
        gc.set_threshold(young, middle, NEVER)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        gc.set_threshold(*self._thresholds)

    def collect(self, *, trim: bool = False) -> None:
        """A full pass; ``trim``: then hand the C heap's free pages back to the system."""
        began = time.perf_counter()
        found = gc.collect()
        if trim and _malloc_trim is not None:
            _malloc_trim(0)
        pause = time.perf_counter() - began
        log.log(
            logging.INFO if pause >= 0.05 or found > 0 else logging.DEBUG,
            "event=gc_full pause_ms=%.0f collected=%d",
            pause * 1000,
            found,
        )

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.check)
            now = time.monotonic()
            quiet = not self.calls_up()
            if quiet or now - last >= self.longest:
                self.collect(trim=quiet)
                last = now
