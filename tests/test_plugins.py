"""The plugin seam: a feature written here, outside softswitch/, plugged into a PBX; the
registry's checks (numbers claimed twice, destinations that do not resolve); the in-call
keypad."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from media.tones import sine_mix
from softswitch import config as cfg
from softswitch.feature import BaseFeature, Dial, Done, Handler, Outcome
from softswitch.features import builtin, sections_of
from softswitch.keypad import Claim, InCallKeypad, Relay
from softswitch.plugins import Registry

from .audio import active, dominant_frequency
from .netutil import daemon, free_port
from .office import demo_pbx
from .test_pbx_inprocess import SoftPhone


class ClockSettings(BaseModel):
    number: str = Field("700", pattern=r"^[0-9]{2,8}$")
    pitch_hz: float = Field(440.0, ge=100, le=3000)
    hour: int | None = Field(None, ge=0, le=23)  # a fixed hour (tests); None: the real one


class SpeakingClock(BaseFeature):
    """Dial its number: one beep per hour on a 12-hour dial, then the call ends."""

    name = "speaking_clock"
    section = "speaking_clock"
    config_model = ClockSettings

    def numbers(self) -> Mapping[str, Handler]:
        settings: ClockSettings = self.settings() or ClockSettings()
        return {settings.number: self.tell_time}

    async def tell_time(self, dial: Dial) -> Outcome:
        settings: ClockSettings = self.settings() or ClockSettings()
        svc = self.services
        if not await svc.answer(dial.party):
            return Done()
        hour = settings.hour if settings.hour is not None else __import__("time").localtime()[3]
        beep = np.concatenate(
            [sine_mix((settings.pitch_hz,), 1600, 8000, -10), np.zeros(1600, np.int16)]
        )
        await asyncio.sleep(0.3)
        await dial.party.leg.play_samples(np.tile(beep, hour % 12 or 12))
        return Done()


async def test_a_feature_from_outside_softswitch_answers_its_number(tmp_path: Path) -> None:
    features = [*builtin(), SpeakingClock]
    pbx = await demo_pbx(
        tmp_path,
        extra='[speaking_clock]\nnumber = "700"\npitch_hz = 700.0\nhour = 15\n',
        features=features,
    )
    phone = SoftPhone("100", "alice100", pbx.ua.listeners[0].port, 1000.0)
    await phone.start()
    try:
        call = await phone.call("700")
        await call.wait_ended(10)  # three beeps (15 h), then the clock hangs up
    finally:
        await phone.stop()
        await pbx.stop()
    heard = np.concatenate(phone.heard)
    loud = np.abs(heard) > 1000
    starts = np.flatnonzero(loud[1:] & ~loud[:-1])
    bursts = [s for i, s in enumerate(starts) if i == 0 or s - starts[i - 1] > 800]
    assert len(bursts) == 3
    assert abs(dominant_frequency(active(heard, 1000), 8000) - 700) < 10


def test_a_features_section_is_validated_and_unknown_sections_refused() -> None:
    sections = sections_of([*builtin(), SpeakingClock])
    with pytest.raises(cfg.ConfigError, match=r"t\.toml: speaking_clock\.pitch_hz: .*3000"):
        cfg.parse(cfg.DEMO + "[speaking_clock]\npitch_hz = 9000.0\n", "t.toml", sections)
    with pytest.raises(cfg.ConfigError, match=r"t\.toml: speaking_clock: unknown section"):
        cfg.parse(cfg.DEMO + "[speaking_clock]\n", "t.toml")  # not loaded: refused
    with pytest.raises(cfg.ConfigError, match=r"ring_group: unknown section .*'ring_groups'"):
        cfg.parse(cfg.DEMO + "[[ring_group]]\n", "t.toml")


def test_a_number_claimed_twice_names_both_features() -> None:
    config = cfg.parse(
        cfg.DEMO + '[speaking_clock]\nnumber = "101"\n',
        "t.toml",
        sections_of([*builtin(), SpeakingClock]),
    )
    with pytest.raises(cfg.ConfigError, match="number 101 is claimed by both extensions and"):
        Registry(config, [*builtin(), SpeakingClock])


def registry(extra: str) -> Registry:
    config = cfg.parse(cfg.DEMO + extra, "office.toml")
    return Registry(config, builtin(), source="office.toml")


def test_every_destination_is_resolved_at_load() -> None:
    with pytest.raises(cfg.ConfigError, match=r"users\[2\]\.forward\.no_answer: 'ext:999': no"):
        registry('no_answer = "ext:999"\n')  # in the demo's last table: 102's forward
    with pytest.raises(cfg.ConfigError, match=r"users\[2\].forward.busy: 'voicemail:555'"):
        registry('busy = "voicemail:555"\n')
    with pytest.raises(cfg.ConfigError, match=r"ring_groups\[0\]\.no_answer: 'tel:0123456789'"):
        registry(  # no trunk to call it through
            '[[ring_groups]]\nextension = "600"\nname = "S"\n'
            'steps = [{targets = ["100"]}]\nno_answer = "tel:0123456789"\n'
        )
    ok = registry(
        '[[ring_groups]]\nextension = "600"\nname = "S"\n'
        'steps = [{targets = ["100"]}]\nno_answer = "voicemail:101"\n'
    )
    assert "600" in ok.numbers


def test_ring_group_targets_are_checked() -> None:
    groups = (
        '[[ring_groups]]\nextension = "600"\nname = "A"\nsteps = [{targets = ["100"]}]\n'
        '[[ring_groups]]\nextension = "601"\nname = "B"\nsteps = [{targets = ["100", "600"]}]\n'
    )
    with pytest.raises(cfg.ConfigError, match=r"ring_groups\[1\]\.steps\[0\]\.targets\[1\]: 600"):
        registry(groups)  # a group may not ring a group
    with pytest.raises(cfg.ConfigError, match=r"at most 10 targets"):
        registry(
            '[[ring_groups]]\nextension = "600"\nname = "A"\nsteps = ['
            + ", ".join('{targets = ["100", "101"]}' for _ in range(6))
            + "]\n"
        )
    with pytest.raises(cfg.ConfigError, match=r"targets\[0\]: 555 is neither"):
        registry('[[ring_groups]]\nextension = "600"\nname = "A"\nsteps = [{targets = ["555"]}]\n')


def test_devices_need_credentials_or_a_number_and_distinct_flips() -> None:
    with pytest.raises(cfg.ConfigError, match="either username"):
        registry('[[users.devices]]\nname = "x"\n')
    with pytest.raises(cfg.ConfigError, match="same flip number"):
        registry(
            '[[users.devices]]\nname = "a"\nnumber = "0612345678"\nflip = 1\n'
            '[[users.devices]]\nname = "b"\nnumber = "0612345679"\nflip = 1\n'
        )


# -- the in-call keypad ---------------------------------------------------------------------

CODES = {"*1", "*2", "*8", "*85"}


def test_keypad_claims_codes_and_relays_the_rest() -> None:
    pad = InCallKeypad(CODES)
    assert pad.feed("5", 0.0) == [Relay("5")]
    assert pad.feed("*", 1.0) == [] and pad.deadline == 3.0
    assert pad.feed("2", 1.5) == [Claim("*2")]
    assert pad.feed("*", 2.0) == []
    assert pad.feed("9", 2.5) == [Relay("*"), Relay("9")]  # not a code: both go through
    assert pad.feed("*", 3.0) == []
    assert pad.on_timer(4.9) == [] and pad.on_timer(5.0) == [Relay("*")]  # a lone star
    assert pad.feed("*", 6.0) == [] and pad.feed("8", 6.1) == []  # *8 or *85?
    assert pad.feed("5", 6.2) == [Claim("*85")]
    assert pad.feed("*", 7.0) == [] and pad.feed("8", 7.1) == []
    assert pad.on_timer(9.1) == [Claim("*8")]  # nothing followed: the shorter code


@given(st.lists(st.sampled_from("0123456789*#"), max_size=30), st.floats(0.05, 3.0))
def test_keypad_never_loses_or_reorders_keys(keys: list[str], gap: float) -> None:
    """Whatever is pressed comes out, in order, as relayed keys and claimed codes."""
    pad = InCallKeypad(CODES)
    out: list[Relay | Claim] = []
    now = 0.0
    for key in keys:
        out += pad.feed(key, now)
        now += gap
    out += pad.on_timer(now + 10)
    text = "".join(a.keys if isinstance(a, Relay) else a.code for a in out)
    assert text == "".join(keys)
    assert all(a.code in CODES for a in out if isinstance(a, Claim))


async def test_embedded_pbx_example_serves_calls_and_reports_events(tmp_path: Path) -> None:
    """examples/embedded_pbx.py: the PBX in another program, with a listener feature."""
    port = free_port()
    args = ["examples/embedded_pbx.py", "--listen", f"127.0.0.1:{port}"]
    with daemon([*args, "--data-dir", str(tmp_path / "data")], "embedded PBX ready") as proc:
        alice = SoftPhone("100", "alice100", port, 1000.0)
        bob = SoftPhone("101", "bob101", port, 600.0)
        for phone in (alice, bob):
            await phone.start()
        try:
            call = await alice.call("600")  # the ring group rings Bob, who answers
            await asyncio.sleep(1.0)
            assert abs(bob.heard_frequency(0.5) - 1000) < 10
            await call.bye()
            proc.wait_for(r"ended: 100 \(remote BYE\)")  # Alice hung up
            proc.wait_for(r"ended: 101 \(local BYE\)")  # and the PBX released Bob
        finally:
            for phone in (alice, bob):
                await phone.stop()
        proc.wait_for(r"answered: 101")
        proc.wait_for(r"answered: 100")


def test_receptionist_configuration_errors_name_the_key() -> None:
    base = '[[ivr]]\nextension = "500"\nname = "R"\ngreeting = "Hello"\n'
    cases = {
        '[ivr.keys]\n"1" = "999"\n': r"ivr\[0\]\.keys\.1: '999': no extension",
        '[ivr.keys]\n"12" = "101"\n': r"ivr\[0\]\.keys: .*key '12' is not one of 0-9",
        'default = "menu:a"\n[ivr.menus.a]\ngreeting = "A"\ndefault = "menu:main"\n': (
            r"ivr\[0\]\.default: the menus' defaults loop \(main -> a -> main\)"
        ),
        '[ivr.keys]\n"1" = "menu:nope"\n': r"ivr\[0\]\.keys\.1: no menu 'nope'",
        '[ivr.keys]\n"3" = "announce:/nonexistent/hours.wav"\n': (
            r"ivr\[0\]\.keys\.3: .*hours\.wav: cannot read"
        ),
    }
    for extra, error in cases.items():
        with pytest.raises(cfg.ConfigError, match=rf"office\.toml: {error}"):
            registry(base + extra)
    ok = registry(base + '[ivr.keys]\n"1" = "101"\n"9" = "dial_by_name"\n"0" = "voicemail:100"\n')
    assert "500" in ok.numbers
