"""RFC 4733 telephone-events (DTMF): sender and receiver, pure.

Sender: an event is sent as packets with one RTP timestamp (the event start), the
marker bit on the first, a growing duration, and three packets with the E bit at the end,
one packet per frame. Receiver: one event per (SSRC, timestamp), reported when the first
of its packets arrives, whichever that is, so the loss of any single packet loses nothing.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass

EVENTS = "0123456789*#ABCD"
_EVENT = struct.Struct("!BBH")


def event_code(digit: str) -> int:
    code = EVENTS.find(digit.upper())
    if len(digit) != 1 or code < 0:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return code


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    event: int
    end: bool
    volume: int  # 0..63, -dBm0
    duration: int  # timestamp units

    @property
    def digit(self) -> str:
        return EVENTS[self.event] if self.event < len(EVENTS) else "?"

    def pack(self) -> bytes:
        return _EVENT.pack(
            self.event, (0x80 if self.end else 0) | (self.volume & 0x3F), self.duration & 0xFFFF
        )


def parse_event(payload: bytes) -> TelephoneEvent:
    if len(payload) < 4:
        raise ValueError("telephone-event payload shorter than 4 octets")
    event, flags, duration = _EVENT.unpack_from(payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


@dataclass(frozen=True, slots=True)
class EventPacket:
    """One packet to send in place of this frame's audio."""

    payload: bytes
    marker: bool
    timestamp_offset: int  # from the event's start timestamp (always 0: same timestamp)


class DtmfSender:
    """Queues digits and yields, frame by frame, the event packets to send."""

    def __init__(
        self,
        frame_ticks: int = 160,
        volume: int = 10,
        max_queued: int = 64,
        *,
        clock_rate: int = 8000,
    ) -> None:
        self.frame_ticks = frame_ticks
        self.clock_rate = clock_rate  # durations count in the RTP clock (Opus: 48000)
        self.volume = volume
        self.max_queued = max_queued
        self._queue: list[tuple[int, int]] = []  # (event, frames)
        self._current: tuple[int, int] | None = None
        self._frame = 0
        self._gap = 0

    @property
    def active(self) -> bool:
        return self._current is not None or bool(self._queue) or self._gap > 0

    def queue(self, digits: str, duration_ms: int = 100) -> None:
        frames = max(2, duration_ms * self.clock_rate // 1000 // self.frame_ticks)
        for digit in digits:
            if len(self._queue) >= self.max_queued:
                raise OverflowError("too many DTMF digits queued")
            self._queue.append((event_code(digit), frames))

    def next_packet(self) -> tuple[EventPacket | None, bool]:
        """The packet for this frame (None: send audio), and whether a new event starts
        (the caller then takes a new RTP timestamp for it)."""
        if self._current is None:
            if self._gap > 0:  # a frame of silence between digits
                self._gap -= 1
                return None, False
            if not self._queue:
                return None, False
            self._current = self._queue.pop(0)
            self._frame = 0
        event, frames = self._current
        self._frame += 1
        starting = self._frame == 1
        if self._frame < frames:
            te = TelephoneEvent(event, False, self.volume, self._frame * self.frame_ticks)
        else:
            te = TelephoneEvent(event, True, self.volume, frames * self.frame_ticks)
            if self._frame >= frames + 2:  # the third end packet
                self._current = None
                self._gap = 2
        return EventPacket(te.pack(), starting, 0), starting


class DtmfReceiver:
    """Turns received telephone-event packets into digits, once per event."""

    def __init__(self, memory: int = 32) -> None:
        self._seen: OrderedDict[tuple[int, int], TelephoneEvent] = OrderedDict()
        self.memory = memory

    def receive(self, ssrc: int, timestamp: int, payload: bytes) -> str | None:
        """The digit if this packet starts a new event, else None."""
        try:
            event = parse_event(payload)
        except ValueError:
            return None
        key = (ssrc, timestamp)
        if key in self._seen:
            return None
        self._seen[key] = event
        while len(self._seen) > self.memory:
            self._seen.popitem(last=False)
        return event.digit if event.event < len(EVENTS) else None
