"""Message framing for stream transports (TCP, TLS): bytes in, whole messages out.

On a stream the Content-Length header delimits the body (RFC 3261 §18.3). CRLFs between
messages are keep-alives (RFC 5626 §3.5.1): a double CRLF "ping" is counted so the
transport can answer with a single CRLF "pong".
"""

from __future__ import annotations

import re

from .errors import ParseError
from .message import MAX_MESSAGE_SIZE

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*([0-9]+)[ \t]*\r?$")


class StreamFramer:
    """Feed stream bytes; get complete messages (still unparsed bytes) out.

    The buffer never exceeds ``max_message`` bytes of one incomplete message: a peer that
    sends more raises :class:`ParseError` and the connection should be closed, since
    framing cannot be recovered.
    """

    __slots__ = ("_buffer", "_gap", "max_message", "pings")

    def __init__(self, max_message: int = MAX_MESSAGE_SIZE) -> None:
        self._buffer = bytearray()
        self.max_message = max_message
        self.pings = 0  # double-CRLF keep-alives seen and not yet answered
        self._gap = b""  # the last CR/LF bytes seen between messages, to spot a ping

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        out: list[bytes] = []
        buf = self._buffer
        while True:
            start = 0
            while start < len(buf) and buf[start] in (0x0D, 0x0A):
                self._gap = (self._gap + buf[start : start + 1])[-4:]
                if self._gap == b"\r\n\r\n":
                    self.pings += 1
                    self._gap = b""
                start += 1
            if start:
                del buf[:start]
            if not buf:
                break
            self._gap = b""
            end = _HEAD_END.search(buf)
            if end is None:
                if len(buf) > self.max_message:
                    raise ParseError(f"header section exceeds {self.max_message} bytes")
                break
            head = bytes(buf[: end.start()])
            lengths = _CONTENT_LENGTH.findall(head)
            if len(set(lengths)) > 1:
                raise ParseError("conflicting Content-Length headers on a stream")
            length = int(lengths[0]) if lengths else 0
            total = end.end() + length
            if total > self.max_message:
                raise ParseError(f"message of {total} bytes exceeds {self.max_message}")
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
        return out
