"""Sample-rate conversion with soxr (libsoxr), between 8, 16 and 48 kHz and anything else."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import soxr

Samples = npt.NDArray[np.int16]


def resample(samples: Samples, rate_in: int, rate_out: int) -> Samples:
    """Whole-signal conversion (files, prompts): high quality, done once at load."""
    if rate_in == rate_out:
        return samples
    out = soxr.resample(samples, rate_in, rate_out, quality="HQ")
    return np.asarray(out, dtype=np.int16)


class StreamResampler:
    """Frame-by-frame conversion that keeps filter state across frames (a call leg
    bridging 8 kHz and 16 kHz). ``dtype`` float32 serves sums that may exceed int16 (a
    conference mix before clipping)."""

    def __init__(self, rate_in: int, rate_out: int, dtype: str = "int16") -> None:
        self.rate_in, self.rate_out = rate_in, rate_out
        self.dtype = np.dtype(dtype)
        self._stream = (
            soxr.ResampleStream(rate_in, rate_out, 1, dtype=dtype, quality="QQ")
            if rate_in != rate_out
            else None
        )
        self._pending = np.zeros(0, dtype=self.dtype)

    def process(self, frame: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Converts one frame; returns exactly ``len(frame) * out / in`` samples."""
        if self._stream is None:
            return frame
        want = len(frame) * self.rate_out // self.rate_in
        got = np.asarray(self._stream.resample_chunk(frame), dtype=self.dtype)
        buf = np.concatenate([self._pending, got]) if len(self._pending) else got
        if len(buf) < want:  # the filter's start-up delay: pad with silence once
            buf = np.concatenate([np.zeros(want - len(buf), dtype=self.dtype), buf])
        self._pending = buf[want:]
        return buf[:want]
