"""Loss concealment of one stream, the one rule every receiving path follows.

A lost frame is made up by the codec when it can (Opus: FEC from the next packet, else
its PLC); otherwise the last frame is repeated at half the level each time, three times
at most, then silence follows until a frame comes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .codecs import Concealer, Decoder

Samples = npt.NDArray[np.int16]
MAX_REPEATS = 3


class Concealment:
    """The state of one stream's concealment: its last good frame and the repeats."""

    __slots__ = ("concealed", "last", "repeats", "samples", "silence")

    def __init__(self, samples: int) -> None:
        self.samples = samples
        self.silence = np.zeros(samples, dtype=np.int16)
        self.last = self.silence
        self.repeats = 0
        self.concealed = 0

    def fit(self, frame: Samples) -> Samples:
        """``frame`` made one tick long (a peer with another packet time)."""
        if len(frame) == self.samples:
            return frame
        return np.resize(frame, self.samples) if len(frame) else self.silence

    def good(self, frame: Samples) -> Samples:
        """A decoded frame: remembered for what may be lost next."""
        frame = self.fit(frame)
        self.last, self.repeats = frame, 0
        return frame

    def lost(self, decoder: Decoder, following: bytes | None) -> Samples:
        """The frame to play for a lost one (``following``: the next payload if held)."""
        if self.repeats >= MAX_REPEATS:
            return self.silence
        self.repeats += 1
        self.concealed += 1
        if isinstance(decoder, Concealer):
            self.last = self.fit(decoder.conceal(following))
            return self.last
        self.last = (self.last // 2).astype(np.int16)
        return self.last
