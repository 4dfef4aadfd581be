from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import sip
from sip import Headers, ParseError, Request, Response

from . import torture
from .strategies import messages

INVITE = torture.msg(
    "INVITE sip:bob@biloxi.example.com SIP/2.0",
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport",
    "Max-Forwards: 70",
    'To: "Bob" <sip:bob@biloxi.example.com>',
    'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774',
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
    "CSeq: 314159 INVITE",
    "Contact: <sip:alice@pc33.atlanta.example.com>",
    "Content-Type: application/sdp",
    f"Content-Length: {len(torture.SDP_SMALL)}",
    body=torture.SDP_SMALL,
)


@given(messages())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_serialise_parse_is_stable(message: Request | Response) -> None:
    data = bytes(message)
    parsed = sip.parse(data)
    assert bytes(parsed) == data
    assert type(parsed) is type(message)
    assert parsed.call_id == message.call_id
    assert parsed.cseq == message.cseq
    assert parsed.body == message.body
    assert [str(v) for v in parsed.via] == [str(v) for v in message.via]
    assert parsed.from_.uri == message.from_.uri
    assert parsed.from_.display == message.from_.display
    assert parsed.to.params == message.to.params
    if isinstance(message, Request):
        assert isinstance(parsed, Request)
        assert parsed.method == message.method and parsed.uri == message.uri
    else:
        assert isinstance(parsed, Response)
        assert (parsed.status, parsed.reason) == (message.status, message.reason)


def _typed_views(m: Request | Response) -> list[object]:
    start = (m.method, str(m.uri)) if isinstance(m, Request) else (m.status, m.reason)
    contact = [str(c) for c in m.contact] if "Contact" in m.headers else None
    views = [str(v) for v in m.via], str(m.from_), str(m.to), m.call_id, m.cseq, contact
    return [start, *views, list(m.headers), m.body, m.max_forwards]


@given(messages(), st.sampled_from(["\n", "\r\n "]))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_the_plain_head_fast_path_equals_the_general_parser(
    message: Request | Response, line_end: str
) -> None:
    """A head of CRLF lines takes the fast path; the same head with bare LF line ends, or
    folded (every line continued on the next), is read by the general parser: same values."""
    data = bytes(message)
    head, _, body = data.partition(b"\r\n\r\n")
    first, _, fields = head.partition(b"\r\n")
    if line_end == "\n":
        other = head.replace(b"\r\n", b"\n") + b"\n\n" + body
    else:  # each header value folded after its colon
        folded = b"\r\n".join(line.replace(b": ", b":\r\n ", 1) for line in fields.split(b"\r\n"))
        other = first + b"\r\n" + folded + b"\r\n\r\n" + body
    assert _typed_views(sip.parse(other)) == _typed_views(sip.parse(data))


def test_route_and_record_route_are_parsed_when_first_read() -> None:
    data = INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 70\r\nRecord-Route: <sip:p;lr")
    m = sip.parse(data)  # the transaction layer's headers are fine: it parses
    with pytest.raises(ParseError, match="Record-Route"):
        _ = m.record_route
    good = sip.parse(data.replace(b"<sip:p;lr", b"<sip:p.example;lr>, <sip:q.example;lr>"))
    assert [str(r.uri) for r in good.record_route] == ["sip:p.example;lr", "sip:q.example;lr"]


@given(st.binary(max_size=2048))
@example(b"")
@example(b"\r\n\r\n")
@example(b"SIP/2.0 200 OK\r\n\r\n")
@example(b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP [::1:5060\r\n\r\n")
@example(b"\xff\xfe\x00" * 30)
def test_arbitrary_bytes_only_raise_parse_error(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        sip.parse(data)


@given(
    st.sampled_from(sorted(torture.VALID) + sorted(torture.INVALID)),
    st.lists(
        st.tuples(st.integers(0, 10_000), st.binary(max_size=4), st.integers(0, 4)),
        min_size=1,
        max_size=6,
    ),
)
@settings(max_examples=400)
def test_mutated_messages_only_raise_parse_error(
    name: str, edits: list[tuple[int, bytes, int]]
) -> None:
    data = bytearray(torture.VALID[name] if name in torture.VALID else torture.INVALID[name][0])
    for pos, insert, delete in edits:
        pos %= len(data) + 1
        data[pos : pos + delete] = insert
    try:
        message = sip.parse(bytes(data))
    except ParseError:
        return
    # whatever parsed must also serialise and parse again
    sip.parse(bytes(message))


def test_parse_typed_views_and_compact_forms() -> None:
    m = sip.parse(INVITE)
    assert isinstance(m, Request)
    assert m.via[0].branch == "z9hG4bK776asdhds" and m.via[0].rport is None
    assert "rport" in m.via[0].params
    assert m.to.display == "Bob" and m.from_.tag == "1928301774"
    assert m.contact[0].uri.user == "alice"
    compact = sip.parse(
        b"OPTIONS sip:a@b.example SIP/2.0\r\nv: SIP/2.0/TCP h;branch=z9hG4bKx\r\n"
        b"f: <sip:c@d>;tag=1\r\nt: sip:a@b.example\r\ni: x\r\nCSeq: 1 OPTIONS\r\n"
        b"k: replaces, 100rel\r\nm: <sip:c@h>\r\nl: 0\r\n\r\n"
    )
    assert compact.headers.values("Supported") == ["replaces", "100rel"]
    assert b"\r\nSupported: replaces, 100rel\r\n" in bytes(compact)
    assert compact.contact[0].uri.host == "h"


def test_headers_container() -> None:
    h = Headers()
    h.add("via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2")
    h.add("v", "SIP/2.0/UDP c;branch=z9hG4bK3")
    h.add("X-Foo", "1")
    assert "VIA" in h and "x-foo" in h and "Route" not in h
    assert len(h.values("Via")) == 3
    h.remove_first_value("Via")
    assert [v.split()[1].split(";")[0] for v in h.values("Via")] == ["b", "c"]
    h.prepend("Via", "SIP/2.0/TCP z;branch=z9hG4bK0")
    assert h.values("Via")[0].startswith("SIP/2.0/TCP z")
    h.set("x-foo", "2")
    assert h.get_lines("X-Foo") == ["2"]
    h.remove("Via")
    assert list(h) == [("X-Foo", "2")]


def test_typed_cache_follows_changes() -> None:
    m = sip.parse(INVITE)
    assert m.to.tag is None
    to = m.to.copy()
    to.params["tag"] = "abc"
    m.headers.set("To", to)
    assert m.to.tag == "abc"


def test_content_length_written_from_body() -> None:
    m = sip.parse(INVITE)
    m.body = b"hello"
    data = bytes(m)
    assert b"Content-Length: 5\r\n" in data and data.endswith(b"\r\n\r\nhello")
    r = Response(200)
    assert bytes(r).startswith(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n")


def test_make_response_copies_headers() -> None:
    req = sip.parse(INVITE)
    assert isinstance(req, Request)
    resp = sip.make_response(req, 180, to_tag="xyz")
    assert resp.reason == "Ringing"
    assert resp.headers.get_lines("Via") == req.headers.get_lines("Via")
    assert resp.to.tag == "xyz" and resp.from_.tag == "1928301774"
    assert resp.cseq == req.cseq and resp.call_id == req.call_id
    assert sip.make_response(req, 100, to_tag="xyz").to.tag is None


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"X" * 70000, 513),
        (INVITE.replace(b"\r\n\r\n", b"\r\n"), 400),  # no end of headers
        (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 256"), 400),
        (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards 70"), 400),
        (INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: INVITE"), 400),
        (INVITE.replace(b"Call-ID: a84b", b"Call-ID: a 84b"), 400),
        (INVITE.replace(b";rport", b";rport=99999"), 400),
        (INVITE.replace(b"Contact: <", b"Contact: *, <"), 400),
        (INVITE.replace(b"SIP/2.0/UDP", b"HTTP/1.1/UDP"), 400),
    ],
)
def test_bad_messages(data: bytes, status: int) -> None:
    with pytest.raises(ParseError) as info:
        sip.parse(data)
    assert info.value.status == status


def test_header_count_bound() -> None:
    many = INVITE.replace(b"Max-Forwards: 70\r\n", b"X-A: 1\r\n" * 300 + b"Max-Forwards: 70\r\n")
    with pytest.raises(ParseError, match="header lines"):
        sip.parse(many)


def test_leading_crlf_and_bare_lf_tolerated() -> None:
    head, _, body = INVITE.partition(b"\r\n\r\n")
    m = sip.parse(b"\r\n\r\n" + head.replace(b"\r\n", b"\n") + b"\n\n" + body)
    assert isinstance(m, Request) and m.method == "INVITE"
    assert m.body == torture.SDP_SMALL.encode()


@pytest.mark.parametrize(
    "header",
    [
        b"Subject: a\x00b",  # NUL
        b"Subject: a\rb",  # a bare CR
        b"Subject: \x1b[31mred",  # ESC
        b'X-Note: "quoted\x01but not escaped"',
        b"X-Note: not quoted \\\x00",  # a quoted-pair only counts inside quotes
        b"To: <sip:bob@biloxi.example.com>;tag=a\x00b",
    ],
)
def test_control_characters_in_header_values_are_refused(header: bytes) -> None:
    data = INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 70\r\n" + header)
    with pytest.raises(ParseError, match="control character") as info:
        sip.parse(data)
    assert info.value.status == 400
    reply = sip.message.error_response(data, info.value)
    assert reply is not None and reply.status == 400


def test_tabs_and_quoted_pairs_are_not_control_characters() -> None:
    data = INVITE.replace(b"Max-Forwards: 70", b'Max-Forwards: 70\r\nSubject:\ta\tb "c\\\x00d"')
    m = sip.parse(data)
    assert m.headers.get("Subject") == 'a\tb "c\\\x00d"'


@pytest.mark.parametrize("missing", [b"Call-ID", b"CSeq"])
def test_missing_call_id_or_cseq_is_answered_with_what_is_there(missing: bytes) -> None:
    lines = [line for line in INVITE.split(b"\r\n") if not line.startswith(missing + b":")]
    data = b"\r\n".join(lines)
    with pytest.raises(ParseError) as info:
        sip.parse(data)
    reply = sip.message.error_response(data, info.value)
    assert reply is not None and reply.status == 400
    assert "missing" in reply.reason
    assert missing.decode() not in reply.headers
    assert reply.headers.get("From") == '"Alice" <sip:alice@atlanta.example.com>;tag=1928301774'
    assert reply.headers.get_lines("Via") == [
        "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport"
    ]
    no_via = b"\r\n".join(line for line in lines if not line.startswith(b"Via:"))
    with pytest.raises(ParseError) as info:
        sip.parse(no_via)
    assert sip.message.error_response(no_via, info.value) is None  # nowhere to send it


def test_request_uri_too_long_is_414_other_uris_400() -> None:
    for size, what in ((600, "user part"), (30_000, "URI of")):
        long_user = INVITE.replace(b"INVITE sip:bob@", b"INVITE sip:" + b"b" * size + b"@", 1)
        with pytest.raises(ParseError, match=what) as info:
            sip.parse(long_user)
        assert info.value.status == 414
    long_uri = INVITE.replace(
        b"INVITE sip:bob@biloxi.example.com", b"INVITE sip:bob@biloxi.example.com;x=" + b"y" * 3000
    )
    with pytest.raises(ParseError) as info:
        sip.parse(long_uri)
    assert info.value.status == 414
    reply = sip.message.error_response(long_uri, info.value)
    assert reply is not None and reply.status == 414
    assert reply.reason.startswith("Request-URI Too Long (")
    long_to = INVITE.replace(b'To: "Bob" <sip:bob@', b'To: "Bob" <sip:' + b"b" * 600 + b"@")
    with pytest.raises(ParseError, match="user part") as info:
        sip.parse(long_to)
    assert info.value.status == 400
