"""G.711 µ-law and A-law by table look-up on whole numpy arrays.

The tables are computed once, at import, with the ITU-T G.191 reference algorithm (16-bit
linear input, one's-complement magnitude for negative samples), vectorised; encoding a
frame is one fancy-index into a 65536-entry table, decoding one into a 256-entry table.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.int16]
Codes = npt.NDArray[np.uint8]


def _all_int16() -> npt.NDArray[np.int32]:
    # index i of the encode tables is the int16 sample whose bits read as uint16 i
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


def _ulaw_compress(x: npt.NDArray[np.int32]) -> Codes:
    absno = np.where(x < 0, (~x) >> 2, x >> 2) + 33
    absno = np.minimum(absno, 0x1FFF)
    segno = np.ones_like(absno)
    i = absno >> 6
    while np.any(i):
        segno += i != 0
        i >>= 1
    high = 8 - segno
    low = 0x0F - ((absno >> segno) & 0x0F)
    code = (high << 4) | low
    code = np.where(x >= 0, code | 0x80, code)
    return np.asarray(code, dtype=np.uint8)


def _ulaw_expand(c: npt.NDArray[np.int32]) -> Samples:
    sign = np.where(c < 0x80, -1, 1)
    mantissa = ~c
    exponent = (mantissa >> 4) & 0x07
    segment = exponent + 1
    mantissa &= 0x0F
    step = 4 << segment
    value = (0x80 << exponent) + step * mantissa + step // 2 - 4 * 33
    return np.asarray(sign * value, dtype=np.int16)


def _alaw_compress(x: npt.NDArray[np.int32]) -> Codes:
    ix = np.where(x < 0, (~x) >> 4, x >> 4)
    iexp = np.zeros_like(ix)
    big = ix > 15
    shifted = ix.copy()
    exp = np.ones_like(ix)
    for _ in range(8):
        more = big & (shifted > 16 + 15)
        shifted = np.where(more, shifted >> 1, shifted)
        exp = np.where(more, exp + 1, exp)
    iexp = np.where(big, exp, 0)
    ix = np.where(big, shifted - 16 + (iexp << 4), ix)
    ix = np.where(x >= 0, ix | 0x80, ix)
    return (ix ^ 0x55).astype(np.uint8)


def _alaw_expand(c: npt.NDArray[np.int32]) -> Samples:
    ix = (c ^ 0x55) & 0x7F
    iexp = ix >> 4
    mant = ix & 0x0F
    mant = np.where(iexp > 0, mant + 16, mant)
    mant = (mant << 4) + 8
    mant = np.where(iexp > 1, mant << np.maximum(iexp - 1, 0), mant)
    return np.where(c > 127, mant, -mant).astype(np.int16)


_CODES = np.arange(256, dtype=np.int32)
ULAW_ENCODE: Codes = _ulaw_compress(_all_int16())
ULAW_DECODE: Samples = _ulaw_expand(_CODES)
ALAW_ENCODE: Codes = _alaw_compress(_all_int16())
ALAW_DECODE: Samples = _alaw_expand(_CODES)
for _table in (ULAW_ENCODE, ULAW_DECODE, ALAW_ENCODE, ALAW_DECODE):
    _table.setflags(write=False)


def ulaw_encode(samples: Samples) -> Codes:
    """int16 samples (any shape) to µ-law codes of the same shape."""
    return ULAW_ENCODE[samples.view(np.uint16)]


def ulaw_decode(codes: Codes) -> Samples:
    return ULAW_DECODE[codes]


def alaw_encode(samples: Samples) -> Codes:
    return ALAW_ENCODE[samples.view(np.uint16)]


def alaw_decode(codes: Codes) -> Samples:
    return ALAW_DECODE[codes]


def _pair_table(table: Samples) -> npt.NDArray[np.uint32]:
    """Two codes at once: indexed by a pair of code bytes as they lie in memory (read as
    one uint16), the pair of samples as they must lie (read as one uint32)."""
    codes = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.uint8).reshape(-1, 2)
    pairs = np.ascontiguousarray(table[codes])  # (65536, 2) int16, in either byte order
    out = pairs.view(np.uint32).ravel()
    out.setflags(write=False)
    return out


_PAIRS: dict[int, tuple[Samples, npt.NDArray[np.uint32]]] = {}


def decode_rows(table: Samples, codes: Codes) -> Samples:
    """``table[codes]`` for a 2-D block of codes with an even width, with half the
    look-ups (a 65536-entry table of sample pairs, 256 KB, made on first use): a tick's
    G.711 frames of a thousand legs decode in about half the time."""
    known = _PAIRS.get(id(table))
    if known is None or known[0] is not table:
        known = _PAIRS[id(table)] = (table, _pair_table(table))
    pairs = known[1]
    block = np.ascontiguousarray(codes)
    return np.take(pairs, block.view(np.uint16)).view(np.int16)
