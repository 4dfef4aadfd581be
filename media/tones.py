"""Call-progress and DTMF tones, generated (not sampled) at any rate.

Cadences follow the national plans (ITU-T E.180 supplement): a tone is a list of
(frequencies, on ms, off ms) steps repeated forever, or played once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class ToneSpec:
    """Steps of (frequencies in Hz, milliseconds on, milliseconds off)."""

    steps: tuple[tuple[tuple[float, ...], int, int], ...]
    repeat: bool = True
    level_dbm0: float = -13.0  # per frequency component


# name -> country -> spec
TONES: dict[str, dict[str, ToneSpec]] = {
    "ringback": {
        "us": ToneSpec((((440.0, 480.0), 2000, 4000),), level_dbm0=-19.0),
        "fr": ToneSpec((((440.0,), 1500, 3500),)),
    },
    "busy": {
        "us": ToneSpec((((480.0, 620.0), 500, 500),), level_dbm0=-24.0),
        "fr": ToneSpec((((440.0,), 500, 500),)),
    },
    "congestion": {
        "us": ToneSpec((((480.0, 620.0), 250, 250),), level_dbm0=-24.0),
        "fr": ToneSpec((((440.0,), 250, 250),)),
    },
    "call_waiting": {
        "us": ToneSpec((((440.0,), 300, 9700),)),
        "fr": ToneSpec((((440.0,), 300, 10000),)),
    },
    "dial": {
        "us": ToneSpec((((350.0, 440.0), 1000, 0),)),
        "fr": ToneSpec((((440.0,), 1000, 0),)),
    },
    "beep": {
        "us": ToneSpec((((1000.0,), 250, 0),), repeat=False),
        "fr": ToneSpec((((1000.0,), 250, 0),), repeat=False),
    },
}

DTMF_ROWS = (697.0, 770.0, 852.0, 941.0)
DTMF_COLS = (1209.0, 1336.0, 1477.0, 1633.0)
DTMF_KEYS = ("123A", "456B", "789C", "*0#D")


def dtmf_frequencies(digit: str) -> tuple[float, float]:
    for r, row in enumerate(DTMF_KEYS):
        c = row.find(digit.upper())
        if c >= 0 and len(digit) == 1:
            return DTMF_ROWS[r], DTMF_COLS[c]
    raise ValueError(f"not a DTMF digit: {digit!r}")


def _amplitude(level_dbm0: float) -> float:
    # 0 dBm0 is a sine of RMS 3.17 dB below full scale of a 16-bit G.711 signal
    full = 32767 * 10 ** (-3.17 / 20) * np.sqrt(2)
    return float(full * 10 ** (level_dbm0 / 20))


def sine_mix(
    freqs: tuple[float, ...], samples: int, rate: int, level_dbm0: float, start: int = 0
) -> Samples:
    t = (np.arange(samples) + start) / rate
    amp = _amplitude(level_dbm0)
    out = np.zeros(samples)
    for f in freqs:
        out += amp * np.sin(2 * np.pi * f * t)
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


def render(spec: ToneSpec, rate: int = 8000) -> Samples:
    """One period of ``spec`` (on and off parts) at ``rate``."""
    parts: list[Samples] = []
    for freqs, on_ms, off_ms in spec.steps:
        on = rate * on_ms // 1000
        parts.append(sine_mix(freqs, on, rate, spec.level_dbm0))
        parts.append(np.zeros(rate * off_ms // 1000, dtype=np.int16))
    return np.concatenate(parts)


def tone(name: str, country: str = "us", rate: int = 8000) -> tuple[Samples, bool]:
    """(one period, repeat?) of a named progress tone for ``country``."""
    try:
        spec = TONES[name][country.lower()]
    except KeyError:
        raise ValueError(f"unknown tone {name!r} for country {country!r}") from None
    return render(spec, rate), spec.repeat


def dtmf_tone(
    digit: str,
    duration_ms: int = 100,
    gap_ms: int = 60,
    rate: int = 8000,
    level_dbm0: float = -10.0,
) -> Samples:
    """A DTMF digit followed by silence, for phones that expect in-band DTMF."""
    on = sine_mix(dtmf_frequencies(digit), rate * duration_ms // 1000, rate, level_dbm0)
    return np.concatenate([on, np.zeros(rate * gap_ms // 1000, dtype=np.int16)])
