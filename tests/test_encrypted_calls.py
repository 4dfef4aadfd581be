"""Encrypted calls end to end: baresip phones over SIP/TLS with SRTP (SDES) through the
daemon, to plain and to encrypted phones; what travels on the loopback wire is captured
with a raw socket (as root) and checked by content: nothing of a tone where the leg is
SRTP, the tone itself where it is plain. Policies: a phone of a user who requires SRTP
gets 488 for plain RTP, keys sent over UDP are refused and logged. The TLS certificate is
replaced and reloaded under a running call."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import sqlite3
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Set
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile

from media import g711
from media.tones import sine_mix
from softswitch.features.hold_music import builtin_music

from .audio import active, best_correlation, dominant_frequency
from .baresip import Phone
from .certs import make_certificate
from .linphone import Linphone
from .netutil import ROOT, free_port, rtp_base
from .office import Office, frequency, segment, started, stop_all

pytestmark = pytest.mark.interop

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


@pytest.fixture
async def office(tmp_path: Path) -> AsyncIterator[Office]:
    o = Office(tmp_path, tls=True)
    yield o
    o.stop()


@dataclass
class Tap:
    """UDP datagrams on the loopback interface to or from ``ports`` (a raw packet socket:
    root only), each once (the outgoing copy of a looped-back frame is skipped)."""

    ports: set[int]
    packets: list[tuple[int, int, bytes]] = field(default_factory=list)  # (src, dst, data)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind(("lo", 0))
        sock.settimeout(0.2)

        def run() -> None:
            with sock:
                while not self._stop.is_set():
                    try:
                        frame, meta = sock.recvfrom(65535)
                    except TimeoutError:
                        continue
                    if meta[2] == PACKET_OUTGOING or frame[12:14] != b"\x08\x00":
                        continue
                    ip = frame[14:]
                    if ip[9] != 17:  # UDP
                        continue
                    udp = ip[(ip[0] & 0x0F) * 4 :]
                    src, dst = struct.unpack("!HH", udp[:4])
                    if src in self.ports or dst in self.ports:
                        self.packets.append((src, dst, bytes(udp[8:])))

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def payloads(
        self, *, sent_by: Set[int] = frozenset(), sent_to: Set[int] = frozenset()
    ) -> bytes:
        """The RTP payloads (after a 12-byte header) of packets sent from ``sent_by`` or
        to ``sent_to``."""
        return b"".join(
            d[12:] for s, t, d in self.packets if (s in sent_by or t in sent_to) and len(d) > 100
        )


def tone_share(payload: bytes, hz: float) -> float:
    """How much of the energy of ``payload`` read as G.711 u-law is within 20 Hz of
    ``hz``: most of it for a tone sent in the clear, next to nothing for ciphertext."""
    samples = g711.ULAW_DECODE[np.frombuffer(payload, np.uint8)].astype(np.float64)
    assert len(samples) > 8000, "not even a second of packets captured"
    spectrum = np.abs(np.fft.rfft(samples - samples.mean())) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / 8000)
    return float(spectrum[np.abs(freqs - hz) < 20].sum() / spectrum.sum())


def rtp_ports(phone: Phone) -> set[int]:
    return set(range(phone.rtp_start, phone.rtp_start + 21))


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="a raw packet socket needs root")


def spoof(source: tuple[str, int], target: tuple[str, int], payload: bytes) -> None:
    """Send a UDP datagram that claims to come from ``source`` (a raw IP socket: root)."""
    udp = struct.pack("!HHHH", source[1], target[1], 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0,
        64,
        socket.IPPROTO_UDP,
        0,  # the kernel fills in the checksum
        socket.inet_aton(source[0]),
        socket.inet_aton(target[0]),
    )
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.sendto(header + udp, (target[0], 0))


def forge(tap: Tap, phone: Phone, count: int) -> tuple[int, int]:
    """An attacker who sees the phone's SRTP on the wire sends ``count`` packets of its
    own as that phone (its address, SSRC and next sequence numbers, a made-up payload and
    tag) to the daemon's port for it. Returns the phone's and the daemon's RTP ports."""
    src, dst, data = next((s, d, p) for s, d, p in reversed(tap.packets) if s in rtp_ports(phone))
    version, pt, seq, ts, ssrc = struct.unpack("!BBHII", data[:12])
    for k in range(1, count + 1):
        header = struct.pack("!BBHII", version, pt, (seq + k) & 0xFFFF, ts + 160 * k, ssrc)
        spoof(("127.0.0.1", src), ("127.0.0.1", dst), header + os.urandom(170))
    return src, dst


@needs_root
async def test_an_srtp_phone_over_tls_calls_a_plain_phone(office: Office) -> None:
    stats = office.tmp / "stats.json"
    office.args = ("--stats-file", str(stats))
    office.start()
    alice = office.phone("alice", "100", 1000.0, tls=True, mediaenc="srtp-mand")
    bob = office.phone("bob", "101", 600.0)
    tap = Tap(rtp_ports(alice) | rtp_ports(bob))
    tap.start()
    await started(alice, bob)
    try:
        await alice.command("dial", f"sip:101@127.0.0.1:{office.tls_port};transport=tls")
        await alice.wait_event("CALL_ESTABLISHED")
        await bob.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(1.5)
        # forged packets as Alice (spoofed address, her SSRC): never heard, counted, logged
        alice_port, _ = forge(tap, alice, 200)
        await asyncio.sleep(1.5)
        await alice.command("hangup")
        await bob.wait_event("CALL_CLOSED")
        counters = json.loads(stats.read_text())
    finally:
        tap.stop()
        await stop_all(alice, bob)
    assert counters["srtp_refused"] >= 200
    assert office.proc is not None
    rejected = [
        line
        for line in office.proc.lines
        if f"event=rtp_source_rejected src=127.0.0.1:{alice_port}" in line
    ]
    assert len(rejected) == 1 and "reason=srtp_auth" in rejected[0]  # once for the burst
    assert abs(frequency(alice.recording(), 0.5) - 600) < 10  # Alice hears Bob's tone
    assert abs(frequency(bob.recording(), 0.5) - 1000) < 10  # and Bob hears Alice's
    # on the wire: Alice's leg is ciphertext both ways, Bob's plain G.711 both ways
    assert tone_share(tap.payloads(sent_by=rtp_ports(alice)), 1000) < 0.05
    assert tone_share(tap.payloads(sent_by=rtp_ports(bob)), 600) > 0.5
    to_alice, to_bob = tap.payloads(sent_to=rtp_ports(alice)), tap.payloads(sent_to=rtp_ports(bob))
    assert tone_share(to_alice, 600) < 0.05  # Bob's tone, encrypted for Alice
    assert tone_share(to_bob, 1000) > 0.5  # Alice's tone, decrypted for Bob
    log = "".join(office.proc.lines) if office.proc else ""
    assert "Traceback" not in log


@needs_root
async def test_two_srtp_phones_over_tls(office: Office) -> None:
    # Bob's phone takes RTP/SAVP only (srtp-mand) but his user's policy is the default
    # "optional": the RTP/AVP offer with keys gets 488, and RTP/SAVP is offered once more
    office.start()
    alice = office.phone("alice", "100", 1000.0, tls=True, mediaenc="srtp-mand")
    bob = office.phone("bob", "101", 600.0, tls=True, mediaenc="srtp-mand")
    tap = Tap(rtp_ports(alice) | rtp_ports(bob))
    tap.start()
    await started(alice, bob)
    try:
        await alice.command("dial", f"sip:101@127.0.0.1:{office.tls_port};transport=tls")
        await alice.wait_event("CALL_ESTABLISHED")
        await bob.wait_event("CALL_ESTABLISHED")  # called over its TLS connection
        await asyncio.sleep(3)
        await bob.command("hangup")
        await alice.wait_event("CALL_CLOSED")
    finally:
        tap.stop()
        await stop_all(alice, bob)
    assert abs(frequency(alice.recording(), 0.5) - 600) < 10
    assert abs(frequency(bob.recording(), 0.5) - 1000) < 10
    assert tone_share(tap.payloads(sent_by=rtp_ports(alice)), 1000) < 0.05
    assert tone_share(tap.payloads(sent_by=rtp_ports(bob)), 600) < 0.05
    to_alice, to_bob = tap.payloads(sent_to=rtp_ports(alice)), tap.payloads(sent_to=rtp_ports(bob))
    assert tone_share(to_alice, 600) < 0.05 and tone_share(to_bob, 1000) < 0.05
    assert office.proc is not None
    assert "event=fork_retry target=sip:101-" in "".join(office.proc.lines)  # its contact


async def test_policies_refuse_plain_rtp_and_keys_in_the_clear(office: Office) -> None:
    office.user_extra = {"100": 'media_encryption = "required"'}
    office.start()
    plain_tls = office.phone("alice", "100", 1000.0, tls=True)  # TLS, plain RTP
    keys_udp = office.phone("bob", "101", 600.0, mediaenc="srtp-mand")  # SRTP over UDP
    carol = office.phone("carol", "102", 800.0)
    await started(plain_tls, keys_udp, carol)
    try:
        await plain_tls.command("dial", f"sip:102@127.0.0.1:{office.tls_port};transport=tls")
        closed = await plain_tls.wait_event("CALL_CLOSED")
        assert "488" in closed.get("param", ""), closed
        await keys_udp.command("dial", f"sip:102@127.0.0.1:{office.port}")
        closed = await keys_udp.wait_event("CALL_CLOSED")
        assert "488" in closed.get("param", ""), closed
        assert not carol.seen("CALL_INCOMING")  # nothing rang
    finally:
        await stop_all(plain_tls, keys_udp, carol)
    assert office.proc is not None
    log = "".join(office.proc.lines)
    assert "event=request_refused src=127.0.0.1:" in log
    assert "reason=srtp_keys_over_udp" in log
    assert "event=invite_refused reason=encryption policy=required" in log


def peer_fingerprint(port: int) -> str:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


async def test_a_replaced_certificate_is_loaded_on_reload_and_the_call_goes_on(
    office: Office, tmp_path: Path
) -> None:
    first = make_certificate(tmp_path, "first")
    office.user_extra = {"101": 'media_encryption = "required"'}
    office.start()
    assert office.proc is not None
    # the demo certificate: made at start, its fingerprint in the banner
    banner_fp = peer_fingerprint(office.tls_port)
    assert f"SHA-256 {banner_fp}" in "".join(office.proc.lines)
    alice = office.phone("alice", "100", 1000.0, tls=True, mediaenc="srtp-mand")
    bob = office.phone("bob", "101", 600.0, tls=True, mediaenc="srtp-mand")
    await started(alice, bob)
    try:
        await alice.command("dial", f"sip:101@127.0.0.1:{office.tls_port};transport=tls")
        await alice.wait_event("CALL_ESTABLISHED")
        await bob.wait_event("CALL_ESTABLISHED")
        t0 = time.monotonic()
        # the configuration now names a certificate; the daemon reloads
        text = office.config_path.read_text().replace(
            "[server]\n", f'[server]\ntls_certificate = "{first[0]}"\ntls_key = "{first[1]}"\n', 1
        )
        office.config_path.write_text(text)
        reload = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "softswitch.cli", "reload", "--config", str(office.config_path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert reload.returncode == 0, reload.stderr
        assert peer_fingerprint(office.tls_port) != banner_fp  # new connections: new cert
        wanted = hashlib.sha256(ssl.PEM_cert_to_DER_cert(first[0].read_text())).hexdigest().upper()
        assert peer_fingerprint(office.tls_port).replace(":", "") == wanted
        t_reload = time.monotonic() - t0
        await asyncio.sleep(2.5)
        await alice.command("hangup")
        await bob.wait_event("CALL_CLOSED")
        assert not alice.seen("CALL_CLOSED")[:-1]  # one call, closed once, by the hangup
    finally:
        await stop_all(alice, bob)
    # the call went on over its TLS connections, SRTP both ways, after the reload
    assert abs(frequency(bob.recording(), t_reload + 0.5) - 1000) < 10
    assert abs(frequency(alice.recording(), t_reload + 0.5) - 600) < 10


async def test_linphone_over_tls_with_srtp_calls_an_srtp_baresip(
    office: Office, tmp_path: Path
) -> None:
    """A third SIP and media stack (liblinphone: belle-sip, mediastreamer2, its own
    libsrtp use) registers over TLS, checking the daemon's certificate, and calls a
    baresip phone; both legs SRTP, tones both ways."""
    office.user_extra = {"101": 'media_encryption = "required"'}
    office.start()
    bob = office.phone("bob", "101", 600.0, tls=True, mediaenc="srtp-mand")
    tone = tmp_path / "tone1000.wav"
    soundfile.write(tone, sine_mix((1000.0,), 8000 * 30, 8000, -12), 8000, subtype="PCM_16")
    heard = tmp_path / "linphone-heard.wav"
    alice = Linphone(
        tmp_path / "linphone",
        "100",
        free_port(),
        rtp_base(span=2, low=40000, high=50000),
        office.data_dir / "tls" / "cert.pem",  # the demo certificate, made at start
    )
    await started(bob)
    await alice.start()
    try:
        await alice.register(f"sip:127.0.0.1:{office.tls_port};transport=tls", "alice100")
        await alice.command("soundcard use files")
        await alice.command(f"call sip:101@127.0.0.1:{office.tls_port};transport=tls")
        await alice.wait_for("Media streams established")
        await bob.wait_event("CALL_ESTABLISHED")
        await alice.command(f"play {tone}")
        await alice.command(f"record {heard}")
        await asyncio.sleep(4)
        await alice.command("terminate")
        await bob.wait_event("CALL_CLOSED")
    finally:
        await alice.stop()
        await stop_all(bob)
    assert abs(frequency(heard, 0.5) - 600) < 10  # linphone hears baresip's tone
    assert abs(frequency(bob.recording(), 0.5) - 1000) < 10  # and baresip linphone's
    assert office.proc is not None
    assert "Traceback" not in "".join(office.proc.lines)


@pytest.mark.timeout(180)
async def test_hold_music_voicemail_recording_and_a_conference_on_srtp_calls(
    office: Office, tmp_path: Path
) -> None:
    """An SRTP phone (TLS, RTP/SAVP only, its user requires SRTP and records every call)
    is held and hears the music, leaves a message, and meets a plain phone in a
    conference, its keys (RFC 4733, inside SRTP) entering the codes."""
    music = builtin_music(8000)
    moh = tmp_path / "moh.wav"
    soundfile.write(moh, music, 8000, subtype="PCM_16")
    office.extra = f'[hold_music]\ndefault = "{moh}"\n'
    office.user_extra = {
        "100": 'media_encryption = "required"\nconference_host_code = "1001"\n'
        'conference_code = "2001"\n[users.recording]\nmode = "always"\n'
    }
    office.start()
    alice = office.phone("alice", "100", 1000.0, tls=True, mediaenc="srtp-mand")
    bob = office.phone("bob", "101", 600.0)
    await started(alice, bob)
    tls = f"127.0.0.1:{office.tls_port};transport=tls"
    try:
        # held by a plain phone: the music, encrypted
        await alice.command("dial", f"sip:101@{tls}")
        await alice.wait_event("CALL_ESTABLISHED")
        t0 = time.monotonic()
        await bob.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(2.0)
        await bob.command("hold")
        t_hold = time.monotonic() - t0
        await asyncio.sleep(4.0)
        await bob.command("resume")
        t_resume = time.monotonic() - t0
        await asyncio.sleep(2.0)
        await alice.command("hangup")
        await bob.wait_event("CALL_CLOSED")
        held_call = alice.recording()
        # a message for Carol, who has no phone: her voicemail
        await alice.command("dial", f"sip:102@{tls}")
        await alice.wait_event("CALL_ESTABLISHED", count=2, timeout=30)
        await asyncio.sleep(8.5 + 3)  # greeting and beep, then the tone
        await alice.command("hangup")
        await alice.wait_event("CALL_CLOSED", count=2)
        # the conference: Alice hosts (SRTP), Bob joins (plain)
        for phone, code in ((alice, "1001#"), (bob, "2001#")):
            await phone.command(
                "dial", f"sip:800@{tls if phone is alice else f'127.0.0.1:{office.port}'}"
            )
            await phone.wait_event("CALL_ESTABLISHED", count=3 if phone is alice else 2)
            await asyncio.sleep(1.0)
            for key in code:
                await phone.command("sndcode", key)
                await asyncio.sleep(0.3)
        await asyncio.sleep(5.0)
        await alice.command("hangup")
        await bob.command("hangup")
    finally:
        await stop_all(alice, bob)
    assert abs(frequency(held_call, 0.5, t_hold - 0.3) - 600) < 10
    held, _ = segment(held_call, t_hold + 1.0, t_resume - 0.5)
    assert best_correlation(held, music[8000:24000]) > 0.6  # the hold music, decrypted
    # the message, recorded from the SRTP leg
    with sqlite3.connect(office.data_dir / "voicemail.sqlite") as db:
        [(path,)] = db.execute("SELECT path FROM messages WHERE mailbox = '102'").fetchall()
    message, rate = soundfile.read(path, dtype="int16")
    assert abs(dominant_frequency(active(message), rate) - 1000) < 10
    # the first call, recorded: Alice's and Bob's tones, one on each channel
    with sqlite3.connect(office.data_dir / "recordings.sqlite") as db:
        paths = [p for (p,) in db.execute("SELECT path FROM recordings ORDER BY rowid")]
    stereo, rate = soundfile.read(paths[0], dtype="int16")
    heard = {round(dominant_frequency(active(stereo[:, ch]), rate) / 100) * 100 for ch in (0, 1)}
    assert heard == {600, 1000}
    # in the conference each hears the other (the last seconds of each one's last call)
    assert abs(frequency(alice.recording(), 4.0) - 600) < 10
    assert abs(frequency(bob.recording(), 4.0) - 1000) < 10
