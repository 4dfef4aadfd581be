"""An adaptive jitter buffer, pure: packets in (any order), one frame out per tick.

Playout starts ``depth`` ticks after the first packet. Each tick :meth:`JitterBuffer.pop`
returns the frame due, or reports it lost (the caller conceals). Duplicates and packets
that arrive after their frame was due are dropped. Latency follows the measured jitter
within ``[min_depth, max_depth]``: it grows when playout waits (an empty queue, or a
missing frame that is probably just late: playout holds a tick for it), and shrinks by
skipping a frame once the queue has held more than needed for a second. A gap wider
than ``max_depth`` (an outage) is skipped at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .packet import SequenceWrap


class Status(Enum):
    FRAME = "frame"  # payload is the frame due
    LOST = "lost"  # the frame due never came (or came late): conceal
    WAITING = "waiting"  # not started yet, or the stream paused: play silence


@dataclass(slots=True)
class Stats:
    received: int = 0
    played: int = 0
    duplicates: int = 0
    late: int = 0
    lost: int = 0
    grown: int = 0  # ticks held for a missing frame
    underruns: int = 0  # ticks waited on an empty queue after playout started
    shrunk: int = 0
    overflow: int = 0
    resynced: int = 0  # gaps wider than max_depth skipped at once


class JitterBuffer:
    def __init__(
        self,
        *,
        frame_ticks: int = 160,
        depth: int = 3,
        min_depth: int = 1,
        max_depth: int = 12,
        adaptive: bool = True,
        capacity: int = 64,
    ) -> None:
        if not 1 <= min_depth <= depth <= max_depth < capacity:
            raise ValueError("need 1 <= min_depth <= depth <= max_depth < capacity")
        self.frame_ticks = frame_ticks  # RTP timestamp units per frame
        self.depth = depth
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.adaptive = adaptive
        self.capacity = capacity
        self.stats = Stats()
        self.jitter = 0.0  # in frames, RFC 3550 style smoothing
        self._frames: dict[int, tuple[bytes, int, bool]] = {}  # ext seq -> (payload, ts, marker)
        self._wrap = SequenceWrap()
        self._next: int | None = None  # extended sequence due next
        self._waited = 0  # ticks since the first packet, before playout starts
        self._ticks = 0  # the playout clock, in ticks
        self._first_arrival: tuple[int, int] | None = None  # (tick, timestamp)
        self._last_transit: float | None = None
        self._calm = 0  # ticks the queue stayed above target
        self._missing: int | None = None  # the frame last reported lost

    @property
    def buffered(self) -> int:
        return len(self._frames)

    def put(self, sequence: int, timestamp: int, payload: bytes, marker: bool = False) -> bool:
        """Queue a packet; False when it is dropped (duplicate, late or overflow)."""
        seq = self._wrap.extend(sequence)
        if self._next is not None and seq < self._next:
            self.stats.late += 1
            return False
        if seq in self._frames:
            self.stats.duplicates += 1
            return False
        if len(self._frames) >= self.capacity:
            self.stats.overflow += 1
            return False
        self.stats.received += 1
        self._frames[seq] = (payload, timestamp, marker)
        self._measure(timestamp)
        return True

    def _measure(self, timestamp: int) -> None:
        """Smoothed deviation of arrival tick from the stream's timeline, in frames."""
        if self._first_arrival is None:
            self._first_arrival = (self._ticks, timestamp)
            return
        tick0, ts0 = self._first_arrival
        transit = (self._ticks - tick0) - ((timestamp - ts0) & 0xFFFFFFFF) / self.frame_ticks
        if self._last_transit is not None:
            self.jitter += (abs(transit - self._last_transit) - self.jitter) / 16.0
        self._last_transit = transit

    @property
    def target(self) -> int:
        """The latency (frames queued) the measured jitter calls for, within bounds."""
        return max(self.min_depth, min(self.max_depth, round(2 * self.jitter) + 1))

    @property
    def latency(self) -> int:
        """Frames between the one due and the newest queued."""
        if self._next is None or not self._frames:
            return 0
        return max(self._frames) - self._next + 1

    def pop(self) -> tuple[Status, bytes]:
        """The frame due this tick (call once per tick)."""
        self._ticks += 1
        if self._next is None:
            if not self._frames:
                return Status.WAITING, b""
            self._waited += 1
            if self._waited < self.depth:
                return Status.WAITING, b""
            self._next = min(self._frames)
        frame = self._frames.pop(self._next, None)
        if frame is None and self._frames:
            first = min(self._frames)
            if first - self._next > self.max_depth:
                # More missing than any jitter explains (an outage, a peer that moved): they
                # will not come. Resume at once instead of playing the gap out as losses
                # and keeping its length as latency.
                self.stats.lost += first - self._next
                self.stats.resynced += 1
                self._next = first
                frame = self._frames.pop(first)
        if frame is not None:
            self._next += 1
            self.stats.played += 1
            self._shrink()
            return Status.FRAME, frame[0]
        if not self._frames:
            # nothing queued: an underrun, or the peer paused (hold, silence suppression);
            # playout waits, which adds one frame of latency
            self.stats.underruns += 1
            return Status.WAITING, b""
        self._missing = self._next
        if self.adaptive and self.latency <= self.target:
            self.stats.grown += 1  # the missing frame is probably late: hold one tick
            return Status.LOST, b""
        self._next += 1
        self.stats.lost += 1
        return Status.LOST, b""

    def following(self) -> bytes | None:
        """After a LOST: the payload of the frame just after the missing one, if queued
        (codecs with forward error correction, such as Opus, rebuild the lost frame
        from it)."""
        if self._missing is None:
            return None
        frame = self._frames.get(self._missing + 1)
        return frame[0] if frame is not None else None

    def _shrink(self) -> None:
        """After a second with more latency than needed, drop one frame of it."""
        if not self.adaptive:
            return
        if self.latency > self.target + 1:
            self._calm += 1
            if self._calm >= 50:
                assert self._next is not None
                if self._frames.pop(self._next, None) is not None:
                    self.stats.shrunk += 1
                self._next += 1
                self._calm = 0
        else:
            self._calm = 0
