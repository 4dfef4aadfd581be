from __future__ import annotations

import pytest
from hypothesis import given

from sip import ParseError, parse_uri
from sip.uri import URI

from .strategies import uris


@given(uris)
def test_uri_round_trip(uri: URI) -> None:
    text = str(uri)
    parsed = parse_uri(text)
    assert parsed == uri
    assert str(parsed) == text


def test_components() -> None:
    u = parse_uri("sips:alice:secret@[2001:db8::1]:5071;transport=tcp;lr?Subject=hi%20there&X=1")
    assert (u.scheme, u.user, u.password, u.host, u.port) == (
        "sips",
        "alice",
        "secret",
        "[2001:db8::1]",
        5071,
    )
    assert u.host_bare == "2001:db8::1"
    assert u.params == {"transport": "tcp", "lr": None}
    assert u.transport == "tcp"
    assert u.headers == {"Subject": "hi there", "X": "1"}
    t = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert t.user == "+1-201-555-0123" and t.params == {"phone-context": "example.com"}
    assert parse_uri("sip:example.com").user is None
    assert parse_uri("sip:Alice@Example.COM:5060").aor == "sip:Alice@example.com"


# RFC 3261 §19.1.4: pairs that are equivalent and pairs that are not.
EQUAL = [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
    (
        "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
        "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
    ),
    (
        "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
    ),
    ("tel:+1-201-555-0123", "tel:+12015550123"),
]
UNEQUAL = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
    ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
    ("sip:alice@example.com", "sips:alice@example.com"),
]


@pytest.mark.parametrize(("a", "b"), EQUAL)
def test_equivalent(a: str, b: str) -> None:
    assert parse_uri(a) == parse_uri(b)
    assert parse_uri(b) == parse_uri(a)


@pytest.mark.parametrize(("a", "b"), UNEQUAL)
def test_not_equivalent(a: str, b: str) -> None:
    assert parse_uri(a) != parse_uri(b)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip:",
        "sip:@example.com",
        "sip:alice@",
        "sip:alice@exa mple.com",
        "sip:alice@example.com:99999",
        "sip:alice@example.com:port",
        "sip:alice@[::1",
        "sip:alice@[zz::1]",
        "sip:al%zzice@example.com",
        "sip:alice@example.com;;lr",
        "sip:alice@example.com?novalue",
        "<sip:alice@example.com>",
        "tel:",
        'sip:al"ice@example.com',
    ],
)
def test_bad_uris(text: str) -> None:
    with pytest.raises(ParseError):
        parse_uri(text)


def test_uri_length_is_bounded() -> None:
    from sip.uri import MAX_URI_LENGTH, MAX_USER_LENGTH

    user = "u" * MAX_USER_LENGTH
    assert parse_uri(f"sip:{user}@example.com").user == user
    assert parse_uri(f"tel:+{'1' * (MAX_USER_LENGTH - 1)}").scheme == "tel"
    for text in (
        f"sip:{user}u@example.com",  # the everyday shape, one character too many
        f"sip:{user}%41@example.com",
        f"tel:+{'1' * MAX_USER_LENGTH}",
        "sip:example.com;p=" + "x" * MAX_URI_LENGTH,
        "http://" + "x" * MAX_URI_LENGTH,
    ):
        with pytest.raises(ParseError, match="exceeds"):
            parse_uri(text)
