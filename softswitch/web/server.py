"""An HTTP listener of the web process: a Starlette app served by uvicorn, bounded.

Runs in the web process (:mod:`softswitch.web.child`), never in the daemon's loop. What a
stranger can make it spend is bounded before the app sees a byte:

- connections: at most ``per_address`` from one IP address (an IPv6 /64) and ``total``
  in all, in the SIP stack's :class:`sip.ConnectionTable`: at the total cap a connection
  that never completed a request is closed to admit a new one, else the least recently
  active;
- time: a request's head must be complete ``head_timeout`` seconds after the connection
  opened (or after the previous response), and its body may pause at most
  ``body_timeout`` seconds between two reads and must average ``MIN_RATE``; then the
  connection is closed (slowloris);
- size: a body larger than the route's limit is refused with 413 before it is parsed
  (``Content-Length``) or as soon as the count passes it (chunked);
- proxies: ``X-Forwarded-For`` / ``-Proto`` are believed only from ``trusted_proxies``;
- every response carries the listener's security headers (404s, static files, errors).

Each refusal is a ``security`` event (``http_refused``, ``http_evicted``, ``http_slow``,
``http_too_large``) with the source address, bursts summarised by :class:`sip.SecurityLog`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field

import h11
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

import sip

from .throttle import source_key

log = logging.getLogger("softswitch")

App = ASGIApp

DEFAULT_BODY_LIMIT = 64 * 1024
DRAIN = 1024 * 1024  # of a refused body, read (and dropped) so that the client sees the 413
MIN_RATE = 8 * 1024  # bytes/s a body must average, past its first body_timeout seconds
BUFFERED = 64 * 1024 * 1024  # bodies held at once by one listener, before 503
# their request is all in: a Connection: close or HTTP/1.0 client is MUST_CLOSE, not DONE
COMPLETE = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED)
MAX_HEADER_BYTES = 16 * 1024
KEEPALIVE_SECONDS = 5


@dataclass
class Limits:
    per_address: int = 16
    total: int = 512
    head_timeout: float = 10.0
    body_timeout: float = 10.0
    # (path prefix, bytes): the first prefix that matches a request's path; else the default
    bodies: Sequence[tuple[str, int]] = ()
    default_body: int = DEFAULT_BODY_LIMIT

    def body_limit(self, path: str) -> int:
        for prefix, limit in self.bodies:
            if path.startswith(prefix):
                return limit
        return self.default_body


def parse_listen(listen: str) -> tuple[str, int]:
    """``127.0.0.1:8088`` or ``[::1]:8088``."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{listen!r}: expected host:port")
    return host, int(port)


class Guard:
    """The connections of one listener in the SIP stack's table (:class:`sip.ConnectionTable`:
    the cap per address, here an IPv6 /64 counting as one, and the total, where the
    connection that never completed a request goes first, then the least recently
    active); its refusals to the security log. The timeouts are the protocol's own."""

    def __init__(self, limits: Limits, security: sip.SecurityLog) -> None:
        self.limits = limits
        self.security = security
        caps = sip.ConnectionLimits(
            max_connections=limits.total, max_per_address=limits.per_address
        )
        self.table: sip.ConnectionTable[Guarded] = sip.ConnectionTable(caps)

    def admit(self, conn: Guarded, host: str, port: int) -> bool:
        now = time.monotonic()
        admission = self.table.admit(conn, source_key(host), now)
        if not admission.accepted:
            self.security.event("http_refused", (host, port), now, reason=admission.reason)
            return False
        victim = admission.evict
        if victim is not None:
            self.security.event("http_evicted", victim.peer, now, reason="max_connections")
            victim.drop()
        return True

    def heard(self, conn: Guarded, *, complete: bool) -> None:
        """Bytes came (``complete``: a request is all in), or an answer went out."""
        self.table.received(conn, time.monotonic(), messages=int(complete), partial=False)


class Guarded(H11Protocol):
    """uvicorn's h11 protocol with the listener's caps and deadlines (:class:`Guard`)."""

    guard: Guard  # set on the per-listener subclass made by :func:`protocol_for`

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._body_by: float | None = None  # when a body that began must be complete
        host, port = self.client or ("?", 0)
        self.peer = (host, port)
        if not self.guard.admit(self, host, port):
            transport.abort()
            return
        self._arm(self.guard.limits.head_timeout, "head")

    def drop(self) -> None:
        self.guard.table.remove(self)  # counted out now: the transport tells us later
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard.table.remove(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        self.guard.heard(self, complete=state in COMPLETE)
        if state is h11.SEND_BODY:
            now = time.monotonic()
            limits = self.guard.limits
            if self._body_by is None:  # a body begins: it must arrive at a minimum rate
                path = self.scope["path"] if self.scope else ""
                self._body_by = now + limits.body_timeout + limits.body_limit(path) / MIN_RATE
            # it may pause body_timeout at most, and end by its deadline
            self._arm(min(limits.body_timeout, self._body_by - now), "body")
        elif state in COMPLETE:
            self._body_by = None
            self._disarm()  # the request is all here; the app answers in its own time

    def on_response_complete(self) -> None:
        self.guard.heard(self, complete=False)
        if not self.transport.is_closing():
            self._arm(self.guard.limits.head_timeout, "head")
        super().on_response_complete()

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._late, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _late(self, what: str) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.conn.their_state in COMPLETE:
            return
        if self.conn.their_state is not h11.IDLE or self.conn.trailing_data[0]:
            # part of a request, then silence (slowloris); a connection that never said
            # anything is closed without a word (browsers open spare ones)
            self.guard.security.event(
                "http_slow", self.peer, time.monotonic(), reason=f"{what}_timeout"
            )
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()  # the app's receive() sees the disconnect
        self.drop()


def protocol_for(guard: Guard) -> type[Guarded]:
    return type("GuardedListener", (Guarded,), {"guard": guard})


class Bounded:
    """ASGI middleware: bodies within the route's limit, held in memory within the
    listener's budget, larger than the default only for whom ``may_send_large`` admits
    (the console: a logged-in session or a token); security headers on every answer."""

    def __init__(
        self,
        app: App,
        limits: Limits,
        headers: Mapping[str, str],
        security: sip.SecurityLog,
        may_send_large: Callable[[Scope], bool] | None = None,
    ) -> None:
        self.app = app
        self.limits = limits
        self.headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        self.security = security
        self.may_send_large = may_send_large
        self.buffered = 0  # bytes of bodies held now, all requests of the listener

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.body_limit(scope["path"])
        client = scope.get("client") or ("?", 0)
        declared = dict(scope["headers"]).get(b"content-length")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.headers if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        if (
            limit > self.limits.default_body
            and self.may_send_large is not None
            and not self.may_send_large(scope)
        ):
            limit = self.limits.default_body  # a stranger's upload: no more than any form
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            if declared.isdigit() and int(declared) <= limit + DRAIN:
                await drain(receive, limit + DRAIN)  # read: the client then sees the 413
            await self._refuse(client, limit, send_with_headers)
            return
        # the whole body, counted, before the app parses any of it; then replayed at once
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client left
                chunk = message.get("body", b"")
                if size + len(chunk) > limit:
                    if message.get("more_body", False):
                        await drain(receive, DRAIN)
                    await self._refuse(client, limit, send_with_headers)
                    return
                if self.buffered + len(chunk) > BUFFERED:  # too much held at once: later
                    await self._busy(client, send_with_headers)
                    return
                chunks.append(chunk)
                size += len(chunk)
                self.buffered += len(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            chunks.clear()
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, send_with_headers)
        finally:
            self.buffered -= size

    async def _refuse(self, client: tuple[str, int], limit: int, send: Send) -> None:
        self.security.event(
            "http_too_large", (client[0], client[1]), time.monotonic(), reason=f"over_{limit}_bytes"
        )
        await _plain(send, 413, f"request body larger than {limit // 1024} KiB\n")

    async def _busy(self, client: tuple[str, int], send: Send) -> None:
        self.security.event(
            "http_refused", (client[0], client[1]), time.monotonic(), reason="bodies_buffered"
        )
        await _plain(send, 503, "too many uploads at once: try again\n", retry_after=5)


async def _plain(send: Send, status: int, text: str, retry_after: int | None = None) -> None:
    body = text.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def drain(receive: Receive, budget: int) -> bool:
    """Read and drop what is left of a refused body, up to ``budget`` bytes (a client
    still sending when the connection closes would get a reset instead of the answer);
    whether it ended within the budget."""
    seen = 0
    while seen <= budget:
        message = await receive()
        if message["type"] != "http.request":
            return True
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
    return False


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the web process's owner stops us


@dataclass
class Listener:
    """One address served: ``app`` (ASGI) behind :class:`Bounded` and :class:`Guarded`."""

    listen: str
    app: App
    security: sip.SecurityLog
    limits: Limits = field(default_factory=Limits)
    headers: Mapping[str, str] = field(default_factory=dict)
    tls: tuple[str, str] | None = None  # certificate chain, key (PEM files)
    trusted_proxies: Sequence[str] = ()
    may_send_large: Callable[[Scope], bool] | None = None
    port: int = 0
    _server: _Server | None = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Bind and serve; the bound port. Raises OSError if the address cannot be bound."""
        host, port = parse_listen(self.listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        guard = Guard(self.limits, self.security)
        config = uvicorn.Config(
            Bounded(self.app, self.limits, self.headers, self.security, self.may_send_large),
            http=protocol_for(guard),
            lifespan="off",
            access_log=False,  # the routes log what they serve
            log_config=None,  # its lines go to the daemon with ours (web.child)
            log_level="warning",
            limit_concurrency=None,  # the guard bounds connections, per address too
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
            timeout_keep_alive=KEEPALIVE_SECONDS,
            server_header=False,
            proxy_headers=bool(self.trusted_proxies),
            forwarded_allow_ips=list(self.trusted_proxies) or None,
            ssl_certfile=self.tls[0] if self.tls else None,
            ssl_keyfile=self.tls[1] if self.tls else None,
        )
        server = self._server = _Server(config)
        self._task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if self._task.done():
                await self._task  # raises what stopped it
                raise OSError(f"HTTP server on {self.listen} stopped at start")
            await asyncio.sleep(0.01)
        return self.port

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(self._task, 5)
        except TimeoutError:
            self._task.cancel()
        self._task = None
        self._server = None
