"""In-band DTMF detection (Goertzel), for phones that send tones in the audio.

Each 20 ms frame at 8 kHz (160 samples) is measured at the eight DTMF frequencies. A
digit is accepted when one row and one column tone dominate: each strong enough, the
two within the twist limits of ITU-T Q.24 (8 dB normal, 4 dB reverse), together most of
the frame's energy (so speech and off-frequency tones are refused), and present in two
consecutive frames (40 ms, Q.24's minimum). A digit is reported once, when it starts.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .tones import DTMF_COLS, DTMF_KEYS, DTMF_ROWS

Samples = npt.NDArray[np.int16]
FREQS = np.array(DTMF_ROWS + DTMF_COLS)


class DtmfDetector:
    def __init__(
        self,
        rate: int = 8000,
        *,
        block: int = 160,
        min_level_dbm0: float = -30.0,
        normal_twist_db: float = 8.0,
        reverse_twist_db: float = 4.0,
        purity: float = 0.7,
    ) -> None:
        self.rate = rate
        self.block = block
        n = np.arange(block)
        window = np.hamming(block)
        # one complex exponential per frequency: a Goertzel bank as a matrix product
        self._bank = (np.exp(-2j * np.pi * np.outer(FREQS, n) / rate) * window).T
        self._norm = (window.sum() / 2) ** 2
        full = 32767 * 10 ** (-3.17 / 20) * np.sqrt(2)  # amplitude of 0 dBm0
        self.min_power = (full * 10 ** (min_level_dbm0 / 20)) ** 2 / 4
        self.normal_twist = 10 ** (normal_twist_db / 10)
        self.reverse_twist = 10 ** (reverse_twist_db / 10)
        self.purity = purity
        self._buffer = np.zeros(0, dtype=np.float64)
        self._last: str | None = None
        self._current: str | None = None

    def _classify(self, block: npt.NDArray[np.float64]) -> str | None:
        powers = np.abs(block @ self._bank) ** 2 / self._norm
        rows, cols = powers[:4], powers[4:]
        r, c = int(np.argmax(rows)), int(np.argmax(cols))
        row_p, col_p = rows[r], cols[c]
        if row_p < self.min_power or col_p < self.min_power:
            return None
        # twist: columns (high group) may be up to 8 dB above rows, rows 4 dB above columns
        if col_p > row_p * self.normal_twist or row_p > col_p * self.reverse_twist:
            return None
        # the other tones of each group must be well below the strongest (6 dB)
        if np.sort(rows)[-2] * 4 > row_p or np.sort(cols)[-2] * 4 > col_p:
            return None
        signal = float(np.dot(block, block)) / len(block)  # mean power of the block
        tone = (row_p + col_p) / 2  # each sine of amplitude A has mean power A^2/2
        if tone < self.purity * signal:
            return None
        return DTMF_KEYS[r][c]

    def feed(self, frame: Samples) -> list[str]:
        """Digits that started in ``frame``."""
        self._buffer = np.concatenate([self._buffer, frame.astype(np.float64)])
        found: list[str] = []
        while len(self._buffer) >= self.block:
            block, self._buffer = self._buffer[: self.block], self._buffer[self.block :]
            digit = self._classify(block)
            if digit is not None and digit == self._last and digit != self._current:
                self._current = digit
                found.append(digit)
            elif digit is None and self._last is None:
                self._current = None  # two quiet blocks end a digit
            self._last = digit
        return found
