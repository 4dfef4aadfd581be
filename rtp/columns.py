"""RTP headers as columns: a batch of packets parsed, or headers written, in a few numpy
operations instead of one :func:`rtp.packet.parse_rtp` per packet.

:func:`parse` applies exactly the checks of :func:`rtp.packet.parse_rtp` (version, CSRC
list, extension, padding) to every row of a :class:`rtp.batch.Batch`, and gives the
fields and the payload's bounds per row; :func:`write_headers` writes 12-byte headers
(no CSRC, no extension) into rows of a send buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Bytes = npt.NDArray[np.uint8]


@dataclass(slots=True)
class Headers:
    """Fields of rows ``0..n-1``; ``valid`` is False where parse_rtp would refuse."""

    valid: Bools
    marker: Bools
    pt: Ints
    seq: Ints
    ts: Ints
    ssrc: Ints
    start: Ints  # payload bounds: data[i, start[i]:end[i]]
    end: Ints


def parse(data: Bytes, length: Ints) -> Headers:
    """Parse rows ``data[i, :length[i]]`` (``data``: rows x slot bytes)."""
    n = len(length)
    rows = np.arange(n)
    last = data.shape[1] - 1
    # the fixed header of every row in one copy, read as big-endian words (a column at a
    # time from the rows would be a strided pass per byte)
    fixed = np.ascontiguousarray(data[:, :12])
    words = fixed.view(">u4")
    b0 = fixed[:, 0].astype(np.int64)
    b1 = fixed[:, 1].astype(np.int64)
    valid = (length >= 12) & (b0 >> 6 == 2)
    start = 12 + 4 * (b0 & 0x0F)
    valid &= length >= start
    ext = (b0 & 0x10) != 0
    if ext.any():
        valid &= ~ext | (length >= start + 4)
        hi = data[rows, np.minimum(start + 2, last)].astype(np.int64)
        lo = data[rows, np.minimum(start + 3, last)].astype(np.int64)
        start = np.where(ext, start + 4 + 4 * ((hi << 8) | lo), start)
        valid &= length >= start
    end = length.copy()
    padded = (b0 & 0x20) != 0
    if padded.any():
        pad = data[rows, np.clip(length - 1, 0, last)].astype(np.int64)
        valid &= ~padded | ((pad != 0) & (length - pad >= start))
        end = np.where(padded, length - pad, end)
    return Headers(
        valid=valid,
        marker=(b1 & 0x80) != 0,
        pt=b1 & 0x7F,
        seq=fixed.view(">u2")[:, 1].astype(np.int64),
        ts=words[:, 1].astype(np.int64),
        ssrc=words[:, 2].astype(np.int64),
        start=start,
        end=end,
    )


def gather(data: Bytes, rows: Ints, start: Ints, width: int) -> Bytes:
    """``width`` bytes of each chosen row from its ``start`` (past the slot: zeros)."""
    if len(start) and start.min() == start.max() and start[0] + width <= data.shape[1]:
        first = int(start[0])  # the usual case (12-byte headers): one block copy
        block: Bytes = data[rows, first : first + width]
        return block
    index = start[:, None] + np.arange(width)
    inside = index < data.shape[1]
    out: Bytes = data[rows[:, None], np.minimum(index, data.shape[1] - 1)]
    out[~inside] = 0
    return out


def write_headers(
    data: Bytes, rows: Ints, pt: Ints, seq: Ints, ts: Ints, ssrc: Ints, marker: Bools | None = None
) -> None:
    """Write a 12-byte RTP header (version 2) at the start of each of ``rows``."""
    second = pt & 0x7F
    if marker is not None:
        second = second | np.where(marker, 0x80, 0)
    header = np.empty((len(rows), 12), dtype=np.uint8)
    header[:, 0] = 0x80
    header[:, 1] = second
    for i, (column, width) in enumerate(((seq, 2), (ts, 4), (ssrc, 4))):
        first = (2, 4, 8)[i]
        for k in range(width):
            header[:, first + k] = (column >> (8 * (width - 1 - k))) & 0xFF
    data[rows, :12] = header
