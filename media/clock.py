"""The media clock: one task per process, a tick every 20 ms, without drift.

Tick ``n`` is due at ``start + n * interval`` (absolute deadlines, never a relative sleep
that accumulates error). Every subscriber runs in the same pass, in the order of its
priority (receive, then mix, then send). A tick that starts more than ``late_after``
after its deadline is counted late; if the loop fell more than ``max_catch_up`` ticks
behind, the missed ticks are skipped (and counted) rather than run in a burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

TickHandler = Callable[[int], None]


@dataclass(slots=True)
class ClockStats:
    ticks: int = 0
    late: int = 0
    skipped: int = 0
    max_lateness: float = 0.0
    busy: float = 0.0  # seconds spent in handlers

    @property
    def late_ratio(self) -> float:
        return self.late / self.ticks if self.ticks else 0.0


@dataclass(order=True)
class _Subscription:
    priority: int
    order: int
    handler: TickHandler = field(compare=False)


class MediaClock:
    def __init__(
        self, interval: float = 0.02, *, late_after: float = 0.005, max_catch_up: int = 5
    ) -> None:
        self.interval = interval
        self.late_after = late_after
        self.max_catch_up = max_catch_up
        self.stats = ClockStats()
        self.tick = 0
        self._subs: list[_Subscription] = []
        self._order = 0
        self._task: asyncio.Task[None] | None = None
        self._start = 0.0

    def subscribe(self, handler: TickHandler, priority: int = 50) -> Callable[[], None]:
        """Call ``handler(tick)`` every tick; returns a function that unsubscribes."""
        self._order += 1
        sub = _Subscription(priority, self._order, handler)
        self._subs.append(sub)
        self._subs.sort()

        def unsubscribe() -> None:
            if sub in self._subs:
                self._subs.remove(sub)

        return unsubscribe

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self._start = loop.time()
        n = 0
        while True:
            due = self._start + n * self.interval
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            lateness = loop.time() - due
            if lateness > self.late_after:
                self.stats.late += 1
            self.stats.max_lateness = max(self.stats.max_lateness, lateness)
            if lateness > self.max_catch_up * self.interval:
                skip = int(lateness / self.interval)  # resume at the current slot
                self.stats.skipped += skip
                n += skip
            self.stats.ticks += 1
            self.tick = n
            began = time.perf_counter()
            for sub in list(self._subs):
                try:
                    sub.handler(n)
                except Exception:
                    log.exception("event=tick_handler_failed tick=%d", n)
            self.stats.busy += time.perf_counter() - began
            n += 1
