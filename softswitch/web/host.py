"""The daemon's side of the web process: start it, tell it what to serve, answer its calls.

HTTP (the console, the portal, the REST API, provisioning) runs in a process of its own,
``python -m softswitch.web.child``, so that nothing a stranger sends over HTTP takes time
from the loop that carries SIP and media: a thread would not do, since a thread that
parses or renders holds the GIL and every system call of the media tick then waits for it
(a CPU-bound thread stretched a 200-socket tick from 2.5 ms to seconds on this project's
2-core machine). The web process gets the configuration (at start and after every change)
and asks the daemon, over :mod:`.channel`, only for what lives here: a snapshot of the
calls, a configuration to apply, a mailbox's lamp to update. Each such call is a
registered handler (:meth:`WebHost.handle`) answered on this loop, bounded in number and
size; log lines of the web process come back to this process's loggers, rate-limited at
the source. A web process that dies is started again, and serves again what it served.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .channel import MAX_LOG_LINE, ChannelError, Requests, read_from_web, to_web

if TYPE_CHECKING:
    from ..config import Config
    from ..reload import ConfigFile

log = logging.getLogger("softswitch")

MAX_CALLS = 8  # calls of the web process answered at once
RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
START_TIMEOUT = 30.0  # a web process that has not answered a serve by then is stopped
MAX_LOG_LINES = 400  # a second, from the web process (which sends at most 250)
MAX_PENDING = 64  # calls of the web process in progress or waiting; beyond, "busy"
Handler = Callable[[dict[str, Any]], Any]


@dataclass
class Served:
    name: str
    factory: str  # "module:function" of the web process that builds the app
    listen: str
    settings: Any
    tls: tuple[str, str] | None
    trusted_proxies: tuple[str, ...]


class WebError(OSError):
    """The web process could not serve (the address is taken, the process is gone...)."""


class WebHost:
    def __init__(
        self, config: Callable[[], Config], config_file: Callable[[], ConfigFile | None]
    ) -> None:
        self._config = config
        self._config_file = config_file
        self.handlers: dict[str, Handler] = {}
        self.served: dict[str, Served] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._requests = Requests(WebError)
        self._calls = asyncio.Semaphore(MAX_CALLS)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._starting = asyncio.Lock()
        self._closing = False
        self.restarts = 0
        self._log_second = 0.0
        self._log_count = 0
        self._log_refused = 0
        self._failing = 0  # restarts in a row without a serve that worked

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def handle(self, name: str, handler: Handler) -> None:
        """Answer the web process's call ``name`` with ``handler(args)`` (its result, or
        an awaitable of it, must be JSON data). A later handler replaces an earlier one."""
        self.handlers[name] = handler

    async def serve(
        self,
        name: str,
        factory: str,
        listen: str,
        settings: Any,
        *,
        tls: tuple[str, str] | None = None,
        trusted_proxies: tuple[str, ...] = (),
    ) -> int:
        """Serve the app ``factory`` builds (``name``: one per feature) on ``listen``;
        the bound port. Again for the same name: the running app takes the new settings
        and configuration (its address and TLS wait for a restart). Raises WebError."""
        return await self._serve(
            Served(name, factory, listen, settings, tls, tuple(trusted_proxies))
        )

    async def _serve(self, served: Served) -> int:
        self.served[served.name] = served
        await self._ensure()
        await self.configure()
        port = await self._request({"op": "serve", **served.__dict__})
        assert isinstance(port, int)
        self._failing = 0
        return port

    async def unserve(self, name: str) -> None:
        """Stop serving ``name`` (its feature was turned off)."""
        if self.served.pop(name, None) is None or self._writer is None:
            return
        with contextlib.suppress(WebError):
            await self._request({"op": "unserve", "name": name})

    async def configure(self) -> None:
        """The web process learns the running configuration (after a change)."""
        if self._writer is None:
            return
        self._send(
            {
                "op": "config",
                "config": self._config(),
                "config_file": self._config_file(),
                # lines at INFO and above come back (the loggers here filter them)
                "log_level": min(
                    logging.INFO,
                    *(logging.getLogger(n).getEffectiveLevel() for n in ("", "softswitch")),
                ),
            }
        )

    async def close(self) -> None:
        self._closing = True
        proc, writer = self._proc, self._writer
        if writer is not None:
            with contextlib.suppress(OSError, RuntimeError):
                writer.write(to_web({"op": "stop"}))
                await writer.drain()
        if proc is not None:
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        if writer is not None:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        self._requests.fail_all("the PBX is stopping")

    # -- the process ------------------------------------------------------------------------

    def _stopped(self) -> bool:
        return self._closing

    async def _ensure(self) -> None:
        async with self._starting:
            if self._writer is not None or self._closing:
                return
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "softswitch.web.child",
                    str(theirs.fileno()),
                    pass_fds=(theirs.fileno(),),
                    stdin=asyncio.subprocess.DEVNULL,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            finally:
                theirs.close()
            if self._stopped():  # the PBX stopped while this one started
                self._proc.kill()
                await self._proc.wait()
                ours.close()
                return
            reader, self._writer = await asyncio.open_unix_connection(sock=ours)
            self._reader_task = asyncio.create_task(self._read(reader))
            await self.configure()
            log.info("event=web_process_started pid=%d", self._proc.pid)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                message = await read_from_web(reader)
                self._dispatch(message)
        except ChannelError as exc:
            if self._closing:
                return
            problem = str(exc)
        except Exception as exc:  # a bug of ours: the link is dropped, the process restarted
            log.exception("event=web_link_failed")
            problem = repr(exc)
        await self._lost(problem)

    async def _lost(self, problem: str) -> None:
        proc, writer = self._proc, self._writer
        self._writer = None
        self._proc = None
        if writer is not None:
            writer.close()
        self._requests.fail_all(f"the web process is gone ({problem})")
        if proc is not None:
            if proc.returncode is None:
                proc.kill()
            code = await proc.wait()
        else:
            code = None
        if self._closing:
            return
        # again a second after a crash, then slower while it keeps dying (2, 4 ... 30 s)
        delay = min(RESTART_DELAY * 2**self._failing, MAX_RESTART_DELAY)
        self._failing += 1
        self.restarts += 1
        log.warning(
            "event=web_process_exited returncode=%s problem=%r restart_in=%.0fs",
            code,
            problem,
            delay,
        )
        self._spawn(self._restart(delay))

    async def _restart(self, delay: float) -> None:
        await asyncio.sleep(delay)
        for served in list(self.served.values()):
            try:
                await self._serve(served)
            except OSError as exc:
                log.warning("event=web_serve_failed app=%s error=%s", served.name, exc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send(self, message: dict[str, Any]) -> None:
        if self._writer is None:
            raise WebError("the web process is not running")
        self._writer.write(to_web(message))

    async def _request(self, message: dict[str, Any]) -> Any:
        ident, future = self._requests.open()
        try:
            self._send({**message, "id": ident})
            return await asyncio.wait_for(future, START_TIMEOUT)
        except TimeoutError:
            raise WebError("the web process did not answer") from None
        finally:
            self._requests.close(ident)

    # -- what the web process says -----------------------------------------------------

    def _dispatch(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "log":
            self._log(message)
        elif op == "reply":
            self._requests.answer(message)
        elif op == "call":
            if len(self._tasks) >= MAX_PENDING:
                with contextlib.suppress(WebError):
                    self._send({"op": "reply", "id": message.get("id"), "error": "busy"})
                return
            self._spawn(self._answer(message))
        else:
            raise ChannelError(f"unknown op {op[:32]!r}")

    def _log(self, message: dict[str, Any]) -> None:
        name, level, text = message.get("name"), message.get("level"), message.get("msg")
        if not (isinstance(name, str) and isinstance(level, int) and isinstance(text, str)):
            raise ChannelError("a malformed log line")
        now = asyncio.get_running_loop().time()
        if now - self._log_second >= 1.0:
            if self._log_refused:
                log.warning("event=web_log_refused lines=%d", self._log_refused)
            self._log_second, self._log_count, self._log_refused = now, 0, 0
        if self._log_count >= MAX_LOG_LINES:  # our own bound, whatever the other side does
            self._log_refused += 1
            return
        self._log_count += 1
        name = name if name in ("softswitch", "security") else "softswitch.web"
        level = min(max(level, logging.DEBUG), logging.CRITICAL)
        logging.getLogger(name).log(level, "%s", one_line(text[:MAX_LOG_LINE]))

    async def _answer(self, message: dict[str, Any]) -> None:
        ident, name, args = message.get("id"), message.get("name"), message.get("args")
        if not isinstance(ident, int) or not isinstance(name, str) or not isinstance(args, dict):
            log.warning("event=web_call_refused reason=malformed")
            return
        handler = self.handlers.get(name)
        reply: dict[str, Any] = {"op": "reply", "id": ident}
        async with self._calls:
            try:
                if handler is None:
                    raise LookupError(f"no handler for {name[:64]!r}")
                result = handler(args)
                if inspect.isawaitable(result):
                    result = await result
                reply["result"] = result
            except Exception as exc:
                if not isinstance(exc, (LookupError, ValueError, OSError)):
                    log.exception("event=web_call_failed call=%s", name[:64])
                reply["error"] = str(exc) or type(exc).__name__
        with contextlib.suppress(WebError):
            self._send(reply)


def one_line(text: str) -> str:
    """``text`` as one log line: control characters escaped, a traceback's line breaks
    too (a line a stranger put into a URL must never read as a line of its own, such as
    a security event for fail2ban)."""
    return "".join(
        ch
        if ch == "\t" or (ch.isprintable() and ch not in "\x85\u2028\u2029")
        else ("\\n" if ch == "\n" else f"\\x{ord(ch):02x}")
        for ch in text
    )
