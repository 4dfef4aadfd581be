"""Audio over an RTP session: decode, conceal and encode frame by frame.

This is media's small interface to :mod:`rtp`: the session moves payloads, the stream
turns them into int16 frames at the codec's audio rate and back, and tells the session
the codec's RTP clock (the two differ for G.722 and Opus; :class:`media.codecs.Codec`
knows both). Lost frames are concealed by :mod:`media.conceal`.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import numpy.typing as npt

from rtp import Session, Status

from .codecs import Codec, CodecError, Options
from .conceal import Concealment

log = logging.getLogger(__name__)
Samples = npt.NDArray[np.int16]
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
        self._status = Status.WAITING
        self._payload = b""
        self._frame: Samples | None = self.silence
        self._concealment = Concealment(self.samples)
        self.refused = 0
        self._logged = -LOG_EVERY

    def read(self) -> Samples:
        """The frame received for this tick (concealed if lost, silence if none)."""
        self.receive()
        return self.frame()

    def receive(self) -> None:
        """Take this tick's packet from the jitter buffer, without decoding it yet: a leg
        whose packets are only relayed never pays for a decode."""
        self._status, self._payload = self.session.pop()
        self._frame = None
        self.payload_in = None
        if self._status is Status.FRAME:
            if len(self._payload) > MAX_PAYLOAD:
                self._refuse(CodecError(f"{len(self._payload)} bytes is more than {MAX_PAYLOAD}"))
                self._status = Status.LOST
            else:
                self.payload_in = self._payload

    def frame(self) -> Samples:
        """This tick's audio, decoded on first use (concealed if lost, silence if none)."""
        if self._frame is not None:
            return self._frame
        if self._status is Status.FRAME:
            try:
                frame = self.decoder.decode(self._payload)
            except CodecError as exc:
                self._refuse(exc)
                self.payload_in = None
                self._frame = self._conceal()
                return self._frame
            frame = self._concealment.good(frame)  # fitted to the tick (another ptime)
        elif self._status is Status.LOST:
            frame = self._conceal()
        else:
            frame = self.silence
        self._frame = frame
        return frame

    @property
    def concealed(self) -> int:
        return self._concealment.concealed

    def _conceal(self) -> Samples:
        return self._concealment.lost(self.decoder, self.session.jitter.following())

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
