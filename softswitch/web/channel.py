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
from typing import Any

HEADER = struct.Struct("!I")
MAX_FROM_WEB = 256 * 1024  # a snapshot request, a log line, a call's answer
MAX_TO_WEB = 64 * 1024 * 1024  # a configuration with thousands of users, a snapshot


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
