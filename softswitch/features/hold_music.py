"""Music on hold: one shared stream per slot (file or the built-in tune).

A slot is decoded once per audio rate that listeners need (8 kHz for G.711, 16 kHz for
G.722 and Opus: wideband phones get the file at 16 kHz, not an upsampled 8 kHz copy; files
are checked at config load: WAV/MP3, ≤ 5 MB) and played by one shared player per rate: a
thousand held callers cost one frame and one encoding per codec per tick.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from media.audio import load_audio

from ..feature import BaseFeature
from ..media_engine import MediaEngine, SharedSource

if TYPE_CHECKING:
    from ..services import Services

Samples = npt.NDArray[np.int16]

# A calm arpeggio (C major, F major, G major, A minor), 2 s per chord: the built-in music.
_CHORDS = (
    (261.63, 329.63, 392.00),
    (349.23, 440.00, 523.25),
    (392.00, 493.88, 587.33),
    (220.00, 261.63, 329.63),
)


def builtin_music(rate: int = 8000) -> Samples:
    note = int(rate * 0.25)
    t = np.arange(note) / rate
    envelope = np.minimum(1.0, t / 0.02) * np.exp(-3.0 * t)
    notes = []
    for chord in _CHORDS:
        for _ in range(2):
            for freq in (*chord, chord[1]):
                wave = np.sin(2 * np.pi * freq * t) + 0.3 * np.sin(4 * np.pi * freq * t)
                notes.append(wave * envelope)
    signal = np.concatenate(notes)
    return np.asarray(signal / np.abs(signal).max() * 9000, dtype=np.int16)


class HoldMusic:
    def __init__(self, engine: MediaEngine, slots: dict[str, Path]) -> None:
        self.engine = engine
        self.slots = dict(slots)

    def source(self, slot: str = "default") -> SharedSource:
        path = self.slots.get(slot)
        if path is None:
            return self.engine.shared("moh:default", builtin_music)
        # keyed by the file: a slot given a new file (the console's upload) starts a new
        # stream for new holds, while callers held now keep the old one to their resume
        return self.engine.shared(f"moh:{slot}:{path}", lambda rate: load_audio(path, rate))


class HoldMusicFeature(BaseFeature):
    """Music by slot (``[hold_music]``): what a held party's peer hears (the holder's
    ``users.hold_music`` slot), transfer and ring-group music."""

    name = "hold_music"

    async def start(self, svc: Services) -> None:
        await super().start(svc)
        self.music = HoldMusic(svc.engine, dict(self.config.hold_music))
        svc.music = self.music.source

    async def resume(self, old: object, svc: Services) -> None:
        await self.start(svc)  # the new slots, for holds from now on
