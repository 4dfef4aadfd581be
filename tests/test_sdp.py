from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sip
from sip import ParseError, parse_sdp
from sip.sdp import Connection, Media, Origin, SessionDescription

POLYCOM_OFFER = (
    "v=0\r\n"
    "o=- 1710003412 1710003412 IN IP4 192.0.2.10\r\n"
    "s=Polycom IP Phone\r\n"
    "c=IN IP4 192.0.2.10\r\n"
    "t=0 0\r\n"
    "a=sendrecv\r\n"
    "m=audio 2222 RTP/AVP 9 0 8 18 127\r\n"
    "a=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:18 G729/8000\r\n"
    "a=fmtp:18 annexb=no\r\n"
    "a=rtpmap:127 telephone-event/8000\r\n"
    "a=fmtp:127 0-15\r\n"
    "a=ptime:20\r\n"
    "m=video 2224 RTP/AVP 109\r\n"
    "a=rtpmap:109 H264/90000\r\n"
)

line = st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=20).map(str.strip)
word = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10)
attrs = st.lists(st.tuples(word, st.none() | line), max_size=4)
addresses = st.ip_addresses(v=4).map(str)


@st.composite
def descriptions(draw: st.DrawFn) -> SessionDescription:
    media = [
        Media(
            draw(st.sampled_from(["audio", "video", "application"])),
            draw(st.integers(0, 65535)),
            draw(st.sampled_from(["RTP/AVP", "RTP/SAVP", "UDP/TLS/RTP/SAVPF"])),
            draw(st.lists(st.integers(0, 127).map(str), min_size=1, max_size=5)),
            connection=draw(st.none() | addresses.map(Connection)),
            attributes=draw(attrs),
        )
        for _ in range(draw(st.integers(0, 3)))
    ]
    return SessionDescription(
        origin=Origin(
            draw(word),
            draw(st.integers(0, 2**63)),
            draw(st.integers(0, 2**63)),
            "IN",
            "IP4",
            draw(addresses),
        ),
        name=draw(line.filter(bool)),
        connection=draw(st.none() | addresses.map(Connection)),
        media=media,
        attributes=draw(attrs),
        times=[(draw(st.integers(0, 2**40)), 0)],
    )


@given(descriptions())
def test_sdp_round_trip(sdp: SessionDescription) -> None:
    text = str(sdp)
    parsed = parse_sdp(text.encode())
    assert parsed == sdp
    assert str(parsed) == text


@given(st.binary(max_size=512))
def test_sdp_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_sdp(data)


def test_polycom_offer() -> None:
    sdp = parse_sdp(POLYCOM_OFFER.encode())
    audio = sdp.media[0]
    assert audio.formats == ["9", "0", "8", "18", "127"]
    assert audio.rtpmaps[127].encoding == "telephone-event"
    assert audio.fmtps[18] == "annexb=no"
    assert audio.ptime == 20
    assert sdp.media_direction(audio) == "sendrecv"
    assert str(sdp) == POLYCOM_OFFER


@pytest.mark.parametrize(
    "text",
    [
        "",
        "o=- 1 1 IN IP4 1.2.3.4\r\n",
        "v=0\r\ns=x\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=x\r\nm=audio port RTP/AVP 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=x\r\nc=IN IP4\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=x\r\nbogus\r\n",
    ],
)
def test_bad_sdp(text: str) -> None:
    with pytest.raises(ParseError):
        parse_sdp(text)


def test_direction_helpers() -> None:
    sdp = sip.make_offer("192.0.2.1", 4000, direction="sendonly")
    assert sdp.media[0].direction == "sendonly"
    sdp.media[0].set_direction("inactive")
    assert sdp.media_direction(sdp.media[0]) == "inactive"
