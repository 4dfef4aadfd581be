"""HD voice with baresip (issue 18): G.722 (16 kHz), Opus (48 kHz clock) and G.711 phones
through the daemon, checked on baresip's own recordings (sndfile: the decoder's output).

One office and four phones serve every check (set-up is the slow part): G.722 <-> PCMU
both ways and hold music to the G.722 phone; then at once Opus <-> PCMU and G.722 <->
G.722 (a 5 kHz tone: nothing on the way may be 8 kHz); then a G.722 and a PCMU phone in a
conference. Each phone sends tone bursts; the receiver must hear the sender's frequency
(±1 %) with the burst length and period right (±3 %).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile

from media.resample import resample
from softswitch.features.hold_music import builtin_music

from .audio import burst_signal, check_bursts, piecewise_correlation
from .baresip import Phone
from .office import Office, segment

pytestmark = pytest.mark.interop


@pytest.fixture
async def office(tmp_path: Path) -> AsyncIterator[Office]:
    o = Office(tmp_path)
    soundfile.write(tmp_path / "moh.wav", builtin_music(8000), 8000, subtype="PCM_16")
    o.extra = f'[hold_music]\ndefault = "{tmp_path / "moh.wav"}"\n'
    o.user_extra = {"100": 'conference_host_code = "1001"\nconference_code = "2001"\n'}
    yield o
    o.stop()


def bursts(freq: float) -> Callable[[int], np.ndarray]:
    return lambda rate: burst_signal(freq, rate, 60.0)


def heard(phone: Phone, freq: float, start: float, end: float | None, what: str) -> str:
    audio, rate = segment(phone.recording(), start, end)
    f, length, period = check_bursts(audio, rate, freq, what)
    return f"{what}: {f:.1f} Hz, bursts {length:.3f}/{period:.3f} s (recorded at {rate} Hz)"


async def call(caller: Phone, callee: Phone, number: str, port: int) -> float:
    """Dial and wait until both ends are up; the time the caller's recording starts."""
    await caller.command("dial", f"sip:{number}@127.0.0.1:{port}")
    await caller.wait_event("CALL_ESTABLISHED")
    t0 = time.monotonic()
    await callee.wait_event("CALL_ESTABLISHED", count=len(callee.seen("CALL_CLOSED")) + 1)
    return t0


async def hang_up(caller: Phone, callee: Phone) -> None:
    closed = len(callee.seen("CALL_CLOSED"))
    await caller.command("hangup")
    await callee.wait_event("CALL_CLOSED", count=closed + 1)


async def test_g722_opus_and_g711_phones(office: Office) -> None:
    office.start()
    assert office.proc is not None
    port = office.port
    wide = office.phone("wide", "100", 1000, codecs="G722", srate=16000, signal_of=bursts(1000))
    narrow = office.phone("narrow", "101", 600, codecs="PCMU", signal_of=bursts(600))
    opus = office.phone("opus", "102", 800, codecs="opus", srate=48000, signal_of=bursts(800))
    wide2 = office.phone("wide2", "103", 5000, codecs="G722", srate=16000, signal_of=bursts(5000))
    phones = (wide, narrow, opus, wide2)
    results: list[str] = []
    for p in phones:
        await p.start()
    try:
        for p in phones:
            await p.wait_event("REGISTER_OK")
        # G.722 <-> PCMU, then the PCMU phone holds: the G.722 phone hears the music
        t0 = await call(wide, narrow, "101", port)
        await asyncio.sleep(3.5)
        t_hold = time.monotonic() - t0
        await narrow.command("hold")
        await asyncio.sleep(4.0)
        t_resume = time.monotonic() - t0
        await narrow.command("resume")
        await asyncio.sleep(0.5)
        await hang_up(wide, narrow)
        results.append(heard(narrow, 1000, 0.4, t_hold - 0.1, "G722 -> PCMU"))
        results.append(heard(wide, 600, 0.4, t_hold - 0.1, "PCMU -> G722"))
        held, rate = segment(wide.recording(), t_hold + 1.0, t_resume - 0.2)
        assert rate == 16000
        music, file_rate = soundfile.read(office.tmp / "moh.wav", dtype="int16")
        corr = piecewise_correlation(np.tile(resample(music, file_rate, 16000), 2), held, rate)
        results.append(f"hold music to G722: correlation {corr:.3f} with the file at 16 kHz")
        assert corr > 0.9

        # at once: Opus <-> PCMU, and G.722 <-> G.722 at 5 kHz
        await asyncio.gather(call(opus, narrow, "101", port), call(wide2, wide, "100", port))
        await asyncio.sleep(4.0)
        await asyncio.gather(hang_up(opus, narrow), hang_up(wide2, wide))
        results.append(heard(narrow, 800, 0.4, 3.9, "opus -> PCMU"))
        results.append(heard(opus, 600, 0.4, 3.9, "PCMU -> opus"))
        results.append(heard(wide, 5000, 0.4, 3.9, "G722 -> G722 (5 kHz)"))
        results.append(heard(wide2, 1000, 0.4, 3.9, "G722 -> G722"))
        lines = "".join(office.proc.lines)
        assert "codec_a=OPUS codec_b=PCMU" in lines
        assert "codec_a=G722 codec_b=G722" in lines  # one codec: relayed, not transcoded

        # a G.722 phone and a PCMU phone in one conference hear each other
        for p, code in ((wide, "1001#"), (narrow, "2001#")):
            await p.command("dial", f"sip:800@127.0.0.1:{port}")
            await p.wait_event("CALL_ESTABLISHED", count=3)
            await asyncio.sleep(0.3)
            for digit in code:
                await p.command("sndcode", digit)
                await asyncio.sleep(0.25)
        await asyncio.to_thread(office.proc.wait_for, r"conference_join .*members=2", 15)
        joined = time.monotonic()
        await asyncio.sleep(4.5)
        await wide.command("hangup")
        await narrow.command("hangup")
        await narrow.wait_event("CALL_CLOSED", count=3)
        for p, freq, name in ((wide, 600, "PCMU -> G722"), (narrow, 1000, "G722 -> PCMU")):
            start = joined - p.seen("CALL_ESTABLISHED")[-1]["at"]
            results.append(heard(p, freq, start + 0.6, start + 4.4, f"conference {name}"))
    finally:
        for p in phones:
            await p.stop()
    print("\n" + "\n".join(results))
