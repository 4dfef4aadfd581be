"""Events with any number of listeners.

A call is watched by several parties at once (the PBX core, a feature that claims keys,
a recorder...): each adds its own listener instead of overwriting a single callback slot.
A listener that raises is logged and the others still run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class Listeners(Generic[T]):
    __slots__ = ("_listeners",)

    def __init__(self) -> None:
        self._listeners: list[Callable[[T], None]] = []

    def add(self, listener: Callable[[T], None]) -> Callable[[], None]:
        """Call ``listener`` on every event; returns a function that removes it."""
        self._listeners.append(listener)
        return lambda: self.remove(listener)

    def remove(self, listener: Callable[[T], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def __bool__(self) -> bool:
        return bool(self._listeners)

    def __len__(self) -> int:
        return len(self._listeners)

    def emit(self, value: T) -> None:
        for listener in list(self._listeners):
            try:
                listener(value)
            except Exception:
                log.exception("event=listener_failed listener=%r", listener)
