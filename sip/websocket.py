"""SIP over WebSocket (RFC 7118), server side, sans-IO: bytes of a connection in, SIP
messages and bytes to send out.

The opening handshake is an HTTP/1.1 upgrade (RFC 6455) that must offer the ``sip``
subprotocol (any path is accepted); after it, each WebSocket message, text or binary,
carries exactly one SIP message (RFC 7118 §5.2), and each SIP message we send is one text
message. ``wsproto`` (h11 underneath) does the framing; this class adds what a SIP
transport must bound: the handshake's size, a message's size (a message that grows past
:data:`MAX_MESSAGE` is refused before it is complete), and close and ping handling.
"""

from __future__ import annotations

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from .errors import ParseError
from .message import MAX_MESSAGE_SIZE

MAX_MESSAGE = MAX_MESSAGE_SIZE
SUBPROTOCOL = "sip"


class WebSocketFramer:
    """One WebSocket connection's server side: :meth:`feed` the bytes received, send
    what it returns; :meth:`frame` makes a SIP message a WebSocket message."""

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._ws = WSConnection(ConnectionType.SERVER)
        self.max_message = max_message
        self.open = False  # the handshake is done: SIP messages may flow
        self.closed = False  # the peer closed, or was refused: close the connection
        self.path: str | None = None  # the path of the upgrade request (any is accepted)
        self._parts: list[bytes] = []
        self._size = 0
        self.pending_reply = b""  # what to send before closing a refused connection

    @property
    def partial(self) -> bool:
        """Bytes of an unfinished handshake or message are held (the slow-peer clock)."""
        return not self.open or bool(self._parts)

    def feed(self, data: bytes) -> tuple[list[bytes], bytes]:
        """The complete SIP messages in ``data`` and the bytes to answer with (handshake
        response, pongs, the closing frame). Raises :class:`ParseError` (the connection
        must be closed) for what breaks the protocol or the bounds."""
        try:
            self._ws.receive_data(data)
            return self._events()
        except (RemoteProtocolError, LocalProtocolError) as exc:
            self.closed = True
            raise ParseError(f"WebSocket: {exc}") from None

    def _events(self) -> tuple[list[bytes], bytes]:
        messages: list[bytes] = []
        out = bytearray()
        for event in self._ws.events():
            if isinstance(event, Request):
                self.path = event.target
                if SUBPROTOCOL in event.subprotocols:
                    out += self._ws.send(AcceptConnection(subprotocol=SUBPROTOCOL))
                    self.open = True
                else:
                    out += self._ws.send(RejectConnection(status_code=400))
                    self.closed = True
                    self.pending_reply = bytes(out)
                    raise ParseError("WebSocket: no 'sip' subprotocol offered")
            elif isinstance(event, TextMessage | BytesMessage):
                part = event.data.encode() if isinstance(event.data, str) else bytes(event.data)
                self._size += len(part)
                if self._size > self.max_message:
                    self.closed = True
                    raise ParseError(f"WebSocket message longer than {self.max_message} bytes")
                self._parts.append(part)
                if event.message_finished:
                    messages.append(b"".join(self._parts))
                    self._parts, self._size = [], 0
            elif isinstance(event, Ping):
                out += self._ws.send(event.response())
            elif isinstance(event, CloseConnection):
                out += self._ws.send(event.response())
                self.closed = True
        return messages, bytes(out)

    def frame(self, data: bytes) -> bytes:
        """``data`` (one SIP message) as one text message."""
        return self._ws.send(Message(data=data.decode("utf-8", "replace")))
