"""The in-call keypad: which keys pressed during a bridged call are the PBX's.

Features claim codes that start with ``*`` (call flip ``*1``..``*8``, recording...). While
a call is bridged, a ``*`` is held back; if the keys that follow within ``window`` seconds
spell a claimed code, the code is the PBX's and the other party never hears it; anything
else (an unknown ``*9``, a lone ``*`` after the window) is relayed unchanged, in order.
Pure: keys and the current time in, actions and a deadline out.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

WINDOW = 2.0


@dataclass(frozen=True, slots=True)
class Relay:
    """Keys for the other party, in the order pressed."""

    keys: str


@dataclass(frozen=True, slots=True)
class Claim:
    """A claimed code was pressed."""

    code: str


Action = Relay | Claim


class InCallKeypad:
    def __init__(self, codes: Collection[str], window: float = WINDOW) -> None:
        self.codes = frozenset(codes)
        self._prefixes = frozenset(c[:i] for c in self.codes for i in range(1, len(c)))
        self.window = window
        self._held = ""
        self._since = 0.0

    @property
    def deadline(self) -> float | None:
        return self._since + self.window if self._held else None

    def on_timer(self, now: float) -> list[Action]:
        """Keys held past the window: a complete code is claimed, anything else goes to
        the other party."""
        if self._held and now >= self._since + self.window:
            held, self._held = self._held, ""
            return [Claim(held) if held in self.codes else Relay(held)]
        return []

    def feed(self, key: str, now: float) -> list[Action]:
        out = self.on_timer(now)
        if not self._held:
            if key == "*" and ("*" in self._prefixes or "*" in self.codes):
                self._held, self._since = key, now
                return out
            return [*out, Relay(key)]
        candidate = self._held + key
        if candidate in self.codes and candidate not in self._prefixes:
            self._held = ""
            return [*out, Claim(candidate)]
        if candidate in self._prefixes or candidate in self.codes:
            self._held, self._since = candidate, now  # a longer code may follow
            return out
        # not a code: the held keys go through; this key may start a new code
        held, self._held = self._held, ""
        return [*out, Relay(held), *self.feed(key, now)]
