"""G.711 tables against independent code: a scalar transcription of the ITU-T G.191
reference (g711.c), and Python's audioop (Sun's implementation) where the two agree."""

from __future__ import annotations

import warnings

import numpy as np

from media import g711


def g191_ulaw_compress(x: int) -> int:
    absno = ((~x) >> 2 if x < 0 else x >> 2) + 33
    absno = min(absno, 0x1FFF)
    i = absno >> 6
    segno = 1
    while i != 0:
        segno += 1
        i >>= 1
    high = 0x0008 - segno
    low = 0x000F - ((absno >> segno) & 0x000F)
    code = (high << 4) | low
    return code | 0x80 if x >= 0 else code


def g191_ulaw_expand(code: int) -> int:
    sign = -1 if code < 0x80 else 1
    mantissa = ~code
    exponent = (mantissa >> 4) & 0x07
    segment = exponent + 1
    mantissa &= 0x0F
    step = 4 << segment
    return sign * ((0x80 << exponent) + step * mantissa + step // 2 - 4 * 33)


def g191_alaw_compress(x: int) -> int:
    ix = (~x) >> 4 if x < 0 else x >> 4
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if x >= 0:
        ix |= 0x80
    return ix ^ 0x55


def g191_alaw_expand(code: int) -> int:
    ix = (code ^ 0x55) & 0x7F
    iexp = ix >> 4
    mant = ix & 0x0F
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 8
    if iexp > 1:
        mant <<= iexp - 1
    return mant if code > 127 else -mant


ALL = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)


def test_encode_bit_exact_with_g191_for_every_sample() -> None:
    ulaw = [g191_ulaw_compress(int(x)) for x in ALL]
    alaw = [g191_alaw_compress(int(x)) for x in ALL]
    assert np.array_equal(g711.ulaw_encode(ALL), np.array(ulaw, dtype=np.uint8))
    assert np.array_equal(g711.alaw_encode(ALL), np.array(alaw, dtype=np.uint8))


def test_decode_bit_exact_with_g191_for_every_code() -> None:
    codes = np.arange(256, dtype=np.uint8)
    assert g711.ulaw_decode(codes).tolist() == [g191_ulaw_expand(c) for c in range(256)]
    assert g711.alaw_decode(codes).tolist() == [g191_alaw_expand(c) for c in range(256)]


def test_against_audioop() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:  # removed in Python 3.13
            return
    codes = bytes(range(256))
    assert np.array_equal(np.frombuffer(audioop.ulaw2lin(codes, 2), np.int16), g711.ULAW_DECODE)
    assert np.array_equal(np.frombuffer(audioop.alaw2lin(codes, 2), np.int16), g711.ALAW_DECODE)
    sun_alaw = np.frombuffer(audioop.lin2alaw(ALL.tobytes(), 2), np.uint8)
    assert np.array_equal(sun_alaw, g711.alaw_encode(ALL))
    # Sun's µ-law encoder rounds negative samples by two's complement (-x >> 2) where
    # G.191 uses one's complement (~x >> 2); they agree on every non-negative sample.
    sun_ulaw = np.frombuffer(audioop.lin2ulaw(ALL.tobytes(), 2), np.uint8)
    positive = ALL >= 0
    assert np.array_equal(sun_ulaw[positive], g711.ulaw_encode(ALL)[positive])


def test_round_trip_is_stable_and_shapes_kept() -> None:
    codes = np.arange(256, dtype=np.uint8)
    for enc, dec in ((g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)):
        values = dec(codes)
        assert np.array_equal(dec(enc(values)), values)
        block = np.zeros((3, 160), dtype=np.int16)
        assert enc(block).shape == (3, 160)


def test_rows_decode_in_pairs_as_one_by_one() -> None:
    """decode_rows (two codes per look-up) gives what the 256-entry tables give."""
    codes = np.random.default_rng(7).integers(0, 256, (50, 160), dtype=np.uint8)
    for table in (g711.ULAW_DECODE, g711.ALAW_DECODE):
        assert np.array_equal(g711.decode_rows(table, codes), table[codes])
        assert np.array_equal(g711.decode_rows(table, codes[::3, :80]), table[codes[::3, :80]])
