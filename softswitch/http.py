"""The daemon's HTTP server: Starlette routes served by uvicorn inside the PBX's event loop.

One server per listen address; features mount routes on it (phone provisioning today, a
web console later). uvicorn's ``Server.serve()`` runs as a task of the daemon's own loop,
on a socket bound here (a bind error is an ``OSError`` for the caller, not uvicorn's
``sys.exit``), without uvicorn's signal handlers (the daemon owns SIGINT/SIGTERM).
Requests are bounded: concurrent connections, header size, keep-alive time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Generator, Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route

log = logging.getLogger("softswitch")

MAX_CONNECTIONS = 64  # beyond it uvicorn answers 503
MAX_HEADER_BYTES = 16 * 1024
KEEPALIVE_SECONDS = 5


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the daemon handles signals and stops us


def parse_listen(listen: str) -> tuple[str, int]:
    """``127.0.0.1:8088`` or ``[::1]:8088``."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{listen!r}: expected host:port")
    return host, int(port)


class HttpServer:
    def __init__(self, listen: str) -> None:
        self.listen = listen
        self.host, self.port = parse_listen(listen)
        self.app = Starlette()
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.tls: tuple[str, str] | None = None

    def mount(
        self, path: str, endpoint: Callable[..., Any], methods: Sequence[str] = ("GET",)
    ) -> None:
        """Serve ``endpoint`` (a Starlette request handler) at ``path`` (a route already
        at ``path`` is replaced: a feature built from a new configuration mounts again)."""
        self.add(Route(path, endpoint, methods=list(methods)))

    def add(self, route: BaseRoute) -> None:
        """Serve a Starlette route (a ``Mount`` of static files, ...), replacing the one
        at the same path for the same methods."""

        def key(r: BaseRoute) -> tuple[object, object]:
            methods = getattr(r, "methods", None)
            return getattr(r, "path", None), frozenset(methods) if methods else None

        routes = self.app.router.routes
        routes[:] = [r for r in routes if key(r) != key(route)]
        routes.append(route)

    def use_tls(self, certificate: str, key: str) -> None:
        """Serve HTTPS with this certificate chain and private key (PEM files); before
        :meth:`start`."""
        self.tls = (certificate, key)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Bind and serve (once; later calls do nothing). Raises OSError if the address
        cannot be bound."""
        if self._task is not None:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            access_log=False,  # the routes log what they serve
            log_level="warning",
            limit_concurrency=MAX_CONNECTIONS,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
            timeout_keep_alive=KEEPALIVE_SECONDS,
            server_header=False,
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
        log.info("event=http_listening address=%s:%d", self.host, self.port)

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
