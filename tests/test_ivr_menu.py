"""The auto-attendant menu machine, pure: keys and time in, commands out."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.menu import (
    INVALID,
    INVALID_EXTENSION,
    NO_MATCH,
    SPELL_LAST,
    Announce,
    Command,
    Connect,
    DialByName,
    End,
    Entry,
    Hangup,
    Menu,
    MenuMachine,
    Play,
    Prompt,
    StopPlaying,
    SubMenu,
    Transfer,
    keypad_digits,
)

GREETING = Prompt("text", "Welcome")
MAIN = Menu(
    "main",
    GREETING,
    {
        "1": Transfer("600"),
        "2": Transfer("101"),
        "3": Announce(Prompt("text", "We are at 1 rue de la Paix.")),
        "4": SubMenu("support"),
        "8": Hangup(),
        "9": DialByName(),
    },
    dial_extension=True,
    default=Transfer("voicemail:100"),
)
SUPPORT = Menu("support", Prompt("text", "Support"), {"1": Transfer("700"), "*": SubMenu("main")})
DIRECTORY = [
    Entry("100", "Alice Martin", keypad_digits("Martin")),
    Entry("101", "Bob Marin", keypad_digits("Marin")),
    Entry("102", "Carol Petit", keypad_digits("Petit")),
]


def machine(**kw: object) -> MenuMachine:
    return MenuMachine(
        {"main": MAIN, "support": SUPPORT},
        "main",
        extensions=["100", "101", "102"],
        directory=DIRECTORY,
        **kw,  # type: ignore[arg-type]
    )


def test_keypad_spelling() -> None:
    assert keypad_digits("Martin") == "627846"
    assert keypad_digits("Émile Zoé") == "36453963"  # accents dropped, spaces too


def test_a_key_during_the_greeting_cuts_it_and_transfers() -> None:
    m = MenuMachine({"main": Menu("main", GREETING, {"2": Transfer("101")})}, "main")
    assert m.start(0.0) == [Play((GREETING,))]
    assert m.key("2", 1.0) == [StopPlaying(), Connect("101")]  # no extension dialling: at once
    assert m.done
    m = machine()
    m.start(0.0)
    assert m.key("2", 1.0) == [StopPlaying()]  # it might be the start of an extension
    assert m.timer(2.5) == [Connect("101")]


def test_typing_an_extension_during_the_greeting() -> None:
    m = machine()
    m.start(0.0)
    assert m.key("1", 0.5) == [StopPlaying()]  # 1 is a key and starts extensions: wait
    assert m.key("0", 0.8) == []
    assert m.key("2", 1.0) == [Connect("102")]


def test_a_lone_key_that_could_start_an_extension_acts_after_the_pause() -> None:
    m = machine()
    m.start(0.0)
    m.key("1", 0.5)
    assert m.deadline == 2.0
    assert m.timer(1.9) == [] and m.timer(2.0) == [Connect("600")]


def test_an_unknown_extension_plays_invalid_then_the_menu() -> None:
    m = machine()
    m.start(0.0)
    m.played(3.0)
    assert [m.key(k, 3.1) for k in "77"] == [[], []]  # typed as a whole,
    assert m.key("7", 3.2) == [Play((INVALID_EXTENSION,))]  # one complaint
    assert m.played(5.0) == [Play((GREETING,))]
    assert m.key("5", 5.5) == [StopPlaying()]
    assert m.timer(7.0) == [Play((INVALID_EXTENSION,))]  # or after the pause


def test_three_invalid_keys_reach_the_default() -> None:
    m = machine()
    m.start(0.0)
    m.played(1.0)
    assert m.key("#", 2.0) == [Play((INVALID,))]
    m.played(3.0)
    m.played(4.0)
    assert m.key("*", 5.0) == [Play((INVALID,))]
    m.played(6.0)
    m.played(7.0)
    assert m.key("#", 8.0) == [Connect("voicemail:100")]


def test_silence_replays_the_greeting_then_the_default() -> None:
    m = machine()
    m.start(0.0)
    m.played(1.0)
    assert m.timer(6.0) == [Play((GREETING,))]
    m.played(7.0)
    assert m.timer(12.0) == [Play((GREETING,))]
    m.played(13.0)
    assert m.timer(18.0) == [Connect("voicemail:100")]


def test_dial_by_name_one_match_and_a_choice() -> None:
    m = machine()
    m.start(0.0)
    assert m.key("9", 0.1) == [StopPlaying()]
    assert m.timer(1.6) == [Play((SPELL_LAST,))]
    m.played(2.0)
    assert m.key("6", 2.1) == [] and m.key("2", 2.2) == []
    offer = m.key("7", 2.3)  # MAR: Martin and Marin
    assert isinstance(offer[0], Play) and len(offer[0].prompts) == 8
    assert offer[0].prompts[1] == Prompt("text", "Alice Martin")
    assert m.key("2", 3.0) == [StopPlaying(), Connect("101")]
    m = machine()
    m.start(0.0)
    m.key("9", 0.1)
    m.timer(1.6)
    m.played(2.0)
    assert [m.key(k, 2.5) for k in "738"] == [[], [], [Connect("102")]]  # PET


def test_no_name_matches_asks_again() -> None:
    m = machine()
    m.start(0.0)
    m.key("9", 0.1)
    m.timer(1.6)
    m.played(2.0)
    m.key("9", 2.1)
    assert m.key("#", 2.2) == [Play((NO_MATCH,))]
    assert m.played(2.0) == [Play((SPELL_LAST,))]


def test_announcement_sub_menu_and_hangup() -> None:
    m = machine()
    m.start(0.0)
    m.played(1.0)
    m.key("3", 1.5)
    assert m.timer(3.0) == [Play((Prompt("text", "We are at 1 rue de la Paix."),))]
    assert m.played(4.0) == [Play((GREETING,))]  # then the menu again
    m.key("4", 4.5)
    assert m.timer(6.0) == [Play((SUPPORT.greeting,))]
    assert m.key("*", 6.5) == [StopPlaying(), Play((GREETING,))]  # no extension dialling there
    m.played(7.0)
    m.key("8", 7.0)
    goodbye = m.timer(8.5)
    assert isinstance(goodbye[0], Play) and not goodbye[0].interruptible
    assert m.key("1", 9.0) == []  # goodbye cannot be interrupted
    assert m.played(10.0) == [End()]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["key", "played", "timer"]),
            st.sampled_from("0123456789*#"),
            st.floats(0.0, 8.0),
        ),
        max_size=60,
    )
)
def test_any_sequence_of_events_is_handled(events: list[tuple[str, str, float]]) -> None:
    """Never raises; once Connect or End is out, nothing more comes."""
    m = machine()
    now = 0.0
    out: list[Command] = m.start(now)
    for kind, key, step in events:
        now += step
        if kind == "key":
            out += m.key(key, now)
        elif kind == "played":
            out += m.played(now)
        else:
            out += m.timer(now)
    finals = [i for i, c in enumerate(out) if isinstance(c, Connect | End)]
    assert len(finals) <= 1 and (not finals or finals[0] == len(out) - 1)
    assert m.done == bool(finals)
