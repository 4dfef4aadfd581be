"""ICE-lite (RFC 8445 §2.5) for one WebRTC leg: we never send checks, we answer the
browser's, on the port our SDP names (its one ``host`` candidate).

A connectivity check is a STUN Binding request (RFC 5389) whose USERNAME is
``<our ufrag>:<their ufrag>``, authenticated by MESSAGE-INTEGRITY with our password and
ending with a FINGERPRINT; the answer is a Binding success naming the source address
the request came from (XOR-MAPPED-ADDRESS), authenticated the same way. A check that
does not authenticate gets nothing (RFC 8445 §7.3: a 401 would tell a stranger who
listens). What a check with USE-CANDIDATE nominates is where the leg's media goes.

STUN, DTLS and RTP share the port; the first byte tells them apart (RFC 7983):
0-3 STUN, 20-63 DTLS, 128-191 RTP and RTCP.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass

from aioice import stun

Address = tuple[str, int]
_ICE_CHARS = string.ascii_letters + string.digits + "+/"


def kind(first_byte: int) -> str:
    """What a datagram on a WebRTC leg's port is, by its first byte (RFC 7983 §7)."""
    if first_byte < 4:
        return "stun"
    if 20 <= first_byte < 64:
        return "dtls"
    if 128 <= first_byte < 192:
        return "rtp"
    return "other"


def local_ufrag(data: bytes) -> str | None:
    """Our part of a STUN request's USERNAME (``ours:theirs``), read without parsing the
    rest: which leg a check is for, before that leg's agent judges it."""
    pos = 20
    while pos + 4 <= len(data):
        kind_, length = (
            int.from_bytes(data[pos : pos + 2], "big"),
            int.from_bytes(data[pos + 2 : pos + 4], "big"),
        )
        if kind_ == 0x0006:  # USERNAME
            value = data[pos + 4 : pos + 4 + length]
            return value.split(b":", 1)[0].decode("ascii", "replace")
        pos += 4 + length + (-length % 4)
    return None


def _ice_string(length: int) -> str:
    return "".join(secrets.choice(_ICE_CHARS) for _ in range(length))


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one STUN datagram: ``reply`` to send back to its source (None:
    nothing), whether it ``nominated`` its source, and why it was refused if it was."""

    reply: bytes | None
    nominated: bool = False
    refused: str | None = None


class IceLite:
    """Our ICE-lite agent for one leg: our credentials (for our SDP), the browser's
    ufrag (from its SDP) once known."""

    def __init__(self, ufrag: str | None = None, pwd: str | None = None) -> None:
        self.ufrag = ufrag or _ice_string(8)  # RFC 8445 §5.3: at least 4 characters
        self.pwd = pwd or _ice_string(24)  # and at least 22 for the password
        self.remote_ufrag: str | None = None
        self.nominated: Address | None = None
        self.checks = 0  # authenticated checks answered

    def answer(self, data: bytes, source: Address) -> Verdict:
        """The browser's connectivity check from ``source``, answered or refused."""
        try:
            message = stun.parse_message(data)
        except ValueError as exc:  # malformed, or a FINGERPRINT that does not match
            return Verdict(None, refused=f"stun_malformed:{exc}")
        if (
            message.message_method != stun.Method.BINDING
            or message.message_class != stun.Class.REQUEST
        ):
            return Verdict(None, refused="stun_not_a_check")
        username = message.attributes.get("USERNAME", "")
        ours, _, theirs = username.partition(":")
        if ours != self.ufrag or (self.remote_ufrag is not None and theirs != self.remote_ufrag):
            return Verdict(None, refused="stun_username")
        if "FINGERPRINT" not in message.attributes or not message.check_message_integrity(
            self.pwd.encode()
        ):
            return Verdict(None, refused="stun_integrity")
        self.checks += 1
        response = stun.Message(
            stun.Method.BINDING,
            stun.Class.RESPONSE,
            transaction_id=message.transaction_id,
            attributes={"XOR-MAPPED-ADDRESS": source},
        )
        response.add_message_integrity(self.pwd.encode())
        response.add_fingerprint()
        nominated = "USE-CANDIDATE" in message.attributes
        if nominated:
            self.nominated = source
        return Verdict(bytes(response), nominated)
