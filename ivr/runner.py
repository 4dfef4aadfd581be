"""The asyncio adapter of :class:`ivr.menu.MenuMachine` over a media channel.

It feeds the machine the caller's keys, the end of each prompt and its timers, and
carries out what comes back: play prompts (cut short by a key: barge-in), stop, and
finally return where the caller goes (:class:`~ivr.menu.Connect`) or that the call ends
(:class:`~ivr.menu.End`). Prompts are turned into samples by ``resolve`` (built-in prompt,
text-to-speech, file), so the runner knows no more of SIP than the machine does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt

from .menu import Command, Connect, End, MenuMachine, Play, Prompt, StopPlaying

Samples = npt.NDArray[np.int16]


class PromptChannel(Protocol):
    """What a menu needs of a call: keys in, audio out, and a way to cut it short."""

    dtmf: asyncio.Queue[str]

    async def play_samples(self, samples: Samples) -> None: ...

    def stop_playing(self) -> None: ...


async def run_menu(
    machine: MenuMachine,
    channel: PromptChannel,
    resolve: Callable[[Prompt], Samples],
) -> Connect | End:
    loop = asyncio.get_running_loop()
    playing: asyncio.Task[None] | None = None
    key: asyncio.Task[str] = asyncio.ensure_future(channel.dtmf.get())

    def stop() -> None:
        nonlocal playing
        if playing is not None:
            playing.cancel()
            playing = None
        channel.stop_playing()

    commands: list[Command] = machine.start(loop.time())
    try:
        while True:
            for command in commands:
                if isinstance(command, Play):
                    stop()
                    samples = np.concatenate([resolve(p) for p in command.prompts])
                    playing = asyncio.ensure_future(channel.play_samples(samples))
                elif isinstance(command, StopPlaying):
                    stop()
                else:
                    return command
            commands = []
            deadline = machine.deadline
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            waiting: set[asyncio.Future[object]] = {key}  # type: ignore[arg-type]
            if playing is not None:
                waiting.add(playing)  # type: ignore[arg-type]
            await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if playing is not None and playing.done():
                playing = None
                commands += machine.played(loop.time())
            if key.done():
                commands += machine.key(key.result(), loop.time())
                key = asyncio.ensure_future(channel.dtmf.get())
            if not commands:
                commands = machine.timer(loop.time())
    finally:
        stop()
        key.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await key
