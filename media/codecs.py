"""Audio codecs by SDP name: G.711 µ-law/A-law (tables), G.722 (libg722), Opus (libopus).

This is the one place that knows both rates of a codec: ``sample_rate`` is the rate of
the audio a stream carries (what decoders return, encoders take, mixers and players work
at), ``rtp_clock`` only counts RTP timestamps. They differ for G.722 (16 kHz audio, an
8000 Hz clock by a historical error, RFC 3551 §4.5.2) and for Opus (always a 48 kHz clock,
RFC 7587; we run libopus at 16 kHz, wideband, and it converts internally).

A codec gives encoders and decoders; G.711 is stateless, so one shared instance serves
every leg and one encoding of a shared frame serves every listener. G.722 and Opus keep
state per direction, so each leg gets its own encoder and decoder.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from . import g711

log = logging.getLogger(__name__)
Samples = npt.NDArray[np.int16]


class CodecError(ValueError):
    """A payload a decoder cannot read (corrupt or hostile input)."""


class Encoder(Protocol):
    def encode(self, samples: Samples) -> bytes: ...


class Decoder(Protocol):
    def decode(self, payload: bytes) -> Samples: ...


@runtime_checkable
class Concealer(Protocol):
    """A decoder that can make up a lost frame itself (packet loss concealment), from
    the forward error correction in the next packet when there is one."""

    def conceal(self, following: bytes | None) -> Samples: ...


@dataclass(frozen=True, slots=True)
class Options:
    """What the peer asked of our encoder in its SDP fmtp (RFC 7587 §6.1)."""

    max_bitrate: int | None = None  # maxaveragebitrate, bit/s
    fec: bool = False  # useinbandfec=1: the peer decodes in-band FEC

    @classmethod
    def from_fmtp(cls, fmtp: str | None) -> Options:
        params: dict[str, str] = {}
        for part in (fmtp or "").split(";"):
            key, _, value = part.strip().partition("=")
            if key:
                params[key.strip().lower()] = value.strip()
        bitrate: int | None = None
        raw = params.get("maxaveragebitrate", "")
        if raw.isdigit():
            bitrate = max(6000, min(510000, int(raw)))  # RFC 7587: 6000..510000
        return cls(bitrate, params.get("useinbandfec") == "1")


@dataclass(frozen=True, slots=True)
class Codec:
    name: str  # as in SDP rtpmap (case-insensitive)
    sample_rate: int  # audio samples per second in our pipeline (G.722: 16000)
    rtp_clock: int  # RTP timestamp rate (G.722: 8000, RFC 3551; Opus: 48000, RFC 7587)
    payload_type: int | None  # static payload type (None: dynamic)
    stateless: bool

    def samples_per_frame(self, ptime_ms: int = 20) -> int:
        """Audio samples in one packet of ``ptime_ms``."""
        return self.sample_rate * ptime_ms // 1000

    def rtp_ticks(self, ptime_ms: int = 20) -> int:
        """RTP timestamp increment of one packet of ``ptime_ms``."""
        return self.rtp_clock * ptime_ms // 1000

    @property
    def wideband(self) -> bool:
        return self.sample_rate > 8000

    def encoder(self, options: Options | None = None) -> Encoder:
        return _ENCODERS[self.name](options or Options())

    def decoder(self) -> Decoder:
        return _DECODERS[self.name]()

    @property
    def available(self) -> bool:
        """Whether this codec's library loads here (Opus needs libopus)."""
        return self.name != "OPUS" or opus_available()


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

    def __init__(self, options: Options | None = None) -> None:
        from G722 import G722

        self._codec = G722(16000, 64000)

    def encode(self, samples: Samples) -> bytes:
        return bytes(self._codec.encode(samples))

    def decode(self, payload: bytes) -> Samples:
        return np.frombuffer(self._codec.decode(payload), dtype=np.int16)


OPUS_RATE = 16000  # libopus's rate on our side: wideband speech, converted inside libopus
OPUS_BITRATE = 24000  # bit/s unless the peer's maxaveragebitrate asks for less
OPUS_MAX_FRAME = OPUS_RATE * 120 // 1000  # the longest Opus packet, 120 ms


@functools.cache
def _opuslib() -> Any:
    import opuslib_next

    return opuslib_next


@functools.cache
def opus_available() -> bool:
    try:
        _opuslib()
    except Exception as exc:  # ImportError, or the binding's "Could not find Opus library"
        log.warning("event=opus_unavailable error=%s", exc)
        return False
    return True


class _OpusEncoder:
    """libopus (through opuslib-next) in VoIP mode, mono, wideband."""

    def __init__(self, options: Options | None = None) -> None:
        opus = _opuslib()
        options = options or Options()
        self._encoder = opus.Encoder(OPUS_RATE, 1, "voip")
        bitrate = OPUS_BITRATE
        if options.max_bitrate is not None:
            bitrate = min(bitrate, options.max_bitrate)
        self._encoder.bitrate = bitrate
        self._encoder.complexity = 5  # half the default work; no audible loss for speech
        self._encoder.max_bandwidth = opus.BANDWIDTH_WIDEBAND
        if options.fec:
            self._encoder.inband_fec = 1
            self._encoder.packet_loss_perc = 10  # FEC is coded only when loss is expected
        self.bitrate = bitrate
        self.fec = options.fec

    def encode(self, samples: Samples) -> bytes:
        data = np.ascontiguousarray(samples, dtype=np.int16).tobytes()
        return bytes(self._encoder.encode(data, len(samples)))


class _OpusDecoder:
    def __init__(self) -> None:
        opus = _opuslib()
        self._decoder = opus.Decoder(OPUS_RATE, 1)
        self._decode = opus.api.decoder.decode
        self._error = opus.OpusError
        self._last = OPUS_RATE // 50  # samples of the last frame: PLC makes as many

    def decode(self, payload: bytes) -> Samples:
        try:
            pcm = self._decoder.decode(payload, OPUS_MAX_FRAME)
        except self._error as exc:
            raise CodecError(f"bad Opus payload ({len(payload)} bytes): {exc}") from None
        out = np.frombuffer(pcm, dtype=np.int16)
        if len(out):
            self._last = len(out)
        return out

    def conceal(self, following: bytes | None) -> Samples:
        """The lost frame: from the FEC in ``following`` if it has some, else libopus PLC."""
        state = self._decoder.decoder_state
        try:
            if following:
                pcm = self._decode(state, following, len(following), self._last, True, 1)
            else:
                pcm = self._decode(state, None, 0, self._last, False, 1)
        except self._error:
            return np.zeros(self._last, dtype=np.int16)
        return np.frombuffer(pcm, dtype=np.int16)


_ULAW, _ALAW = _Ulaw(), _Alaw()
_ENCODERS: dict[str, Callable[[Options], Encoder]] = {
    "PCMU": lambda _: _ULAW,
    "PCMA": lambda _: _ALAW,
    "G722": _G722,
    "OPUS": _OpusEncoder,
}
_DECODERS: dict[str, Callable[[], Decoder]] = {
    "PCMU": lambda: _ULAW,
    "PCMA": lambda: _ALAW,
    "G722": _G722,
    "OPUS": _OpusDecoder,
}

PCMU = Codec("PCMU", 8000, 8000, 0, True)
PCMA = Codec("PCMA", 8000, 8000, 8, True)
G722 = Codec("G722", 16000, 8000, 9, False)
OPUS = Codec("OPUS", OPUS_RATE, 48000, None, False)
CODECS: Mapping[str, Codec] = {c.name: c for c in (PCMU, PCMA, G722, OPUS)}


def codec(name: str) -> Codec:
    try:
        return CODECS[name.upper()]
    except KeyError:
        raise ValueError(f"unsupported codec {name!r}: use one of {sorted(CODECS)}") from None


def available() -> list[str]:
    """Names of the codecs whose libraries load here."""
    return [c.name for c in CODECS.values() if c.available]
