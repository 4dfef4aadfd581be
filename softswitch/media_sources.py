"""What a leg of the media engine transmits: the other party of a bridge, a prompt, a
shared source (hold music, a tone) or a group source (a conference room)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from media import codecs
from media.audio import Player, SharedPlayer
from media.resample import StreamResampler

if TYPE_CHECKING:
    from .media_engine import MediaEngine
    from .media_leg import MediaLeg

Samples = npt.NDArray[np.int16]
Ints = npt.NDArray[np.int64]


class Source:
    """What a leg transmits. :meth:`frame` gives this tick's samples at ``leg.rate``;
    :meth:`payload` gives a payload already encoded for ``leg``'s codec when the source
    has one (a shared encoding, a relayed packet), else None and :meth:`frame` is used."""

    def frame(self, leg: MediaLeg, tick: int) -> Samples | None:
        raise NotImplementedError

    def payload(self, leg: MediaLeg, tick: int) -> bytes | None:
        return None

    def samples(self, leg: MediaLeg, tick: int) -> Samples | None:
        """This tick's audio as samples even where :meth:`payload` would relay it (for
        what mixes something over a source, such as the call-waiting tone)."""
        return self.frame(leg, tick)


class _Converter:
    """A stream resampler that follows the rates it is asked for (a re-INVITE may change
    a leg's codec)."""

    def __init__(self) -> None:
        self._resampler: StreamResampler | None = None

    def convert(self, frame: Samples, rate_in: int, rate_out: int) -> Samples:
        if rate_in == rate_out:
            return frame
        r = self._resampler
        if r is None or (r.rate_in, r.rate_out) != (rate_in, rate_out):
            r = self._resampler = StreamResampler(rate_in, rate_out)
        return r.process(frame)


class LegSource(Source):
    """The other party of a bridged call: its packets relayed as they came when both legs
    use the same codec and packet time (the engine copies them row to row), else its
    decoded frames (resampled once when the rates differ) re-encoded."""

    def __init__(self, other: MediaLeg) -> None:
        self.other = other
        self._converter = _Converter()

    @property
    def rate(self) -> int:
        return self.other.rate

    def relays(self, leg: MediaLeg) -> bool:
        a, b = self.other.stream, leg.stream
        return a is not None and b is not None and a.codec == b.codec and a.ptime == b.ptime

    def payload(self, leg: MediaLeg, tick: int) -> bytes | None:
        return self.other.payload_in if self.relays(leg) else None

    def frame(self, leg: MediaLeg, tick: int) -> Samples | None:
        if self.relays(leg):
            return None  # nothing to relay this tick: the phone conceals the gap itself
        return self.samples(leg, tick)

    def samples(self, leg: MediaLeg, tick: int) -> Samples | None:
        return self._converter.convert(self.other.frame_in, self.other.rate, leg.rate)


class PlayerSource(Source):
    """A file or tone for one listener (a prompt); ``done`` is set at its end."""

    def __init__(self, player: Player, rate: int) -> None:
        self.player = player
        self.rate = rate
        self.done = asyncio.Event()
        self.on_done: Callable[[], None] | None = None  # called once, when it has played
        self._converter = _Converter()

    def frame(self, leg: MediaLeg, tick: int) -> Samples | None:
        if self.player.done:
            if not self.done.is_set():
                self.done.set()
                if self.on_done is not None:
                    self.on_done()
            return None
        return self._converter.convert(self.player.read(), self.rate, leg.rate)


Groups = list[tuple[Ints, bytes]]  # rows that get one payload
Singles = list[tuple[int, bytes | None]]  # a row and its own payload (None: nothing)


class GroupSource(Source):
    """A source many legs hear at once, served as a block: once per tick the engine asks
    it for the payloads of every leg that hears it (the rows of those sending), as groups
    of rows that get the same bytes (copied in one assignment each) and single rows."""

    def payloads(self, engine: MediaEngine, rows: Ints, tick: int) -> tuple[Groups, Singles]:
        raise NotImplementedError


class SharedSource(GroupSource):
    """Hold music or a progress tone: one player per rate (the audio made at that rate,
    not resampled per tick), one frame per tick and one encoding per stateless codec for
    every listener (the engine copies it to every such listener's row at once). G.722
    and Opus listeners keep their own encoder: a phone's decoder follows the state of
    the encoder whose stream it gets, and switching it to a shared encoder's stream
    (bridge, then music) garbles the audio well beyond a few ms."""

    def __init__(self, make: Callable[[int], Samples]) -> None:
        self.make = make
        self.players: dict[int, SharedPlayer] = {}

    def player(self, rate: int) -> SharedPlayer:
        shared = self.players.get(rate)
        if shared is None:
            offset = 0
            if self.players:  # start where the others are
                other_rate, other = next(iter(self.players.items()))
                offset = other.player.position * rate // other_rate
            player = Player(self.make(rate), rate // 50, loop=True, offset=offset)
            shared = self.players[rate] = SharedPlayer(player)
        return shared

    def frame(self, leg: MediaLeg, tick: int) -> Samples | None:
        return self.player(leg.rate).advance(tick)

    def shares(self, leg: MediaLeg) -> bool:
        """Whether ``leg`` takes the shared encoding (a stateless codec, 20 ms packets)."""
        stream = leg.stream
        return stream is not None and stream.codec.stateless and stream.samples == leg.rate // 50

    def encoded(self, codec: codecs.Codec, rate: int, tick: int) -> bytes:
        shared = self.player(rate)
        shared.advance(tick)
        return shared.encoded(codec)

    def payload(self, leg: MediaLeg, tick: int) -> bytes | None:
        stream = leg.stream
        if stream is None or not self.shares(leg):
            return None
        return self.encoded(stream.codec, leg.rate, tick)

    def payloads(self, engine: MediaEngine, rows: Ints, tick: int) -> tuple[Groups, Singles]:
        groups: Groups = []
        singles: Singles = []
        by_kind: dict[tuple[str, int], list[int]] = {}
        for row in rows.tolist():
            leg = engine.leg_at(row)
            stream = leg.stream if leg is not None else None
            if leg is None or stream is None:
                continue
            if self.shares(leg):
                by_kind.setdefault((stream.codec.name, leg.rate), []).append(row)
            else:  # its own encoder (G.722, Opus) or packet time
                frame = self.frame(leg, tick)
                singles.append((row, None if frame is None else stream.encoder.encode(frame)))
        for (name, rate), members in by_kind.items():
            payload = self.encoded(codecs.codec(name), rate, tick)
            groups.append((np.array(members, dtype=np.int64), payload))
        return groups, singles
