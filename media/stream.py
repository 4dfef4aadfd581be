"""Audio over an RTP session: decode, conceal and encode frame by frame.

This is media's small interface to :mod:`rtp`: the session moves payloads, the stream
turns them into int16 frames at the codec's audio rate and back, and tells the session
the codec's RTP clock (the two differ for G.722 and Opus; :class:`media.codecs.Codec`
knows both). A lost frame is concealed by the codec when it can (Opus: FEC from the next
packet, else its PLC); otherwise by repeating the last one at half the level each time,
three times at most, then silence.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import numpy.typing as npt

from rtp import Session, Status

from .codecs import Codec, CodecError, Concealer, Options

log = logging.getLogger(__name__)
Samples = npt.NDArray[np.int16]
MAX_REPEATS = 3
MAX_PAYLOAD = 1500  # bytes: more than any 20-120 ms voice frame; larger is refused
LOG_EVERY = 10.0  # seconds between two logs of refused payloads from one stream


class AudioStream:
    def __init__(
        self,
        session: Session,
        codec: Codec,
        ptime_ms: int = 20,
        options: Options | None = None,
    ) -> None:
        self.session = session
        self.codec = codec
        self.ptime = ptime_ms
        self.options = options or Options()
        self.samples = codec.samples_per_frame(ptime_ms)
        session.set_clock(codec.rtp_clock, codec.rtp_ticks(ptime_ms))
        self.encoder = codec.encoder(self.options)
        self.decoder = codec.decoder()
        self.silence = np.zeros(self.samples, dtype=np.int16)
        self.payload_in: bytes | None = None  # this tick's payload as received (relays)
        self._last = self.silence
        self._repeats = 0
        self.concealed = 0
        self.refused = 0
        self._logged = -LOG_EVERY

    def read(self) -> Samples:
        """The frame received for this tick (concealed if lost, silence if none)."""
        status, payload = self.session.pop()
        self.payload_in = None
        if status is Status.FRAME:
            try:
                if len(payload) > MAX_PAYLOAD:
                    raise CodecError(f"{len(payload)} bytes is more than {MAX_PAYLOAD}")
                frame = self.decoder.decode(payload)
            except CodecError as exc:
                self._refuse(exc)
                return self._conceal()
            if len(frame) != self.samples:  # a peer with another ptime: fit the tick
                frame = np.resize(frame, self.samples) if len(frame) else self.silence
            self.payload_in = payload
            self._last, self._repeats = frame, 0
            return frame
        if status is Status.LOST:
            return self._conceal()
        return self.silence

    def _conceal(self) -> Samples:
        if self._repeats >= MAX_REPEATS:
            return self.silence
        self._repeats += 1
        self.concealed += 1
        if isinstance(self.decoder, Concealer):
            frame = self.decoder.conceal(self.session.jitter.following())
            if len(frame) != self.samples:
                frame = np.resize(frame, self.samples) if len(frame) else self.silence
            self._last = frame
            return frame
        self._last = (self._last // 2).astype(np.int16)
        return self._last

    def _refuse(self, exc: CodecError) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self._logged >= LOG_EVERY:
            self._logged = now
            log.warning(
                "event=payload_refused codec=%s source=%s count=%d error=%s",
                self.codec.name,
                self.session.remote,
                self.refused,
                exc,
            )

    def write(self, frame: Samples) -> None:
        self.session.send(self.encoder.encode(frame))

    def write_payload(self, payload: bytes) -> None:
        """Send a payload encoded elsewhere (a shared mix or hold-music frame, a relay)."""
        self.session.send(payload)
