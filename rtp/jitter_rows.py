"""Jitter buffers for many streams at once, pure and vectorised: a row per stream.

The playout rules are those of :class:`rtp.jitter.JitterBuffer` with ``adaptive=False``
(the per-packet path): playout starts ``depth`` ticks after a stream's first packet at
its lowest sequence number; each tick gives the frame due (FRAME), reports it missing
while later ones are queued (LOST: the caller conceals), or waits on an empty queue
(WAITING); duplicates and frames that come after their turn are dropped; a gap wider
than ``max_depth`` is skipped at once; a new SSRC starts the row over. Sequence numbers
are extended across wraps as :class:`rtp.packet.SequenceWrap` does, offset by ``BIAS``
(a multiple of 2**32: the low 32 bits are RFC 3550's extended sequence number) so that a
packet older than a stream's first one (65535 after 0) stays positive: -1 means "none".

A row holds at most ``capacity`` frames (more are dropped, as the per-packet buffer's
``capacity``), in a ring of ``slots`` payloads (``ext_seq % slots``), so a frame is kept
only within ``slots`` sequence numbers of the one due: one that comes further ahead is
dropped, unless the row's queue is empty, where playout jumps to it (the per-packet
buffer would keep it and jump there once the queued frames are played: the same audio
after such a leap, less those queued frames). With ``slots`` well above ``capacity``
(3x by default) that takes a leap, or two thirds of a stream lost, over ``slots``
packets; short of that both give the same frames, tick by tick (tests/test_batch.py
checks it with hypothesis).

Packets are put in rounds where each row appears once (a tick usually brings one packet
per stream, a burst a few): each round is a handful of array operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Ints = npt.NDArray[np.int64]
Bytes = npt.NDArray[np.uint8]

WAITING, FRAME, LOST = 0, 1, 2
BIAS = 1 << 32


@dataclass(slots=True)
class Popped:
    """One tick for ``rows``: ``status`` per row; for FRAME rows their payload bytes in
    ``payload[i, :length[i]]``."""

    rows: Ints
    status: npt.NDArray[np.int8]
    payload: Bytes
    length: Ints


class JitterRows:
    def __init__(
        self,
        rows: int,
        *,
        slots: int = 48,
        capacity: int = 16,
        payload: int = 240,
        depth: int = 3,
        max_depth: int = 12,
    ) -> None:
        if not 1 <= depth <= max_depth < capacity <= slots:
            raise ValueError("need 1 <= depth <= max_depth < capacity <= slots")
        self.rows, self.slots, self.width = rows, slots, payload
        self.capacity = capacity
        self.depth, self.max_depth = depth, max_depth
        self.seq = np.full((rows, slots), -1, dtype=np.int64)  # extended seq held, -1 free
        self.length = np.zeros((rows, slots), dtype=np.int64)
        self.data = np.zeros((rows, slots, payload), dtype=np.uint8)
        self.ssrc = np.full(rows, -1, dtype=np.int64)
        self.highest = np.full(rows, -1, dtype=np.int64)  # SequenceWrap.highest
        self.next = np.full(rows, -1, dtype=np.int64)  # due next; -1: not started
        self.waited = np.zeros(rows, dtype=np.int64)
        self.count = np.zeros(rows, dtype=np.int64)
        self.low = np.zeros(rows, dtype=np.int64)  # lowest held, before playout starts
        self.high = np.zeros(rows, dtype=np.int64)  # highest held
        # counters per row
        self.received = np.zeros(rows, dtype=np.int64)
        self.late = np.zeros(rows, dtype=np.int64)
        self.duplicates = np.zeros(rows, dtype=np.int64)
        self.overflow = np.zeros(rows, dtype=np.int64)
        self.lost = np.zeros(rows, dtype=np.int64)
        self.resynced = np.zeros(rows, dtype=np.int64)
        self.ssrc_changes = np.zeros(rows, dtype=np.int64)

    def resized(self, rows: int) -> JitterRows:
        """A copy with room for ``rows`` streams (the first ones as they are here)."""
        grown = JitterRows(
            rows,
            slots=self.slots,
            capacity=self.capacity,
            payload=self.width,
            depth=self.depth,
            max_depth=self.max_depth,
        )
        keep = min(rows, self.rows)
        for name, value in vars(self).items():
            if isinstance(value, np.ndarray):
                getattr(grown, name)[:keep] = value[:keep]
        return grown

    def reset(self, rows: Ints) -> None:
        """Forget everything of ``rows`` (a stream that ended, a new SSRC)."""
        self.seq[rows] = -1
        self.highest[rows] = -1
        self.next[rows] = -1
        self.waited[rows] = 0
        self.count[rows] = 0

    def clear(self, rows: Ints) -> None:
        """A row handed to a new stream: state and counters zeroed."""
        self.reset(rows)
        self.ssrc[rows] = -1
        for counter in (
            self.received,
            self.late,
            self.duplicates,
            self.overflow,
            self.lost,
            self.resynced,
            self.ssrc_changes,
        ):
            counter[rows] = 0

    # -- packets in ---------------------------------------------------------------------

    def put(self, rows: Ints, ssrc: Ints, seq: Ints, payload: Bytes, length: Ints) -> None:
        """Queue packets in arrival order: ``rows[i]`` gets ``payload[i, :length[i]]``
        (``length`` <= ``payload`` width; longer ones must be refused before)."""
        if not len(rows):
            return
        if np.bincount(rows).max() == 1:  # one packet per stream: the usual tick, one round
            self._put_round(rows, ssrc, seq, payload, length)
            return
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        first = np.searchsorted(sorted_rows, sorted_rows, side="left")
        rank = np.empty(len(rows), dtype=np.int64)
        rank[order] = np.arange(len(rows)) - first
        for k in range(int(rank.max()) + 1):
            pick = np.flatnonzero(rank == k)
            self._put_round(rows[pick], ssrc[pick], seq[pick], payload[pick], length[pick])

    def _put_round(self, r: Ints, ssrc: Ints, seq: Ints, payload: Bytes, length: Ints) -> None:
        changed = self.ssrc[r] != ssrc
        if changed.any():
            moved = r[changed]
            self.ssrc_changes[moved[self.ssrc[moved] >= 0]] += 1
            self.reset(moved)
            self.ssrc[moved] = ssrc[changed]
        highest = self.highest[r]
        delta = (seq - (highest & 0xFFFF) + 0x8000) % 0x10000 - 0x8000
        ext = np.where(highest < 0, seq + BIAS, highest + delta)
        self.highest[r] = np.maximum(highest, ext)
        nxt = self.next[r]
        started = nxt >= 0
        late = started & (ext < nxt)
        slot = ext % self.slots
        dup = ~late & (self.seq[r, slot] == ext)
        count = self.count[r]
        full = ~late & ~dup & (count >= self.capacity)
        empty = count == 0
        low = np.where(empty, ext, np.minimum(self.low[r], ext))
        high = np.where(empty, ext, np.maximum(self.high[r], ext))
        fits = np.where(started, ext < nxt + self.slots, high - low < self.slots)
        # an empty started row jumps to a frame further ahead (see the module's notes)
        leap = started & ~late & ~dup & empty & ~fits
        far = ~late & ~dup & (full | (~fits & ~leap))
        keep = ~late & ~dup & ~far
        self.late[r[late]] += 1
        self.duplicates[r[dup]] += 1
        self.overflow[r[far]] += 1
        if leap.any():
            jumped = r[leap]
            self.lost[jumped] += ext[leap] - nxt[leap]
            self.resynced[jumped] += 1
            self.next[jumped] = ext[leap]
        rk, sk = r[keep], slot[keep]
        self.seq[rk, sk] = ext[keep]
        self.length[rk, sk] = length[keep]
        self.data[rk, sk, : payload.shape[1]] = payload[keep]
        self.count[rk] += 1
        self.received[rk] += 1
        self.low[rk] = np.where(started[keep], self.low[rk], low[keep])
        self.high[rk] = high[keep]

    # -- one tick out ------------------------------------------------------------------

    def pop(self, rows: Ints) -> Popped:
        """The frame due this tick for each of ``rows`` (each row once per tick)."""
        status = np.zeros(len(rows), dtype=np.int8)
        nxt = self.next[rows]
        count = self.count[rows]
        # not started: wait `depth` ticks after the first packet, then play the lowest
        idle = (nxt < 0) & (count > 0)
        if idle.any():
            ir = rows[idle]
            self.waited[ir] += 1
            go = self.waited[ir] >= self.depth
            self.next[ir[go]] = self.low[ir[go]]
            nxt = self.next[rows]
        started = nxt >= 0
        slot = np.where(started, nxt, 0) % self.slots
        has = started & (self.seq[rows, slot] == nxt)
        gap = started & ~has & (count > 0)
        if gap.any():
            gr = rows[gap]
            held = self.seq[gr]
            first = np.where(held >= 0, held, np.iinfo(np.int64).max).min(axis=1)
            skip = first - nxt[gap] > self.max_depth
            if skip.any():
                sr = gr[skip]
                self.lost[sr] += first[skip] - nxt[gap][skip]
                self.resynced[sr] += 1
                self.next[sr] = first[skip]
                where = np.flatnonzero(gap)[skip]
                nxt[where] = first[skip]
                slot[where] = first[skip] % self.slots
                has[where] = True
        lost = started & ~has & (count > 0)
        status[has] = FRAME
        status[lost] = LOST
        fr, fs = rows[has], slot[has]
        length = self.length[fr, fs]
        width = int(length.max()) if len(length) else 0  # no wider than the longest due
        payload = self.data[fr, fs, :width]
        self.seq[fr, fs] = -1
        self.count[fr] -= 1
        self.next[fr] += 1
        lr = rows[lost]
        self.lost[lr] += 1
        self.next[lr] += 1
        return Popped(rows, status, payload, length)

    def following(self, row: int) -> bytes | None:
        """After a LOST on ``row``: the payload just after the missing frame, if held
        (Opus rebuilds a lost frame from the FEC it carries)."""
        due = int(self.next[row])
        slot = due % self.slots
        if due < 0 or self.seq[row, slot] != due:
            return None
        return self.data[row, slot, : self.length[row, slot]].tobytes()
