"""Auto-attendant menus as a pure state machine: keys and time in, commands out.

A :class:`MenuMachine` plays a menu's greeting and waits for a key; each key maps to an
action (a destination to transfer to, an announcement, a sub-menu, dial-by-name, repeat,
hang up). Keys interrupt prompts (barge-in). With ``dial_extension``, digits typed during
the greeting collect an extension: a digit key acts only after the inter-digit pause, so
that ``102`` reaches extension 102 and ``999`` is one invalid extension. An invalid key or no key is
retried with the prompt (``retries`` times), then the menu's ``default`` action runs.
Dial-by-name takes the first letters of a name on the keypad (2 = ABC ... 9 = WXYZ), then
``#`` or a pause; one match is connected, several are offered as "for <name> press N".

Nothing here does I/O: the caller feeds :meth:`start`, :meth:`key`, :meth:`played` and
:meth:`timer` with the current time and carries out the commands returned (see
:mod:`ivr.runner` for the asyncio adapter); :attr:`deadline` says when to call ``timer``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

KEYPAD = {
    **dict.fromkeys("ABC", "2"),
    **dict.fromkeys("DEF", "3"),
    **dict.fromkeys("GHI", "4"),
    **dict.fromkeys("JKL", "5"),
    **dict.fromkeys("MNO", "6"),
    **dict.fromkeys("PQRS", "7"),
    **dict.fromkeys("TUV", "8"),
    **dict.fromkeys("WXYZ", "9"),
}
KEYS = frozenset("0123456789*#")


def keypad_digits(text: str) -> str:
    """The keys that spell ``text`` (letters only; accents dropped: É -> E)."""
    import unicodedata

    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().upper()
    return "".join(KEYPAD[c] for c in plain if c in KEYPAD)


# -- prompts and actions --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prompt:
    """Something to say: ``kind`` is "builtin" (a prompt by name), "text" (spoken by the
    text-to-speech engine) or "file" (an audio file)."""

    kind: str
    value: str


@dataclass(frozen=True, slots=True)
class Transfer:
    destination: str


@dataclass(frozen=True, slots=True)
class Announce:
    prompt: Prompt
    then: str = "menu"  # "menu" (play the menu again) or "hangup"


@dataclass(frozen=True, slots=True)
class SubMenu:
    name: str


@dataclass(frozen=True, slots=True)
class DialByName:
    pass


@dataclass(frozen=True, slots=True)
class Repeat:
    pass


@dataclass(frozen=True, slots=True)
class Hangup:
    pass


Action = Transfer | Announce | SubMenu | DialByName | Repeat | Hangup


@dataclass(frozen=True, slots=True)
class Menu:
    name: str
    greeting: Prompt
    keys: Mapping[str, Action] = field(default_factory=dict)
    dial_extension: bool = False
    timeout: float = 5.0  # to wait for a key once the greeting has played
    retries: int = 3  # invalid keys or silences before ``default``
    default: Action = Hangup()


@dataclass(frozen=True, slots=True)
class Entry:
    """A directory entry for dial-by-name."""

    extension: str
    name: str  # spoken as "for <name> press N"
    keys: str  # the keypad digits of the part of the name callers spell
    spoken: Prompt | None = None  # a recorded name; None: the name as text


# -- commands -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Play:
    prompts: tuple[Prompt, ...]
    interruptible: bool = True


@dataclass(frozen=True, slots=True)
class StopPlaying:
    pass


@dataclass(frozen=True, slots=True)
class Connect:
    """The caller goes to ``destination``; the machine is done."""

    destination: str


@dataclass(frozen=True, slots=True)
class End:
    """Hang up; the machine is done."""


Command = Play | StopPlaying | Connect | End

# built-in prompt names the machine uses
INVALID = Prompt("builtin", "ivr-invalid")
INVALID_EXTENSION = Prompt("builtin", "ivr-invalid-extension")
SPELL_LAST = Prompt("builtin", "ivr-spell-last")
SPELL_FIRST = Prompt("builtin", "ivr-spell-first")
NO_MATCH = Prompt("builtin", "ivr-no-match")
FOR = Prompt("builtin", "ivr-for")
PRESS = Prompt("builtin", "ivr-press")
GOODBYE = Prompt("builtin", "goodbye")
MAX_CHOICES = 8


class MenuMachine:
    def __init__(
        self,
        menus: Mapping[str, Menu],
        start: str,
        *,
        extensions: Collection[str] = (),
        directory: Sequence[Entry] = (),
        by_first_name: bool = False,
        inter_digit: float = 1.5,
        name_letters: int = 3,
    ) -> None:
        if start not in menus:
            raise ValueError(f"no menu {start!r}")
        self.menus = menus
        self.menu = menus[start]
        self.extensions = frozenset(extensions)
        self.directory = list(directory)
        self.by_first_name = by_first_name
        self.inter_digit = inter_digit
        self.name_letters = name_letters
        self.state = "idle"
        self.playing = False
        self.interruptible = False
        self.deadline: float | None = None
        self.failures = 0
        self.buffer = ""
        self.choices: list[Entry] = []
        self.done = False
        self._after_prompt = ""  # what the state does once the prompt has played
        self._end_action: Action | None = None

    # -- inputs -------------------------------------------------------------------------

    def start(self, now: float) -> list[Command]:
        return self._enter_menu(self.menu, now)

    def played(self, now: float) -> list[Command]:
        """The prompt last asked for has played to its end."""
        self.playing = False
        after, self._after_prompt = self._after_prompt, ""
        if self.done:
            return []
        if after == "wait":  # the greeting or a question: now wait for keys
            self.deadline = now + (self.menu.timeout if not self.buffer else self.inter_digit)
            return []
        if after == "menu":
            return self._enter_menu(self.menu, now)
        if after == "hangup":
            return self._finish(End())
        if after == "name":
            return self._ask_name(now)
        if after == "choice":
            return self._offer(now)
        return []

    def timer(self, now: float) -> list[Command]:
        if self.done or self.deadline is None or now < self.deadline:
            return []
        self.deadline = None
        if self.state == "menu":
            if self.buffer:
                return self._digits_complete(now)
            return self._failed(now, silent=True)
        if self.state == "name":
            return self._match(now)
        if self.state == "choice":
            return self._failed(now, silent=True)
        return []

    def key(self, key: str, now: float) -> list[Command]:
        if self.done or key not in KEYS:
            return []
        out: list[Command] = []
        if self.playing:
            if not self.interruptible:
                return []
            self.playing = False
            self._after_prompt = ""
            out.append(StopPlaying())
        if self.state == "menu":
            return out + self._menu_key(key, now)
        if self.state == "name":
            return out + self._name_key(key, now)
        if self.state == "choice":
            return out + self._choice_key(key, now)
        return out

    # -- menus ---------------------------------------------------------------------------

    def _play(self, *prompts: Prompt, then: str, interruptible: bool = True) -> list[Command]:
        self.playing = True
        self.interruptible = interruptible
        self._after_prompt = then
        self.deadline = None
        return [Play(prompts, interruptible)]

    def _enter_menu(self, menu: Menu, now: float) -> list[Command]:
        self.menu = menu
        self.state = "menu"
        self.buffer = ""
        return self._play(menu.greeting, then="wait")

    def _finish(self, command: Connect | End) -> list[Command]:
        self.done = True
        self.state = "done"
        self.deadline = None
        return [command]

    def _failed(self, now: float, *, silent: bool, prompt: Prompt = INVALID) -> list[Command]:
        """An invalid key, or no key in time: again, or the default after the retries."""
        self.failures += 1
        self.buffer = ""
        if self.failures >= self.menu.retries:
            return self._act(self.menu.default, now)
        if silent:
            return self._enter_menu(self.menu, now)
        return self._play(prompt, then="menu")

    def _menu_key(self, key: str, now: float) -> list[Command]:
        if self.buffer:
            if key == "#":
                return self._digits_complete(now)
            self.buffer += key
            longest = max((len(e) for e in self.extensions), default=8)
            unique = self.buffer in self.extensions and not any(
                e != self.buffer and e.startswith(self.buffer) for e in self.extensions
            )
            if unique or len(self.buffer) >= longest:
                return self._digits_complete(now)
            self.deadline = now + self.inter_digit
            return []
        if self.menu.dial_extension and key.isdigit():
            # an extension being typed (judged as a whole once typed: "999" is one wrong
            # extension, not three wrong keys), or this key's action after the pause
            self.buffer = key
            self.deadline = now + self.inter_digit
            return []
        action = self.menu.keys.get(key)
        if action is None:
            return self._failed(now, silent=False)
        return self._act(action, now)

    def _digits_complete(self, now: float) -> list[Command]:
        digits, self.buffer = self.buffer, ""
        if digits in self.extensions:
            return self._finish(Connect(digits))
        if len(digits) == 1 and digits in self.menu.keys:
            return self._act(self.menu.keys[digits], now)
        return self._failed(now, silent=False, prompt=INVALID_EXTENSION)

    def _act(self, action: Action, now: float) -> list[Command]:
        if isinstance(action, Transfer):
            return self._finish(Connect(action.destination))
        if isinstance(action, Hangup):
            return self._play(GOODBYE, then="hangup", interruptible=False)
        if isinstance(action, Repeat):
            return self._enter_menu(self.menu, now)
        if isinstance(action, SubMenu):
            self.failures = 0
            return self._enter_menu(self.menus[action.name], now)
        if isinstance(action, Announce):
            then = "hangup" if action.then == "hangup" else "menu"
            return self._play(action.prompt, then=then)
        self.failures = 0
        return self._ask_name(now)

    # -- dial by name --------------------------------------------------------------------

    def _ask_name(self, now: float) -> list[Command]:
        self.state = "name"
        self.buffer = ""
        return self._play(SPELL_FIRST if self.by_first_name else SPELL_LAST, then="wait")

    def _name_key(self, key: str, now: float) -> list[Command]:
        if key == "*":  # back to the menu
            return self._enter_menu(self.menu, now)
        if key != "#":
            self.buffer += key
        if key == "#" or len(self.buffer) >= self.name_letters:
            return self._match(now)
        self.deadline = now + self.inter_digit
        return []

    def _match(self, now: float) -> list[Command]:
        typed, self.buffer = self.buffer, ""
        found = [e for e in self.directory if typed and e.keys.startswith(typed)]
        if len(found) == 1:
            return self._finish(Connect(found[0].extension))
        if not found or len(found) > MAX_CHOICES:
            self.failures += 1
            if self.failures >= self.menu.retries:
                return self._act(self.menu.default, now)
            return self._play(NO_MATCH, then="name")
        self.choices = found
        return self._offer(now)

    def _offer(self, now: float) -> list[Command]:
        self.state = "choice"
        prompts: list[Prompt] = []
        for n, entry in enumerate(self.choices, 1):
            name = entry.spoken or Prompt("text", entry.name)
            prompts += [FOR, name, PRESS, Prompt("builtin", f"num-{n}")]
        return self._play(*prompts, then="wait")

    def _choice_key(self, key: str, now: float) -> list[Command]:
        if key == "*":
            return self._enter_menu(self.menu, now)
        if key.isdigit() and 1 <= int(key) <= len(self.choices):
            return self._finish(Connect(self.choices[int(key) - 1].extension))
        self.failures += 1
        if self.failures >= self.menu.retries:
            return self._act(self.menu.default, now)
        return self._play(INVALID, then="choice")
