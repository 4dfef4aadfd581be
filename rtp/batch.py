"""Batched datagram I/O for media: every pending packet of a socket in one call, a tick's
packets out in one call, into and from preallocated numpy arrays.

At 1000 legs x 50 packets/s the cost of a media engine is its system calls and the
Python objects made per packet (README.md, "Batched media I/O"). Here a socket is drained
by one ``recvmmsg(2)`` into a row per packet of a preallocated ``uint8`` array, source
addresses in columns beside it (:class:`Batch`); a tick's packets leave by one
``sendmmsg(2)`` from such rows, destinations taken from columns. Nothing is allocated
per packet: the kernel's ``mmsghdr``/``iovec``/``sockaddr`` vectors are numpy arrays
whose pointer columns are set once.

Linux's ``recvmmsg``/``sendmmsg`` are called through :mod:`ctypes` (libc, no compiled
dependency; the structures' layout is read from ctypes, so it is right on any 64- or
32-bit Linux ABI). Elsewhere, or when libc lacks them, :class:`Batch` falls back to one
``recvfrom_into``/``sendto`` per packet with the same arrays and the same results.

Addresses are 16 bytes (IPv4 as ``::ffff:a.b.c.d``) plus a port, whatever the family,
so that matching packets to legs is one vectorised code path.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import ipaddress
import logging
import socket
import sys
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

SLOT = 1536  # bytes per row: more than any RTP packet on an Ethernet path (MTU 1500)
NAME = 28  # sizeof(struct sockaddr_in6), which also holds a sockaddr_in
MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)
MSG_TRUNC = getattr(socket, "MSG_TRUNC", 0x20)
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux's value; Python 3.11 lacks the name
_WORD = ctypes.sizeof(ctypes.c_size_t)
_CMSG_HDR = (_WORD + 8 + _WORD - 1) // _WORD * _WORD  # CMSG_LEN(0)
_CMSG_SPACE = _CMSG_HDR + (12 + _WORD - 1) // _WORD * _WORD  # CMSG_SPACE(in_pktinfo)
V4_MAPPED = np.array([0] * 10 + [0xFF, 0xFF], dtype=np.uint8)

Bytes = npt.NDArray[np.uint8]


class _IoVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _MsgHdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class _MMsgHdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint))


def _uint(size: int) -> str:
    return {4: "<u4", 8: "<u8"}[size] if sys.byteorder == "little" else {4: ">u4", 8: ">u8"}[size]


def _struct_dtype(struct: type[ctypes.Structure], inner: str = "") -> list[tuple[str, str, int]]:
    fields: list[tuple[str, str, int]] = []
    for name, ctype, *_ in struct._fields_:
        offset = getattr(struct, name).offset
        if isinstance(ctype, type) and issubclass(ctype, ctypes.Structure):
            fields += [(n, t, offset + o) for n, t, o in _struct_dtype(ctype)]
        else:
            fields.append((inner + name, _uint(ctypes.sizeof(ctype)), offset))
    return fields


def _numpy_layout(struct: type[ctypes.Structure]) -> np.dtype[Any]:
    fields = _struct_dtype(struct)
    return np.dtype(
        {
            "names": [f[0] for f in fields],
            "formats": [f[1] for f in fields],
            "offsets": [f[2] for f in fields],
            "itemsize": ctypes.sizeof(struct),
        }
    )


MMSG = _numpy_layout(_MMsgHdr)
assert MMSG.itemsize % 8 == 0  # copied as machine words (BatchSocket._send_mmsg)
IOVEC = _numpy_layout(_IoVec)


def _load_libc() -> tuple[Any, Any] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        recv, send = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recv.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p)
    send.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
    recv.restype = send.restype = ctypes.c_int
    return recv, send


_MMSG_CALLS = _load_libc()


def mmsg_available() -> bool:
    """Whether recvmmsg/sendmmsg are used here (else one call per packet)."""
    return _MMSG_CALLS is not None


@functools.lru_cache(maxsize=4096)  # a few peers' addresses, looked up per call
def address_bytes(host: str) -> bytes:
    """``host`` as the 16 bytes the batch columns hold (IPv4 mapped into IPv6)."""
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv4Address):
        return bytes(10) + b"\xff\xff" + ip.packed
    return ip.packed


def address_text(raw: bytes) -> str:
    """The inverse of :func:`address_bytes`."""
    ip = ipaddress.IPv6Address(raw)
    return str(ip.ipv4_mapped) if ip.ipv4_mapped is not None else str(ip)


def ip_key(ip16: Bytes) -> npt.NDArray[np.uint64]:
    """A 64-bit key per row of 16-byte addresses (exact for IPv4; for IPv6 a fold that a
    caller confirms by comparing the bytes)."""
    words = np.ascontiguousarray(ip16).view(np.uint64).reshape(-1, 2)
    return words[:, 1] ^ (words[:, 0] * np.uint64(0x9E3779B97F4A7C15))


class Batch:
    """Rows of datagrams: ``data[i, :length[i]]`` from or to ``ip[i]``:``port[i]``."""

    def __init__(self, capacity: int, slot: int = SLOT) -> None:
        self.capacity = capacity
        self.slot = slot
        self.data = np.zeros((capacity, slot), dtype=np.uint8)
        self.length = np.zeros(capacity, dtype=np.int64)
        self.ip = np.zeros((capacity, 16), dtype=np.uint8)
        self.port = np.zeros(capacity, dtype=np.int64)
        self.count = 0
        self._vectors: tuple[Any, Any, Bytes] | None = None

    def clear(self) -> None:
        self.count = 0

    def vectors(self) -> tuple[Any, Any, Bytes]:
        """mmsghdr, iovec and sockaddr arrays pointing at the rows, for recvmmsg and
        sendmmsg (made once: the pointers stay valid while the arrays live). Every socket
        that fills or sends this batch uses them in turn — one system call at a time, so
        nothing is shared at once — rather than a set of its own per socket: an engine's
        batch has thousands of rows and a call's own port pair two sockets."""
        if self._vectors is None:
            n = self.capacity
            mmsg = np.zeros(n, dtype=MMSG)
            iov = np.zeros(n, dtype=IOVEC)
            names = np.zeros((n, NAME), dtype=np.uint8)
            rows = np.arange(n, dtype=np.uint64)
            iov["iov_base"] = np.uint64(self.data.ctypes.data) + rows * np.uint64(self.slot)
            iov["iov_len"] = self.slot
            mmsg["msg_name"] = np.uint64(names.ctypes.data) + rows * np.uint64(NAME)
            mmsg["msg_namelen"] = NAME
            mmsg["msg_iov"] = np.uint64(iov.ctypes.data) + rows * np.uint64(IOVEC.itemsize)
            mmsg["msg_iovlen"] = 1
            self._vectors = (mmsg, iov, names)
        return self._vectors


class BatchSocket:
    """One non-blocking UDP socket with batched receive and send.

    :meth:`receive` appends every pending datagram (up to the batch's free rows) to a
    :class:`Batch`; :meth:`send` sends rows of a batch to their addresses. Both make one
    system call per ``chunk`` packets where recvmmsg/sendmmsg exist, one per packet
    elsewhere (``batched=False`` forces that path, for tests and comparisons).
    """

    def __init__(self, sock: socket.socket, *, chunk: int = 1024, batched: bool = True) -> None:
        self.sock = sock
        self.family = sock.family
        sock.setblocking(False)
        self.fd = sock.fileno()
        self.chunk = chunk
        self.batched = batched and _MMSG_CALLS is not None
        self.received = 0
        self.sent = 0
        self.dropped = 0  # a send that would block, or the peer unreachable: dropped
        self.calls = 0  # system calls made (for benchmarks and tests)
        self._scratch_vec: Any = None

    def close(self) -> None:
        self.sock.close()

    # -- receiving ------------------------------------------------------------------------

    def receive(self, batch: Batch, limit: int | None = None) -> int:
        """Append pending datagrams to ``batch`` (at most ``limit``); how many came."""
        free = batch.capacity - batch.count
        if limit is not None:
            free = min(free, limit)
        if free <= 0:
            return 0
        start = batch.count
        got = self._receive_mmsg(batch, start, free) if self.batched else 0
        if not self.batched:
            got = self._receive_each(batch, start, free)
        batch.count += got
        self.received += got
        return got

    def _receive_mmsg(self, batch: Batch, start: int, free: int) -> int:
        assert _MMSG_CALLS is not None
        recvmmsg = _MMSG_CALLS[0]
        mmsg, _, names = batch.vectors()
        got = 0
        while got < free:
            want = min(self.chunk, free - got)
            first = start + got
            mmsg["msg_namelen"][first : first + want] = NAME
            address = mmsg.ctypes.data + first * MMSG.itemsize
            n = recvmmsg(self.fd, address, want, MSG_DONTWAIT, None)
            self.calls += 1
            if n <= 0:
                err = ctypes.get_errno()
                if n < 0 and err not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    log.debug("event=recvmmsg_error errno=%d", err)
                    if err in (errno.EBADF, errno.ENOTSOCK):
                        break
                    continue  # an ICMP error reported here: the next call goes on
                break
            rows = slice(first, first + n)
            # a datagram longer than a row is cut by the kernel (MSG_TRUNC): length 0, so
            # that parsing refuses it rather than read a part of it
            whole = (mmsg["msg_flags"][rows] & MSG_TRUNC) == 0
            batch.length[rows] = np.where(whole, mmsg["msg_len"][rows], 0)
            self._addresses(names[rows], batch, rows)
            got += n
            if n < want:
                break
        return got

    def _addresses(self, names: Bytes, batch: Batch, rows: slice) -> None:
        if self.family == socket.AF_INET:
            batch.ip[rows, :12] = V4_MAPPED
            batch.ip[rows, 12:] = names[:, 4:8]
        else:
            batch.ip[rows] = names[:, 8:24]
        batch.port[rows] = (names[:, 2].astype(np.int64) << 8) | names[:, 3]

    def _receive_each(self, batch: Batch, start: int, free: int) -> int:
        sock, data = self.sock, batch.data
        got = 0
        while got < free:
            row = start + got
            try:
                n, addr = sock.recvfrom_into(data[row])
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            self.calls += 1
            batch.length[row] = n if n < batch.slot else 0  # maybe cut: refused
            batch.ip[row] = np.frombuffer(address_bytes(addr[0]), dtype=np.uint8)
            batch.port[row] = addr[1]
            got += 1
        return got

    # -- sending --------------------------------------------------------------------------

    def send(
        self, batch: Batch, rows: npt.NDArray[np.intp] | None = None, source: Bytes | None = None
    ) -> int:
        """Send ``batch``'s rows (all ``count`` when None) to their addresses; how many
        left (those the kernel refuses are dropped). ``source``: an IPv4 source address
        per row (4 bytes each, ``IP_PKTINFO``), for a load generator that plays many
        phones from one socket on the 127.0.0.0/8 loopback range."""
        if rows is None:
            rows = np.arange(batch.count)
        if not len(rows):
            return 0
        if source is not None and self.family != socket.AF_INET:
            raise ValueError("a source address per packet is for IPv4 sockets")
        if self.batched:
            sent = self._send_mmsg(batch, rows, source)
        else:
            sent = self._send_each(batch, rows, source)
        self.sent += sent
        self.dropped += len(rows) - sent
        return sent

    def _send_mmsg(
        self, batch: Batch, rows: npt.NDArray[np.intp], source: Bytes | None = None
    ) -> int:
        assert _MMSG_CALLS is not None
        sendmmsg = _MMSG_CALLS[1]
        mmsg, iov, names = batch.vectors()
        # a contiguous run of message headers for the chosen rows: they are copied to the
        # head of a scratch vector (rows may be scattered)
        n = len(rows)
        scratch = self._scratch(n)
        # copied as rows of machine words: a structured array's fancy indexing is 6x slower
        words = MMSG.itemsize // 8
        scratch.view(np.uint64).reshape(-1, words)[:n] = mmsg.view(np.uint64).reshape(-1, words)[
            rows
        ]
        iov["iov_len"][rows] = batch.length[rows]
        names[rows] = self._names(batch, rows)
        scratch["msg_namelen"][:n] = 16 if self.family == socket.AF_INET else NAME
        if source is not None:
            control = self._control(n)
            control[:n, _CMSG_HDR + 4 : _CMSG_HDR + 8] = source
            scratch["msg_control"][:n] = np.uint64(control.ctypes.data) + np.arange(
                n, dtype=np.uint64
            ) * np.uint64(_CMSG_SPACE)
            scratch["msg_controllen"][:n] = _CMSG_SPACE
        else:
            scratch["msg_control"][:n] = 0
            scratch["msg_controllen"][:n] = 0
        pos = sent = 0
        while pos < n:
            address = scratch.ctypes.data + pos * MMSG.itemsize
            k = sendmmsg(self.fd, address, min(self.chunk, n - pos), MSG_DONTWAIT)
            self.calls += 1
            if k < 0:
                err = ctypes.get_errno()
                if err in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break  # the socket buffer is full: the rest of this tick is dropped
                if err != errno.EINTR:
                    log.debug("event=sendmmsg_error errno=%d", err)
                    pos += 1  # the kernel refused the first one (an address...): skip it
                continue
            pos += k
            sent += k
        iov["iov_len"][rows] = batch.slot  # receiving into these rows again takes a slot
        return sent

    def _scratch(self, n: int) -> Any:
        scratch = self._scratch_vec
        if scratch is None or len(scratch) < n:
            scratch = self._scratch_vec = np.zeros(max(n, 64), dtype=MMSG)
        return scratch

    def _control(self, n: int) -> Bytes:
        """One IP_PKTINFO control message per row (the source address filled per send)."""
        control: Bytes | None = getattr(self, "_control_vec", None)
        if control is None or len(control) < n:
            control = np.zeros((max(n, 64), _CMSG_SPACE), dtype=np.uint8)
            header = (_CMSG_HDR + 12).to_bytes(_WORD, sys.byteorder)
            header += int(socket.IPPROTO_IP).to_bytes(4, sys.byteorder)
            header += IP_PKTINFO.to_bytes(4, sys.byteorder)
            control[:, : len(header)] = np.frombuffer(header, dtype=np.uint8)
            self._control_vec = control
        return control

    def _names(self, batch: Batch, rows: npt.NDArray[np.intp]) -> Bytes:
        out = np.zeros((len(rows), NAME), dtype=np.uint8)
        port = batch.port[rows]
        if self.family == socket.AF_INET:
            out[:, :2] = np.frombuffer(int(socket.AF_INET).to_bytes(2, sys.byteorder), np.uint8)
            out[:, 4:8] = batch.ip[rows, 12:]
        else:
            out[:, :2] = np.frombuffer(int(socket.AF_INET6).to_bytes(2, sys.byteorder), np.uint8)
            out[:, 8:24] = batch.ip[rows]
        out[:, 2] = port >> 8
        out[:, 3] = port & 0xFF
        return out

    def _send_each(
        self, batch: Batch, rows: npt.NDArray[np.intp], source: Bytes | None = None
    ) -> int:
        sock, data = self.sock, batch.data
        sent = 0
        for i, row in enumerate(rows.tolist()):
            host = address_text(batch.ip[row].tobytes())
            address = (host, int(batch.port[row]))
            try:
                if source is None:
                    sock.sendto(data[row, : batch.length[row]].tobytes(), address)
                else:
                    info = bytes(4) + source[i].tobytes() + bytes(4)
                    ancillary = [(socket.IPPROTO_IP, IP_PKTINFO, info)]
                    payload = data[row, : batch.length[row]].tobytes()
                    sock.sendmsg([payload], ancillary, 0, address)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            finally:
                self.calls += 1
            sent += 1
        return sent
