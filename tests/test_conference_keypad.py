from __future__ import annotations

from softswitch.features.conference.keypad import COMMANDS, KeypadParser, allowed, menu_text


def names(events: list) -> list[tuple[str, int]]:  # type: ignore[type-arg]
    return [(e.command.name, e.presses) for e in events]


def test_single_commands_fire_at_once() -> None:
    p = KeypadParser()
    assert names(p.feed("*", 0.0)) == []
    assert names(p.feed("0", 0.1)) == [("count", 1)]
    assert names(p.feed("*", 0.2) + p.feed("*", 0.3)) == [("menu", 1)]
    assert names(p.feed("*", 0.4) + p.feed("#", 0.5) + p.feed("6", 0.6)) == [("self_unmute", 1)]
    assert names(p.feed("5", 0.7) + p.feed("#", 0.8)) == []  # not a command
    assert names(p.feed("*", 0.9) + p.feed("8", 1.0)) == []  # unknown key


def test_repeated_presses_count_within_the_window() -> None:
    p = KeypadParser()
    out = []
    for t, d in ((0.0, "*"), (0.1, "2"), (0.5, "*"), (0.6, "2")):
        out += p.feed(d, t)
    assert out == [] and p.deadline == 2.6
    assert names(p.on_timer(2.7)) == [("listen_mode", 2)]
    # the most meaningful count fires at once; another command closes the window
    out = []
    for t, d in (
        (3.0, "*"),
        (3.1, "4"),
        (3.2, "*"),
        (3.3, "4"),
        (3.4, "*"),
        (3.5, "4"),
        (3.6, "*"),
        (3.7, "4"),
    ):
        out += p.feed(d, t)
    assert names(out) == [("tones", 4)]
    out = p.feed("*", 4.0) + p.feed("2", 4.1) + p.feed("*", 4.2) + p.feed("9", 4.3)
    assert names(out) == [("listen_mode", 1), ("record", 1)]


def test_roles_and_menu() -> None:
    assert allowed(COMMANDS["*6"], host=False) and not allowed(COMMANDS["*5"], host=False)
    assert not allowed(COMMANDS["*#6"], host=True)
    assert "*9  start recording" in menu_text(host=True)
    assert "*9" not in menu_text(host=False)
