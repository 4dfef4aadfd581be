"""Writes off the event loop: changes queued on the loop, written in batches by one thread.

A store that must not block the loop that carries calls (the registrations, the call
history) queues each change here and returns at once. One worker thread takes everything
queued so far as one batch — for SQLite, one transaction — and the next batch is handed
over when it is done, so a burst costs the loop a dict update per change and the disk one
commit per batch, not one per change. Changes queued under the same key before their batch
is handed over are coalesced: the last one is written (a binding refreshed twice is written
once). ``flush`` waits until everything queued is written; ``close`` flushes, runs the
store's closing step on the worker and drops what is queued after it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
R = TypeVar("R")


class BatchWriter(Generic[K, V]):
    """Queue of changes by key, written in order by ``write(batch)`` on a thread of its own."""

    def __init__(self, name: str, write: Callable[[dict[K, V]], None]) -> None:
        self.name = name
        self._write = write
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: dict[K, V] = {}
        self._writing: asyncio.Future[None] | None = None
        self.queued = 0  # changes queued
        self.batches = 0  # batches written
        self.closed = False

    def queue(self, key: K, value: V) -> None:
        if self.closed:  # the owner has stopped: nothing more is kept
            log.debug("event=write_after_close store=%s key=%s", self.name, key)
            return
        self._pending.pop(key, None)  # a change queued again goes last, in order
        self._pending[key] = value
        self.queued += 1
        if self._writing is None:
            self._hand_over()

    def _hand_over(self) -> None:
        batch, self._pending = self._pending, {}
        loop = asyncio.get_running_loop()
        self._writing = loop.run_in_executor(self._worker, self._write_batch, batch)
        self._writing.add_done_callback(self._written)

    def _write_batch(self, batch: dict[K, V]) -> None:
        self._write(batch)
        self.batches += 1

    def _written(self, done: asyncio.Future[None]) -> None:
        self._writing = None
        if not done.cancelled() and done.exception() is not None:
            log.error("event=store_write_failed store=%s error=%s", self.name, done.exception())
        if self._pending and not self.closed:
            self._hand_over()

    async def flush(self) -> None:
        """Return when every change queued so far is written (or failed, logged)."""
        while self._writing is not None or self._pending:
            if self._writing is None:
                self._hand_over()
            assert self._writing is not None
            await asyncio.wait({self._writing})

    async def run(self, fn: Callable[[], R]) -> R:
        """``fn()`` on the worker, after what is queued (reads see every change before)."""
        await self.flush()
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn)

    async def close(self, closing: Callable[[], None]) -> None:
        """Flush, run ``closing`` on the worker and stop it (a second call does nothing)."""
        if self.closed:
            return
        await self.flush()
        self.closed = True
        await asyncio.get_running_loop().run_in_executor(self._worker, closing)
        self._worker.shutdown(wait=False)
