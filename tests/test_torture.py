"""RFC 4475: the valid torture messages parse to the right values; the invalid ones raise."""

from __future__ import annotations

import pytest

import sip
from sip import ParseError, Request, Response

from . import torture


def request(name: str) -> Request:
    message = sip.parse(torture.VALID[name])
    assert isinstance(message, Request)
    return message


@pytest.mark.parametrize("name", sorted(torture.VALID))
def test_valid_messages_parse_and_reserialise(name: str) -> None:
    message = sip.parse(torture.VALID[name])
    again = sip.parse(bytes(message))
    assert bytes(again) == bytes(message)
    assert again.call_id == message.call_id
    assert again.cseq == message.cseq


@pytest.mark.parametrize("name", sorted(torture.INVALID))
def test_invalid_messages_raise_with_status(name: str) -> None:
    data, status = torture.INVALID[name]
    with pytest.raises(ParseError) as info:
        sip.parse(data)
    assert info.value.status == status
    assert str(info.value)  # a reason is given


def test_wsinv_values() -> None:
    m = request("wsinv")
    assert m.method == "INVITE"
    assert str(m.uri) == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert m.uri.params == {"unknownparam": None}
    assert m.to.uri.user == "vivekg" and m.to.tag == "1918181833n"
    assert m.from_.display == 'J Rosenberg \\"'
    assert m.from_.tag == "98asjd8"
    assert m.max_forwards == 68
    assert m.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert m.cseq == sip.CSeq(9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in m.via] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.via[0].params["rport"] is None
    assert m.headers.get("Subject") == ""
    assert m.headers.get("newfangledheader") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert m.route[0].uri.params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}
    contact = m.contact[0]
    assert contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert m.content_type == "application/sdp"
    assert m.body == torture.SDP_150.encode()
    sdp = sip.parse_sdp(m.body)
    assert [md.media for md in sdp.media] == ["audio", "video"]


def test_intmeth_values() -> None:
    m = request("intmeth")
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert m.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert m.uri.host == "example.com"
    assert m.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.to.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.from_.display == "token1~` token2'+_ token3*%!.-"
    assert m.from_.tag == "_token~1'+`*%!-."
    assert m.from_.params["fromparam''~+*_!.-%"] == '"работающий"'
    assert m.via[0].branch == "z9hG4bK-.!%66*_+`'~"
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_escaping_values() -> None:
    m = request("esc01")
    assert m.uri.user == "sips:user@example.com" and m.uri.host == "example.net"
    assert m.to.uri.user == "user"
    assert m.from_.uri.user == "I have spaces"
    assert m.contact[0].uri.user == "caller"
    assert m.contact[0].uri.params == {"lr": None, "name": "value%41"}
    # equality after unescaping (RFC 3261 §19.1.4)
    assert m.to.uri == sip.parse_uri("sip:user@example.com")

    m = request("escnull")
    assert m.to.uri.user == "null-\x00-null"
    assert [c.uri.user for c in m.contact] == ["\x00", "\x00\x00"]

    m = request("esc02")
    assert m.method == "RE%47IST%45R"
    assert m.to.display == "%Z%45"
    assert len(m.contact) == 2  # C%6Fntact is another header, not Contact
    assert m.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_display_names_and_long_values() -> None:
    m = request("lwsdisp")
    assert m.from_.display == "caller" and m.from_.uri.user == "caller"
    m = request("longreq")
    assert len(m.via) == 44
    assert m.from_.tag == "12" + "982" * 100 + "424"
    assert m.to.uri.port == 6000
    assert m.body == torture.SDP_150.encode()


def test_trailing_datagram_octets_ignored() -> None:
    m = request("dblreq")
    assert m.method == "REGISTER" and m.body == b""


def test_semicolon_user_and_list_headers() -> None:
    m = request("semiuri")
    assert m.uri.user == "user;par=u@example.net" and m.uri.host == "example.com"
    assert m.uri.params == {}
    assert m.headers.values("Accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def test_transports_multipart_and_reasons() -> None:
    assert [v.transport for v in request("transports").via] == [
        "UDP",
        "SCTP",
        "TLS",
        "UNKNOWN",
        "TCP",
    ]
    m = request("mpart01")
    assert m.content_type == "multipart/mixed"
    assert m.body.startswith(b"--boundary42") and m.body.endswith(b"--boundary42--\r\n")
    r = sip.parse(torture.UNREASON)
    assert isinstance(r, Response) and r.status == 200
    assert r.reason.startswith("= 2**3 * 5**2 но сто")
    r = sip.parse(torture.NOREASON)
    assert isinstance(r, Response) and r.status == 100 and r.reason == ""


def test_schemes_and_application_level_cases() -> None:
    assert request("unkscm").uri.scheme == "nobodyknowsthisscheme"
    assert request("unkscm").uri.opaque == "totallyopaquecontent"
    assert str(request("novelsc").uri) == "soap.beep://192.0.2.103:3002"
    m = request("unksm2")
    assert m.to.uri.scheme == "isbn" and m.from_.uri.scheme == "http"
    assert m.contact[0].uri.scheme == "name"
    assert request("zeromf").max_forwards == 0
    assert request("badbranch").via[0].branch == "z9hG4bK"
    m = request("inv2543")
    assert m.via[0].branch is None and m.max_forwards is None and m.from_.tag is None
    assert m.to.uri.params == {}  # addr-spec: ;user=phone belongs to the header
    assert m.to.params == {"user": "phone"}
    assert m.from_.uri.params == {"user": "phone"}
    assert request("regescrt").contact[0].uri.headers == {"Route": "<sip:sip.example.com>"}
    assert request("cparam01").content_type == "application/sdp"
    r = sip.parse(torture.BCAST)
    assert [v.host for v in r.via] == ["192.0.2.198", "255.255.255.255"]
