"""Parse a SIP message, read its typed headers, answer it: the sans-IO message layer.

python examples/sip_message.py
"""

from __future__ import annotations

import sip

INVITE = (
    b"INVITE sip:101@pbx.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1a2b3c;rport\r\n"
    b'From: "Alice" <sip:100@pbx.example.com>;tag=8a7b6c\r\n'
    b"To: <sip:101@pbx.example.com>\r\n"
    b"Call-ID: 3f2e1d0c@192.0.2.10\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:100@192.0.2.10:5060>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def main() -> None:
    request = sip.parse(INVITE)
    assert isinstance(request, sip.Request)
    request.body = bytes(sip.make_offer("192.0.2.10", 4000))  # Content-Length follows
    print(f"{request.method} from {request.from_.display} <{request.from_.uri.aor}>")
    print(f"top Via branch {request.via[0].branch}, CSeq {request.cseq}")
    answer_sdp, stream = sip.answer(sip.parse_sdp(request.body), "192.0.2.1", 30000)
    assert stream is not None
    print(f"negotiated {stream.codec.name}, DTMF payload type {stream.dtmf_payload_type}")
    response = sip.make_response(request, 200, to_tag="b0b", body=bytes(answer_sdp))
    response.headers.add("Content-Type", "application/sdp")
    print(bytes(response).decode())


if __name__ == "__main__":
    main()
