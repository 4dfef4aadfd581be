"""SDES: SRTP keys in SDP (RFC 4568 ``a=crypto``), as offer/answer needs them.

Only the SDP side lives here: which suites exist, how a crypto attribute is read and
written, which offered line an answerer takes. The keys are used by :mod:`rtp.srtp`.

A crypto attribute: ``<tag> <suite> inline:<base64 key||salt>[|<lifetime>][|<MKI>:<len>]
[<session params>]``. We accept one key per line, no MKI and no session parameter (each
of them changes how packets look; RFC 4568 §6.3.2 lets the answerer skip such lines), and
answer with the offer's tag and suite and a key of our own.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass

# suite -> bytes of master key + master salt (RFC 4568 §6.2, RFC 7714 §12)
SUITES: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": 30,
    "AES_CM_128_HMAC_SHA1_32": 30,
    "AEAD_AES_128_GCM": 28,
}
# what our offers list, best first (the 80-bit tag is what every phone takes)
OFFERED = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM")
KEY_BYTES = max(SUITES.values())  # a leg's master key material, cut to its suite's length
MAX_TAG = 999_999_999  # RFC 4568 §9.1: 1*9DIGIT
MAX_CRYPTO_LINES = 16

_CRYPTO = re.compile(
    r"([0-9]{1,9}) +([A-Za-z0-9_]{1,64}) +inline:([A-Za-z0-9+/=]{1,128})(\|[^ ]*)?( .*)?\Z"
)
_LIFETIME = re.compile(r"(2\^[0-9]{1,2}|[0-9]{1,20})\Z")


@dataclass(frozen=True, slots=True)
class Crypto:
    """One ``a=crypto`` line: tag, suite and master key + salt."""

    tag: int
    suite: str
    key: bytes

    def __str__(self) -> str:
        return f"{self.tag} {self.suite} inline:{base64.b64encode(self.key).decode()}"


@dataclass(frozen=True, slots=True)
class SrtpKeys:
    """What both directions of an SRTP stream need: the suite, our key (what we send is
    protected with it) and the peer's (what we receive)."""

    suite: str
    local: bytes
    remote: bytes


def new_key() -> bytes:
    """Master key material for one leg (long enough for every suite)."""
    return secrets.token_bytes(KEY_BYTES)


def parse_crypto(value: str) -> Crypto | None:
    """An ``a=crypto`` value we can use, else None: an unknown suite, a key of the wrong
    length, several keys, an MKI, a short lifetime or a session parameter are lines an
    answerer skips (RFC 4568 §6.3.2), not errors."""
    m = _CRYPTO.match(value.strip())
    if m is None:
        return None
    tag, suite, encoded, extra, session = m.groups()
    length = SUITES.get(suite)
    if length is None or int(tag) > MAX_TAG or session:
        return None
    if extra:  # "|lifetime" alone; an MKI ("|1:4") changes the packet format
        parts = extra[1:].split("|")
        if len(parts) != 1 or _LIFETIME.match(parts[0]) is None:
            return None
        lifetime = parts[0]
        if (2 ** int(lifetime[2:]) if lifetime.startswith("2^") else int(lifetime)) < 2**31:
            return None  # we never rekey: a key that must change sooner is not usable
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(key) != length:
        return None
    return Crypto(int(tag), suite, key)


def offer_lines(key: bytes) -> list[Crypto]:
    """Our offer's crypto lines: every suite, tags 1, 2, ..., one key cut to each."""
    return [Crypto(i, suite, key[: SUITES[suite]]) for i, suite in enumerate(OFFERED, 1)]


def choose(values: list[str], key: bytes) -> tuple[Crypto, SrtpKeys] | None:
    """The answerer's pick among an offer's crypto values: the first usable line (the
    offerer's preference), answered with its tag and suite and our ``key``."""
    for value in values[:MAX_CRYPTO_LINES]:
        theirs = parse_crypto(value)
        if theirs is not None:
            ours = Crypto(theirs.tag, theirs.suite, key[: SUITES[theirs.suite]])
            return ours, SrtpKeys(theirs.suite, ours.key, theirs.key)
    return None


def accepted(offered: list[str], answered: list[str]) -> SrtpKeys | None:
    """The offerer's view: the keys of the answer's crypto line, which must carry a tag
    and suite of the offer; None when the answer took no line of ours."""
    ours = {c.tag: c for c in map(parse_crypto, offered) if c is not None}
    for value in answered[:MAX_CRYPTO_LINES]:
        theirs = parse_crypto(value)
        mine = ours.get(theirs.tag) if theirs is not None else None
        if theirs is not None and mine is not None and mine.suite == theirs.suite:
            return SrtpKeys(theirs.suite, mine.key, theirs.key)
    return None
