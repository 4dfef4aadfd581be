"""The media clock: one task per process, a tick every 20 ms, without drift.

Tick ``n`` is due at ``start + n * interval`` (absolute deadlines, never a relative sleep
that accumulates error). Every subscriber runs in the same pass, in the order of its
priority (receive, then mix, then send). A tick that starts more than ``late_after``
after its deadline is counted late; if the loop fell more than ``max_catch_up`` ticks
behind, the missed ticks are skipped (and counted) rather than run in a burst.

A subscriber may say when it has nothing to do (``idle``: an engine without legs). When
every subscriber is idle the clock sleeps until :meth:`MediaClock.wake` (an engine that
gets a leg calls it) instead of waking 50 times a second: an idle PBX costs nothing.
Ticks resume on the next 20 ms from the wake-up, none counted late or skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

TickHandler = Callable[[int], None]
NOT_STARTED_AFTER = 1.0  # seconds a subscribed clock may wait for start() before a warning


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
    idle: Callable[[], bool] | None = field(compare=False, default=None)


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
        self._watching = False  # a check that start() is called is pending or done
        self._started = False
        self._wake: asyncio.Event | None = None
        self.sleeping = False  # every subscriber is idle: no tick until wake()
        self.sleeps = 0

    def subscribe(
        self,
        handler: TickHandler,
        priority: int = 50,
        *,
        idle: Callable[[], bool] | None = None,
    ) -> Callable[[], None]:
        """Call ``handler(tick)`` every tick; returns a function that unsubscribes.
        ``idle()`` True says the handler has nothing to do: when all say so the clock
        sleeps until :meth:`wake`."""
        self._order += 1
        sub = _Subscription(priority, self._order, handler, idle)
        self._subs.append(sub)
        self._subs.sort()
        if not self._started and not self._watching:
            self._watch_start()

        def unsubscribe() -> None:
            if sub in self._subs:
                self._subs.remove(sub)

        self.wake()
        return unsubscribe

    def wake(self) -> None:
        """Something may need ticks again (a leg was added): a sleeping clock resumes."""
        if self._wake is not None:
            self._wake.set()

    def _idle(self) -> bool:
        return all(sub.idle is not None and sub.idle() for sub in self._subs)

    def _watch_start(self) -> None:
        """Media is being wired to a clock nobody started: without ``start()`` no tick
        ever comes, so nothing is sent or recorded (a 44-byte WAV). Say so once."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: checked at the next subscribe inside one
        self._watching = True
        ref = weakref.ref(self)  # a clock dropped meanwhile (a failed set-up) says nothing

        def check() -> None:
            clock = ref()
            if clock is not None and not clock._started and clock._subs:
                warnings.warn(
                    f"MediaClock has {len(clock._subs)} subscriber(s) but was never started:"
                    " no frame is sent, played or recorded until clock.start() is called",
                    RuntimeWarning,
                    stacklevel=1,
                )

        loop.call_later(NOT_STARTED_AFTER, check)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._started = True
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
        self._wake = wake = asyncio.Event()
        n = 0
        while True:
            wake.clear()
            if self._idle():
                self.sleeping = True
                self.sleeps += 1
                await wake.wait()
                self.sleeping = False
                self._start = loop.time() - n * self.interval  # resume now, on time
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
