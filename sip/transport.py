"""SIP transports on asyncio: UDP, TCP and TLS, IPv4 and IPv6 (RFC 3261 §18, RFC 3581).

A thin adapter: bytes from sockets go through :func:`sip.parse` (datagrams) or a
:class:`StreamFramer` (streams) and come out as messages with their source address;
messages to send go out on the matching socket, reusing stream connections. Malformed
requests are answered 400 when a response can be formed, otherwise dropped and counted;
either way they are reported to the security log (rate-limited per source).

Stream connections are bounded by a :class:`~sip.connections.ConnectionTable`: idle and
slow (slowloris) connections are closed by a sweep, new ones beyond the per-address cap
are refused, and at the total cap the oldest idle one makes room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .connections import ConnectionLimits, ConnectionTable
from .errors import ParseError
from .framing import StreamFramer
from .message import Request, Response, error_response, parse
from .security import SecurityLog
from .transaction import Address
from .websocket import WebSocketFramer

log = logging.getLogger(__name__)

MessageHandler = Callable[[Request | Response, Address, "Listener"], None]
KEEPALIVES = (b"\r\n", b"\r\n\r\n", b"\x00\x00\x00\x00")
MAX_CONNECTIONS = ConnectionLimits().max_connections
# SOFTSWITCH_SIP_TRACE=1 logs whole messages at debug level, not just their first line.
_FULL_TRACE = os.environ.get("SOFTSWITCH_SIP_TRACE") == "1"
_MEMINFO = sys.platform == "linux"  # SO_MEMINFO (55): the socket's queued bytes
# SO_TIMESTAMPNS (35 on Linux, not in Python's socket module): the kernel stamps each
# datagram on arrival, so the oldest unread one tells how long SIP waits unread
_TIMESTAMPNS = 35
_STAMP = struct.Struct("qq")
# a burst of requests (a registration storm, a load generator's window) queues in the
# kernel instead of being dropped; the kernel caps it at net.core.rmem_max unless forced
UDP_RECEIVE_BUFFER = 1 << 20


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
    _udp_socket: socket.socket | None = None  # the datagram socket itself (for probes)
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
    def __init__(
        self, layer: TransportLayer, listener: Listener, transport_name: str, *, inbound: bool
    ) -> None:
        self.layer = layer
        self.listener = listener
        self.name = transport_name
        self.inbound = inbound
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: Address | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = (self.name, host, port)
        if self.layer._admit(self):
            self.layer._connections[self.peer] = self

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.transport is not None
        try:
            frames = self.framer.feed(data)
        except ParseError as exc:
            self.layer.stats.malformed += 1
            self.layer.security_event("malformed", self.peer, reason=f"stream framing: {exc}")
            self.close()
            return
        self.layer._received(self, len(frames), self.framer.buffered > 0)
        if self.framer.pings:
            self.transport.write(b"\r\n" * self.framer.pings)  # RFC 5626 pong
            self.framer.pings = 0
        for frame in frames:
            self.layer._receive(frame, self.peer, self.listener)

    def connection_lost(self, exc: Exception | None) -> None:
        self.layer._forget(self)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.layer._forget(self)


class _WebSocketProtocol(_StreamProtocol):
    """A SIP-over-WebSocket connection (RFC 7118): the upgrade handshake, then one SIP
    message per WebSocket message (:class:`~sip.websocket.WebSocketFramer`, sans-IO)."""

    def __init__(self, layer: TransportLayer, listener: Listener, transport_name: str) -> None:
        super().__init__(layer, listener, transport_name, inbound=True)
        self.ws = WebSocketFramer()

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.transport is not None
        try:
            messages, reply = self.ws.feed(data)
        except ParseError as exc:
            self.layer.stats.malformed += 1
            self.layer.security_event("malformed", self.peer, reason=str(exc))
            if not self.transport.is_closing():
                self.transport.write(self.ws.pending_reply)
            self.close()
            return
        if reply:
            self.transport.write(reply)
        self.layer._received(self, len(messages), self.ws.partial)
        if self.ws.closed:
            self.close()
            return
        for message in messages:
            self.layer._receive(message, self.peer, self.listener)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        if self.ws.open:
            self.transport.write(self.ws.frame(data))


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
        self,
        on_message: MessageHandler,
        *,
        client_ssl: ssl.SSLContext | None = None,
        limits: ConnectionLimits | None = None,
        security: SecurityLog | None = None,
    ) -> None:
        self.on_message = on_message
        self.on_send_error: Callable[[Address, Exception], None] | None = None
        self.listeners: list[Listener] = []
        self.stats = Stats()
        self.client_ssl = client_ssl
        self.limits = limits or ConnectionLimits()
        self.security = security or SecurityLog()
        self.security.on_deadline = self._arm_security
        self._table: ConnectionTable[_StreamProtocol] = ConnectionTable(self.limits)
        self._connections: dict[Address, _StreamProtocol] = {}
        self._pending: dict[Address, _Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._security_timer: asyncio.TimerHandle | None = None
        self._closed = False

    # -- the security log and the connection limits ---------------------------------------

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def security_event(
        self,
        event: str,
        source: Address,
        *,
        user: str | None = None,
        method: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Report to the security log (see :mod:`sip.security`), now."""
        self.security.event(event, source, self.now(), user=user, method=method, reason=reason)

    def _arm_security(self, deadline: float) -> None:
        if self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # reported from outside the loop: flushed by the next event
            return
        if self._security_timer is not None:
            self._security_timer.cancel()
        self._security_timer = loop.call_at(deadline, self._flush_security)

    def _flush_security(self) -> None:
        self._security_timer = None
        self.security.flush(self.now())

    def _admit(self, protocol: _StreamProtocol) -> bool:
        """Track a new stream connection; False if it was refused (and closed)."""
        assert protocol.peer is not None and protocol.transport is not None
        now = self.now()
        if not protocol.inbound:
            self._table.add_outbound(protocol, protocol.peer[1], now)
        else:
            admission = self._table.admit(protocol, protocol.peer[1], now)
            if not admission.accepted:
                self.security_event("tcp_refused", protocol.peer, reason=admission.reason)
                protocol.transport.close()
                return False
            victim = admission.evict
            if victim is not None and victim.peer is not None:
                self.security_event("tcp_evicted", victim.peer, reason="max_connections")
                victim.close()
        self._arm_sweep()
        return True

    def _received(self, protocol: _StreamProtocol, messages: int, partial: bool) -> None:
        self._table.received(protocol, self.now(), messages=messages, partial=partial)

    def _forget(self, protocol: _StreamProtocol) -> None:
        self._table.remove(protocol)
        peer = protocol.peer
        if peer is not None and self._connections.get(peer) is protocol:
            del self._connections[peer]

    def _arm_sweep(self) -> None:
        if self._sweeper is None and not self._closed:
            limits = self.limits
            interval = min(1.0, limits.message_timeout / 4, limits.idle_timeout / 4)
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(interval, self._sweep)

    def _sweep(self) -> None:
        """Close idle and slow connections; runs while there are any."""
        self._sweeper = None
        for protocol, why in self._table.expired(self.now()):
            if protocol.peer is not None:
                event = "tcp_slow" if why == "message_timeout" else "tcp_idle"
                self.security_event(event, protocol.peer, reason=why)
            protocol.close()
        if len(self._table):
            self._arm_sweep()

    async def listen(
        self, transport: str, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None
    ) -> Listener:
        """Bind ``transport`` on ``host:port`` (port 0 picks a free one)."""
        loop = asyncio.get_running_loop()
        bind = host.strip("[]")
        if transport == "udp":
            listener = Listener("udp", bind, port)
            family, _, _, _, address = socket.getaddrinfo(
                bind, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
            )[0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind(address)
                if _MEMINFO:
                    _tune_udp(sock)
                udp, _ = await loop.create_datagram_endpoint(
                    lambda: _DatagramProtocol(self, listener), sock=sock
                )
            except BaseException:
                sock.close()
                raise
            listener._udp, listener._udp_socket = udp, sock
            listener.port = sock.getsockname()[1]
        elif transport in ("tcp", "tls", "ws", "wss"):
            secure = transport in ("tls", "wss")
            if secure and ssl_context is None:
                raise ValueError(f"a {transport.upper()} listener needs an ssl_context")
            listener = Listener(transport, bind, port, ssl_context=ssl_context)

            def protocol() -> _StreamProtocol:
                if transport in ("ws", "wss"):
                    return _WebSocketProtocol(self, listener, transport)
                return _StreamProtocol(self, listener, transport, inbound=True)

            server = await loop.create_server(
                protocol,
                bind,
                port,
                ssl=ssl_context if secure else None,
                ssl_handshake_timeout=self.limits.message_timeout if secure else None,
                reuse_address=True,
            )
            listener._server = server
            listener.port = server.sockets[0].getsockname()[1]
        else:
            raise ValueError(f"unknown transport {transport!r}: use udp, tcp, tls, ws or wss")
        self.listeners.append(listener)
        log.info("event=listening transport=%s host=%s port=%d", transport, bind, listener.port)
        return listener

    def backlog(self) -> float:
        """How full the fullest UDP socket's receive buffer is, 0..1 (Linux SO_MEMINFO:
        bytes queued over the buffer size; 0 where unsupported): what a saturated event
        loop leaves in the kernel."""
        fullest = 0.0
        for listener in self.listeners:
            sock = listener._udp_socket
            if sock is None or not _MEMINFO:
                continue
            try:
                queued, size = struct.unpack_from("II", sock.getsockopt(socket.SOL_SOCKET, 55, 36))
            except OSError:
                return 0.0
            fullest = max(fullest, queued / size if size else 0.0)
        return fullest

    def queue_wait(self) -> float:
        """Seconds the oldest unread datagram has waited in any UDP socket (its kernel
        arrival stamp, peeked, not consumed); 0 when all are read or where unsupported.
        A loop that keeps up reads each one within milliseconds: this is the lag of SIP
        itself, which timer lateness misses (asyncio reads one datagram per loop pass)."""
        oldest = 0.0
        for listener in self.listeners:
            sock = listener._udp_socket
            if sock is None or not _MEMINFO:
                continue
            try:
                _, ancillary, _, _ = sock.recvmsg(
                    1, socket.CMSG_SPACE(_STAMP.size), socket.MSG_PEEK | socket.MSG_DONTWAIT
                )
            except OSError:  # nothing queued (EAGAIN), or a queued ICMP error
                continue
            now = time.time()
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == _TIMESTAMPNS and len(data) >= 16:
                    seconds, nanoseconds = _STAMP.unpack_from(data)
                    oldest = max(oldest, now - (seconds + nanoseconds * 1e-9))
        return oldest

    def peer_certificate(self, source: Address) -> dict[str, Any] | None:
        """The certificate the TLS peer at ``source`` presented and the server context
        verified (``ssl.SSLSocket.getpeercert``'s form), None when none was (another
        transport, no connection, or a client that sent none)."""
        connection = self._connections.get(source)
        if connection is None or connection.transport is None or source[0] != "tls":
            return None
        cert = connection.transport.get_extra_info("peercert")
        return cert or None

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
            self.security_event("malformed", source, method=_method_of(data), reason=str(exc))
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
            if transport in ("ws", "wss"):  # RFC 7118: only over the client's connection
                raise OSError(f"no {transport} connection from {host}:{port} (it has closed)")
            listener = self.listener_for(destination)
            context = None
            if transport == "tls":
                context = self.client_ssl or ssl.create_default_context()
            _, protocol = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _StreamProtocol(self, listener, transport, inbound=False),
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
        self._closed = True
        for timer in (self._sweeper, self._security_timer):
            if timer is not None:
                timer.cancel()
        self.security.close()  # summaries of the windows still open
        for task in list(self._tasks):
            task.cancel()
        for connection in list(self._connections.values()):
            connection.close()
        for listener in self.listeners:
            if listener._udp is not None:
                listener._udp.close()
            if listener._server is not None:
                listener._server.close()
                with contextlib.suppress(Exception):
                    await listener._server.wait_closed()
        self.listeners.clear()
        await asyncio.sleep(0)


def _tune_udp(sock: socket.socket) -> None:
    """A receive buffer for bursts, and arrival stamps for :meth:`TransportLayer.queue_wait`."""
    for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, UDP_RECEIVE_BUFFER)
            break
        except OSError:  # SO_RCVBUFFORCE needs CAP_NET_ADMIN: the capped size then
            continue
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, _TIMESTAMPNS, 1)


def _method_of(data: bytes) -> str | None:
    """The method of a request that failed to parse, if its start line names one."""
    token = data.lstrip(b"\r\n")[:32].split(b" ", 1)[0]
    if not token or token.startswith(b"SIP/") or not token.isalpha():
        return None
    return token.decode("ascii")
