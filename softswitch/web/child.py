"""The web process: ``python -m softswitch.web.child FD``, started by :mod:`.host`.

It serves the HTTP listeners the daemon names (each app built by a feature's web factory,
``module:function(services, settings) -> WebApp``) behind :mod:`.server`'s bounds, with
:class:`WebServices` as the features' view of the PBX: the configuration the daemon sent,
the data directory, and :meth:`WebServices.call` for what only the daemon knows. Its log
lines go to the daemon (at most :data:`LOG_RATE` a second, then one line that counts the
rest). It ends when the daemon says so or the link closes (the daemon is gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from starlette.types import Scope

import sip

from ..config import Config
from ..plugins import Registry
from ..prompts import Prompts
from ..services import OfficeView
from .channel import MAX_LOG_LINE, ChannelError, Requests, read_from_daemon, to_daemon
from .server import App, Limits, Listener

if TYPE_CHECKING:
    from ..reload import ConfigFile

log = logging.getLogger("softswitch")

CALL_TIMEOUT = 30.0  # a daemon that has not answered a call by then: the request fails
LOG_RATE = 200  # log lines a second sent to the daemon (a burst of as many at once)
MAX_CALLS = 16  # calls to the daemon waiting for an answer at once; more wait their turn
SECURITY_FLUSH = 1.0  # seconds between two looks for security summaries that are due


@dataclass
class WebApp:
    """What a web factory builds: the ASGI app and how its listener bounds it."""

    app: App
    headers: dict[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    update: Callable[[Any], None] = lambda settings: None  # new settings, same address
    close: Callable[[], None] = lambda: None
    # whether a request may send a body over the default limit (None: by route alone)
    may_send_large: Callable[[Scope], bool] | None = None


class Factory(Protocol):
    def __call__(self, svc: WebServices, settings: Any) -> WebApp: ...


class WebServices(OfficeView):
    """The features' view of the PBX from the web process."""

    def __init__(self, call: Callable[[str, dict[str, Any]], Awaitable[Any]]) -> None:
        self._call = call
        self._config: Config | None = None
        self.config_file: ConfigFile | None = None
        self._registry: Registry | None = None
        self._prompts: Prompts | None = None
        self.security = sip.SecurityLog()
        self.wallclock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.on_config: list[Callable[[], None]] = []  # told after every new configuration
        self._tasks: set[asyncio.Task[Any]] = set()

    def update(self, config: Config, config_file: ConfigFile | None) -> None:
        self._config = config
        self.config_file = config_file
        features = config_file.features if config_file and config_file.features else None
        if features is None:
            from ..features import builtin

            features = builtin()
        self._registry = Registry(config, list(features))
        if self._prompts is None or self._prompts.language != config.server.language:
            self._prompts = Prompts(Path(config.server.data_dir), config.server.language)
        for hook in self.on_config:
            hook()

    @property
    def config(self) -> Config:
        assert self._config is not None, "no configuration from the daemon yet"
        return self._config

    @property
    def registry(self) -> Registry:
        """The features of the configuration (built here: not started, no calls)."""
        assert self._registry is not None, "no configuration from the daemon yet"
        return self._registry

    @property
    def prompts(self) -> Prompts:
        assert self._prompts is not None, "no configuration from the daemon yet"
        return self._prompts

    def now(self) -> float:
        return time.monotonic()

    async def call(self, name: str, **args: Any) -> Any:
        """The daemon's answer to ``name`` (a handler a feature registered there)."""
        return await self._call(name, args)

    async def apply_config(self, config: Config) -> list[str]:
        """The daemon runs the configuration file just written (``config`` is what it
        holds, already validated here); the keys that wait for a restart."""
        restart = await self.call("apply")
        return [str(key) for key in restart]

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


class _Bucket:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.last = time.monotonic()

    def take(self, now: float) -> bool:
        self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class _ToDaemon(logging.Handler):
    """Log records to the daemon: at most LOG_RATE lines a second, WARNING and above with
    a budget of their own (a flood of INFO lines cannot crowd out a security event), what
    is held back counted in one line at most once a second. Records from worker threads
    (password hashing, audio decoding) are handed to the loop's thread."""

    def __init__(self, write: Callable[[dict[str, Any]], None]) -> None:
        super().__init__()
        self.write = write
        self.loop = asyncio.get_running_loop()
        self.thread = threading.get_ident()
        self.info = _Bucket(LOG_RATE)
        self.warnings = _Bucket(LOG_RATE / 4)
        self.dropped = 0
        self.told = 0.0  # when the last "dropped" line went

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + self.format(record).partition("\n")[2]
        except Exception:
            text = str(record.msg)
        message = {
            "op": "log",
            "name": record.name,
            "level": record.levelno,
            "msg": text[:MAX_LOG_LINE],
        }
        if threading.get_ident() == self.thread:
            self._send(message)
        else:
            self.loop.call_soon_threadsafe(self._send, message)

    def _send(self, message: dict[str, Any]) -> None:
        now = time.monotonic()
        bucket = self.warnings if message["level"] >= logging.WARNING else self.info
        if not bucket.take(now):
            self.dropped += 1
            return
        if self.dropped and now - self.told >= 1.0 and self.warnings.take(now):
            dropped, self.dropped, self.told = self.dropped, 0, now
            self.write(
                {
                    "op": "log",
                    "name": "softswitch",
                    "level": logging.WARNING,
                    "msg": f"event=web_log_dropped lines={dropped}",
                }
            )
        self.write(message)


class WebProcess:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.writer: asyncio.StreamWriter | None = None
        self.svc = WebServices(self._daemon_call)
        self.listeners: dict[str, tuple[Listener, WebApp]] = {}
        self.requests = Requests(RuntimeError)
        self.calls = asyncio.Semaphore(MAX_CALLS)

    def write(self, message: dict[str, Any]) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(to_daemon(message))

    async def _daemon_call(self, name: str, args: dict[str, Any]) -> Any:
        async with self.calls:
            return await self._one_call(name, args)

    async def _one_call(self, name: str, args: dict[str, Any]) -> Any:
        ident, future = self.requests.open()
        try:
            self.write({"op": "call", "id": ident, "name": name, "args": args})
            return await asyncio.wait_for(future, CALL_TIMEOUT)
        finally:
            self.requests.close(ident)

    async def run(self) -> None:
        sock = socket.socket(fileno=self.fd)
        reader, self.writer = await asyncio.open_unix_connection(sock=sock)
        root = logging.getLogger()
        root.handlers[:] = [_ToDaemon(self.write)]
        flusher = asyncio.create_task(self._flush_security())
        try:
            while True:
                message = await read_from_daemon(reader)
                if not self._dispatch(message):
                    break
        except ChannelError:
            pass  # the daemon is gone: so are we
        finally:
            flusher.cancel()
            for name in list(self.listeners):
                await self._unserve(name)
            self.svc.security.flush(float("inf"))  # the summaries still open
            self.writer.close()

    async def _flush_security(self) -> None:
        while True:
            await asyncio.sleep(SECURITY_FLUSH)
            self.svc.security.flush(time.monotonic())

    async def _unserve(self, name: str) -> None:
        running = self.listeners.pop(name, None)
        if running is None:
            return
        listener, web = running
        web.close()  # first: its long answers (the dashboard's stream) end, then the server
        with contextlib.suppress(Exception):
            await listener.stop()

    def _dispatch(self, message: dict[str, Any]) -> bool:
        op = message["op"]
        if op == "config":
            logging.getLogger().setLevel(message["log_level"])
            self.svc.update(message["config"], message["config_file"])
        elif op == "serve":
            self.svc.spawn(self._serve(message))
        elif op == "reply":
            self.requests.answer(message)
        elif op == "unserve":
            self.svc.spawn(self._answer_unserve(message))
        elif op == "stop":
            return False
        return True

    async def _answer_unserve(self, message: dict[str, Any]) -> None:
        await self._unserve(message["name"])
        self.write({"op": "reply", "id": message["id"], "result": True})

    async def _serve(self, message: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"op": "reply", "id": message["id"]}
        name = message["name"]
        try:
            running = self.listeners.get(name)
            if running is not None:
                running[1].update(message["settings"])  # address and TLS wait for a restart
                reply["result"] = running[0].port
            else:
                module, _, function = message["factory"].partition(":")
                if not module.startswith("softswitch."):
                    raise ValueError(f"{module}: not a module of softswitch")
                factory: Factory = getattr(importlib.import_module(module), function)
                web = factory(self.svc, message["settings"])
                listener = Listener(
                    message["listen"],
                    web.app,
                    self.svc.security,
                    limits=web.limits,
                    headers=web.headers,
                    tls=message["tls"],
                    trusted_proxies=message["trusted_proxies"],
                    may_send_large=web.may_send_large,
                )
                try:
                    reply["result"] = await listener.start()
                except BaseException:
                    web.close()
                    raise
                self.listeners[name] = (listener, web)
        except Exception as exc:
            reply["error"] = (
                exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            ) or type(exc).__name__
        self.write(reply)


def main() -> None:
    # Ctrl-C at a terminal and a service manager's SIGTERM reach the whole group: the
    # daemon stops us in order (or its link closes, and we end)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    asyncio.run(WebProcess(int(sys.argv[1])).run())


if __name__ == "__main__":
    main()
