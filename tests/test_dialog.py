from __future__ import annotations

import pytest

import sip
from sip.dialog import Dialog, DialogError, DialogState

from .test_transaction import request


def ok_with(req: sip.Request, *extra: tuple[str, str]) -> sip.Response:
    resp = sip.make_response(req, 200, to_tag="b1")
    resp.headers.add("Contact", "<sip:bob@192.0.2.2:5070>")
    for name, value in extra:
        resp.headers.add(name, value)
    return sip.parse(bytes(resp))  # type: ignore[return-value]


def test_uac_dialog_routes_and_sequence() -> None:
    req = request()
    resp = ok_with(req, ("Record-Route", "<sip:p1.example;lr>, <sip:p2.example;lr>"))
    d = Dialog.from_uac(req, resp)
    assert d.state is DialogState.CONFIRMED
    assert d.id == ("c1@192.0.2.1", "a1", "b1")
    assert [str(r.uri) for r in d.route_set] == ["sip:p2.example;lr", "sip:p1.example;lr"]
    bye = d.make_request("BYE")
    assert str(bye.uri) == "sip:bob@192.0.2.2:5070"
    assert [str(r.uri) for r in bye.route] == ["sip:p2.example;lr", "sip:p1.example;lr"]
    assert bye.cseq == sip.CSeq(2, "BYE")
    assert bye.from_.tag == "a1" and bye.to.tag == "b1"
    ack = d.make_request("ACK", cseq=1)
    assert ack.cseq == sip.CSeq(1, "ACK")
    assert d.next_hop() == sip.parse_uri("sip:p2.example;lr")
    assert d.matches(resp, incoming=False)


def test_uas_dialog_checks_cseq_and_refreshes_target() -> None:
    req = request()
    req.headers.add("Record-Route", "<sip:p1.example;lr>")
    d = Dialog.from_uas(sip.parse(bytes(req)), "b1", sip.parse_uri("sip:bob@192.0.2.2"))  # type: ignore[arg-type]
    assert [str(r.uri) for r in d.route_set] == ["sip:p1.example;lr"]
    reinvite = d.make_request("INVITE")
    assert reinvite.from_.tag == "b1" and reinvite.to.tag == "a1"
    assert reinvite.contact[0].uri == sip.parse_uri("sip:bob@192.0.2.2")
    peer = request()
    peer.headers.set("CSeq", "2 INVITE")
    peer.headers.set("To", "<sip:bob@192.0.2.2>;tag=b1")
    peer.headers.set("Contact", "<sip:alice@192.0.2.9>")
    assert d.matches(peer)
    d.receive_request(peer)
    assert d.remote_target == sip.parse_uri("sip:alice@192.0.2.9")
    with pytest.raises(DialogError) as info:
        d.receive_request(peer)
    assert info.value.status == 500


def test_strict_route() -> None:
    req = request()
    d = Dialog.from_uac(req, ok_with(req, ("Record-Route", "<sip:strict.example>")))
    bye = d.make_request("BYE")
    assert str(bye.uri) == "sip:strict.example"
    assert [str(r.uri) for r in bye.route] == ["sip:bob@192.0.2.2:5070"]
