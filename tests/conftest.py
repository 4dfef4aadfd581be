"""Shared test fixtures: no phone outlives the test that started it."""

from __future__ import annotations

import contextlib
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
