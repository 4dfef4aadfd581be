"""Every media path at the right pitch and duration, for every codec (issue 18).

Phones here are this project's UA and RTP (tests/softphone.py) on a drift-free clock, one
codec each, through the PBX in this process. Each sends tone bursts (0.5 s on, 0.25 s
off); what the other side decodes must have the sender's frequency (±1 %) and burst
timing (±3 %). A path that converts 8 ↔ 16 kHz twice, or takes G.722's 8000 Hz RTP clock
or Opus's 48000 for an audio rate, fails both. baresip does the same in
test_hdvoice_interop.py.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

import sip
from media import codecs
from media.audio import load_audio
from media.clock import MediaClock
from media.resample import resample
from media.tones import tone
from softswitch.features.hold_music import builtin_music
from softswitch.media_engine import PlayerSource
from softswitch.pbx import Pbx

from .audio import (
    best_correlation,
    check_bursts,
    dominant_frequency,
    piecewise_correlation,
)
from .office import demo_pbx, voicemail_store
from .softphone import OPUS_MAX_BITRATE, USERS, Leg, SoftPhone, phone

CODECS = ("PCMU", "PCMA", "G722", "OPUS")
PAIRS = list(itertools.combinations_with_replacement(CODECS, 2))
RESULTS: list[str] = []  # measured values, printed with -s
CLOCKS: list[object] = []


@pytest.fixture
async def pbx(tmp_path: Path) -> AsyncIterator[Pbx]:
    p = await demo_pbx(tmp_path, settings='transfer_audio = "music"', extra=USERS, rtp=36000)
    CLOCKS.append(p.clock.stats)
    yield p
    await p.stop()


@pytest.fixture
async def clock() -> AsyncIterator[MediaClock]:
    c = MediaClock()
    CLOCKS.append(c.stats)
    c.start()
    yield c
    await c.stop()


def tones(a: str, b: str) -> tuple[float, float]:
    """Two wideband phones talk above 4 kHz: heard only if nothing on the way is 8 kHz."""
    if codecs.codec(a).wideband and codecs.codec(b).wideband:
        return 5000.0, 6000.0
    return 1000.0, 600.0


def check(leg: Leg, freq: float, what: str, start: float = 1.0, end: float | None = None) -> None:
    session = leg.stream.session
    jitter = session.jitter.stats
    what += f" [{session.counters}, {jitter}, frames {len(leg.frames)}, {CLOCKS}]"
    measured = check_bursts(leg.heard(start, end), leg.rate, freq, what)
    RESULTS.append(f"{what}: {measured[0]:.1f} Hz, bursts {measured[1]:.3f}/{measured[2]:.3f} s")


def relayed(sender: Leg, receiver: Leg) -> float:
    """The share of the receiver's packets that are the sender's, byte for byte."""
    sent = set(sender.sent)
    return sum(p in sent for p in receiver.received) / max(1, len(receiver.received))


async def wait_for(predicate: object, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if callable(predicate) and predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def test_bridge_every_codec_pair(pbx: Pbx, clock: MediaClock) -> None:
    """Ten simultaneous calls, one per pair of PCMU, PCMA, G.722 and Opus: each side hears
    the other right; a pair with one codec is relayed untouched (no transcoding)."""
    callers, callees = [], []
    for i, (a, b) in enumerate(PAIRS):
        fa, fb = tones(a, b)
        callers.append(phone(pbx, clock, 200 + 2 * i, a, fa))
        callees.append(phone(pbx, clock, 201 + 2 * i, b, fb))
    everyone = callers + callees
    await asyncio.gather(*(p.start() for p in everyone))
    try:
        legs = await asyncio.gather(*(p.call(str(201 + 2 * i)) for i, p in enumerate(callers)))
        await wait_for(lambda: all(p.legs for p in callees))
        await asyncio.sleep(4.5)
        for i, (a, b) in enumerate(PAIRS):
            fa, fb = tones(a, b)
            ours, theirs = legs[i], callees[i].legs[0]
            assert (ours.stream.codec.name, theirs.stream.codec.name) == (a, b)
            check(theirs, fa, f"bridge {a} -> {b}")
            check(ours, fb, f"bridge {b} -> {a}")
            if a == b and not codecs.codec(a).stateless:  # re-encoding would change bytes
                assert relayed(ours, theirs) > 0.95 and relayed(theirs, ours) > 0.95, (a, b)
            for leg in (ours, theirs):  # the phone's maxaveragebitrate, relayed or not
                if leg.stream.codec.name == "OPUS":
                    rate = 8 * 50 * np.mean([len(p) for p in leg.received])
                    RESULTS.append(f"Opus {a} <-> {b}: received {rate:.0f} bit/s")
                    assert rate <= 1.1 * OPUS_MAX_BITRATE, (a, b, rate)
    finally:
        await asyncio.gather(*(p.stop() for p in everyone))
    print("\n".join(RESULTS))


async def hold_and_transfer_music(pbx: Pbx, clock: MediaClock) -> None:
    """Users 200-203. A G.722 phone on hold hears the music decoded at 16 kHz (not 8 kHz
    upsampled); an Opus phone being transferred hears it while the target rings, then the
    target."""
    wide = phone(pbx, clock, 200, "G722", 1000.0)
    narrow = phone(pbx, clock, 201, "PCMU", 600.0)
    opus = phone(pbx, clock, 202, "OPUS", 800.0)
    target = phone(pbx, clock, 203, "PCMA", 700.0, answer=False)
    for p in (wide, narrow, opus, target):
        await p.start()
    music = builtin_music(16000)
    try:
        leg = await wide.call("201")
        await wait_for(lambda: bool(narrow.legs))
        await asyncio.sleep(3.2)
        check(leg, 600.0, "bridge PCMU -> G722 before hold", 0.5, 3.2)
        held_at = len(leg.frames) / 50
        local = narrow.legs[0].stream.session.local
        assert local is not None
        hold = sip.make_offer("127.0.0.1", local[1], (sip.PCMU,), direction="sendonly")
        await narrow.legs[0].call.reinvite(bytes(hold))
        await asyncio.sleep(3.0)
        held = leg.heard(held_at + 0.5, held_at + 3.0)
        corr = piecewise_correlation(np.tile(music, 2), held, leg.rate)  # where in the loop
        RESULTS.append(f"hold music to G.722: correlation {corr:.3f} with the 16 kHz music")
        assert corr > 0.9
        await leg.call.bye()

        to_narrow = await opus.call("201")
        await asyncio.sleep(2.5)
        check(to_narrow, 600.0, "bridge PCMU -> OPUS before transfer", 0.3, 2.4)
        await narrow.legs[1].call.refer("sip:203@demo.softswitch")
        await wait_for(lambda: bool(target.ringing))
        ringing_at = len(to_narrow.frames) / 50
        await asyncio.sleep(3.0)
        heard = to_narrow.heard(ringing_at + 0.5, ringing_at + 3.0)
        corr = piecewise_correlation(np.tile(music, 2), heard, to_narrow.rate)
        RESULTS.append(f"transfer music to Opus: correlation {corr:.3f}")
        assert corr > 0.9
        target.answer_ringing()
        answered_at = len(to_narrow.frames) / 50
        await asyncio.sleep(4.0)
        # from 1.5 s on: the new leg's jitter buffer has settled its latency (it drops a
        # frame a second while it holds more than it needs)
        check(to_narrow, 700.0, "transfer PCMA -> OPUS", answered_at + 1.5)
        check(target.legs[0], 800.0, "transfer OPUS -> PCMA", 0.5)
    finally:
        for p in (wide, narrow, opus, target):
            await p.stop()


async def playing(pbx: Pbx, label: str, samples: int, timeout: float = 20.0) -> None:
    """Until the PBX's leg of party ``label`` starts playing a ``samples`` long sound."""
    for _ in range(int(timeout / 0.01)):
        for party in pbx.parties:
            source = party.leg.source
            if (
                party.label == label
                and isinstance(source, PlayerSource)
                and len(source.player.samples) == samples
                and source.player.position <= source.player.frame
            ):
                return
        await asyncio.sleep(0.01)
    seen = [
        (p.label, len(p.leg.source.player.samples))
        for p in pbx.parties
        if isinstance(p.leg.source, PlayerSource)
    ]
    raise AssertionError(f"{label} never played a {samples}-sample sound (playing: {seen})")


def now(leg: Leg) -> float:
    """Seconds of audio this leg has taken in so far."""
    return len(leg.frames) / 50


async def voicemail(pbx: Pbx, clock: MediaClock) -> None:
    """Users 210-211. A G.722 caller reaches an absent user's voicemail: the greeting (a
    prompt) and the beep at the right pitch, its message kept at 16 kHz at the right pitch
    and length; the mailbox owner, on a PCMU phone, hears the message right."""
    caller = phone(pbx, clock, 210, "G722", 1300.0)
    await caller.start()
    owner: SoftPhone | None = None
    greeting = pbx.engine.prompt("vm-greeting", 16000)
    beep = tone("beep", "us", 16000)[0]
    try:
        leg = await caller.call("211")  # nobody registered as 211: voicemail
        leg.sending = False
        await playing(pbx, "210", len(greeting))
        greeting_at = now(leg)
        await playing(pbx, "210", len(beep))
        beep_at = now(leg)
        await asyncio.sleep(0.5)
        heard = leg.heard(greeting_at, beep_at)
        corr = best_correlation(heard, greeting[16000:48000])
        RESULTS.append(f"voicemail greeting to G.722: correlation {corr:.3f}")
        assert corr > 0.9
        tail = leg.heard(beep_at, beep_at + 0.5)
        hop = 80  # 5 ms
        envelope = np.sqrt(
            (tail[: len(tail) // hop * hop].astype(float).reshape(-1, hop) ** 2).mean(1)
        )
        loud = np.flatnonzero(envelope > np.percentile(envelope, 90) / 3)
        beep_s = len(loud) * hop / 16000
        beep_hz = dominant_frequency(tail[loud[0] * hop : (loud[-1] + 1) * hop], 16000)
        RESULTS.append(f"voicemail beep to G.722: {beep_hz:.1f} Hz, {beep_s:.3f} s")
        # a 0.25 s beep is 12.5 frames: measured to the frame (±20 ms), the pitch to ±1 %
        assert abs(beep_hz - 1000) <= 10 and abs(beep_s - 0.25) <= 0.02
        leg.position, leg.sending = 0, True
        await asyncio.sleep(4.0)
        await leg.call.bye()
        await asyncio.sleep(0.3)
        store = voicemail_store(pbx)
        assert store is not None
        (message,) = store.messages("211")
        audio, rate = soundfile.read(message.path, dtype="int16")
        assert rate == 16000
        measured = check_bursts(audio, rate, 1300.0, "voicemail recording of G.722")
        RESULTS.append(f"voicemail recording of G.722 (16 kHz WAV): {measured}")

        owner = phone(pbx, clock, 211, "PCMU", 500.0)
        await owner.start()
        mine = await owner.call("*97")
        mine.sending = False
        await playing(pbx, "211", len(pbx.engine.prompt("vm-enter-pin", 8000)))
        mine.stream.session.send_dtmf("1211#")
        await playing(pbx, "211", len(audio) // 2)  # the message, at 8 kHz for this phone
        start = now(mine)
        await asyncio.sleep(len(audio) / rate)
        check(mine, 1300.0, "voicemail playback to PCMU", start + 0.1, start + len(audio) / rate)
    finally:
        await caller.stop()
        if owner is not None:
            await owner.stop()


async def conference(pbx: Pbx, clock: MediaClock) -> None:
    """Users 220-222. G.722, Opus and PCMU legs in one conference: each talker is heard by
    the others at the right pitch and timing; the two wideband legs hear each other above
    4 kHz (a 16 kHz mix); the recording is right too."""
    members = [
        phone(pbx, clock, 220, "G722", 5000.0),
        phone(pbx, clock, 221, "OPUS", 1200.0),
        phone(pbx, clock, 222, "PCMU", 700.0),
    ]
    freqs = (5000.0, 1200.0, 700.0)
    for p in members:
        await p.start()
    try:
        legs = [await p.call("800") for p in members]
        for leg, code in zip(legs, ("1001#", "2001#", "2001#"), strict=True):
            leg.sending = False
            leg.stream.session.send_dtmf(code)
        await wait_for(lambda: len(getattr(pbx.conference.rooms.get("100"), "members", ())) == 3)
        room = pbx.conference.rooms["100"]
        assert room.mixer.wideband
        await asyncio.sleep(4.5)  # "the conference is being recorded"... prompts end
        recording = room.start_recording()
        for t, talker in enumerate(legs):  # one at a time: bursts each listener can time
            talker.position, talker.sending = 0, True
            began = [now(leg) for leg in legs]
            await asyncio.sleep(3.6)
            talker.sending = False
            await asyncio.sleep(0.3)
            for n, listener in enumerate(legs):
                wideband_only = freqs[t] > 4000 and not listener.stream.codec.wideband
                if listener is talker or wideband_only:
                    continue  # (5 kHz cannot cross G.711)
                name = f"conference {members[t].codec.name} -> {members[n].codec.name}"
                check(listener, freqs[t], name, began[n] + 0.4, began[n] + 3.6)
        room.stop_recording()
        audio, rate = soundfile.read(recording, dtype="int16")
        measured = check_bursts(audio[-int(3.9 * rate) :], rate, 700.0, "conference recording")
        RESULTS.append(f"conference recording: {measured}")
    finally:
        for p in members:
            await p.stop()


async def test_music_prompts_voicemail_and_conference_per_codec(
    pbx: Pbx, clock: MediaClock
) -> None:
    """The other paths on one PBX (different users): hold and transfer music with voicemail
    prompts, recording and playback at once, then a conference of G.722, Opus and PCMU."""
    async with asyncio.TaskGroup() as group:  # a failure cancels the other
        group.create_task(hold_and_transfer_music(pbx, clock))
        group.create_task(voicemail(pbx, clock))
    # alone: the bridge keeps at most 4 packets per leg between ticks, so a stall of the
    # shared event loop (this process runs the PBX and every phone) would cut the bursts
    await conference(pbx, clock)
    print("\n".join(RESULTS))


def test_hold_music_file_is_resampled_once(tmp_path: Path) -> None:
    """A wideband listener's music is the file decoded at 16 kHz, not an 8 kHz upsample."""
    path = tmp_path / "music.wav"
    soundfile.write(path, builtin_music(16000), 16000, subtype="PCM_16")
    narrow, wide = load_audio(path, 8000), load_audio(path, 16000)
    assert len(wide) == 2 * len(narrow)
    assert best_correlation(resample(narrow, 8000, 16000), wide[16000:32000]) > 0.9
