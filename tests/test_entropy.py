"""The identifier pool: right sizes, no repeats, none shared with a forked child."""

from __future__ import annotations

import os

from sip import entropy


def test_sizes_and_no_repeats_across_pool_refills() -> None:
    tokens = [entropy.token_hex(12) for _ in range(2000)]  # 24 kB: six refills of the pool
    assert all(len(t) == 24 and int(t, 16) >= 0 for t in tokens)
    assert len(set(tokens)) == len(tokens)
    bits = [entropy.randbits(16) for _ in range(4000)]
    assert min(bits) >= 0 and max(bits) < 2**16 and max(bits) > 2**15  # the top bit is used
    assert {entropy.randbits(1) for _ in range(200)} == {0, 1}


def test_a_forked_child_draws_other_bytes_than_its_parent() -> None:
    entropy.token_hex(4)  # the pool holds unread bytes when the process forks
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next token, to the parent
        os.write(write, entropy.token_hex(16).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32 and child != entropy.token_hex(16)
