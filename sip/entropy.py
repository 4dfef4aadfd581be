"""Random identifiers (tags, branches, Call-IDs, SSRCs) from the kernel's CSPRNG, read
4 kB at a time: ``secrets`` makes a system call for each, a dozen or more per call set up.

The pool is taken under a lock (the web surface's thread draws too) and dropped in a
forked child, so no two processes or threads ever hand out the same bytes.
"""

from __future__ import annotations

import os
import threading

_POOL = 4096


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data = b""
        self._pos = 0

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._pos + n > len(self._data):
                self._data, self._pos = os.urandom(max(_POOL, n)), 0
            out = self._data[self._pos : self._pos + n]
            self._pos += n
            return out

    def forget(self) -> None:
        self._lock = threading.Lock()
        self._data, self._pos = b"", 0


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.forget)


def token_hex(nbytes: int) -> str:
    """``nbytes`` random bytes as ``2 * nbytes`` hex digits (as ``secrets.token_hex``)."""
    return _pool.take(nbytes).hex()


def randbits(k: int) -> int:
    """A random integer of ``k`` bits (as ``secrets.randbits``)."""
    return int.from_bytes(_pool.take((k + 7) // 8), "big") >> (-k % 8)
