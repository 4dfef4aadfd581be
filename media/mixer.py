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

Wideband rows (G.722, Opus: 16 kHz) sit beside the narrowband ones (G.711: 8 kHz) in a
second array. When a room has any, each tick sums the narrowband talkers at 8 kHz and the
wideband talkers at 16 kHz, then converts each sum once (up and down, two streaming
resamplers for the whole room, not one per leg): wideband listeners hear a 16 kHz mix,
narrowband ones an 8 kHz mix, each made once and encoded once per codec. A talker's N-1
is its band's mix minus its own voice, exact in its own band (no resampling of a voice
that is then subtracted). A room without wideband rows never pays for any of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .codecs import Codec, Encoder
from .resample import StreamResampler

Samples = npt.NDArray[np.int16]


@dataclass
class MixOutput:
    """One tick's result. ``full`` is what a non-talking narrowband listener hears,
    ``full_wide`` a wideband one (None when no row is wideband); ``talkers`` are the rows
    with their own N-1 mix in ``minus_one`` (same order; 16 kHz rows for wideband
    talkers, in ``minus_one_wide`` at the index given by ``wide_index``)."""

    full: Samples
    talkers: npt.NDArray[np.intp]
    minus_one: npt.NDArray[np.int16]
    full_wide: Samples | None = None
    minus_one_wide: npt.NDArray[np.int16] | None = None
    wide_talkers: npt.NDArray[np.intp] | None = None
    _encoded: dict[str, bytes] = field(default_factory=dict)
    _row_of: dict[int, tuple[bool, int]] = field(default_factory=dict)

    def frame_for(self, row: int) -> Samples:
        """What ``row`` hears: its N-1 mix if it talks, else the full mix of its band."""
        where = self._index(row)
        if where is None:
            return self.full
        wide, i = where
        if wide:
            assert self.minus_one_wide is not None
            return np.asarray(self.minus_one_wide[i], dtype=np.int16)
        return np.asarray(self.minus_one[i], dtype=np.int16)

    def full_for(self, rate: int) -> Samples:
        """The full mix at ``rate`` (8000 or 16000)."""
        if rate != 8000 and self.full_wide is not None:
            return self.full_wide
        return self.full

    def _index(self, row: int) -> tuple[bool, int] | None:
        if not self._row_of and len(self.talkers):
            if self.wide_talkers is None:
                self._row_of = {int(r): (False, i) for i, r in enumerate(self.talkers)}
            else:
                narrow = self.talkers[~np.isin(self.talkers, self.wide_talkers)]
                self._row_of = {int(r): (False, i) for i, r in enumerate(narrow)}
                self._row_of.update({int(r): (True, i) for i, r in enumerate(self.wide_talkers)})
        return self._row_of.get(row)

    def shared_payload(self, codec: Codec, encoder: Encoder, key: str | None = None) -> bytes:
        """The full mix encoded with ``codec`` - once per tick, for every listener of that
        codec (``key`` tells apart encoders of one codec with different settings)."""
        key = key or codec.name
        payload = self._encoded.get(key)
        if payload is None:
            payload = self._encoded[key] = encoder.encode(self.full_for(codec.sample_rate))
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
        rate: int = 8000,
    ) -> None:
        self.capacity = capacity
        self.frame = frame
        self.rate = rate
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
        # the wideband band (16 kHz rows), made when the first wideband row comes
        self.wide = np.zeros(capacity, dtype=bool)
        self.wide_rate = 2 * rate
        self.wide_frame = 2 * frame
        self.wide_inputs: npt.NDArray[np.int16] | None = None
        self._up: StreamResampler | None = None
        self._down: StreamResampler | None = None
        self._quiet = {"up": 0, "down": 0}  # ticks each resampler was fed only silence

    def add(self, *, talk: bool = True, listen: bool = True, wide: bool = False) -> int:
        """A free row; ``wide`` rows take and hear frames at twice the rate."""
        free = np.flatnonzero(~self.used)
        if len(free) == 0:
            raise OverflowError(f"mixer is full ({self.capacity} participants)")
        row = int(free[0])
        self.used[row] = True
        self.talk[row], self.listen[row] = talk, listen
        self.gain[row] = 1.0
        self.hangover[row] = 0
        self.inputs[row] = 0
        self.wide[row] = wide
        if wide:
            if self.wide_inputs is None:
                self.wide_inputs = np.zeros((self.capacity, self.wide_frame), dtype=np.int16)
            self.wide_inputs[row] = 0
        return row

    def remove(self, row: int) -> None:
        self.used[row] = self.talk[row] = self.listen[row] = False
        self.inputs[row] = 0
        self.hangover[row] = 0
        self.wide[row] = False

    @property
    def count(self) -> int:
        return int(self.used.sum())

    @property
    def wideband(self) -> bool:
        """Whether some row is wideband (the mix is then made at 16 kHz too)."""
        return bool((self.wide & self.used).any())

    def put(self, row: int, frame: Samples) -> None:
        if self.wide[row]:
            assert self.wide_inputs is not None
            self.wide_inputs[row] = frame
        else:
            self.inputs[row] = frame
        self.has_input[row] = True

    def mix(self) -> MixOutput:
        """Detect talkers and mix this tick's inputs; clears the inputs for the next."""
        wideband = self.wideband
        candidates = np.flatnonzero(self.used & self.talk & self.has_input)
        if len(candidates):
            energy = self._energy(candidates, wideband)
            self.energy[candidates] = energy
            loud = candidates[energy > self.threshold]
            self.hangover[loud] = self.hangover_ticks + 1  # this tick and N quiet ones
        active_mask = self.used & self.talk & (self.hangover > 0)
        self.hangover[self.hangover > 0] -= 1
        talkers = np.flatnonzero(active_mask)
        if len(talkers) > self.max_talkers:  # the loudest few are heard
            order = np.argsort(self.energy[talkers])[::-1]
            talkers = np.sort(talkers[order[: self.max_talkers]])
        if wideband:
            out = self._mix_two_bands(talkers)
        elif len(talkers):
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
            out = MixOutput(full, talkers, minus_one)
        else:
            full = np.zeros(self.frame, dtype=np.int16)
            minus_one = np.zeros((0, self.frame), dtype=np.int16)
            out = MixOutput(full, talkers, minus_one)
        self.has_input[:] = False
        return out

    def _energy(self, rows: npt.NDArray[np.intp], wideband: bool) -> npt.NDArray[np.float64]:
        """Mean square per sample of each row's frame (either band)."""
        energy = np.zeros(len(rows), dtype=np.float64)
        is_wide = self.wide[rows] if wideband else np.zeros(len(rows), dtype=bool)
        narrow = self.inputs[rows[~is_wide]].astype(np.float32)
        energy[~is_wide] = np.einsum("ij,ij->i", narrow, narrow) / self.frame
        if wideband:
            assert self.wide_inputs is not None
            wide = self.wide_inputs[rows[is_wide]].astype(np.float32)
            energy[is_wide] = np.einsum("ij,ij->i", wide, wide) / self.wide_frame
        return energy

    def _convert(self, which: str, total: npt.NDArray[np.float32], busy: bool) -> npt.NDArray[Any]:
        """``total`` through the room's up or down resampler; once the filter has been fed
        silence for a few ticks, silence is answered without calling it."""
        n_out = len(total) * (2 if which == "up" else 1) // (1 if which == "up" else 2)
        if busy:
            self._quiet[which] = 0
        else:
            self._quiet[which] += 1
            if self._quiet[which] > 3:
                return np.zeros(n_out, dtype=np.float32)
        if which == "up":
            if self._up is None:
                self._up = StreamResampler(self.rate, self.wide_rate, dtype="float32")
            return self._up.process(total)
        if self._down is None:
            self._down = StreamResampler(self.wide_rate, self.rate, dtype="float32")
        return self._down.process(total)

    def _mix_two_bands(self, talkers: npt.NDArray[np.intp]) -> MixOutput:
        assert self.wide_inputs is not None
        stale = talkers[~self.has_input[talkers]]
        if len(stale):
            self.inputs[stale] = 0
            self.wide_inputs[stale] = 0
        is_wide = self.wide[talkers]
        narrow_rows, wide_rows = talkers[~is_wide], talkers[is_wide]
        narrow = self.inputs[narrow_rows].astype(np.float32) * self.gain[narrow_rows, None]
        wide = self.wide_inputs[wide_rows].astype(np.float32) * self.gain[wide_rows, None]
        total_narrow = narrow.sum(axis=0) if len(narrow_rows) else np.zeros(self.frame, np.float32)
        total_wide = wide.sum(axis=0) if len(wide_rows) else np.zeros(self.wide_frame, np.float32)
        full8 = total_narrow + self._convert("down", total_wide, bool(len(wide_rows)))
        full16 = total_wide + self._convert("up", total_narrow, bool(len(narrow_rows)))
        minus8 = full8[None, :] - narrow
        minus16 = full16[None, :] - wide
        g = self.output_gain
        if g != 1.0:
            full8, full16, minus8, minus16 = full8 * g, full16 * g, minus8 * g, minus16 * g

        def clip(x: npt.NDArray[Any]) -> npt.NDArray[np.int16]:
            return np.asarray(np.clip(x, -32768, 32767), dtype=np.int16)

        return MixOutput(
            clip(full8),
            talkers,
            clip(minus8),
            full_wide=clip(full16),
            minus_one_wide=clip(minus16),
            wide_talkers=wide_rows,
        )
