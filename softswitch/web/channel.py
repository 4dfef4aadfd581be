"""The link between the daemon and its web process: length-prefixed frames on a socket pair.

The daemon writes pickled dictionaries (configurations are pydantic models; the daemon is
the trusted side). The web process faces the network, so what it writes is JSON only,
each frame at most :data:`MAX_FROM_WEB` bytes, and the daemon checks every field of it.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import struct
from collections.abc import Callable
from typing import Any

HEADER = struct.Struct("!I")
MAX_FROM_WEB = 256 * 1024  # a snapshot request, a log line, a call's answer
MAX_TO_WEB = 64 * 1024 * 1024  # a configuration with thousands of users, a snapshot
MAX_LOG_LINE = 4096  # characters of a log line from the web process (a traceback's too)


class ChannelError(Exception):
    """The other side broke the framing (or left); the link is closed."""


async def read_frame(reader: asyncio.StreamReader, limit: int) -> bytes:
    try:
        head = await reader.readexactly(HEADER.size)
        (size,) = HEADER.unpack(head)
        if size > limit:
            raise ChannelError(f"a frame of {size} bytes (at most {limit})")
        return await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        raise ChannelError("the other side closed the link") from None


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


async def read_from_web(reader: asyncio.StreamReader) -> dict[str, Any]:
    """A message of the web process: a JSON object, bounded."""
    data = await read_frame(reader, MAX_FROM_WEB)
    try:
        message = json.loads(data)
    except (ValueError, RecursionError):
        raise ChannelError("a frame that is not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ChannelError("a frame without an op")
    return message


async def read_from_daemon(reader: asyncio.StreamReader) -> dict[str, Any]:
    message = pickle.loads(await read_frame(reader, MAX_TO_WEB))
    assert isinstance(message, dict)
    return message


def to_web(message: dict[str, Any]) -> bytes:
    return frame(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def to_daemon(message: dict[str, Any]) -> bytes:
    return frame(json.dumps(message, separators=(",", ":"), default=str).encode())


class Requests:
    """Requests sent over the link and waiting for their ``reply`` (each side has one):
    an id each, the reply's ``result`` or its ``error`` (as ``error(text)``)."""

    def __init__(self, error: Callable[[str], Exception]) -> None:
        self.error = error
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.last = 0

    def open(self) -> tuple[int, asyncio.Future[Any]]:
        self.last += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[self.last] = future
        return self.last, future

    def close(self, ident: int) -> None:
        self.pending.pop(ident, None)

    def answer(self, reply: dict[str, Any]) -> None:
        future = self.pending.get(reply.get("id"))  # type: ignore[arg-type]
        if future is None or future.done():
            return
        error = reply.get("error")
        if error is not None:
            future.set_exception(self.error(str(error)[:MAX_LOG_LINE]))
        else:
            future.set_result(reply.get("result"))

    def fail_all(self, why: str) -> None:
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(self.error(why))
