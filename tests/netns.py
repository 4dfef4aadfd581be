"""A test in a network namespace of its own, with loopback alone: what it starts (a PBX,
phones, a browser) sees 127.0.0.1 and ::1 and nothing else, so a browser's ICE offers no
address of this machine's interfaces (root only: ``ip netns``, ``setns``)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import subprocess
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"setns: {os.strerror(error)}")


@contextlib.contextmanager
def loopback_only() -> Iterator[str]:
    """This thread, and every process and thread it starts meanwhile, in a new network
    namespace with only ``lo`` (up); back in the original one afterwards, the namespace
    deleted. A network namespace is per thread: the event loop's thread must enter it."""
    name = f"softswitch-test-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(target)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        try:
            yield name
        finally:
            _setns(original)
    finally:
        os.close(target)
        os.close(original)
        for pid in subprocess.run(
            ["ip", "netns", "pids", name], capture_output=True, text=True
        ).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
        subprocess.run(["ip", "netns", "del", name], check=False)
