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
    # energy of s over each window of len(r) starting at a lag (a running sum: O(n), where
    # a convolution with ones would be O(n * len(r)) - seconds for long signals)
    running = np.concatenate([[0.0], np.cumsum(s * s)])
    lags = np.arange(size)
    window = running[np.minimum(lags + len(r), len(s))] - running[np.minimum(lags, len(s))]
    lag = int(np.argmax(corr[: len(s)]))
    denom = np.sqrt(energy_r * max(window[lag], 1e-9))
    return float(corr[lag] / denom) if denom else 0.0


def piecewise_correlation(
    signal: npt.NDArray[np.int16], heard: npt.NDArray[np.int16], rate: int, piece: float = 0.5
) -> float:
    """The median over ``piece``-second pieces of ``heard`` of each one's best correlation
    within ``signal``: a receiver's jitter buffer drops or repeats a frame to keep its
    latency (and a stalled loop may cost one), which shifts the rest of the audio by 20 ms,
    so one lag cannot fit a long stretch while each piece still matches."""
    size = int(piece * rate)
    pieces = [heard[i : i + size] for i in range(0, len(heard) - size + 1, size)]
    return float(np.median([best_correlation(signal, p) for p in pieces])) if pieces else 0.0


# Tone bursts: a signal whose pitch and timing a receiver can check (a path that plays
# audio too fast or too slow changes both the frequency and the burst length).
BURST_ON, BURST_OFF = 0.5, 0.25  # seconds


def burst_signal(
    freq: float, rate: int, seconds: float = 30.0, on: float = BURST_ON, off: float = BURST_OFF
) -> npt.NDArray[np.int16]:
    """``freq`` on for ``on`` s, off for ``off`` s, repeated; 5 ms ramps keep it clean."""
    n_on, n_off = int(on * rate), int(off * rate)
    ramp = int(0.005 * rate)
    env = np.ones(n_on)
    env[:ramp] = env[-ramp:][::-1] = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    t = np.arange(n_on) / rate
    burst = 0.3 * 32767 * env * np.sin(2 * np.pi * freq * t)
    period = np.concatenate([burst, np.zeros(n_off)])
    reps = int(np.ceil(seconds * rate / len(period)))
    return np.tile(period, reps)[: int(seconds * rate)].astype(np.int16)


def burst_timing(samples: npt.NDArray[np.int16], rate: int) -> tuple[float, float, int]:
    """(median burst length, median onset-to-onset period, bursts seen) of the complete
    bursts in ``samples`` (5 ms envelope above a third of the bursts' level: the 90th
    percentile, so that one click does not move every edge)."""
    hop = rate // 200
    n = len(samples) // hop
    if n < 4:
        return 0.0, 0.0, 0
    x = samples[: n * hop].astype(np.float64).reshape(n, hop)
    envelope = np.sqrt((x * x).mean(axis=1))
    loud = envelope > np.percentile(envelope, 90) / 3
    # a frame lost under load (20 ms of silence) must not split a burst: close gaps up to
    # 60 ms, far shorter than the 250 ms pause that a wrong rate would stretch or shrink
    quiet = np.flatnonzero(~loud)
    if len(quiet):
        starts = quiet[np.flatnonzero(np.diff(quiet, prepend=-2) != 1)]
        ends = quiet[np.flatnonzero(np.diff(quiet, append=n + 1) != 1)] + 1
        for a, b in zip(starts, ends, strict=True):
            if a > 0 and b < n and b - a <= 12:
                loud[a:b] = True
    edges = np.diff(loud.astype(np.int8))
    rises = np.flatnonzero(edges == 1) + 1
    falls = np.flatnonzero(edges == -1) + 1
    if len(rises) == 0:
        return 0.0, 0.0, 0
    falls = falls[falls > rises[0]]
    count = min(len(rises), len(falls))
    lengths = (falls[:count] - rises[:count]) * hop / rate
    periods = np.diff(rises) * hop / rate
    return (
        float(np.median(lengths)) if count else 0.0,
        float(np.median(periods)) if len(periods) else 0.0,
        int(count),
    )


def check_bursts(
    samples: npt.NDArray[np.int16], rate: int, freq: float, what: str = ""
) -> tuple[float, float, float]:
    """Asserts that ``samples`` hold ``freq`` bursts at the right pitch (±1 %) and the right
    timing (±3 %); returns (frequency, burst length, period) measured."""
    heard = active(samples)
    measured = dominant_frequency(heard, rate) if len(heard) else 0.0
    length, period, count = burst_timing(samples, rate)
    report = f"{what}: {measured:.1f} Hz (want {freq}), bursts {length:.3f}/{period:.3f} s x{count}"
    assert abs(measured - freq) <= 0.01 * freq, report
    assert count >= 2, report
    assert abs(length - BURST_ON) <= 0.03 * BURST_ON, report
    assert abs(period - (BURST_ON + BURST_OFF)) <= 0.03 * (BURST_ON + BURST_OFF), report
    return measured, length, period
