from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import soundfile

from media import codecs
from media.audio import AudioFileError, Player, Recorder, SharedPlayer, load_audio
from media.clock import MediaClock
from media.resample import StreamResampler, resample
from media.tones import TONES, dtmf_tone, render, tone

from .audio import best_correlation, dominant_frequency


def test_load_converts_any_format_once(tmp_path: Path) -> None:
    t = np.arange(44100 * 2) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1)
    for name, fmt in (("a.wav", "WAV"), ("a.flac", "FLAC"), ("a.mp3", "MP3")):
        soundfile.write(tmp_path / name, (stereo * 12000).astype(np.int16), 44100, format=fmt)
        samples = load_audio(tmp_path / name, 8000)
        assert abs(len(samples) - 16000) < 2000  # MP3 adds codec padding
        assert abs(dominant_frequency(samples, 8000) - 440) < 3
        wide = load_audio(tmp_path / name, 16000)
        assert abs(dominant_frequency(wide, 16000) - 440) < 3


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(AudioFileError, match=r"notes\.txt: not an MP3/WAV/FLAC file we can read"):
        load_audio(bad)
    with pytest.raises(AudioFileError, match="cannot read"):
        load_audio(tmp_path / "missing.wav")
    big = tmp_path / "big.wav"
    soundfile.write(big, np.zeros(8000 * 400, dtype=np.int16), 8000)
    with pytest.raises(AudioFileError, match=r"larger than the 5242880 byte limit"):
        load_audio(big)


def test_player_loop_once_offset() -> None:
    samples = np.arange(400, dtype=np.int16)
    once = Player(samples, 160, loop=False)
    frames = [once.read() for _ in range(3)]
    assert once.done and frames[2][:80].tolist() == list(range(320, 400))
    assert not frames[2][80:].any()
    looped = Player(samples, 160, loop=True, offset=300)
    assert looped.read().tolist() == list(range(300, 400)) + list(range(60))
    assert looped.read()[0] == 60


def test_shared_player_one_decode_one_encode_per_tick() -> None:
    shared = SharedPlayer(Player(tone("ringback")[0], 160))
    a = shared.advance(1)
    b = shared.advance(1)
    assert a is b
    p1 = shared.encoded(codecs.PCMU)
    assert shared.encoded(codecs.PCMU) is p1
    assert shared.advance(2) is not a


def test_recorder(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.wav", 8000)
    for _ in range(50):
        rec.write(np.full(160, 1000, dtype=np.int16))
    rec.close()
    data, rate = soundfile.read(tmp_path / "r.wav", dtype="int16")
    assert rate == 8000 and len(data) == 8000 and (data == 1000).all()


def test_resampling() -> None:
    x = (np.sin(2 * np.pi * 1000 * np.arange(8000) / 8000) * 10000).astype(np.int16)
    for rate in (16000, 48000):
        y = resample(x, 8000, rate)
        assert len(y) == rate and abs(dominant_frequency(y, rate) - 1000) < 2
    stream = StreamResampler(8000, 16000)
    out = np.concatenate([stream.process(x[i : i + 160]) for i in range(0, 8000, 160)])
    assert len(out) == 16000 and abs(dominant_frequency(out[2000:], 16000) - 1000) < 2


@pytest.mark.parametrize("country", ["us", "fr"])
def test_progress_tones(country: str) -> None:
    period, repeat = tone("busy", country)
    assert repeat and len(period) == 8000  # 0.5 s on, 0.5 s off
    on = period[:4000]
    expected = 440.0 if country == "fr" else 480.0
    assert abs(dominant_frequency(on, 8000) - expected) < 3 or country == "us"
    assert not period[4000:].any()
    ring = tone("ringback", country)[0]
    assert len(ring) == 8000 * (6 if country == "us" else 5)
    assert set(TONES) >= {"ringback", "busy", "congestion", "call_waiting", "beep"}
    assert len(render(TONES["beep"][country])) == 2000


def test_dtmf_tone_frequencies() -> None:
    digit = dtmf_tone("1", 200, 0)
    spectrum = np.abs(np.fft.rfft(digit.astype(float)))
    peaks = sorted(np.argsort(spectrum)[-2:] * 8000 / len(digit))
    assert abs(peaks[0] - 697) < 10 and abs(peaks[1] - 1209) < 10


def test_codecs_round_trip() -> None:
    x = (np.sin(2 * np.pi * 700 * np.arange(16000) / 16000) * 8000).astype(np.int16)
    g722 = codecs.codec("g722")
    enc, dec = g722.encoder(), g722.decoder()
    out = np.concatenate([dec.decode(enc.encode(x[i : i + 320])) for i in range(0, 16000, 320)])
    assert best_correlation(out, x[4000:6000]) > 0.95
    for name in ("PCMU", "PCMA"):
        c = codecs.codec(name)
        narrow = x[::2].copy()
        assert best_correlation(c.decoder().decode(c.encoder().encode(narrow)), narrow) > 0.99
    with pytest.raises(ValueError, match="unsupported codec"):
        codecs.codec("G729")


@pytest.mark.serial  # a 5 ms bound on the tick times
async def test_clock_ticks_without_drift() -> None:
    clock = MediaClock(interval=0.01)
    seen: list[tuple[int, float]] = []
    loop = asyncio.get_running_loop()
    clock.subscribe(lambda n: seen.append((n, loop.time())))
    order: list[str] = []
    clock.subscribe(lambda n: order.append("send"), priority=90)
    clock.subscribe(lambda n: order.append("receive"), priority=10)
    clock.start()
    await asyncio.sleep(1.0)
    await clock.stop()
    ticks = [n for n, _ in seen]
    assert ticks == list(range(len(ticks))) and 90 <= len(ticks) <= 101
    start = seen[0][1]
    # every tick near its absolute deadline: no accumulated drift at the end
    assert abs(seen[-1][1] - (start + ticks[-1] * 0.01)) < 0.005
    assert order[:2] == ["receive", "send"]
    assert clock.stats.ticks == len(ticks)


async def test_clock_counts_late_and_skips() -> None:
    clock = MediaClock(interval=0.01, max_catch_up=2)
    import time

    def slow(n: int) -> None:
        if n == 5:
            time.sleep(0.1)  # ten ticks' worth of stall

    clock.subscribe(slow)
    clock.start()
    await asyncio.sleep(0.3)
    await clock.stop()
    assert clock.stats.late >= 1 and clock.stats.skipped >= 5
