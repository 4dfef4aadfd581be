"""Audio over an RTP session: decode, conceal and encode frame by frame.

This is media's small interface to :mod:`rtp`: the session moves payloads, the stream
turns them into int16 frames and back. A lost frame is concealed by repeating the last
one at half the level each time, three times at most, then silence.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from rtp import Session, Status

from .codecs import Codec

Samples = npt.NDArray[np.int16]
MAX_REPEATS = 3


class AudioStream:
    def __init__(self, session: Session, codec: Codec, ptime_ms: int = 20) -> None:
        self.session = session
        self.codec = codec
        self.samples = codec.samples_per_frame(ptime_ms)
        self.encoder = codec.encoder()
        self.decoder = codec.decoder()
        self.silence = np.zeros(self.samples, dtype=np.int16)
        self._last = self.silence
        self._repeats = 0
        self.concealed = 0

    def read(self) -> Samples:
        """The frame received for this tick (concealed if lost, silence if none)."""
        status, payload = self.session.pop()
        if status is Status.FRAME:
            frame = self.decoder.decode(payload)
            if len(frame) != self.samples:  # a peer with another ptime: fit the tick
                frame = np.resize(frame, self.samples) if len(frame) else self.silence
            self._last, self._repeats = frame, 0
            return frame
        if status is Status.LOST and self._repeats < MAX_REPEATS:
            self._repeats += 1
            self.concealed += 1
            self._last = (self._last // 2).astype(np.int16)
            return self._last
        return self.silence

    def write(self, frame: Samples) -> None:
        self.session.send(self.encoder.encode(frame))

    def write_payload(self, payload: bytes) -> None:
        """Send a payload encoded elsewhere (a shared mix or hold-music frame)."""
        self.session.send(payload)
