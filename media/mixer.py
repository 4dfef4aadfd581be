"""The conference mixer: N participants, each with talk and listen flags.

Inputs live in one int16 array, a row per participant, written by the legs each tick.
A tick is a few vectorised operations, whatever N is:

- talker detection: the energy of every row at once, against a threshold, with a
  hangover so that a talker is not cut between words;
- one sum over the active talkers (the only inputs that can be heard);
- an N-1 mix (the sum minus one's own voice) only for the active talkers, so nobody
  hears themself; every other listener gets the same full mix, which is therefore
  encoded once per codec, not once per listener;
- gain in floating point, then clipping to int16 (no wrap-around).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .codecs import Codec, Encoder

Samples = npt.NDArray[np.int16]


@dataclass
class MixOutput:
    """One tick's result. ``full`` is what a non-talking listener hears; ``talkers`` are
    the rows with their own N-1 mix in ``minus_one`` (same order)."""

    full: Samples
    talkers: npt.NDArray[np.intp]
    minus_one: npt.NDArray[np.int16]
    _encoded: dict[str, bytes] = field(default_factory=dict)
    _row_of: dict[int, int] = field(default_factory=dict)

    def frame_for(self, row: int) -> Samples:
        i = self._index(row)
        return self.full if i is None else self.minus_one[i]

    def _index(self, row: int) -> int | None:
        if not self._row_of and len(self.talkers):
            self._row_of = {int(r): i for i, r in enumerate(self.talkers)}
        return self._row_of.get(row)

    def shared_payload(self, codec: Codec, encoder: Encoder) -> bytes:
        """The full mix encoded with ``codec`` — once per tick, for every listener."""
        payload = self._encoded.get(codec.name)
        if payload is None:
            payload = self._encoded[codec.name] = encoder.encode(self.full)
        return payload

    def is_talker(self, row: int) -> bool:
        return self._index(row) is not None


class Mixer:
    """Rows 0..capacity-1; :meth:`add` hands out a free row."""

    def __init__(
        self,
        capacity: int,
        frame: int = 160,
        *,
        threshold_dbov: float = -45.0,
        hangover_ticks: int = 10,
        max_talkers: int = 64,
    ) -> None:
        self.capacity = capacity
        self.frame = frame
        self.inputs = np.zeros((capacity, frame), dtype=np.int16)
        self.talk = np.zeros(capacity, dtype=bool)  # may be heard (not muted)
        self.listen = np.zeros(capacity, dtype=bool)  # receives the mix
        self.gain = np.ones(capacity, dtype=np.float32)  # applied to the row's voice
        self.used = np.zeros(capacity, dtype=bool)
        self.hangover = np.zeros(capacity, dtype=np.int16)
        self.has_input = np.zeros(capacity, dtype=bool)  # a frame arrived this tick
        self.hangover_ticks = hangover_ticks
        self.max_talkers = max_talkers
        # mean square of a full-scale sine is 0.5 * 32767^2: dBov relative to that
        self.threshold = 0.5 * 32767**2 * 10 ** (threshold_dbov / 10)
        self.output_gain = 1.0
        self.energy = np.zeros(capacity, dtype=np.float64)

    def add(self, *, talk: bool = True, listen: bool = True) -> int:
        free = np.flatnonzero(~self.used)
        if len(free) == 0:
            raise OverflowError(f"mixer is full ({self.capacity} participants)")
        row = int(free[0])
        self.used[row] = True
        self.talk[row], self.listen[row] = talk, listen
        self.gain[row] = 1.0
        self.hangover[row] = 0
        self.inputs[row] = 0
        return row

    def remove(self, row: int) -> None:
        self.used[row] = self.talk[row] = self.listen[row] = False
        self.inputs[row] = 0
        self.hangover[row] = 0

    @property
    def count(self) -> int:
        return int(self.used.sum())

    def put(self, row: int, frame: Samples) -> None:
        self.inputs[row] = frame
        self.has_input[row] = True

    def mix(self) -> MixOutput:
        """Detect talkers and mix this tick's inputs; clears the inputs for the next."""
        candidates = np.flatnonzero(self.used & self.talk & self.has_input)
        if len(candidates):
            rows = self.inputs[candidates].astype(np.float32)
            energy = np.einsum("ij,ij->i", rows, rows) / self.frame
            self.energy[candidates] = energy
            loud = candidates[energy > self.threshold]
            self.hangover[loud] = self.hangover_ticks + 1  # this tick and N quiet ones
        active_mask = self.used & self.talk & (self.hangover > 0)
        self.hangover[self.hangover > 0] -= 1
        talkers = np.flatnonzero(active_mask)
        if len(talkers) > self.max_talkers:  # the loudest few are heard
            order = np.argsort(self.energy[talkers])[::-1]
            talkers = np.sort(talkers[order[: self.max_talkers]])
        if len(talkers):
            stale = talkers[~self.has_input[talkers]]
            if len(stale):  # in hangover but no frame came: silence, not the old frame
                self.inputs[stale] = 0
            voices = self.inputs[talkers].astype(np.float32) * self.gain[talkers, None]
            total = voices.sum(axis=0)
            minus = total[None, :] - voices
            if self.output_gain != 1.0:
                total = total * self.output_gain
                minus = minus * self.output_gain
            full = np.clip(total, -32768, 32767).astype(np.int16)
            minus_one = np.clip(minus, -32768, 32767).astype(np.int16)
        else:
            full = np.zeros(self.frame, dtype=np.int16)
            minus_one = np.zeros((0, self.frame), dtype=np.int16)
        self.has_input[:] = False
        return MixOutput(full, talkers, minus_one)
