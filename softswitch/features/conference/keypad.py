"""Conference keypad commands: a table (that doubles as the spoken menu) and a pure parser.

Commands start with ``*``. Some are pressed several times in a row to choose a setting
(listening mode: 1x, 2x, 3x; entry/exit tones: 1x..4x): presses within ``REPEAT_WINDOW``
seconds count together and the command fires when the window closes. Time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

REPEAT_WINDOW = 2.0


@dataclass(frozen=True, slots=True)
class Command:
    key: str
    name: str
    help: str
    host: bool = True
    participant: bool = False
    repeat: int = 1  # the most presses that mean something


COMMANDS: dict[str, Command] = {
    c.key: c
    for c in (
        Command("*0", "count", "caller count", participant=True),
        Command("*1", "leave", "leave the conference (the host ends it)", participant=True),
        Command("**", "menu", "hear the list of commands", participant=True),
        Command(
            "*2",
            "listen_mode",
            "1x mute callers (they may unmute with *#6), 2x listen only, 3x unmute callers",
            repeat=3,
        ),
        Command("*6", "mute", "mute or unmute your own line", participant=True),
        Command(
            "*#6",
            "self_unmute",
            "unmute yourself when callers are muted",
            host=False,
            participant=True,
        ),
        Command("*5", "lock", "lock the conference (no one else may join), again to open"),
        Command(
            "*4", "tones", "1x no tones, 2x entry tone only, 3x exit tone only, 4x both", repeat=4
        ),
        Command("*9", "record", "start recording, again to stop"),
    )
}


@dataclass(frozen=True, slots=True)
class Pressed:
    command: Command
    presses: int


class KeypadParser:
    """Digits in, :class:`Pressed` commands out; unknown sequences are dropped."""

    def __init__(self) -> None:
        self._buffer = ""
        self._pending: Command | None = None
        self._presses = 0
        self._last = 0.0

    @property
    def deadline(self) -> float | None:
        return self._last + REPEAT_WINDOW if self._pending is not None else None

    def on_timer(self, now: float) -> list[Pressed]:
        if self._pending is not None and now >= self._last + REPEAT_WINDOW:
            return self._flush()
        return []

    def _flush(self) -> list[Pressed]:
        if self._pending is None:
            return []
        out = [Pressed(self._pending, self._presses)]
        self._pending, self._presses = None, 0
        return out

    def feed(self, digit: str, now: float) -> list[Pressed]:
        events = self.on_timer(now)
        if digit == "*" and self._buffer not in ("*",):
            self._buffer = "*"
            return events
        if not self._buffer:
            return events  # digits outside a command are ignored
        self._buffer += digit
        if self._buffer == "*#":
            return events  # needs one more key
        command = COMMANDS.get(self._buffer)
        self._buffer = ""
        if command is None:
            return events
        if command.repeat == 1:
            return [*events, *self._flush(), Pressed(command, 1)]
        if self._pending is command:
            self._presses += 1
            self._last = now
            if self._presses >= command.repeat:
                return [*events, *self._flush()]
            return events
        events += self._flush()
        self._pending, self._presses, self._last = command, 1, now
        return events


def allowed(command: Command, *, host: bool) -> bool:
    return command.host if host else command.participant


def menu_text(*, host: bool) -> str:
    return "\n".join(f"{c.key}  {c.help}" for c in COMMANDS.values() if allowed(c, host=host))
