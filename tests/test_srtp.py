"""SRTP with SDES keys: a=crypto lines (sip.sdes), offer/answer under each encryption
policy (sip.offer_answer), and the media engine's SRTP legs (rtp.srtp): a phone keyed
as the SDP says hears exactly what a plain phone would, forged and replayed packets are
dropped before anything reads them, and nothing readable leaves an SRTP leg."""

from __future__ import annotations

import base64
import os
import socket
import struct
from collections.abc import Iterator

import numpy as np
import pytest
from pylibsrtp import Error, Policy, Session

import sip
from media import g711
from media.clock import MediaClock
from media.tones import sine_mix
from rtp import PortAllocator
from rtp.packet import ReceiverReport, SenderReport, parse_rtcp
from sip import ParseError, answer, make_offer, parse_sdp, process_answer, sdes
from softswitch.media_engine import LegSource, MediaEngine, MediaLeg

KEY = bytes(range(30))
ENGINES: list[MediaEngine] = []  # run_bridge's, closed after each test


@pytest.fixture(autouse=True)
def _close_engines() -> Iterator[None]:
    yield
    while ENGINES:
        ENGINES.pop().close()


HEADER = struct.Struct("!BBHII")
PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
}


def inline(key: bytes) -> str:
    return base64.b64encode(key).decode()


# -- a=crypto ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "usable"),
    [
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{inline(KEY)}", True),
        (f"7 AES_CM_128_HMAC_SHA1_32 inline:{inline(KEY)}|2^31", True),
        (f"2 AEAD_AES_128_GCM inline:{inline(KEY[:28])}", True),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{inline(KEY)}|2^20", False),  # rekey too soon
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{inline(KEY)}|2^31|1:4", False),  # an MKI
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{inline(KEY)} UNENCRYPTED_SRTP", False),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{inline(KEY[:20])}", False),  # short key
        (f"1 F8_128_HMAC_SHA1_80 inline:{inline(KEY)}", False),  # a suite we lack
        ("1 AES_CM_128_HMAC_SHA1_80 inline:not*base64", False),
        ("x AES_CM_128_HMAC_SHA1_80", False),
    ],
)
def test_crypto_lines_an_answerer_can_use(value: str, usable: bool) -> None:
    crypto = sdes.parse_crypto(value)
    assert (crypto is not None) == usable
    if crypto is not None:
        assert sdes.parse_crypto(str(crypto)) == crypto  # what we write, we read


# -- offer/answer -----------------------------------------------------------------------------


def savp_offer(*suites: str, proto: str = "RTP/SAVP") -> sip.SessionDescription:
    lines = "".join(
        f"a=crypto:{i} {s} inline:{inline(KEY[: sdes.SUITES.get(s, 30)])}\r\n"
        for i, s in enumerate(suites, 1)
    )
    return parse_sdp(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
        f"m=audio 4000 {proto} 0 101\r\na=rtpmap:101 telephone-event/8000\r\n{lines}"
    )


def test_a_required_answer_takes_the_first_usable_key_and_echoes_its_tag() -> None:
    ours = bytes(30 * [7])
    offer = savp_offer("F8_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AES_CM_128_HMAC_SHA1_80")
    ans, stream = answer(offer, "192.0.2.1", 30000, encryption="required", key=ours)
    assert stream is not None and stream.srtp is not None
    assert stream.srtp == sip.SrtpKeys("AES_CM_128_HMAC_SHA1_32", ours, KEY)
    (media,) = ans.media
    assert media.proto == "RTP/SAVP"
    assert media.attribute_values("crypto") == [f"2 AES_CM_128_HMAC_SHA1_32 inline:{inline(ours)}"]


@pytest.mark.parametrize(
    ("proto", "keys", "encryption", "key", "result"),
    [
        ("RTP/SAVP", True, "off", None, None),  # SRTP off: a secure line is refused
        ("RTP/SAVP", True, "optional", KEY, "srtp"),
        ("RTP/SAVP", True, "required", None, None),  # keys may not be sent: nothing
        ("RTP/SAVP", False, "required", KEY, None),  # RTP/SAVP without a usable key
        ("RTP/AVP", False, "required", KEY, None),  # plain RTP, SRTP required: 488
        ("RTP/AVP", False, "optional", KEY, "plain"),
        ("RTP/AVP", True, "optional", KEY, "srtp"),  # best-effort SRTP (RFC 4568 §4)
        ("RTP/AVP", True, "off", None, "plain"),  # keys ignored, plain RTP
        ("RTP/AVP", True, "required", KEY, "srtp"),
    ],
)
def test_each_policy_takes_what_it_may(
    proto: str, keys: bool, encryption: str, key: bytes | None, result: str | None
) -> None:
    offer = savp_offer(*(["AES_CM_128_HMAC_SHA1_80"] if keys else []), proto=proto)
    ans, stream = answer(offer, "192.0.2.1", 30000, encryption=encryption, key=key)
    if result is None:
        assert stream is None and ans.media[0].port == 0
        return
    assert stream is not None
    assert (stream.srtp is not None) == (result == "srtp")
    assert (ans.media[0].attribute("crypto") is not None) == (result == "srtp")
    assert ans.media[0].proto == proto


def test_our_offers_and_what_we_make_of_the_answers() -> None:
    required = make_offer("192.0.2.1", 30000, encryption="required", key=KEY)
    (media,) = required.media
    assert media.proto == "RTP/SAVP"
    assert [v.split()[1] for v in media.attribute_values("crypto")] == list(sdes.OFFERED)
    optional = make_offer("192.0.2.1", 30000, encryption="optional", key=KEY)
    assert optional.media[0].proto == "RTP/AVP" and optional.media[0].attribute("crypto")
    assert make_offer("192.0.2.1", 30000).media[0].attribute("crypto") is None
    theirs = bytes(30 * [9])
    # the answerer takes our second line
    answered, _ = answer(
        parse_sdp(bytes(required)), "192.0.2.7", 5000, encryption="required", key=theirs
    )
    keys = sdes.choose(required.media[0].attribute_values("crypto"), theirs)
    assert keys is not None
    stream = process_answer(required, parse_sdp(bytes(answered)))
    assert stream.srtp == sip.SrtpKeys("AES_CM_128_HMAC_SHA1_80", KEY, theirs)
    # an answer to RTP/SAVP without a key, or with a tag we never offered: refused
    plain, _ = answer(parse_sdp(bytes(optional)), "192.0.2.7", 5000)
    plain.media[0].proto = "RTP/SAVP"
    with pytest.raises(ParseError):
        process_answer(required, plain)
    forged = parse_sdp(bytes(answered))
    forged.media[0].attributes = [
        (n, v.replace("1 AES", "9 AES") if n == "crypto" and v else v)
        for n, v in forged.media[0].attributes
    ]
    with pytest.raises(ParseError):
        process_answer(required, forged)
    # best effort: a plain answer to an optional offer is plain RTP
    plain_answer, _ = answer(parse_sdp(bytes(optional)), "192.0.2.7", 5000)
    assert process_answer(optional, plain_answer).srtp is None


# -- the engine -------------------------------------------------------------------------------


class Phone:
    """A phone on its own loopback address, keyed as its SDP said: it protects what it
    sends with ``key`` and verifies what it hears with the leg's."""

    def __init__(self, n: int, suite: str | None, key: bytes = KEY) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((f"127.0.9.{n + 1}", 0))
        self.sock.setblocking(False)
        self.suite = suite
        self.key = key[: sdes.SUITES[suite]] if suite else key
        self.tx: Session | None = None
        self.rx: Session | None = None
        self.heard: list[bytes] = []  # as received (ciphertext for SRTP)
        self.plain: list[bytes] = []  # verified and decrypted
        self.rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtcp.bind((self.address[0], 0))
        self.rtcp.setblocking(False)

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()  # type: ignore[no-any-return]

    def keyed(self, leg: MediaLeg) -> None:
        if self.suite is None:
            return
        assert leg.srtp is not None
        profile = PROFILES[self.suite]
        outbound = Policy(key=self.key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
        inbound = Policy(
            key=leg.srtp.local, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile
        )
        self.tx, self.rx = Session(outbound), Session(inbound)

    def send(self, packet: bytes, to: tuple[str, int]) -> None:
        self.sock.sendto(self.tx.protect(packet) if self.tx else packet, to)

    def drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(2048)
            except BlockingIOError:
                return
            self.heard.append(data)
            self.plain.append(self.rx.unprotect(data) if self.rx else data)

    def close(self) -> None:
        self.sock.close()
        self.rtcp.close()


def stream(phone: Phone, codec: sip.Codec, leg: MediaLeg) -> sip.AudioStream:
    pt = codec.static_pt or 0
    keys = (
        sip.SrtpKeys(phone.suite, leg.key[: sdes.SUITES[phone.suite]], phone.key)
        if phone.suite
        else None
    )
    return sip.AudioStream(
        codec,
        pt,
        *phone.address,
        "sendrecv",
        dtmf_payload_type=101,
        codecs=[(pt, codec)],
        srtp=keys,
    )


def tone(hz: float, codec: sip.Codec) -> list[bytes]:
    samples = sine_mix((hz,), 8000 * 2, 8000, -12)
    table = g711.ULAW_ENCODE if codec is sip.PCMU else g711.ALAW_ENCODE
    return [
        table[(samples[k : k + 160].astype(np.int32) + 32768)].tobytes()
        for k in range(0, 16000, 160)
    ]


def run_bridge(
    suites: tuple[str | None, str | None],
    codecs: tuple[sip.Codec, sip.Codec] = (sip.PCMU, sip.PCMU),
    ticks: int = 40,
    forge: int = 0,
) -> tuple[list[Phone], list[MediaLeg], MediaEngine]:
    """Two phones bridged through the engine, each sending its tone for ``ticks`` ticks
    (phone 0 also sends ``forge`` forged packets a tick: its SSRC and sequence numbers, a
    made-up tag)."""
    engine = MediaEngine(MediaClock(), PortAllocator(41400, 41600))
    ENGINES.append(engine)
    phones = [Phone(0, suites[0]), Phone(1, suites[1], bytes(30 * [3]))]
    legs = []
    for phone, codec in zip(phones, codecs, strict=True):
        leg = engine._add(engine._shared_pair("127.0.0.1"))
        leg.configure(stream(phone, codec, leg), signalling=phone.address[0])
        phone.keyed(leg)
        legs.append(leg)
    legs[0].source, legs[1].source = LegSource(legs[1]), LegSource(legs[0])
    voices = [tone(600, codecs[0]), tone(1000, codecs[1])]
    try:
        for tick in range(ticks):
            for n, (phone, leg) in enumerate(zip(phones, legs, strict=True)):
                pt = codecs[n].static_pt or 0
                packet = HEADER.pack(0x80, pt, tick, tick * 160, 0x9000 + n) + voices[n][tick % 100]
                phone.send(packet, leg.local)
                if n == 0:
                    for k in range(forge):
                        fake = HEADER.pack(0x80, pt, tick + 1 + k, tick * 160, 0x9000) + os.urandom(
                            170
                        )
                        phone.sock.sendto(fake, leg.local)
            engine._tick(tick)
            for phone in phones:
                phone.drain()
        return phones, legs, engine
    finally:
        for phone in phones:
            phone.close()


def payloads(packets: list[bytes]) -> list[bytes]:
    return [p[12:] for p in packets]


@pytest.mark.parametrize(
    "suites",
    [
        ("AES_CM_128_HMAC_SHA1_80", None),
        (None, "AES_CM_128_HMAC_SHA1_32"),
        ("AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"),
    ],
)
def test_an_srtp_leg_hears_and_is_heard_as_a_plain_one(
    suites: tuple[str | None, str | None],
) -> None:
    plain, _, _ = run_bridge((None, None))
    phones, legs, engine = run_bridge(suites)
    for n in (0, 1):  # after verification, the very same packets as without SRTP
        assert payloads(phones[n].plain) == payloads(plain[n].plain), n
        assert len(phones[n].plain) >= 30
        encrypted = suites[n] is not None
        # on the wire: nothing of the audio where the leg is SRTP
        assert (
            any(p in w for p, w in zip(payloads(phones[n].plain), phones[n].heard, strict=True))
            != encrypted
        )
    assert engine.stats["srtp_refused"] == 0
    assert all(leg.counters.srtp_refused == 0 for leg in legs)


def test_a_transcoded_bridge_of_two_srtp_legs() -> None:
    phones, _, engine = run_bridge(
        ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_80"), (sip.PCMU, sip.PCMA)
    )
    heard = g711.ALAW_DECODE[np.frombuffer(b"".join(payloads(phones[1].plain[5:])), np.uint8)]
    spectrum = np.abs(np.fft.rfft(heard.astype(float)))
    assert abs(np.argmax(spectrum) * 8000 / len(heard) - 600) < 10  # phone 1 hears 600 Hz
    assert engine.stats["srtp_refused"] == 0


def test_forged_and_replayed_packets_are_never_heard_and_are_counted() -> None:
    reports: list[tuple[tuple[str, int], str]] = []
    plain, _, _ = run_bridge(("AES_CM_128_HMAC_SHA1_80", None))
    phones, legs, engine = run_bridge(("AES_CM_128_HMAC_SHA1_80", None), forge=3)
    # the forged packets (right SSRC, from the phone's own address) change nothing heard
    assert payloads(phones[1].plain) == payloads(plain[1].plain)
    assert legs[0].counters.srtp_refused == engine.stats["srtp_refused"] == 3 * 40
    assert engine.stats["strays_srtp_auth"] == 3 * 40
    assert legs[0].received == 40
    # a replayed genuine packet: refused too
    engine2 = MediaEngine(MediaClock(), PortAllocator(41600, 41700))
    phone, other = Phone(2, "AES_CM_128_HMAC_SHA1_80"), Phone(3, None)
    try:
        leg = engine2._add(engine2._shared_pair("127.0.0.1"))
        leg.configure(stream(phone, sip.PCMU, leg), signalling=phone.address[0])
        leg.on_rejected_source = lambda source, why: reports.append((source, why))
        phone.keyed(leg)
        assert phone.tx is not None
        packet = phone.tx.protect(HEADER.pack(0x80, 0, 1, 160, 0x9000) + bytes(160))
        for _ in range(3):
            phone.sock.sendto(packet, leg.local)
        engine2._tick(0)
        assert leg.received == 1 and leg.counters.srtp_refused == 2
        assert reports == [(phone.address, "srtp_replay")]  # once per source and burst
    finally:
        phone.close()
        other.close()
        engine2.close()


def test_srtcp_reports_are_protected_and_verified() -> None:
    engine = MediaEngine(MediaClock(), PortAllocator(41700, 41800))
    phone = Phone(4, "AES_CM_128_HMAC_SHA1_80")
    try:
        leg = engine._add(engine._shared_pair("127.0.0.1"))
        leg.configure(stream(phone, sip.PCMU, leg), signalling=phone.address[0])
        phone.keyed(leg)
        leg.remote_rtcp = phone.rtcp.getsockname()
        engine._send_rtcp(leg, 0.0)
        data = phone.rtcp.recv(2048)
        with pytest.raises(Exception):  # noqa: B017 (ciphertext is not RTCP)
            parse_rtcp(data)
        assert phone.rx is not None
        report = parse_rtcp(phone.rx.unprotect_rtcp(data))
        assert isinstance(report[0], ReceiverReport | SenderReport) and report[0].ssrc == leg.ssrc
        with pytest.raises(Error):
            phone.rx.unprotect_rtcp(data[:-1] + bytes([data[-1] ^ 1]))
    finally:
        phone.close()
        engine.close()


def test_a_vvx_best_effort_offer_of_two_lines() -> None:
    """A Polycom VVX with SRTP offered (not required) sends RTP/SAVP with keys and an
    RTP/AVP copy on the same port: the SAVP line is taken where keys may be used, the
    copy otherwise; the other line is refused with port 0, order and count kept."""
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
        "m=audio 4000 RTP/SAVP 0\r\n"
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{inline(KEY)}\r\n"
        "m=audio 4000 RTP/AVP 0\r\n"
    )
    ans, stream = answer(parse_sdp(sdp), "192.0.2.1", 30000, encryption="optional", key=KEY)
    assert stream is not None and stream.srtp is not None and stream.media_index == 0
    assert [m.port for m in ans.media] == [30000, 0]
    ans, stream = answer(parse_sdp(sdp), "192.0.2.1", 30000)  # over UDP: plain RTP
    assert stream is not None and stream.srtp is None and stream.media_index == 1
    assert [m.port for m in ans.media] == [0, 30000]
    assert [m.proto for m in ans.media] == ["RTP/SAVP", "RTP/AVP"]


def test_empty_and_short_datagrams_are_malformed_not_a_crash() -> None:
    """Zero-length datagrams (a NAT keep-alive, or an attacker) and one-byte STUN- or
    DTLS-looking ones on the shared port: counted as malformed or stray, the tick goes on."""
    engine = MediaEngine(MediaClock(), PortAllocator(41800, 41900))
    phone = Phone(5, "AES_CM_128_HMAC_SHA1_80")
    try:
        leg = engine._add(engine._shared_pair("127.0.0.1"))
        leg.configure(stream(phone, sip.PCMU, leg), signalling=phone.address[0])
        for data in (b"", b"\x00", b"\x16", b"\x16\xfe\xfd" + bytes(10), b"\x00\x01" + bytes(30)):
            phone.sock.sendto(data, leg.local)
        engine._tick(0)
        engine._tick(1)
        assert engine.stats["received"] == 5
        assert engine.stats["malformed"] + engine.stats["strays"] == 5
    finally:
        phone.close()
        engine.close()
