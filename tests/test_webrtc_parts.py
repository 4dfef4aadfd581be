"""The WebRTC building blocks of a browser leg, each against a stack this project did not
write: our ICE-lite agent (rtp.ice_lite) answers the connectivity checks of aioice, a full
ICE agent, which then connects through it, and what does not authenticate gets no answer;
our DTLS-SRTP endpoint (rtp.dtls_srtp) completes a handshake with ``openssl s_client`` and
exports the very SRTP keys OpenSSL's client does, and refuses a certificate whose
fingerprint is not the one the peer's SDP named."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aioice
import pytest
from aioice import stun

import sip
from rtp.dtls_srtp import DtlsSrtp, Identity, fingerprint
from rtp.ice_lite import IceLite, kind


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """aioice gathers the machine's interface addresses; tests stay on loopback."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    yield


class Responder(asyncio.DatagramProtocol):
    """Our ICE-lite agent on a UDP socket, as the media engine will serve it."""

    def __init__(self, agent: IceLite) -> None:
        self.agent = agent
        self.refused: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert kind(data[0]) == "stun"
        verdict = self.agent.answer(data, addr)
        if verdict.reply is not None and self.transport is not None:
            self.transport.sendto(verdict.reply, addr)
        elif verdict.refused:
            self.refused.append(verdict.refused)


async def test_aioice_connects_through_our_ice_lite_agent(loopback_only: None) -> None:
    loop = asyncio.get_running_loop()
    ours = IceLite()
    transport, responder = await loop.create_datagram_endpoint(
        lambda: Responder(ours), local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    browser = aioice.Connection(ice_controlling=True, use_ipv6=False)
    try:
        await browser.gather_candidates()
        ours.remote_ufrag = browser.local_username
        browser.remote_username, browser.remote_password = ours.ufrag, ours.pwd
        await browser.add_remote_candidate(
            aioice.Candidate("1", 1, "udp", 2130706431, "127.0.0.1", port, "host")
        )
        await browser.add_remote_candidate(None)
        await asyncio.wait_for(browser.connect(), 10)
        [candidate] = browser.local_candidates
        assert ours.nominated == (candidate.host, candidate.port)  # where media will go
        assert ours.checks >= 1 and not responder.refused
    finally:
        await browser.close()
        transport.close()


def check(agent_ufrag: str, pwd: str, *, fingerprint: bool = True) -> bytes:
    request = stun.Message(
        stun.Method.BINDING,
        stun.Class.REQUEST,
        attributes={"USERNAME": f"{agent_ufrag}:browser", "USE-CANDIDATE": None},
    )
    request.add_message_integrity(pwd.encode())
    request.add_fingerprint()
    data = bytes(request)
    if not fingerprint:  # the last attribute (8 bytes) gone, the length told
        data = data[:2] + (len(data) - 28).to_bytes(2, "big") + data[4:-8]
    return data


def test_checks_that_do_not_authenticate_get_no_answer() -> None:
    ours = IceLite()
    ours.remote_ufrag = "browser"
    source = ("127.0.0.1", 50000)
    assert ours.answer(check(ours.ufrag, ours.pwd), source).reply is not None
    assert ours.answer(check(ours.ufrag, "x" * 24), source).refused == "stun_integrity"
    assert ours.answer(check("someone", ours.pwd), source).refused == "stun_username"
    assert ours.answer(check(ours.ufrag, ours.pwd, fingerprint=False), source).refused == (
        "stun_integrity"
    )
    assert (ours.answer(b"\x00\x01garbage", source).refused or "").startswith("stun_malformed")
    response = stun.parse_message(ours.answer(check(ours.ufrag, ours.pwd), source).reply or b"")
    assert response.attributes["XOR-MAPPED-ADDRESS"] == source
    assert response.check_message_integrity(ours.pwd.encode())
    assert [kind(b) for b in (0, 1, 22, 128, 191, 200)] == [
        "stun",
        "stun",
        "dtls",
        "rtp",
        "rtp",
        "other",
    ]


class DtlsServer(asyncio.DatagramProtocol):
    """Our DTLS-SRTP endpoint as the server side on a UDP socket."""

    def __init__(self, endpoint: DtlsSrtp) -> None:
        self.endpoint = endpoint
        self.transport: asyncio.DatagramTransport | None = None
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert kind(data[0]) == "dtls"
        for out in self.endpoint.receive(data):
            assert self.transport is not None
            self.transport.sendto(out, addr)
        if (self.endpoint.keys or self.endpoint.failed) and not self.done.done():
            self.done.set_result(True)


async def openssl_client(port: int, cert: Path, key: Path) -> tuple[str, bytes | None]:
    """``openssl s_client`` (not ours) as the browser: DTLS 1.2 with use_srtp, its keying
    material exported as RFC 5764 says (60 bytes for AES_CM_128_HMAC_SHA1_80)."""
    proc = await asyncio.create_subprocess_exec(
        *("openssl", "s_client", "-dtls1_2", "-connect", f"127.0.0.1:{port}"),
        *("-use_srtp", "SRTP_AES128_CM_SHA1_80", "-cert", str(cert), "-key", str(key)),
        *("-keymatexport", "EXTRACTOR-dtls_srtp", "-keymatexportlen", "60"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    material = None
    try:
        async with asyncio.timeout(10):
            while line := (await proc.stdout.readline()).decode():
                lines.append(line)
                if "Keying material:" in line:
                    material = bytes.fromhex(line.split(":", 1)[1].strip())
                    break
    except TimeoutError:
        pass
    finally:
        proc.kill()
        await proc.wait()
    return "".join(lines), material


@pytest.mark.parametrize("right_fingerprint", [True, False])
async def test_dtls_srtp_keys_agree_with_openssl_and_the_fingerprint_is_checked(
    tmp_path: Path, right_fingerprint: bool
) -> None:
    cert, key = tmp_path / "browser.pem", tmp_path / "browser.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=b"),
        ],
        check=True,
        capture_output=True,
    )
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    named = fingerprint(der) if right_fingerprint else fingerprint(b"another certificate")
    ours = DtlsSrtp(Identity(), server=True, remote_fingerprint=("sha-256", named))
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(
        lambda: DtlsServer(ours), local_addr=("127.0.0.1", 0)
    )
    try:
        output, material = await openssl_client(transport.get_extra_info("sockname")[1], cert, key)
        await asyncio.wait_for(server.done, 5)
    finally:
        transport.close()
    if not right_fingerprint:  # a certificate its SDP did not name: no keys, ever
        assert ours.keys is None and ours.failed == "dtls_fingerprint"
        return
    assert ours.keys is not None and material is not None, output
    suite, local, remote = ours.keys
    assert suite == "AES_CM_128_HMAC_SHA1_80"
    # RFC 5764 §4.2: client key | server key | client salt | server salt
    assert material == remote[:16] + local[:16] + remote[16:] + local[16:]


CHROME_OFFER = (  # what Chromium 156 sends for an audio-only call (JsSIP), candidates kept
    "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "a=group:BUNDLE 0\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS stream\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n"
    "c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n"
    "a=candidate:1 1 udp 2122260223 127.0.0.1 54400 typ host generation 0 network-id 1\r\n"
    "a=candidate:2 1 udp 2122194687 ::1 54401 typ host generation 0 network-id 2\r\n"
    "a=ice-ufrag:Hk7a\r\na=ice-pwd:0123456789abcdefghijklmn\r\na=ice-options:trickle\r\n"
    "a=fingerprint:sha-256 "
    "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99\r\n"
    "a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=msid:stream track\r\na=rtcp-mux\r\n"
    "a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\n"
    "a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:63 red/48000/2\r\n"
    "a=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:13 CN/8000\r\na=rtpmap:110 telephone-event/48000\r\n"
    "a=rtpmap:126 telephone-event/8000\r\na=ssrc:1001 cname:abc\r\n"
)


def test_a_browser_offer_is_answered_as_ice_lite_dtls_srtp() -> None:
    from sip import OPUS, PCMU, answer, parse_sdp, webrtc

    offer = parse_sdp(CHROME_OFFER)
    local = webrtc.Local("ours", "o" * 24, ("sha-256", "11:22"))
    sdp, stream = answer(offer, "127.0.0.1", 30000, (OPUS, PCMU), browser=local)
    assert stream is not None and stream.webrtc is not None
    assert stream.codec == OPUS and stream.payload_type == 111 and stream.dtmf_payload_type == 126
    assert (stream.remote_address, stream.remote_port) == ("127.0.0.1", 54400)  # best candidate
    assert not stream.remote_hold  # c=0.0.0.0 on an ICE line is not a hold
    peer = stream.webrtc
    assert (peer.ufrag, peer.pwd, peer.server, peer.mid) == (
        "Hk7a",
        "0123456789abcdefghijklmn",
        True,
        "0",
    )
    text = str(sdp)
    for line in (
        "a=ice-lite",
        "a=group:BUNDLE 0",
        "m=audio 30000 UDP/TLS/RTP/SAVPF 111 126",
        "a=mid:0",
        "a=rtcp-mux",
        "a=ice-ufrag:ours",
        "a=fingerprint:sha-256 11:22",
        "a=setup:passive",
        "a=candidate:1 1 udp 2130706431 127.0.0.1 30000 typ host",
    ):
        assert line in text, line
    # without our ICE/DTLS terms (a desk phone's answerer) the line is refused: 488
    _, none = answer(offer, "127.0.0.1", 30000, (OPUS, PCMU))
    assert none is None
    # a line that lacks what WebRTC needs (no fingerprint) is refused too
    broken = parse_sdp(CHROME_OFFER.replace("a=fingerprint", "a=x-fingerprint"))
    assert answer(broken, "127.0.0.1", 30000, (OPUS, PCMU), browser=local)[1] is None


def test_our_offer_to_a_browser_and_its_answer() -> None:
    from sip import OPUS, PCMU, answer, make_offer, parse_sdp, process_answer, webrtc

    ours = webrtc.Local("pbx1", "p" * 24, ("sha-256", "AB:CD"))
    offer = make_offer("127.0.0.1", 30000, (OPUS, PCMU), browser=ours)
    text = str(offer)
    for line in ("a=ice-lite", "m=audio 30000 UDP/TLS/RTP/SAVPF 96 0 101", "a=setup:actpass"):
        assert line in text, line
    # the browser's side, played by our own answerer with other terms (setup: it picks)
    theirs = webrtc.Local("brow", "b" * 24, ("sha-256", "EF:01"))
    sdp, taken = answer(parse_sdp(text), "127.0.0.2", 40000, (OPUS, PCMU), browser=theirs)
    assert taken is not None and taken.webrtc is not None and taken.webrtc.server  # it may
    stream = process_answer(offer, parse_sdp(str(sdp).replace("setup:passive", "setup:active")))
    assert stream.webrtc is not None and stream.webrtc.server  # the browser opens DTLS
    assert stream.webrtc.fingerprint == ("sha-256", "EF:01")
    assert (stream.remote_address, stream.remote_port) == ("127.0.0.2", 40000)
    with pytest.raises(sip.ParseError):  # an answer must pick a DTLS role, not actpass
        process_answer(offer, parse_sdp(str(sdp).replace("setup:passive", "setup:actpass")))
