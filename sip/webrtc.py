"""The WebRTC side of SDP (RFC 8839 ICE, RFC 8842 DTLS, RFC 5761 rtcp-mux): what a browser
says about its media line, and what an ICE-lite, DTLS-SRTP answerer says back.

A browser's audio line is ``UDP/TLS/RTP/SAVPF``: its ICE credentials (``a=ice-ufrag``,
``a=ice-pwd``), its candidates, the fingerprint of its DTLS certificate, its DTLS role
offer (``a=setup:actpass``), RTCP on the RTP port (``a=rtcp-mux``) and a ``mid`` for
BUNDLE. :mod:`sip.offer_answer` takes such a line only when the answerer gives
:class:`Local` terms, and answers it as ICE-lite with one host candidate, ``setup:passive``
(the browser opens DTLS), ``rtcp-mux`` and the same ``mid``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .sdp import Media, SessionDescription

PROFILE = "UDP/TLS/RTP/SAVPF"
MAX_CANDIDATES = 32
_CANDIDATE = re.compile(  # foundation component transport priority address port typ kind
    r"(\S{1,32}) ([0-9]{1,3}) (?i:udp) ([0-9]{1,10}) (\S{1,64}) ([0-9]{1,5})"
    r" typ (host|srflx|prflx|relay)\b"
)
_FINGERPRINT = re.compile(r"(sha-256|sha-384|sha-512) ((?:[0-9A-Fa-f]{2}:)+[0-9A-Fa-f]{2})\Z")


@dataclass(frozen=True, slots=True)
class Local:
    """Our terms for a WebRTC line: ICE credentials and the DTLS certificate's fingerprint
    (algorithm, ``AB:CD:...``)."""

    ufrag: str
    pwd: str
    fingerprint: tuple[str, str]


@dataclass(frozen=True, slots=True)
class Peer:
    """What the browser's line says: its ICE credentials, its UDP candidates (address,
    priority), its certificate's fingerprint, the DTLS role we take (``server``: it opens
    the handshake) and its ``mid``."""

    ufrag: str
    pwd: str
    fingerprint: tuple[str, str]
    server: bool
    mid: str | None
    candidates: list[tuple[tuple[str, int], int]] = field(default_factory=list)


def _value(sdp: SessionDescription, media: Media, name: str) -> str | None:
    value = media.attribute(name)
    return value if value is not None else sdp.attribute(name)


def peer(sdp: SessionDescription, media: Media, *, answering: bool = False) -> Peer | None:
    """The browser's terms on ``media``, or None when a WebRTC line lacks what it needs
    (ICE credentials, a fingerprint we can check, rtcp-mux, a DTLS role we can take).
    ``answering``: ``media`` answers our ``actpass`` offer (it must pick a role)."""
    ufrag, pwd = _value(sdp, media, "ice-ufrag"), _value(sdp, media, "ice-pwd")
    found = _FINGERPRINT.match((_value(sdp, media, "fingerprint") or "").strip())
    setup = (_value(sdp, media, "setup") or "actpass").strip().lower()
    if not ufrag or not pwd or found is None or media.attribute("rtcp-mux") is None:
        return None
    if setup not in (("active", "passive") if answering else ("actpass", "active", "passive")):
        return None
    candidates: list[tuple[tuple[str, int], int]] = []
    for value in media.attribute_values("candidate")[:MAX_CANDIDATES]:
        m = _CANDIDATE.match(value.strip())
        if m is not None and m.group(2) == "1":  # component 1: RTP (and RTCP, muxed)
            candidates.append(((m.group(4), int(m.group(5))), int(m.group(3))))
    candidates.sort(key=lambda c: -c[1])
    return Peer(
        ufrag.strip(),
        pwd.strip(),
        (found.group(1), found.group(2).upper()),
        setup != "passive",  # actpass or active: the browser is the DTLS client
        media.attribute("mid"),
        candidates,
    )


def answer_attributes(
    local: Local, remote: Peer, address: str, port: int
) -> list[tuple[str, str | None]]:
    """Our answer line's WebRTC attributes: one host candidate at ``address:port``."""
    attributes: list[tuple[str, str | None]] = []
    if remote.mid is not None:
        attributes.append(("mid", remote.mid))
    attributes += [
        ("rtcp-mux", None),
        ("ice-ufrag", local.ufrag),
        ("ice-pwd", local.pwd),
        ("fingerprint", f"{local.fingerprint[0]} {local.fingerprint[1]}"),
        ("setup", "passive" if remote.server else "active"),
        ("candidate", f"1 1 udp 2130706431 {address} {port} typ host"),
        ("end-of-candidates", None),
    ]
    return attributes


def offer_attributes(local: Local, address: str, port: int) -> list[tuple[str, str | None]]:
    """Our offer line's WebRTC attributes (to a browser: it picks the DTLS role)."""
    return [
        ("mid", "0"),
        ("rtcp-mux", None),
        ("ice-ufrag", local.ufrag),
        ("ice-pwd", local.pwd),
        ("fingerprint", f"{local.fingerprint[0]} {local.fingerprint[1]}"),
        ("setup", "actpass"),
        ("candidate", f"1 1 udp 2130706431 {address} {port} typ host"),
        ("end-of-candidates", None),
    ]


def session_attributes(offer: SessionDescription, remote: Peer) -> list[tuple[str, str | None]]:
    """Session attributes of our answer: ICE-lite, and BUNDLE of the one line when the
    offer bundles."""
    attributes: list[tuple[str, str | None]] = [("ice-lite", None)]
    if remote.mid is not None and offer.attribute("group") is not None:
        attributes.append(("group", f"BUNDLE {remote.mid}"))
    return attributes
