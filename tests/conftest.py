"""Shared test fixtures: no phone outlives the test that started it."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
from collections.abc import Iterator

import pytest

from .baresip import RUNNING


@pytest.fixture(autouse=True)
def no_phone_left_running() -> Iterator[None]:
    """A test that fails half-way may not reach its own ``stop()``: its baresip processes
    would keep their ports and CPU through the tests after it."""
    yield
    for pid in list(RUNNING):
        RUNNING.discard(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            logging.getLogger("tests").warning("killed baresip %d left running", pid)


@pytest.fixture(autouse=True)
def no_collector_pause_from_earlier_tests() -> Iterator[None]:
    """Tests that run a PBX and its phones in this process hear a stalled event loop as
    lost audio. A full collection walks every object the session has kept (modules,
    reports, earlier tests' caches: ~120 k objects, 100-170 ms a pass, measured with a
    gc.callbacks probe), so what has survived so far is collected once and frozen for the
    test: its passes walk only what it made. After it, everything is collectable again
    (what the test left behind is freed by the next test's collection, not kept frozen
    for the rest of the session)."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()
