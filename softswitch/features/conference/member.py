"""A caller on the bridge: a leg of the media engine with what the conference adds to it.

The leg is the engine's like any other (shared port, strict source, keys); the member
holds the room's part: its room and mixer row, host or participant, muting, waiting for
the host, and the prompts it hears instead of the room (a key cuts an interruptible one
short). What it hears between prompts is its room's mix, the waiting music, or nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

import sip
from media import codecs
from media.audio import Player, load_audio

from ...encryption import PLAIN
from ...media_engine import MediaLeg, PlayerSource, Source

if TYPE_CHECKING:
    from .room import Room

Samples = npt.NDArray[np.int16]


class Member:
    def __init__(self, leg: MediaLeg, call: sip.Call, waiting_music: Source | None) -> None:
        self.leg = leg
        self.call = call
        self.started = time.time()  # wall clock: the dashboard's time in the bridge
        self.waiting_music = waiting_music
        self.encryption = PLAIN  # SRTP with its phone: a re-INVITE keeps to the same terms
        self.room: Room | None = None
        self.mixer_row: int | None = None
        self.host = False
        self.waiting = False  # hears the waiting music (before the host)
        self.self_muted = False
        self.self_unmuted = False
        self.dtmf: asyncio.Queue[str] = asyncio.Queue(maxsize=64)
        self.on_digit: Callable[[str], None] | None = None
        self._prompt: PlayerSource | None = None
        self._played: asyncio.Event | None = None
        self._barge_in = False
        leg.on_key = self.digit
        leg.listen_dtmf = True  # in-band keys too, when the phone has no RFC 4733

    @property
    def rate(self) -> int:
        return self.leg.rate

    @property
    def codec(self) -> codecs.Codec | None:
        return self.leg.codec

    @property
    def row(self) -> int:
        return self.leg.row

    @property
    def closed(self) -> bool:
        return self.leg.closed

    # -- digits -----------------------------------------------------------------------------

    def digit(self, digit: str) -> None:
        if self._barge_in and self._prompt is not None:
            self._stop_prompt()  # a key cuts an interruptible prompt short
        if self.on_digit is not None:
            self.on_digit(digit)
        elif not self.dtmf.full():
            self.dtmf.put_nowait(digit)

    # -- what it hears ------------------------------------------------------------------------

    def hear(self) -> None:
        """Back to what it hears when no prompt plays."""
        if self._prompt is not None or self.leg.closed:
            return
        if self.room is not None and not self.waiting:
            self.leg.source = self.room
        elif self.waiting:
            self.leg.source = self.waiting_music
        else:
            self.leg.source = None

    # -- prompts (ivr.Channel) ------------------------------------------------------------------

    def play(self, samples: Samples, *, interruptible: bool = False) -> asyncio.Event:
        """Play ``samples`` (at this leg's rate) to this member only, instead of the room."""
        self._stop_prompt()  # the previous prompt is cut short
        played = self._played = asyncio.Event()
        self._barge_in = interruptible
        if self.leg.closed:
            played.set()
            return played
        source = self._prompt = PlayerSource(
            Player(samples, self.leg.frame_samples, loop=False), self.leg.rate
        )
        source.on_done = lambda: self._finished(source)
        self.leg.source = source
        return played

    def _finished(self, source: PlayerSource) -> None:
        if source is self._prompt:
            self._stop_prompt()

    def _stop_prompt(self) -> None:
        self._prompt = None
        if self._played is not None:
            self._played.set()
            self._played = None
        self.hear()

    async def play_samples(self, samples: Samples) -> None:
        await self.play(samples).wait()

    async def play_prompt(self, name: str, *, interruptible: bool = False) -> None:
        if interruptible and not self.dtmf.empty():
            return  # the caller typed ahead
        samples = self.leg.engine.prompt(name, self.leg.rate)
        await self.play(samples, interruptible=interruptible).wait()

    async def play_file(self, path: Path) -> None:
        await self.play_samples(load_audio(path, self.leg.rate))

    def say(self, *names: str) -> None:
        """Queue several prompts as one (does not wait)."""
        engine = self.leg.engine
        self.play(np.concatenate([engine.prompt(n, self.leg.rate) for n in names]))

    def close(self) -> None:
        self._stop_prompt()
        self.leg.on_key = None
        self.leg.close()
