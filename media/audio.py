"""Audio sources and sinks frame by frame: file player, tone player, recorder.

A source yields one frame per media tick. Files (WAV, MP3, FLAC, anything libsndfile
reads) are decoded, mixed down to mono and resampled once at load, so playing costs a
slice per tick; a :class:`SharedPlayer` computes each tick's frame and its encodings
once for every listener (hold music for a thousand callers is one decode, one encode).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile

from .codecs import Codec, Encoder
from .resample import resample

Samples = npt.NDArray[np.int16]
log = logging.getLogger(__name__)
MAX_AUDIO_FILE = 5 * 1024 * 1024  # the seed guides' limit for uploaded hold music


class AudioFileError(ValueError):
    """A file that cannot be used as audio (names the file and the reason)."""


def load_audio(
    path: str | Path, rate: int = 8000, *, max_bytes: int | None = MAX_AUDIO_FILE
) -> Samples:
    """Decode ``path`` to mono int16 at ``rate``. Raises :class:`AudioFileError`."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise AudioFileError(f"{p}: cannot read ({exc.strerror})") from None
    if max_bytes is not None and size > max_bytes:
        raise AudioFileError(f"{p}: {size} bytes is larger than the {max_bytes} byte limit")
    with _decoder_stderr(p):
        try:
            data, file_rate = soundfile.read(str(p), dtype="int16", always_2d=True)
        except (RuntimeError, soundfile.LibsndfileError) as exc:
            raise AudioFileError(
                f"{p}: not an MP3/WAV/FLAC file we can read ({_reason(exc)})"
            ) from None
    if data.shape[0] == 0:
        raise AudioFileError(f"{p}: contains no audio")
    mono = data.mean(axis=1).astype(np.int16) if data.shape[1] > 1 else data[:, 0].copy()
    return resample(mono, int(file_rate), rate)


_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def _decoder_stderr(path: Path) -> Iterator[None]:
    """Keep what the C decoders write to file descriptor 2 (libmpg123's "Note: Illegal
    Audio-MPEG-Header" lines) off the terminal: captured, and logged at debug level.
    Other threads' writes to fd 2 during a decode are captured too (and logged)."""
    with _STDERR_LOCK, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            noise = sink.read(4096).decode("utf-8", "replace").strip()
            if noise:
                log.debug("event=decoder_output file=%s text=%r", path, noise)


def _reason(exc: Exception) -> str:
    text = getattr(exc, "error_string", None) or str(exc)
    if "does not exist or is not a regular file" in text:  # libsndfile's guess, misleading
        return "unknown or damaged data"
    return text.rstrip(".")


class Player:
    """Plays samples frame by frame, looping or once, from an offset."""

    def __init__(
        self, samples: Samples, frame: int = 160, *, loop: bool = True, offset: int = 0
    ) -> None:
        if len(samples) == 0:
            raise ValueError("nothing to play")
        self.samples = samples
        self.frame = frame
        self.loop = loop
        self.position = offset % len(samples) if loop else min(offset, len(samples))

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        rate: int = 8000,
        frame_ms: int = 20,
        *,
        loop: bool = True,
        offset_ms: int = 0,
    ) -> Player:
        samples = load_audio(path, rate)
        return cls(samples, rate * frame_ms // 1000, loop=loop, offset=rate * offset_ms // 1000)

    @property
    def done(self) -> bool:
        return not self.loop and self.position >= len(self.samples)

    def read(self) -> Samples:
        """The next frame (zero-padded past the end of a non-looping source)."""
        n, pos, total = self.frame, self.position, len(self.samples)
        if pos + n <= total:
            out = self.samples[pos : pos + n]
            self.position = pos + n
            if self.loop and self.position == total:
                self.position = 0
            return out
        if self.loop:
            idx = (np.arange(n) + pos) % total
            self.position = (pos + n) % total
            return self.samples[idx]
        out = np.zeros(n, dtype=np.int16)
        if pos < total:
            out[: total - pos] = self.samples[pos:]
        self.position = total
        return out


class SharedPlayer:
    """One player for many listeners: each tick's frame and encodings are made once."""

    def __init__(self, player: Player) -> None:
        self.player = player
        self.tick = -1
        self.frame: Samples = np.zeros(player.frame, dtype=np.int16)
        self._encoded: dict[str, bytes] = {}
        self._encoders: dict[str, Encoder] = {}
        self.listeners = 0

    def advance(self, tick: int) -> Samples:
        """Move to ``tick`` (idempotent within a tick) and return its frame."""
        if tick != self.tick:
            self.tick = tick
            self.frame = self.player.read()
            self._encoded.clear()
        return self.frame

    def encoded(self, codec: Codec) -> bytes:
        """This tick's frame encoded with ``codec`` (once per tick per codec)."""
        payload = self._encoded.get(codec.name)
        if payload is None:
            encoder = self._encoders.get(codec.name)
            if encoder is None:
                encoder = self._encoders[codec.name] = codec.encoder()
            payload = self._encoded[codec.name] = encoder.encode(self.frame)
        return payload


class Recorder:
    """Writes frames to a WAV file (16-bit PCM) as they come."""

    def __init__(self, path: str | Path, rate: int = 8000) -> None:
        self.path = Path(path)
        self.rate = rate
        self.frames = 0
        self._file = soundfile.SoundFile(
            str(self.path), "w", samplerate=rate, channels=1, subtype="PCM_16", format="WAV"
        )

    def write(self, frame: Samples) -> None:
        self._file.write(frame)
        self.frames += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    @property
    def seconds(self) -> float:
        return self._file.frames / self.rate if not self._file.closed else 0.0
