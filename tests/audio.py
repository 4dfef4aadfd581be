"""Audio checks by content: dominant frequency and correlation."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def dominant_frequency(samples: npt.NDArray[np.int16], rate: int) -> float:
    x = samples.astype(np.float64)
    x -= x.mean()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=max(len(x), 8 * rate)))
    return float(np.argmax(spectrum) * rate / (2 * (len(spectrum) - 1)))


def active(samples: npt.NDArray[np.int16], threshold: int = 300) -> npt.NDArray[np.int16]:
    """The part between the first and last sample above ``threshold``."""
    loud = np.flatnonzero(np.abs(samples) > threshold)
    return samples[loud[0] : loud[-1] + 1] if len(loud) else samples[:0]


def best_correlation(signal: npt.NDArray[np.int16], reference: npt.NDArray[np.int16]) -> float:
    """Peak normalised cross-correlation of ``reference`` within ``signal`` (0..1)."""
    s = signal.astype(np.float64)
    r = reference.astype(np.float64)
    n = len(s) + len(r)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(s, size) * np.conj(np.fft.rfft(r, size)), size)
    energy_r = float(np.dot(r, r))
    window = np.convolve(s * s, np.ones(len(r)), "full")[len(r) - 1 : len(r) - 1 + size]
    lag = int(np.argmax(corr[: len(s)]))
    denom = np.sqrt(energy_r * max(window[lag], 1e-9))
    return float(corr[lag] / denom) if denom else 0.0
