"""The daemon's control socket: ``softswitch status`` asks the running PBX what it is doing.

A Unix stream socket, ``DATA/control.sock``, mode 0600 inside the 0700 data directory:
only the daemon's own user (and root) can connect, which the kernel checks twice (file
permissions, then the peer's credentials, ``SO_PEERCRED``); nothing listens on the network
and there is no password to leak. A client sends one line, ``status``, and gets one JSON
document back: registrations, calls, conferences and the counters, as of that moment.
``reload`` re-reads the daemon's own configuration file and applies it live (what SIGHUP
does), answering ``{"ok": true, "restart_needed": [...]}`` or ``{"error": "<the file's
errors>"}``; no other command changes anything, and nothing a client sends becomes
configuration. Requests are bounded (one line of at most 64 bytes within 2 s, 4 clients
at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sip

if TYPE_CHECKING:
    from .pbx import Pbx

log = logging.getLogger("softswitch")

SOCKET_NAME = "control.sock"
MAX_PATH = 107  # sun_path holds 108 bytes with the terminating NUL
MAX_REQUEST = 64
REQUEST_TIMEOUT = 2.0
MAX_CLIENTS = 4


class ControlError(Exception):
    """No daemon answers at the control socket, or its answer is not one."""


def socket_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / SOCKET_NAME


def snapshot(pbx: Pbx, started: float) -> dict[str, Any]:
    """What the PBX is doing now, as plain data (the answer to ``status``)."""
    now = pbx.ua.now()
    config = pbx.config
    registrations = []
    for aor in sorted(pbx.registrar.aors()):
        login = aor.removeprefix("sip:").partition("@")[0]
        identity = pbx.devices.identity(login)
        for b in pbx.registrar.lookup(aor, now):
            registrations.append(
                {
                    "login": login,
                    "extension": identity[0].extension if identity else None,
                    "name": identity[0].name if identity else None,
                    "contact": str(b.contact),
                    "source": f"{b.source[0]}:{_host_port(b.source[1], b.source[2])}",
                    "user_agent": b.user_agent,
                    "expires_in": b.expires_in(now),
                }
            )
    calls = []
    seen: set[int] = set()
    for party in sorted(pbx.parties, key=lambda p: p.label):
        if party.ended or id(party) in seen:
            continue
        seen.add(id(party))
        peer = party.peer if party.peer is not None and not party.peer.ended else None
        if peer is not None:
            seen.add(id(peer))
        called = party.call.invite.uri.user if isinstance(party.call, sip.IncomingCall) else None
        calls.append(
            {
                "a": _who(party),
                "b": _who(peer) if peer is not None else None,
                "dialled": called,
                "state": party.call.state.value,
                "held": party.holding or bool(peer and peer.holding),
                "codec": party.leg.codec.name if party.leg.codec else None,
            }
        )
    conferences = []
    service = pbx.conference
    for owner, room in sorted((service.rooms if service else {}).items()):
        # each member is a call too, into the bridge (a PBX's count of calls has them)
        for leg in (*room.members, *room.waiting):
            calls.append(
                {
                    "a": _caller(leg),
                    "b": f"conference {owner}",
                    "dialled": leg.call.invite.uri.user or None,
                    "state": "conference" if leg in room.members else "waiting",
                    "held": False,
                    "codec": leg.codec.name if leg.codec else None,
                }
            )
        conferences.append(
            {
                "room": owner,
                "members": [_caller(leg) for leg in room.members],
                "waiting": [_caller(leg) for leg in room.waiting],
                "hosts": room.hosts,
                "locked": room.locked,
                "recording": room.recorder is not None,
            }
        )
    return {
        "version": 1,
        "domain": config.server.domain,
        "listen": [f"{x.transport}:{_host_port(x.host, x.port)}" for x in pbx.ua.listeners],
        "uptime_s": round(time.monotonic() - started, 1),
        "users": len(config.users),
        "registrations": registrations,
        "calls": calls,
        "conferences": conferences,
        "counters": pbx.stats,
    }


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _who(party: Any) -> str:
    return f"{party.label}/{party.device}" if party.device else str(party.label)


def _caller(leg: Any) -> str:
    user = leg.call.invite.from_.uri.user or "?"
    return f"{user} (host)" if leg.host else str(user)


class ControlServer:
    """Serves ``status`` on ``path`` for ``pbx`` until :meth:`close`."""

    def __init__(self, pbx: Pbx, path: Path) -> None:
        self.pbx = pbx
        self.path = path
        self.started = time.monotonic()
        self._server: asyncio.Server | None = None
        self._inode: int | None = None
        self._clients = 0
        self.refused = 0

    async def start(self) -> bool:
        """Listen; False (and a warning) when it cannot, which does not stop the PBX."""
        path = self.path
        if len(os.fsencode(path)) > MAX_PATH:
            log.warning("event=control_unavailable path=%s reason=path_too_long", path)
            return False
        if path.exists() or path.is_symlink():
            if not path.is_socket():
                log.warning("event=control_unavailable path=%s reason=not_a_socket", path)
                return False
            if await _answers(path):  # another daemon on this data directory
                log.warning("event=control_unavailable path=%s reason=in_use", path)
                return False
            path.unlink()  # left by a daemon that did not stop cleanly
        self._server = await asyncio.start_unix_server(self._serve, path=str(path))
        os.chmod(path, 0o600)
        self._inode = path.stat().st_ino
        log.info("event=control_listening path=%s", path)
        return True

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._server = None
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self._inode:  # still ours
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= MAX_CLIENTS or not _trusted(writer):
            self.refused += 1
            writer.close()
            return
        self._clients += 1
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
            except (TimeoutError, ValueError, ConnectionError):
                return
            command = line[:MAX_REQUEST].strip().decode("ascii", "replace")
            if command == "status":
                answer = snapshot(self.pbx, self.started)
            elif command == "reload":
                answer = await reload(self.pbx)
            else:
                answer = {"error": "unknown command (known: status, reload)"}
            writer.write(json.dumps(answer).encode() + b"\n")
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        finally:
            self._clients -= 1
            writer.close()


async def reload(pbx: Pbx) -> dict[str, Any]:
    """Read the configuration file again and apply it; an invalid file changes nothing."""
    from .config import ConfigError

    source = pbx.svc.config_file
    if source is None:
        return {"error": "this daemon was not started from a file (embedded configuration)"}
    try:
        config = source.load()
        restart = await pbx.apply(config)
    except ConfigError as exc:
        log.warning("event=reload_refused errors=%d\n%s", str(exc).count("\n") + 1, exc)
        return {"error": str(exc)}
    log.info("event=reloaded file=%s", source.target)
    return {"ok": True, "restart_needed": restart}


def _trusted(writer: asyncio.StreamWriter) -> bool:
    """The peer runs as the daemon's user or as root (the file mode says so already)."""
    sock = writer.get_extra_info("socket")
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return True
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return False
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid in (0, os.geteuid())


async def _answers(path: Path) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


def query(data_dir: str | Path, command: str = "status", timeout: float = 5.0) -> dict[str, Any]:
    """Ask the daemon whose data directory is ``data_dir`` (blocking; for the CLI)."""
    path = socket_path(data_dir)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except FileNotFoundError:
        raise ControlError(f"no daemon: {path} does not exist") from None
    except ConnectionRefusedError:
        raise ControlError(f"no daemon answers at {path} (left by one that stopped)") from None
    except PermissionError:
        raise ControlError(f"{path}: permission denied (run as the daemon's user)") from None
    except OSError as exc:
        raise ControlError(f"{path}: {exc.strerror or exc}") from None
    try:
        answer = json.loads(b"".join(chunks))
    except ValueError:
        raise ControlError(f"{path}: the answer is not JSON") from None
    if not isinstance(answer, dict):
        raise ControlError(f"{path}: unexpected answer")
    if "error" in answer:
        raise ControlError(f"{path}: {answer['error']}")
    return answer


def _ago(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def render(status: dict[str, Any]) -> str:
    """``status`` for a terminal: short and aligned."""
    from .banner import columns

    lines = [
        f"softswitch up {_ago(status['uptime_s'])}, domain {status['domain']}, "
        f"on {' '.join(status['listen'])}"
    ]
    regs = status["registrations"]
    lines.append(f"registrations: {len(regs)} (of {status['users']} users)")
    if regs:
        lines += columns(
            [
                [
                    r["login"],
                    r["name"] or "",
                    r["source"],
                    r["user_agent"][:30],
                    f"expires in {r['expires_in']} s",
                ]
                for r in regs
            ]
        )
    calls = status["calls"]
    lines.append(f"calls: {len(calls)}")
    if calls:
        rows = []
        for c in calls:
            who = f"{c['a']} <-> {c['b']}" if c["b"] else f"{c['a']} -> {c['dialled'] or '?'}"
            rows.append([who, c["state"] + (", on hold" if c["held"] else ""), c["codec"] or ""])
        lines += columns(rows)
    rooms = status["conferences"]
    lines.append(f"conferences: {len(rooms)}")
    if rooms:
        rows = []
        for room in rooms:
            flags = [f"{len(room['waiting'])} waiting"] if room["waiting"] else []
            flags += ["locked"] if room["locked"] else []
            flags += ["recording"] if room["recording"] else []
            rows.append(
                [f"room {room['room']}", ", ".join(room["members"]) or "-", " ".join(flags)]
            )
        lines += columns(rows)
    return "\n".join(lines)
