from __future__ import annotations

import pytest

import sip
from sip import G722, PCMA, PCMU, ParseError, answer, make_offer, parse_sdp, process_answer

from .test_sdp import POLYCOM_OFFER


def test_answer_picks_first_common_codec_and_refuses_video() -> None:
    offer = parse_sdp(POLYCOM_OFFER)
    ans, stream = answer(offer, "192.0.2.1", 30000, (PCMU, PCMA))
    assert stream is not None
    assert stream.codec == PCMU and stream.payload_type == 0
    assert stream.dtmf_payload_type == 127
    assert (stream.remote_address, stream.remote_port) == ("192.0.2.10", 2222)
    assert stream.direction == "sendrecv" and not stream.remote_hold
    assert [c for _, c in stream.codecs] == [PCMU, PCMA]
    audio, video = ans.media
    assert audio.port == 30000 and audio.formats == ["0", "127"]
    assert audio.fmtps[127] == "0-16"
    assert video.port == 0 and video.media == "video"
    # the answer is a valid SDP for the offerer too
    back = process_answer(offer, parse_sdp(bytes(ans)))
    assert back.codec == PCMU and back.remote_port == 30000 and back.dtmf_payload_type == 127


def test_g722_preferred_when_offered_first() -> None:
    _, stream = answer(parse_sdp(POLYCOM_OFFER), "192.0.2.1", 30000, (G722, PCMU, PCMA))
    assert stream is not None and stream.codec == G722 and stream.payload_type == 9


def test_no_common_codec() -> None:
    offer = make_offer("192.0.2.2", 4000, (G722,))
    ans, stream = answer(offer, "192.0.2.1", 30000, (PCMU,))
    assert stream is None and ans.media[0].port == 0


@pytest.mark.parametrize(
    ("offered", "wish", "answered", "hold"),
    [
        ("sendrecv", "sendrecv", "sendrecv", False),
        ("sendonly", "sendrecv", "recvonly", True),
        ("recvonly", "sendrecv", "sendonly", False),
        ("inactive", "sendrecv", "inactive", True),
        ("sendrecv", "sendonly", "sendonly", False),
        ("sendonly", "sendonly", "inactive", True),
    ],
)
def test_directions(offered: str, wish: str, answered: str, hold: bool) -> None:
    offer = make_offer("192.0.2.2", 4000, direction=offered)
    ans, stream = answer(offer, "192.0.2.1", 30000, direction=wish)
    assert stream is not None
    assert ans.media[0].direction == answered == stream.direction
    assert stream.remote_hold is hold
    mine = process_answer(offer, ans)
    assert (
        mine.direction
        == {
            "sendrecv": "sendrecv",
            "recvonly": "sendonly",
            "sendonly": "recvonly",
            "inactive": "inactive",
        }[answered]
    )


def test_legacy_hold_connection_zero() -> None:
    offer = make_offer("192.0.2.2", 4000)
    assert offer.connection is not None
    offer.connection = sip.Connection("0.0.0.0")
    _ans, stream = answer(offer, "192.0.2.1", 30000)
    assert stream is not None and stream.remote_hold and stream.direction == "recvonly"


def test_bad_answers() -> None:
    offer = make_offer("192.0.2.2", 4000, (PCMU,))
    other = make_offer("192.0.2.3", 5000, (PCMA,))
    with pytest.raises(ParseError):
        process_answer(offer, other)
    refused, _ = answer(make_offer("192.0.2.3", 5000, (G722,)), "192.0.2.1", 1, (PCMU,))
    with pytest.raises(ParseError):
        process_answer(offer, refused)


def test_ipv6_offer() -> None:
    offer = make_offer("2001:db8::1", 4000)
    assert "c=IN IP6 2001:db8::1" in str(offer)
    _, stream = answer(parse_sdp(str(offer)), "2001:db8::2", 5000)
    assert stream is not None and stream.remote_address == "2001:db8::1"
