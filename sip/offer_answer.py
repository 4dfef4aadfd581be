"""RFC 3264 offer/answer for audio over RTP/AVP, and SRTP with SDES keys (RFC 4568).

Codecs are named as in SDP; this module knows their payload types and clock rates, not
how to encode them (that is :mod:`media`).

Encryption is a policy per side: ``"off"`` (plain RTP; an RTP/SAVP line is refused),
``"optional"`` (SRTP when the peer offers keys; our offers are RTP/AVP with ``a=crypto``,
the "best effort" offer desk phones make) or ``"required"`` (RTP/SAVP only; an RTP/AVP
line without keys is refused). The caller decides the policy, and whether keys may be
sent at all: they travel in the clear over UDP or TCP (:func:`answer` is then asked with
``"off"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import sdes, webrtc
from .errors import ParseError
from .sdes import SrtpKeys
from .sdp import Connection, Media, Origin, RtpMap, SessionDescription


@dataclass(frozen=True, slots=True)
class Codec:
    """An RTP payload format as SDP names it (``clock_rate`` is the RTP clock)."""

    name: str
    clock_rate: int
    static_pt: int | None = None
    channels: int = 1
    fmtp: str | None = None

    def matches(self, pt: int, rtpmap: RtpMap | None) -> bool:
        if rtpmap is None:
            return self.static_pt is not None and pt == self.static_pt
        return (
            rtpmap.encoding.lower() == self.name.lower()
            and rtpmap.clock_rate == self.clock_rate
            and rtpmap.channels == self.channels
        )


PCMU = Codec("PCMU", 8000, 0)
PCMA = Codec("PCMA", 8000, 8)
# G.722 samples at 16 kHz but its RTP clock is 8000 by a historical error (RFC 3551 §4.5.2).
G722 = Codec("G722", 8000, 9)
# Opus: always opus/48000/2 in SDP, whatever is sent (RFC 7587 §7); a dynamic payload type.
OPUS = Codec("opus", 48000, None, channels=2, fmtp="useinbandfec=1")
TELEPHONE_EVENT = Codec("telephone-event", 8000, None, fmtp="0-16")
CODECS_BY_NAME = {c.name.lower(): c for c in (PCMU, PCMA, G722, OPUS)}
DEFAULT_DTMF_PT = 101

# offer direction -> our wish -> answer direction (RFC 3264 §6.1)
_ANSWER_DIRECTION: dict[str, dict[str, str]] = {
    "sendrecv": {d: d for d in ("sendrecv", "sendonly", "recvonly", "inactive")},
    "sendonly": {
        "sendrecv": "recvonly",
        "recvonly": "recvonly",
        "sendonly": "inactive",
        "inactive": "inactive",
    },
    "recvonly": {
        "sendrecv": "sendonly",
        "sendonly": "sendonly",
        "recvonly": "inactive",
        "inactive": "inactive",
    },
    "inactive": {d: "inactive" for d in ("sendrecv", "sendonly", "recvonly", "inactive")},
}
_REVERSE = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


@dataclass(slots=True)
class AudioStream:
    """What one side must do after offer/answer for the audio stream."""

    codec: Codec
    payload_type: int
    remote_address: str
    remote_port: int
    direction: str  # ours: sendrecv / sendonly / recvonly / inactive
    dtmf_payload_type: int | None = None
    ptime: int = 20
    media_index: int = 0
    remote_hold: bool = False  # the peer put us on hold (sendonly/inactive or c=0.0.0.0)
    codecs: list[tuple[int, Codec]] = field(default_factory=list)  # all agreed, best first
    remote_fmtp: str | None = None  # the peer's fmtp for the chosen payload type
    srtp: SrtpKeys | None = None  # SRTP keys, when the stream is encrypted
    webrtc: webrtc.Peer | None = None  # a browser's ICE/DTLS terms (its keys come by DTLS)

    @property
    def sends(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")

    @property
    def receives(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")


def _offered_codecs(media: Media) -> list[tuple[int, RtpMap | None]]:
    maps = media.rtpmaps
    out: list[tuple[int, RtpMap | None]] = []
    for fmt in media.formats:
        if fmt.isdigit() and int(fmt) <= 127:
            out.append((int(fmt), maps.get(int(fmt))))
    return out


ENCRYPTION = ("off", "optional", "required")
SECURE_PROFILES = ("RTP/SAVP", "RTP/SAVPF")


def _audio_media(media: Media, browsers: bool = False) -> bool:
    """An audio line we can take (``browsers``: UDP/TLS/RTP/SAVPF too)."""
    proto = media.proto.upper()
    return media.media == "audio" and (
        proto in ("RTP/AVP", "RTP/AVPF", *SECURE_PROFILES) or (browsers and proto == webrtc.PROFILE)
    )


def _keys_for(
    media: Media, encryption: str, key: bytes | None
) -> tuple[bool, tuple[sdes.Crypto, SrtpKeys] | None]:
    """Whether an offered audio line is acceptable under ``encryption``, and the crypto
    line we answer it with (None: plain RTP)."""
    secure = media.proto.upper() in SECURE_PROFILES
    if encryption == "off" or key is None:
        return not secure, None
    chosen = sdes.choose(media.attribute_values("crypto"), key)
    if chosen is None:  # no usable key: plain RTP, where the policy and profile allow it
        return not secure and encryption != "required", None
    return True, chosen


def _remote_direction(
    sdp: SessionDescription, media: Media, *, ice: bool = False
) -> tuple[str, bool]:
    """The peer's direction for ``media`` and whether it means hold (``ice``: a WebRTC
    line, whose c=0.0.0.0 says nothing: ICE gives its address)."""
    direction = sdp.media_direction(media)
    connection = sdp.media_connection(media)
    legacy_hold = connection is not None and connection.is_hold and not ice
    if legacy_hold and direction == "sendrecv":
        direction = "sendonly"  # RFC 2543 hold: the peer does not want our media
    return direction, direction in ("sendonly", "inactive")


def _audio_section(
    port: int,
    codecs: list[tuple[int, Codec]],
    dtmf_pt: int | None,
    direction: str,
    ptime: int,
    proto: str = "RTP/AVP",
    crypto: list[sdes.Crypto] | None = None,
) -> Media:
    media = Media("audio", port, proto, [str(pt) for pt, _ in codecs])
    for pt, codec in codecs:
        channels = f"/{codec.channels}" if codec.channels != 1 else ""
        media.attributes.append(("rtpmap", f"{pt} {codec.name}/{codec.clock_rate}{channels}"))
        if codec.fmtp:
            media.attributes.append(("fmtp", f"{pt} {codec.fmtp}"))
    if dtmf_pt is not None:
        media.formats.append(str(dtmf_pt))
        media.attributes.append(("rtpmap", f"{dtmf_pt} telephone-event/8000"))
        media.attributes.append(("fmtp", f"{dtmf_pt} {TELEPHONE_EVENT.fmtp}"))
    media.attributes.append(("ptime", str(ptime)))
    media.set_direction(direction)
    for line in crypto or ():
        media.attributes.append(("crypto", str(line)))
    return media


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def make_offer(
    address: str,
    port: int,
    codecs: tuple[Codec, ...] | list[Codec] = (PCMU, PCMA),
    *,
    dtmf: bool = True,
    direction: str = "sendrecv",
    ptime: int = 20,
    session_id: int = 0,
    session_version: int = 0,
    username: str = "-",
    encryption: str = "off",
    key: bytes | None = None,
    browser: webrtc.Local | None = None,
) -> SessionDescription:
    """An SDP offer for one audio stream; with ``encryption`` other than ``"off"``, SRTP
    keys cut from ``key`` (:func:`sip.sdes.new_key`): RTP/SAVP when required, RTP/AVP
    with ``a=crypto`` when optional. ``browser``: a WebRTC offer instead (ICE-lite, our
    one host candidate, DTLS-SRTP with ``setup:actpass``, rtcp-mux)."""
    if encryption not in ENCRYPTION:
        raise ValueError(f"encryption must be one of {ENCRYPTION}")
    if encryption != "off" and key is None:
        raise ValueError("an encrypted offer needs a key")
    secure = encryption == "required"
    offer_keys = encryption == "optional"
    numbered: list[tuple[int, Codec]] = []
    next_dynamic = 96
    for codec in codecs:
        if codec.static_pt is not None:
            numbered.append((codec.static_pt, codec))
        else:
            numbered.append((next_dynamic, codec))
            next_dynamic += 1
    addrtype = _addrtype(address)
    if browser is not None:
        section = _audio_section(
            port, numbered, DEFAULT_DTMF_PT if dtmf else None, direction, ptime, webrtc.PROFILE
        )
        section.attributes += webrtc.offer_attributes(browser, address, port)
        return SessionDescription(
            origin=Origin(username, session_id, session_version, "IN", addrtype, address),
            name="softswitch",
            connection=Connection(address, addrtype),
            media=[section],
            attributes=[("ice-lite", None), ("group", "BUNDLE 0")],
        )
    return SessionDescription(
        origin=Origin(username, session_id, session_version, "IN", addrtype, address),
        name="softswitch",
        connection=Connection(address, addrtype),
        media=[
            _audio_section(
                port,
                numbered,
                DEFAULT_DTMF_PT if dtmf else None,
                direction,
                ptime,
                "RTP/SAVP" if secure else "RTP/AVP",
                sdes.offer_lines(key) if key is not None and (secure or offer_keys) else None,
            )
        ],
    )


def _match_codecs(
    media: Media, supported: tuple[Codec, ...] | list[Codec]
) -> tuple[list[tuple[int, Codec]], int | None]:
    """Offered payload types we support, in the offerer's order, and its DTMF type."""
    agreed: list[tuple[int, Codec]] = []
    dtmf_pt: int | None = None
    for pt, rtpmap in _offered_codecs(media):
        if TELEPHONE_EVENT.matches(pt, rtpmap):
            if dtmf_pt is None:
                dtmf_pt = pt
            continue
        for codec in supported:
            if codec.matches(pt, rtpmap) and all(c != codec for _, c in agreed):
                agreed.append((pt, codec))
                break
    return agreed, dtmf_pt


def answer(
    offer: SessionDescription,
    address: str,
    port: int,
    codecs: tuple[Codec, ...] | list[Codec] = (PCMU, PCMA),
    *,
    dtmf: bool = True,
    direction: str = "sendrecv",
    session_id: int = 0,
    session_version: int = 0,
    username: str = "-",
    encryption: str = "off",
    key: bytes | None = None,
    browser: webrtc.Local | None = None,
) -> tuple[SessionDescription, AudioStream | None]:
    """Answer ``offer``: accept the first audio stream with a common codec that
    ``encryption`` allows (see the module's documentation), keyed from ``key`` when the
    peer offered SRTP.

    Every other media line is refused with port 0, as RFC 3264 §6 requires. Returns the
    answer and the negotiated stream (``None`` when nothing was acceptable; the caller
    should then send 488). ``browser``: our ICE and DTLS terms, with which a browser's
    ``UDP/TLS/RTP/SAVPF`` line is taken (:mod:`sip.webrtc`).
    """
    addrtype = _addrtype(address)
    result = SessionDescription(
        origin=Origin(username, session_id, session_version, "IN", addrtype, address),
        name="softswitch",
        connection=Connection(address, addrtype),
    )
    stream: AudioStream | None = None
    for index, media in enumerate(offer.media):
        agreed: list[tuple[int, Codec]] = []
        dtmf_pt: int | None = None
        keys: tuple[sdes.Crypto, SrtpKeys] | None = None
        remote: webrtc.Peer | None = None
        if stream is None and media.port != 0 and _audio_media(media, browser is not None):
            if media.proto.upper() == webrtc.PROFILE:
                remote = webrtc.peer(offer, media)
                allowed = remote is not None  # its keys come by DTLS, on the media port
            else:
                allowed, keys = _keys_for(media, encryption, key)
            if allowed:
                agreed, dtmf_pt = _match_codecs(media, codecs)
        connection = offer.media_connection(media)
        if remote is not None and remote.candidates:  # ICE: c= says nothing (0.0.0.0 9)
            connection = Connection(remote.candidates[0][0][0], _addrtype(address))
        if not agreed or connection is None:
            refused = Media(media.media, 0, media.proto, list(media.formats) or ["0"])
            result.media.append(refused)
            continue
        remote_dir, hold = _remote_direction(offer, media, ice=remote is not None)
        ours = _ANSWER_DIRECTION[remote_dir][direction]
        ptime = media.ptime or 20
        if not dtmf:
            dtmf_pt = None
        # Answer with just the chosen codec: simpler for peers, no mid-call switching.
        section = _audio_section(
            port, agreed[:1], dtmf_pt, ours, ptime, media.proto, [keys[0]] if keys else None
        )
        remote_port = media.port
        if remote is not None and browser is not None:
            section.attributes += webrtc.answer_attributes(browser, remote, address, port)
            result.attributes += webrtc.session_attributes(offer, remote)
            if remote.candidates:
                remote_port = remote.candidates[0][0][1]
        result.media.append(section)
        pt, codec = agreed[0]
        stream = AudioStream(
            codec,
            pt,
            connection.address,
            remote_port,
            ours,
            dtmf_pt,
            ptime,
            index,
            hold,
            agreed,
            media.fmtps.get(pt),
            keys[1] if keys else None,
            remote,
        )
    return result, stream


def process_answer(offer: SessionDescription, answer_sdp: SessionDescription) -> AudioStream:
    """The offerer's view after the answer arrives. Raises :class:`ParseError` if the
    answer does not fit the offer (no audio accepted, or a codec that was not offered)."""
    if len(answer_sdp.media) != len(offer.media):
        raise ParseError("SDP answer has a different number of media lines than the offer")
    for index, (ours, theirs) in enumerate(zip(offer.media, answer_sdp.media, strict=True)):
        browsers = ours.proto.upper() == webrtc.PROFILE
        if theirs.port == 0 or not _audio_media(theirs, browsers) or ours.port == 0:
            continue
        offered = {pt: codec for pt, codec in _numbered(ours)}
        agreed, dtmf_pt = _match_codecs(theirs, list(offered.values()))
        if not agreed:
            raise ParseError("SDP answer accepted no codec that was offered")
        connection = answer_sdp.media_connection(theirs)
        if connection is None:
            raise ParseError("SDP answer without a connection address")
        remote_dir, hold = _remote_direction(answer_sdp, theirs, ice=browsers)
        pt, codec = agreed[0]
        address, port = connection.address, theirs.port
        keys: SrtpKeys | None = None
        peer: webrtc.Peer | None = None
        if browsers:  # our offer to a browser: its keys come by DTLS, its address by ICE
            peer = webrtc.peer(answer_sdp, theirs, answering=True)
            if peer is None:
                raise ParseError("SDP answer to a WebRTC offer lacks ICE or DTLS terms")
            if peer.candidates:
                address, port = peer.candidates[0][0]
        else:
            offered_keys = ours.attribute_values("crypto")
            keys = sdes.accepted(offered_keys, theirs.attribute_values("crypto"))
            if keys is None and ours.proto.upper() in SECURE_PROFILES:
                raise ParseError("SDP answer took no SRTP key of the RTP/SAVP offer")
            if keys is None and theirs.proto.upper() in SECURE_PROFILES:
                raise ParseError("SDP answer is RTP/SAVP without a key of ours")
        return AudioStream(
            codec,
            pt,
            address,
            port,
            _REVERSE[remote_dir],
            dtmf_pt,
            theirs.ptime or ours.ptime or 20,
            index,
            hold,
            agreed,
            theirs.fmtps.get(pt),
            keys,
            peer,
        )
    raise ParseError("SDP answer refused every audio stream")


def _numbered(media: Media) -> list[tuple[int, Codec]]:
    out: list[tuple[int, Codec]] = []
    for pt, rtpmap in _offered_codecs(media):
        name = rtpmap.encoding.lower() if rtpmap else None
        if name is None:
            out.extend((pt, c) for c in CODECS_BY_NAME.values() if c.static_pt == pt)
        elif name in CODECS_BY_NAME:
            out.append((pt, CODECS_BY_NAME[name]))
    return out
