"""What the PBX says: built-in prompts, text spoken by espeak-ng, audio files.

One place turns an :class:`ivr.Prompt` into samples at a leg's rate, for every feature
(the receptionist's menus, announcements of rules and blocked calls, call screening):
built-in prompts in ``server.language``, text rendered once by :class:`ivr.Speech` and
cached under the data directory, files decoded once. A configured string is text, unless
it names an audio file (``.wav``, ``.mp3``, ``.flac``, ``.ogg``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ivr import Prompt, Speech
from media.audio import AudioFileError, load_audio

from .config import Config
from .media_engine import MediaLeg, Samples, prompt_path

AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg")


def is_audio_file(text: str) -> bool:
    return "\n" not in text and text.strip().lower().endswith(AUDIO_SUFFIXES)


def configured(text: str, config: Config) -> Prompt:
    """The prompt a configured string means: an audio file (checked now: a ValueError
    names it) or text to speak."""
    if not is_audio_file(text):
        return Prompt("text", text)
    path = config.path(text.strip())
    try:
        load_audio(path)
    except AudioFileError as exc:
        raise ValueError(str(exc)) from None
    return Prompt("file", str(path))


def number_names(n: int) -> list[str]:
    """The built-in prompts that say ``n``: a word up to twenty, then digit by digit."""
    return [f"num-{n}"] if n <= 20 else [f"num-{d}" for d in str(n)]


class Prompts:
    def __init__(self, data_dir: Path, language: str) -> None:
        self.language = language
        self.speech = Speech(data_dir / "tts", language)
        self._audio: dict[tuple[Prompt, int], Samples] = {}

    async def prepare(self, prompts: Iterable[Prompt]) -> None:
        """Render text now (at start), not while a caller waits."""
        for prompt in prompts:
            if prompt.kind == "text":
                await asyncio.to_thread(self.speech.render, prompt.value)

    def samples(self, prompt: Prompt, rate: int) -> Samples:
        """``prompt`` at ``rate`` (decoded once, then kept)."""
        key = (prompt, rate)
        samples = self._audio.get(key)
        if samples is None:
            if prompt.kind == "builtin":
                path = prompt_path(prompt.value, self.language)
            elif prompt.kind == "text":
                path = self.speech.render(prompt.value)
            else:
                path = Path(prompt.value)
            samples = self._audio[key] = load_audio(path, rate)
        return samples

    async def say(self, leg: MediaLeg, *prompts: Prompt) -> None:
        """Play ``prompts`` one after the other on ``leg`` (to their end)."""
        await leg.play_samples(np.concatenate([self.samples(p, leg.rate) for p in prompts]))
