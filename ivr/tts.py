"""Text to speech with espeak-ng, rendered once and cached on disk by text and voice.

A receptionist greeting typed as text is spoken by espeak-ng (Debian package) when the
configuration loads, and kept as a WAV file named by a hash of voice and text, so a
restart or a second menu with the same words costs nothing. A missing espeak-ng is a clear
error at load, never a silent call.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

VOICES = {"en": "en-us", "fr": "fr-fr"}


class SpeechError(RuntimeError):
    """Text cannot be spoken (no espeak-ng, or it failed)."""


def espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise SpeechError(
            "espeak-ng is not installed (Debian: apt-get install espeak-ng): "
            "it speaks the prompts written as text"
        )
    return path


class Speech:
    def __init__(self, cache: Path, language: str = "en") -> None:
        if language not in VOICES:
            raise SpeechError(f"no voice for language {language!r} (known: {sorted(VOICES)})")
        self.cache = cache
        self.voice = VOICES[language]

    def path(self, text: str) -> Path:
        key = hashlib.sha256(f"{self.voice}\0{text}".encode()).hexdigest()[:24]
        return self.cache / f"tts-{key}.wav"

    def render(self, text: str) -> Path:
        """The WAV file of ``text`` spoken (rendered now if not cached yet)."""
        target = self.path(text)
        if target.exists():
            return target
        self.cache.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache, suffix=".wav")
        os.close(fd)
        try:
            result = subprocess.run(
                [espeak(), "-v", self.voice, "-s", "150", "-w", tmp, "--", text],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if result.returncode != 0 or Path(tmp).stat().st_size <= 44:
                raise SpeechError(f"espeak-ng failed on {text[:40]!r}: {result.stderr.strip()}")
            os.chmod(tmp, 0o600)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return target
