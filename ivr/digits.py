"""Collecting keypad digits, whatever carried them (RFC 4733, SIP INFO, in-band tones)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Protocol


class Channel(Protocol):
    """What an IVR needs of a call: digits in, prompts out."""

    dtmf: asyncio.Queue[str]

    async def play_prompt(self, name: str) -> None: ...

    async def play_file(self, path: Path) -> None: ...


def flush(channel: Channel) -> None:
    """Forget digits typed before now (e.g. during a prompt that does not take them)."""
    while not channel.dtmf.empty():
        channel.dtmf.get_nowait()


async def collect_digits(
    channel: Channel,
    *,
    max_digits: int = 20,
    terminator: str | None = "#",
    first_timeout: float = 10.0,
    next_timeout: float = 5.0,
) -> str:
    """Digits until ``terminator`` (not included), ``max_digits`` or a timeout."""
    digits = ""
    timeout = first_timeout
    while len(digits) < max_digits:
        try:
            digit = await asyncio.wait_for(channel.dtmf.get(), timeout)
        except TimeoutError:
            break
        if terminator is not None and digit == terminator:
            break
        digits += digit
        timeout = next_timeout
    return digits
