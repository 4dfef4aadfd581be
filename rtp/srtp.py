"""SRTP and SRTCP (RFC 3711, AEAD-GCM RFC 7714) through libsrtp 2 (``pylibsrtp``).

The media engine protects and verifies packets where they already are: in the rows of its
receive and send arrays (:mod:`rtp.batch`). libsrtp works in place, so a row is handed to
``srtp_protect``/``srtp_unprotect`` by address, with no ``bytes`` made per packet; a row
must leave :data:`TRAILER` bytes free after the packet for the authentication tag.

One :class:`SrtpContext` is one direction of one leg: outbound (our key, any SSRC we send)
or inbound (the peer's key). libsrtp keeps the replay window per SSRC and learns a new SSRC
of an inbound context only from a packet that authenticates, so forged packets cost a
check each and allocate nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from pylibsrtp import Error, Policy, Session
from pylibsrtp._binding import ffi, lib

Ints = npt.NDArray[np.int64]
Bytes = npt.NDArray[np.uint8]

PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
}
TRAILER = 16  # bytes a protected RTP packet may grow by (the longest tag; we use no MKI)
# libsrtp's status codes (srtp_err_status_t) that name a refusal's reason
_REASONS = {7: "srtp_auth", 9: "srtp_replay", 10: "srtp_replay", 26: "srtp_replay"}
REASONS = ("srtp_auth", "srtp_replay", "srtp_error")


def reason(status: int) -> str:
    """The counter a refused packet goes to, from libsrtp's status."""
    return _REASONS.get(status, "srtp_error")


class SrtpContext:
    """One direction of a leg's SRTP and SRTCP: a suite and a master key + salt."""

    def __init__(self, suite: str, key: bytes, *, inbound: bool) -> None:
        kind = Policy.SSRC_ANY_INBOUND if inbound else Policy.SSRC_ANY_OUTBOUND
        self.suite = suite
        self.key = key
        self.inbound = inbound
        self._session = Session(Policy(key=key, ssrc_type=kind, srtp_profile=PROFILES[suite]))
        self.ctx = self._session._srtp[0]  # libsrtp's srtp_t, for the in-place calls

    def protect_rtcp(self, packet: bytes) -> bytes:
        return self._session.protect_rtcp(packet)

    def unprotect_rtcp(self, packet: bytes) -> bytes | None:
        """The plain RTCP of an SRTCP packet, or None when it does not verify."""
        try:
            return self._session.unprotect_rtcp(packet)
        except (Error, ValueError):
            return None


def protect_rows(
    contexts: Sequence[SrtpContext], data: Bytes, rows: Ints, length: Ints
) -> list[int]:
    """Protect the RTP packet of each of ``rows`` of ``data`` in place with the context
    of the same index, ``length`` updated; returns the rows libsrtp refused (a key
    used up), which must not be sent."""
    return _process(lib.srtp_protect, contexts, data, rows, length, TRAILER)[0]


def unprotect_rows(
    contexts: Sequence[SrtpContext], data: Bytes, rows: Ints, length: Ints
) -> tuple[list[int], list[int]]:
    """Verify and decrypt the SRTP packet of each of ``rows`` in place (``length``
    updated); returns the rows that did not verify and libsrtp's status for each."""
    return _process(lib.srtp_unprotect, contexts, data, rows, length, 0)


def _process(
    func: object,
    contexts: Sequence[SrtpContext],
    data: Bytes,
    rows: Ints,
    length: Ints,
    grows: int,
) -> tuple[list[int], list[int]]:
    if not data.flags.c_contiguous or data.ndim != 2:
        raise ValueError("rows must be a C-contiguous 2-D array")
    width = data.shape[1]
    limit = width - grows  # libsrtp writes the tag after the packet: it must fit the row
    base = ffi.cast("char *", ffi.from_buffer(data))
    size = ffi.new("int *")
    sizes = length[rows].tolist()
    failed: list[int] = []
    status: list[int] = []
    for i, (context, row) in enumerate(zip(contexts, rows.tolist(), strict=True)):
        size[0] = sizes[i]
        if not 12 <= sizes[i] <= limit:
            failed.append(row)
            status.append(2)  # srtp_err_status_bad_param
            continue
        # libsrtp's srtp_protect or srtp_unprotect: (ctx, buffer, int *len), in place
        rc = func(context.ctx, base + row * width, size)  # type: ignore[operator]
        if rc:
            failed.append(row)
            status.append(rc)
        else:
            sizes[i] = size[0]
    length[rows] = sizes
    return failed, status
