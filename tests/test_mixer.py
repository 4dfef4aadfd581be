from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.codecs import PCMA, PCMU
from media.mixer import Mixer
from media.tones import sine_mix


def tone(freq: float, level: float = -20.0) -> np.ndarray:
    return sine_mix((freq,), 160, 8000, level)


def dominant(frame: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(frame.astype(float) * np.hanning(len(frame))))
    return float(np.argmax(spectrum) * 8000 / len(frame))


@given(
    st.lists(
        st.tuples(st.booleans(), st.booleans(), st.sampled_from([0, 400, 800, 1200, 2000])),
        min_size=1,
        max_size=12,
    ),
)
@settings(max_examples=200)
def test_nobody_hears_themself(spec: list[tuple[bool, bool, int]]) -> None:
    """N-1: what a participant gets never contains its own voice."""
    mixer = Mixer(16)
    rows = [mixer.add(talk=talk, listen=listen) for talk, listen, _ in spec]
    # each participant speaks on its own marker frequency bin (or is silent)
    for row, (_, _, freq) in zip(rows, spec, strict=True):
        voice = sine_mix((float(freq),), 160, 8000, -20) if freq else np.zeros(160, np.int16)
        if freq:
            voice = sine_mix((50.0 * (row + 2),), 160, 8000, -20)
        mixer.put(row, voice)
    out = mixer.mix()
    for row, (talk, _, freq) in zip(rows, spec, strict=True):
        heard = out.frame_for(row).astype(np.float64)
        own = sine_mix((50.0 * (row + 2),), 160, 8000, -20).astype(np.float64)
        others = [r for r, (t, _, f) in zip(rows, spec, strict=True) if t and f and r != row]
        expected = sum(
            (sine_mix((50.0 * (r + 2),), 160, 8000, -20).astype(np.float64) for r in others),
            np.zeros(160),
        )
        if talk and freq:
            assert np.allclose(heard, expected, atol=1)  # exactly the others
            assert abs(np.dot(heard - expected, own)) < 1e3
        else:
            assert np.allclose(heard, expected + (own if talk and freq else 0), atol=1)


def test_listeners_share_one_frame_and_one_encoding() -> None:
    mixer = Mixer(1000)
    rows = [mixer.add() for _ in range(1000)]
    for row in rows[:3]:
        mixer.put(row, tone(300 + 200 * row))
    for row in rows[3:]:
        mixer.put(row, np.zeros(160, np.int16))
    out = mixer.mix()
    assert list(out.talkers) == rows[:3]
    assert out.minus_one.shape == (3, 160)
    listeners = [out.frame_for(r) for r in rows[3:]]
    assert all(f is out.full for f in listeners)  # the same array object
    ulaw, alaw = PCMU.encoder(), PCMA.encoder()
    first = out.shared_payload(PCMU, ulaw)
    assert out.shared_payload(PCMU, ulaw) is first  # encoded once per codec
    assert out.shared_payload(PCMA, alaw) != first
    assert dominant(out.frame_for(rows[0])) in (500.0, 700.0)


def test_talker_detection_and_hangover() -> None:
    mixer = Mixer(4, hangover_ticks=3)
    a, b = mixer.add(), mixer.add()
    mixer.put(a, tone(400))
    mixer.put(b, (tone(400) // 1000).astype(np.int16))  # far below the threshold
    out = mixer.mix()
    assert list(out.talkers) == [a]
    for _ in range(3):  # a goes quiet: still a talker for the hangover
        mixer.put(a, np.zeros(160, np.int16))
        assert list(mixer.mix().talkers) == [a]
    mixer.put(a, np.zeros(160, np.int16))
    assert list(mixer.mix().talkers) == []


def test_muted_and_deaf_participants() -> None:
    mixer = Mixer(4)
    speaker, muted = mixer.add(), mixer.add(talk=False)
    mixer.put(speaker, tone(600))
    mixer.put(muted, tone(1000))
    out = mixer.mix()
    assert dominant(out.frame_for(muted)) == 600.0
    assert not np.any(out.frame_for(speaker))  # alone: hears silence, not itself


def test_gain_and_clipping_without_wraparound() -> None:
    mixer = Mixer(8)
    rows = [mixer.add() for _ in range(5)]
    loud = np.full(160, 20000, dtype=np.int16)
    for row in rows:
        mixer.put(row, loud)
    out = mixer.mix()
    assert out.full.max() == 32767 and out.full.min() >= 0  # clipped, never negative
    mixer.gain[rows[0]] = 0.1
    for row in rows:
        mixer.put(row, -loud)
    out = mixer.mix()
    assert out.full.min() == -32768


def test_capacity_bound() -> None:
    mixer = Mixer(2)
    mixer.add()
    row = mixer.add()
    with pytest.raises(OverflowError):
        mixer.add()
    mixer.remove(row)
    assert mixer.add() == row
