"""The media engine's RTP ports: the port pair a host's legs share, or one leg's own, and
which leg a source address belongs to there (see :mod:`softswitch.media_engine`)."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import select
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from rtp import PortAllocator
from rtp.batch import BatchSocket, address_bytes, ip_key

if TYPE_CHECKING:
    from .media_leg import MediaLeg

Ints = npt.NDArray[np.int64]
ENDED = -3  # the row of a source whose leg just closed (see PortPair.bury)
AFTERLIFE = 5.0  # seconds a closed leg's source stays refused
# SDP addresses behind a NAT: a leg whose SDP names one of these while its SIP comes from
# another IP is heard from that IP (its NAT), at a port it must learn
_PRIVATE = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    )
)
_UNSPECIFIED = ("", "0.0.0.0", "::")

_SO_MEMINFO = 55  # Linux: the socket's memory counters, drops among them


@functools.lru_cache(maxsize=4096)  # the same phones' addresses, call after call
def behind_nat(sdp_ip: str, signalling: str | None) -> bool:
    """Whether a phone's media is likely to come from its signalling IP rather than its
    SDP's: a private (or unusable) SDP address and SIP from elsewhere."""
    if not signalling or signalling == sdp_ip:
        return False
    try:
        ip = ipaddress.ip_address(sdp_ip)
    except ValueError:
        return True  # a name, or garbage: trust only what signalling shows
    return ip.is_unspecified or any(ip in net for net in _PRIVATE if net.version == ip.version)


def ip16(host: str) -> bytes | None:
    if host in _UNSPECIFIED:
        return None
    try:
        return address_bytes(host)
    except ValueError:
        return None


class PortPair:
    """An RTP/RTCP port pair: the shared one of a host, or one leg's own."""

    def __init__(self, host: str, ports: PortAllocator, *, shared: bool) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for port in ports.candidates():
            rtp = socket.socket(family, socket.SOCK_DGRAM)
            rtcp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                rtp.bind((host, port))
                rtcp.bind((host, port + 1))
            except OSError:
                rtp.close()
                rtcp.close()
                continue
            break
        else:
            raise OSError(f"no free RTP port pair in {ports.start}-{ports.end}")
        ports.take(port)
        if shared:  # a tick's worth of every leg's packets waits in the kernel
            for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
                if option is None:
                    continue
                try:
                    rtp.setsockopt(socket.SOL_SOCKET, option, 8 << 20)
                    break
                except OSError:
                    continue
            rtp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        for s in (rtp, rtcp):
            s.setblocking(False)
        self.host, self.port, self.shared = host, port, shared
        self.id = -1  # the engine's number for it (MediaEngine.pair_id)
        self.rtp, self.rtcp = BatchSocket(rtp), BatchSocket(rtcp)
        self._allocator = ports
        self.legs: set[MediaLeg] = set()
        # who may be heard here: exact source addresses, and IPs (a leg learning its port)
        self.exact: dict[tuple[bytes, int], MediaLeg] = {}
        self.claims: dict[bytes, set[MediaLeg]] = {}
        # sources of legs that just closed, until when: their phone's last packets (sent
        # before it read our BYE) are dropped, not taken for a new call learning at its IP
        self.ended: dict[tuple[bytes, int], float] = {}
        self.expires = np.inf
        self._index: tuple[npt.NDArray[np.uint64], Ints, npt.NDArray[np.uint8], Ints] | None = None

    def kernel_drops(self) -> int:
        """Packets the kernel dropped on these sockets (receive buffer full), on Linux:
        what a late tick costs the phones, counted where nothing in Python sees it."""
        total = 0
        for batch_socket in (self.rtp, self.rtcp):
            try:
                info = batch_socket.sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, 36)
            except OSError:  # not Linux, or closed
                return total
            total += int.from_bytes(info[32:36], "little")  # SK_MEMINFO_DROPS
        return total

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()
        self._allocator.release(self.port)

    def reindex(self) -> None:
        self._index = None

    def bury(self, sources: Iterable[tuple[bytes, int]], until: float) -> None:
        """Drop packets from ``sources`` (a closed leg's) until ``until``."""
        for source in sources:
            self.ended[source] = until
        self.expires = min(self.expires, until)
        self._index = None

    def expire(self, now: float) -> None:
        if now < self.expires:
            return
        self.ended = {k: t for k, t in self.ended.items() if t > now}
        self.expires = min(self.ended.values(), default=np.inf)
        self._index = None

    def _tables(self) -> tuple[npt.NDArray[np.uint64], Ints, npt.NDArray[np.uint8], Ints]:
        """Sorted keys for the vectorised look-up: (ip, port) pairs, then single IPs
        (port -1), each with its leg's row; an IP claimed by several legs maps to -2."""
        if self._index is None:
            ips: list[bytes] = []
            ports: list[int] = []
            rows: list[int] = []
            for (ip, port), leg in self.exact.items():
                ips.append(ip)
                ports.append(port)
                rows.append(leg.row)
            for (ip, port), _until in self.ended.items():
                if (ip, port) not in self.exact:
                    ips.append(ip)
                    ports.append(port)
                    rows.append(ENDED)
            for ip, legs in self.claims.items():
                ips.append(ip)
                ports.append(-1)
                rows.append(next(iter(legs)).row if len(legs) == 1 else -2)
            if ips:
                ip_arr = np.frombuffer(b"".join(ips), dtype=np.uint8).reshape(-1, 16)
            else:
                ip_arr = np.zeros((0, 16), dtype=np.uint8)
            port_arr = np.array(ports, dtype=np.int64)
            keys = _keys(ip_arr, port_arr)
            order = np.argsort(keys, kind="stable")
            self._index = (
                keys[order],
                port_arr[order],
                ip_arr[order],
                np.array(rows, dtype=np.int64)[order],
            )
        return self._index

    def owners(self, ip: npt.NDArray[np.uint8], port: Ints) -> Ints:
        """The row each source belongs to: its exact address's leg, else its IP's only
        claimant; -1 nobody, -2 an IP several legs claim, ENDED a leg that just closed."""
        keys, k_port, k_ip, k_row = self._tables()
        out = np.full(len(port), -1, dtype=np.int64)
        if not len(keys):
            return out
        words = np.ascontiguousarray(ip).view(np.uint64)  # compared as two words, not 16 bytes
        k_words = k_ip.view(np.uint64)
        for p in (port, np.full(len(port), -1, dtype=np.int64)):
            want = out == -1
            if not want.any():
                break
            key = _keys(ip, p)
            pos = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
            same = k_words[pos] == words
            hit = want & (keys[pos] == key) & (k_port[pos] == p) & same[:, 0] & same[:, 1]
            out[hit] = k_row[pos[hit]]
        return out


class Poller:
    """Which of many sockets have packets, in one system call (epoll where there is one)."""

    def __init__(self) -> None:
        self._poll: Any = select.epoll() if hasattr(select, "epoll") else select.poll()
        self._mask = select.EPOLLIN if hasattr(select, "epoll") else select.POLLIN
        self._count = 0

    def add(self, *fds: int) -> None:
        for fd in fds:
            self._poll.register(fd, self._mask)
        self._count += len(fds)

    def remove(self, *fds: int) -> None:
        for fd in fds:
            with contextlib.suppress(KeyError, OSError, ValueError):
                self._poll.unregister(fd)
                self._count -= 1

    def ready(self) -> set[int]:
        if not self._count:
            return set()
        if isinstance(self._poll, select.epoll):  # every ready one (its default is 1023)
            return {fd for fd, _ in self._poll.poll(0, self._count)}
        return {fd for fd, _ in self._poll.poll(0)}

    def close(self) -> None:
        if hasattr(self._poll, "close"):
            self._poll.close()


def _keys(ip: npt.NDArray[np.uint8], port: Ints) -> npt.NDArray[np.uint64]:
    mixed = (port + 1).astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
    return ip_key(ip) ^ mixed if len(ip) else np.zeros(0, dtype=np.uint64)
