"""SIP transports on asyncio: UDP, TCP and TLS, IPv4 and IPv6 (RFC 3261 §18, RFC 3581).

A thin adapter: bytes from sockets go through :func:`sip.parse` (datagrams) or a
:class:`StreamFramer` (streams) and come out as messages with their source address;
messages to send go out on the matching socket, reusing stream connections. Malformed
requests are answered 400 when a response can be formed, otherwise dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import ParseError
from .framing import StreamFramer
from .message import Request, Response, error_response, parse
from .transaction import Address

log = logging.getLogger(__name__)

MessageHandler = Callable[[Request | Response, Address, "Listener"], None]
KEEPALIVES = (b"\r\n", b"\r\n\r\n", b"\x00\x00\x00\x00")
MAX_CONNECTIONS = 10_000
# SOFTSWITCH_SIP_TRACE=1 logs whole messages at debug level, not just their first line.
_FULL_TRACE = os.environ.get("SOFTSWITCH_SIP_TRACE") == "1"


def _trace(data: bytes) -> str:
    if _FULL_TRACE:
        return "\n" + data.decode("utf-8", "replace")
    return repr(data.split(b"\r\n", 1)[0][:120])


@dataclass
class Stats:
    received: int = 0
    sent: int = 0
    malformed: int = 0  # messages that failed to parse
    answered_400: int = 0  # of those, answered with an error response
    send_errors: int = 0


@dataclass(eq=False)
class Listener:
    """One bound socket (UDP) or listening server (TCP/TLS)."""

    transport: str  # "udp", "tcp", "tls"
    host: str
    port: int
    _udp: asyncio.DatagramTransport | None = None
    _server: asyncio.base_events.Server | None = None
    ssl_context: ssl.SSLContext | None = None

    @property
    def family6(self) -> bool:
        return ":" in self.host


def _with_received(request: Request, source: Address) -> None:
    """RFC 3261 §18.2.1 and RFC 3581: record where the request really came from."""
    via = request.via[0]
    changed = False
    if via.host.strip("[]") != source[1]:
        via.params["received"] = source[1]
        changed = True
    if "rport" in via.params and not via.params["rport"]:
        via.params["rport"] = str(source[2])
        via.params.setdefault("received", source[1])
        changed = True
    if changed:
        request.headers.remove_first_value("Via")
        request.headers.prepend("Via", str(via))


class _StreamProtocol(asyncio.Protocol):
    def __init__(self, layer: TransportLayer, listener: Listener, transport_name: str) -> None:
        self.layer = layer
        self.listener = listener
        self.name = transport_name
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: Address | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = (self.name, host, port)
        if len(self.layer._connections) >= MAX_CONNECTIONS:
            log.warning("event=connection_refused reason=limit peer=%s", self.peer)
            transport.close()
            return
        self.layer._connections[self.peer] = self

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.transport is not None
        try:
            frames = self.framer.feed(data)
        except ParseError as exc:
            self.layer.stats.malformed += 1
            log.info("event=stream_framing_error peer=%s error=%s", self.peer, exc)
            self.transport.close()
            return
        if self.framer.pings:
            self.transport.write(b"\r\n" * self.framer.pings)  # RFC 5626 pong
            self.framer.pings = 0
        for frame in frames:
            self.layer._receive(frame, self.peer, self.listener)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.layer._connections.get(self.peer) is self:
            del self.layer._connections[self.peer]

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class _DatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self, layer: TransportLayer, listener: Listener) -> None:
        self.layer = layer
        self.listener = listener

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data in KEEPALIVES:
            return
        self.layer._receive(data, ("udp", addr[0], addr[1]), self.listener)

    def error_received(self, exc: Exception) -> None:
        log.debug("event=udp_error error=%s", exc)


@dataclass(eq=False)
class _Pending:
    """A stream connection being opened, with what waits to be sent on it."""

    queue: list[bytes] = field(default_factory=list)


class TransportLayer:
    """Owns the sockets of one user agent."""

    def __init__(
        self, on_message: MessageHandler, *, client_ssl: ssl.SSLContext | None = None
    ) -> None:
        self.on_message = on_message
        self.on_send_error: Callable[[Address, Exception], None] | None = None
        self.listeners: list[Listener] = []
        self.stats = Stats()
        self.client_ssl = client_ssl
        self._connections: dict[Address, _StreamProtocol] = {}
        self._pending: dict[Address, _Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def listen(
        self, transport: str, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None
    ) -> Listener:
        """Bind ``transport`` on ``host:port`` (port 0 picks a free one)."""
        loop = asyncio.get_running_loop()
        bind = host.strip("[]")
        if transport == "udp":
            listener = Listener("udp", bind, port)
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _DatagramProtocol(self, listener), local_addr=(bind, port)
            )
            listener._udp = udp
            listener.port = udp.get_extra_info("sockname")[1]
        elif transport in ("tcp", "tls"):
            if transport == "tls" and ssl_context is None:
                raise ValueError("a TLS listener needs an ssl_context")
            listener = Listener(transport, bind, port, ssl_context=ssl_context)
            server = await loop.create_server(
                lambda: _StreamProtocol(self, listener, transport),
                bind,
                port,
                ssl=ssl_context if transport == "tls" else None,
                reuse_address=True,
            )
            listener._server = server
            listener.port = server.sockets[0].getsockname()[1]
        else:
            raise ValueError(f"unknown transport {transport!r}: use udp, tcp or tls")
        self.listeners.append(listener)
        log.info("event=listening transport=%s host=%s port=%d", transport, bind, listener.port)
        return listener

    def listener_for(self, destination: Address) -> Listener:
        """The listener whose transport and address family fit ``destination``."""
        v6 = ":" in destination[1]
        candidates = [lst for lst in self.listeners if lst.transport == destination[0]]
        for lst in candidates:
            if lst.family6 == v6:
                return lst
        if candidates:
            return candidates[0]
        raise OSError(f"no {destination[0]} listener for {destination[1]}")

    def _receive(self, data: bytes, source: Address, listener: Listener) -> None:
        self.stats.received += 1
        try:
            message = parse(data)
        except ParseError as exc:
            self.stats.malformed += 1
            reply = error_response(data, exc)
            log.info(
                "event=malformed source=%s:%s answered=%s error=%s",
                source[1],
                source[2],
                reply is not None,
                exc,
            )
            if reply is not None:
                self.stats.answered_400 += 1
                self.send(reply, source)
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("event=recv from=%s:%s:%s %s", *source, _trace(data))
        if isinstance(message, Request):
            _with_received(message, source)
        try:
            self.on_message(message, source, listener)
        except Exception:  # a bug upstairs must not kill the socket
            log.exception("event=handler_error source=%s", source)

    def send(self, message: Request | Response, destination: Address) -> None:
        """Send now (UDP, open stream) or once a stream connection to it is open."""
        data = bytes(message)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("event=send to=%s:%s:%s %s", *destination, _trace(data))
        self.send_bytes(data, destination)

    def send_bytes(self, data: bytes, destination: Address) -> None:
        self.stats.sent += 1
        transport, host, port = destination
        if transport == "udp":
            listener = self.listener_for(destination)
            assert listener._udp is not None
            listener._udp.sendto(data, (host, port))
            return
        connection = self._connections.get(destination)
        if connection is not None:
            connection.write(data)
            return
        pending = self._pending.get(destination)
        if pending is not None:
            pending.queue.append(data)
            return
        self._pending[destination] = _Pending([data])
        task = asyncio.get_running_loop().create_task(self._connect(destination))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, destination: Address) -> None:
        transport, host, port = destination
        loop = asyncio.get_running_loop()
        try:
            listener = self.listener_for(destination)
            context = None
            if transport == "tls":
                context = self.client_ssl or ssl.create_default_context()
            _, protocol = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _StreamProtocol(self, listener, transport),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context else None,
                ),
                timeout=10.0,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self.stats.send_errors += 1
            self._pending.pop(destination, None)
            log.info("event=connect_failed destination=%s error=%s", destination, exc)
            if self.on_send_error is not None:
                self.on_send_error(destination, exc)
            return
        pending = self._pending.pop(destination, None)
        # the peer may have connected to us meanwhile: write on whichever is registered
        target = self._connections.get(destination, protocol)
        for data in pending.queue if pending else ():
            target.write(data)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for connection in list(self._connections.values()):
            if connection.transport is not None:
                connection.transport.close()
        for listener in self.listeners:
            if listener._udp is not None:
                listener._udp.close()
            if listener._server is not None:
                listener._server.close()
                with contextlib.suppress(Exception):
                    await listener._server.wait_closed()
        self.listeners.clear()
        await asyncio.sleep(0)
