"""Audio codecs by SDP name: G.711 µ-law/A-law (tables) and G.722 (libg722).

A codec gives encoders and decoders; G.711 is stateless, so one shared instance serves
every leg and one encoding of a shared frame serves every listener. G.722 keeps ADPCM
state per direction, so each leg gets its own encoder and decoder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from . import g711

Samples = npt.NDArray[np.int16]


class Encoder(Protocol):
    def encode(self, samples: Samples) -> bytes: ...


class Decoder(Protocol):
    def decode(self, payload: bytes) -> Samples: ...


@dataclass(frozen=True, slots=True)
class Codec:
    name: str  # as in SDP rtpmap
    sample_rate: int  # audio samples per second (G.722: 16000)
    rtp_clock: int  # RTP timestamp rate (G.722: 8000, RFC 3551)
    payload_type: int  # static payload type
    stateless: bool

    def samples_per_frame(self, ptime_ms: int = 20) -> int:
        return self.sample_rate * ptime_ms // 1000

    def encoder(self) -> Encoder:
        return _ENCODERS[self.name]()

    def decoder(self) -> Decoder:
        return _DECODERS[self.name]()


class _Ulaw:
    def encode(self, samples: Samples) -> bytes:
        return g711.ulaw_encode(samples).tobytes()

    def decode(self, payload: bytes) -> Samples:
        return g711.ulaw_decode(np.frombuffer(payload, dtype=np.uint8))


class _Alaw:
    def encode(self, samples: Samples) -> bytes:
        return g711.alaw_encode(samples).tobytes()

    def decode(self, payload: bytes) -> Samples:
        return g711.alaw_decode(np.frombuffer(payload, dtype=np.uint8))


class _G722:
    """One direction of G.722 at 64 kbit/s (each instance keeps its own ADPCM state)."""

    def __init__(self) -> None:
        from G722 import G722

        self._codec = G722(16000, 64000)

    def encode(self, samples: Samples) -> bytes:
        return bytes(self._codec.encode(samples))

    def decode(self, payload: bytes) -> Samples:
        return np.frombuffer(self._codec.decode(payload), dtype=np.int16)


_ULAW, _ALAW = _Ulaw(), _Alaw()
_ENCODERS: dict[str, Callable[[], Encoder]] = {
    "PCMU": lambda: _ULAW,
    "PCMA": lambda: _ALAW,
    "G722": _G722,
}
_DECODERS: dict[str, Callable[[], Decoder]] = {
    "PCMU": lambda: _ULAW,
    "PCMA": lambda: _ALAW,
    "G722": _G722,
}

PCMU = Codec("PCMU", 8000, 8000, 0, True)
PCMA = Codec("PCMA", 8000, 8000, 8, True)
G722 = Codec("G722", 16000, 8000, 9, False)
CODECS = {c.name: c for c in (PCMU, PCMA, G722)}


def codec(name: str) -> Codec:
    try:
        return CODECS[name.upper()]
    except KeyError:
        raise ValueError(f"unsupported codec {name!r}: use one of {sorted(CODECS)}") from None
