"""The PBX in-process, with this project's UA as phones (attended transfer, daemon life)."""

from __future__ import annotations

import asyncio
import gc
import re
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

import sip
from media import codecs, g711
from media.stream import AudioStream
from media.tones import sine_mix
from rtp import Session
from softswitch.pbx import Pbx

from .audio import dominant_frequency
from .netutil import ROOT, free_port
from .office import demo_pbx


class SoftPhone:
    """A UA with a real RTP stream: sends a tone, keeps what it hears."""

    def __init__(
        self, ext: str, password: str, pbx_port: int, tone_hz: float, ip: str = "127.0.0.1"
    ) -> None:
        self.ext, self.password, self.pbx_port = ext, password, pbx_port
        self.ua = sip.UserAgent(f"udp:{ip}:0", user=ext)
        self.tone = sine_mix((tone_hz,), 8000 * 30, 8000, -12)
        self.heard: list[np.ndarray] = []
        self.calls: list[sip.Call] = []
        self._streams: list[AudioStream] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.ua.start()
        self.ua.on_invite = self._on_invite
        await self.ua.register(
            f"sip:127.0.0.1:{self.pbx_port}",
            aor=f"sip:{self.ext}@office.test",
            username=self.ext,
            password=self.password,
            expires=300,
        )
        self._task = asyncio.create_task(self._media())

    async def _stream(self) -> tuple[Session, bytes]:
        session = Session(payload_type=0, rtcp=False)
        local = await session.open("127.0.0.1")
        return session, bytes(sip.make_offer("127.0.0.1", local[1], (sip.PCMU,)))

    async def _on_invite(self, call: sip.IncomingCall) -> None:
        session = Session(payload_type=0, rtcp=False)
        local = await session.open("127.0.0.1")
        answer, stream = sip.answer(
            sip.parse_sdp(call.remote_sdp or b""), "127.0.0.1", local[1], (sip.PCMU,)
        )
        assert stream is not None
        session.set_remote((stream.remote_address, stream.remote_port))
        self._streams.append(AudioStream(session, codecs.PCMU))
        self.calls.append(call)
        call.answer(bytes(answer))

    async def call(self, number: str) -> sip.OutgoingCall:
        session, offer = await self._stream()
        call = await self.ua.invite(
            f"sip:{number}@127.0.0.1:{self.pbx_port}",
            offer,
            credentials=(self.ext, self.password),
            timeout=10,
        )
        stream = sip.process_answer(sip.parse_sdp(offer), sip.parse_sdp(call.remote_sdp or b""))
        session.set_remote((stream.remote_address, stream.remote_port))
        self._streams.append(AudioStream(session, codecs.PCMU))
        self.calls.append(call)
        return call

    async def _media(self) -> None:
        n = 0
        while True:
            await asyncio.sleep(0.02)
            for s in self._streams:
                s.write(self.tone[(n * 160) % len(self.tone) :][:160])
                self.heard.append(s.read())
            n += 1

    def heard_frequency(self, last_seconds: float) -> float:
        frames = self.heard[-int(last_seconds * 50) :]
        return dominant_frequency(np.concatenate(frames), 8000)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.ua.close()


@pytest.fixture
async def pbx(tmp_path: Path) -> AsyncIterator[Pbx]:
    p = await demo_pbx(tmp_path)
    yield p
    await p.stop()


async def test_attended_transfer_with_replaces(pbx: Pbx) -> None:
    port = pbx.ua.listeners[0].port
    alice = SoftPhone("100", "alice100", port, 1000.0)
    bob = SoftPhone("101", "bob101", port, 600.0)
    carol = SoftPhone("102", "carol102", port, 800.0)
    for p in (alice, bob, carol):
        await p.start()
    try:
        to_bob = await alice.call("101")
        await asyncio.sleep(0.3)
        await to_bob.reinvite(
            bytes(sip.make_offer("127.0.0.1", 1, (sip.PCMU,), direction="sendonly"))
        )  # hold Bob
        to_carol = await alice.call("102")  # the consultation call
        await asyncio.sleep(1.0)
        assert abs(carol.heard_frequency(0.5) - 1000) < 10
        # Alice transfers Bob to Carol, replacing her call with Carol
        response = await to_bob.refer(f"sip:102@127.0.0.1:{port}", replaces=to_carol)
        assert response.status == 202
        await to_bob.wait_ended(5)
        await to_carol.wait_ended(5)
        await asyncio.sleep(1.5)
        assert abs(bob.heard_frequency(0.8) - 800) < 10  # Bob now hears Carol
        assert abs(carol.heard_frequency(0.8) - 600) < 10  # and Carol hears Bob
        assert bob.calls[0].state is sip.CallState.ESTABLISHED
    finally:
        for p in (alice, bob, carol):
            await p.stop()


async def test_keys_pass_through_a_bridged_call(pbx: Pbx) -> None:
    """RFC 4733 keys from one phone reach the other (an IVR behind a trunk needs them),
    and keys sent by SIP INFO are turned into RFC 4733."""
    port = pbx.ua.listeners[0].port
    alice = SoftPhone("100", "alice100", port, 1000.0)
    bob = SoftPhone("101", "bob101", port, 600.0)
    for p in (alice, bob):
        await p.start()
    try:
        call = await alice.call("101")
        await asyncio.sleep(0.5)
        received: list[str] = []
        bob._streams[0].session.on_dtmf = received.append
        alice._streams[0].session.send_dtmf("42", 80)
        await asyncio.sleep(1.0)
        await call.send_dtmf("#")  # SIP INFO
        await asyncio.sleep(0.8)
        assert "".join(received) == "42#"
    finally:
        for p in (alice, bob):
            await p.stop()


async def test_late_offer_invite(pbx: Pbx) -> None:
    """An INVITE without SDP: the PBX offers in its 200, the phone answers in the ACK,
    and the prompt's audio flows."""
    port = pbx.ua.listeners[0].port
    async with sip.UserAgent("udp:127.0.0.1:0", user="100") as ua:
        session = Session(payload_type=0, rtcp=False)
        local = await session.open("127.0.0.1")

        def on_offer(body: bytes) -> bytes:
            answer, stream = sip.answer(sip.parse_sdp(body), "127.0.0.1", local[1], (sip.PCMU,))
            assert stream is not None
            session.set_remote((stream.remote_address, stream.remote_port))
            return bytes(answer)

        call = await ua.invite(
            f"sip:*97@127.0.0.1:{port}", None, wait=False, credentials=("100", "alice100")
        )
        call.on_offer = on_offer
        await call.wait_answer(5)
        audio = AudioStream(session, codecs.PCMU)
        frames = []
        for _ in range(60):
            await asyncio.sleep(0.02)
            audio.write(np.zeros(160, np.int16))
            frames.append(audio.read())
        heard = np.concatenate(frames)
        assert session.counters.received > 20 and np.abs(heard).max() > 1000  # the prompt
        await call.bye()
        session.close()


async def test_keepalive_drops_a_silent_device(tmp_path: Path) -> None:
    """OPTIONS go to registered contacts; one that stops answering is unregistered."""
    pbx = await demo_pbx(tmp_path, server="keepalive_interval = 1.0\nsip_t1 = 0.02")
    port = pbx.ua.listeners[0].port
    try:
        phone = sip.UserAgent("udp:127.0.0.1:0", user="100")
        await phone.start()
        await phone.register(
            f"sip:127.0.0.1:{port}",
            aor="sip:100@demo.softswitch",
            username="100",
            password="alice100",
            expires=300,
        )
        assert len(pbx.registrar.lookup("sip:100@demo.softswitch", pbx.ua.now())) == 1
        await asyncio.sleep(1.5)  # a keep-alive round: answered, the binding stays
        assert len(pbx.registrar.lookup("sip:100@demo.softswitch", pbx.ua.now())) == 1
        phone.registrations.clear()  # the phone vanishes without unregistering
        await phone.transport.close()
        await asyncio.sleep(3.5)  # next OPTIONS times out after 64*T1
        assert pbx.registrar.lookup("sip:100@demo.softswitch", pbx.ua.now()) == []
    finally:
        await pbx.stop()


def test_daemon_demo_starts_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "softswitch.cli",
            "run",
            "--listen",
            f"127.0.0.1:{port}",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "softswitch running" in line:
            break
    text = "".join(lines)
    assert re.search(r"^  100 +Alice Martin +alice100 +1100 ", text, re.M)  # the banner
    assert (tmp_path / "data" / "voicemail.sqlite").exists()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "event=stopped" in out


async def test_trunk_registers_and_authenticates_outbound_calls(tmp_path: Path) -> None:
    """The PBX registers to its provider with digest auth and answers the provider's
    challenge on an outbound call (the provider here is this project's UA + auth guard)."""
    from softswitch.authguard import AuthGuard
    from softswitch.registrar import Registrar

    # the provider is another system: without overload control of its own, which would
    # take this process's PBX start-up (a few hundred ms of loop) for its own lag and 503
    async with sip.UserAgent("udp:127.0.0.1:0", user="provider", overload=None) as provider:
        guard = AuthGuard("provider.test", {"0123456700": "trunk-secret"}.get)
        registrar = Registrar()
        invites: list[str] = []

        def on_register(incoming: sip.IncomingRequest) -> None:
            verdict = guard.check(incoming.request, incoming.source[1], provider.now())
            if verdict.user is None:
                incoming.respond(verdict.status, verdict.reason, headers=list(verdict.headers))
                return
            result = registrar.process(
                incoming.request,
                f"sip:{verdict.user}@provider.test",
                incoming.source,
                provider.now(),
            )
            incoming.respond(result.status, result.reason, headers=result.headers)

        def on_invite(call: sip.IncomingCall) -> None:
            verdict = guard.check(call.invite, call.incoming.source[1], provider.now(), proxy=True)
            if verdict.user is None:
                call.reject(verdict.status, verdict.reason, headers=list(verdict.headers))
                return
            invites.append(call.invite.uri.user or "")
            answer, _ = sip.answer(sip.parse_sdp(call.remote_sdp or b""), "127.0.0.1", 40002)
            call.answer(bytes(answer))

        provider.handlers["REGISTER"] = on_register
        provider.on_invite = on_invite
        port = provider.listeners[0].port
        trunk = (
            f'\n[[trunks]]\nname = "provider"\nproxy = "sip:127.0.0.1:{port}"\n'
            'username = "0123456700"\npassword = "trunk-secret"\nregister = true\n'
            'from_domain = "provider.test"\n'
        )
        pbx = await demo_pbx(tmp_path, extra=trunk)
        try:
            for _ in range(50):
                if registrar.lookup("sip:0123456700@provider.test", provider.now()):
                    break
                await asyncio.sleep(0.1)
            assert registrar.lookup("sip:0123456700@provider.test", provider.now())
            bob = SoftPhone("101", "bob101", pbx.ua.listeners[0].port, 600.0)
            await bob.start()
            try:
                call = await bob.call("0123456789")
                assert invites == ["0123456789"]
                await call.bye()
            finally:
                await bob.stop()
        finally:
            await pbx.stop()
        assert registrar.lookup("sip:0123456700@provider.test", provider.now()) == []


def _likeness(heard: np.ndarray, prompt: np.ndarray) -> float:
    """How well ``heard`` starts like ``prompt``: the best normalised correlation of the
    prompt's first half second with the first 1.5 s heard (any delay)."""
    a = prompt[:4000].astype(np.float64)
    b = heard[:12000].astype(np.float64)
    scores = np.correlate(b, a, "valid")
    energy = np.sqrt(np.convolve(b * b, np.ones(len(a)), "valid"))
    best = np.max(np.abs(scores) / np.maximum(energy * np.linalg.norm(a), 1e-9))
    return float(best)


async def test_a_french_office_hears_french_conference_prompts(tmp_path: Path) -> None:
    """The bridge's prompts come from the one media engine, in the office's language."""
    from media.audio import load_audio
    from softswitch.media_engine import SOUNDS

    pbx = await demo_pbx(tmp_path, server='language = "fr"')
    port = pbx.ua.listeners[0].port
    alice = SoftPhone("100", "alice100", port, 1000.0)
    alice.tone[:] = 0  # she says nothing: what she hears is the bridge alone
    await alice.start()
    try:
        start = len(alice.heard)
        await alice.call("800")
        await asyncio.sleep(2.0)
        heard = np.concatenate(alice.heard[start:])
        heard = heard[np.argmax(np.abs(heard) > 200) :]  # from the prompt's first sound
        french = load_audio(SOUNDS / "fr" / "conf-enter-code.flac", 8000)
        english = load_audio(SOUNDS / "conf-enter-code.flac", 8000)
        french = french[np.argmax(np.abs(french) > 200) :]
        english = english[np.argmax(np.abs(english) > 200) :]
        like_fr, like_en = _likeness(heard, french), _likeness(heard, english)
        print(f"\nheard like the French prompt {like_fr:.2f}, the English one {like_en:.2f}")
        assert like_fr > 0.8 and like_en < 0.5
    finally:
        await alice.stop()
        await pbx.stop()


class OnePortPhone(SoftPhone):
    """A UA that answers every call from one RTP address, as SIPp or a gateway may do:
    a tone per call (each call its own SSRC), sent where that call's SDP says, and it
    follows a re-INVITE that moves a call's media."""

    def __init__(self, ext: str, password: str, pbx_port: int, ip: str) -> None:
        super().__init__(ext, password, pbx_port, 700.0, ip)
        self.ip = ip
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.tones = [sine_mix((f,), 8000 * 30, 8000, -12) for f in (700.0, 1300.0)]
        self.dest: list[tuple[str, int]] = []
        self.reinvites = 0

    def _answer(self, index: int, offer: bytes) -> bytes:
        answer, stream = sip.answer(sip.parse_sdp(offer), self.ip, self.port, (sip.PCMU,))
        assert stream is not None
        self.dest[index] = (stream.remote_address, stream.remote_port)
        return bytes(answer)

    async def _on_invite(self, call: sip.IncomingCall) -> None:
        index = len(self.calls)
        self.calls.append(call)
        self.dest.append(("0.0.0.0", 0))
        answer = self._answer(index, call.remote_sdp or b"")

        async def moved(_: sip.Call, request: sip.Request) -> bytes | None:
            self.reinvites += 1
            return self._answer(index, request.body) if request.body else None

        call.on_reinvite = moved
        call.answer(answer)

    async def _media(self) -> None:
        n = 0
        while True:
            await asyncio.sleep(0.02)
            for i, (call, dest) in enumerate(zip(self.calls, self.dest, strict=True)):
                if call.state is not sip.CallState.ESTABLISHED or not dest[1]:
                    continue
                frame = g711.ulaw_encode(self.tones[i][(n * 160) % (8000 * 30) :][:160])
                header = struct.pack("!BBHII", 0x80, 0, n & 0xFFFF, n * 160, 0x1000 + i)
                self.sock.sendto(header + frame.tobytes(), dest)
            n += 1

    async def stop(self) -> None:
        await super().stop()
        self.sock.close()


async def _two_callers_and(pbx: Pbx, bob: OnePortPhone) -> tuple[SoftPhone, SoftPhone]:
    """Alice (100) and Carol (102) started beside ``bob``, who is started too."""
    port = pbx.ua.listeners[0].port
    alice = SoftPhone("100", "alice100", port, 1000.0)
    carol = SoftPhone("102", "carol102", port, 800.0)
    for p in (alice, carol, bob):
        await p.start()
    return alice, carol


class SilentOnePortPhone(OnePortPhone):
    """A OnePortPhone that sends no RTP, as SIPp's uas: its second call stays contested."""

    async def _media(self) -> None:
        await asyncio.Event().wait()


async def test_a_contested_call_that_never_moves_is_freed_without_the_cycle_collector(
    pbx: Pbx,
) -> None:
    """Bob answers two calls from one RTP address and sends nothing from it (SIPp's uas):
    the second call's leg stays contested, its move hook set and never fired. That hook
    closes over the call's party, which holds the leg: unless the leg drops it on close,
    every such call is a cycle, left for the full collection the daemon runs only when no
    call is up — 100 MB a minute of RSS at 50 calls/s in the soak."""
    bob = SilentOnePortPhone("101", "bob101", pbx.ua.listeners[0].port, "127.0.42.2")
    alice, carol = await _two_callers_and(pbx, bob)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds is kept for us to look at
    try:
        first = await alice.call("101")
        second = await carol.call("101")
        await asyncio.sleep(0.3)
        contested = [leg for leg in pbx.engine.legs if leg.contested is not None]
        assert contested and contested[0].on_contested is not None
        del contested
        for call in (first, second):
            await call.bye()
        for _ in range(100):
            if not pbx.parties:
                break
            await asyncio.sleep(0.05)
        assert not pbx.parties
        await asyncio.sleep(0.2)
        gc.collect()
        found = [
            type(o).__qualname__
            for o in gc.garbage
            if type(o).__module__.startswith(("softswitch.", "sip."))
        ]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        for p in (alice, carol, bob):
            await p.stop()
    assert not found, f"freed only by the cycle collector: {sorted(set(found))}"


async def test_a_callee_answering_two_calls_from_one_address_gets_a_port_for_the_second(
    pbx: Pbx,
) -> None:
    """Bob's UA answers Alice's call and then Carol's from one RTP address. The PBX's
    shared port cannot tell the two streams apart, and never guesses: the first call
    keeps the address (and only its own stream from it); once RTP comes from there for
    both, the second call's leg moves to a port of its own and a re-INVITE tells Bob's
    UA. Each caller hears only her call: Alice 700 Hz, Carol 1300 Hz."""
    bob = OnePortPhone("101", "bob101", pbx.ua.listeners[0].port, "127.0.42.1")
    alice, carol = await _two_callers_and(pbx, bob)
    try:
        await alice.call("101")
        await asyncio.sleep(0.6)  # Bob's first stream is heard (latched)
        await carol.call("101")
        await asyncio.sleep(1.5)
        assert bob.reinvites == 1  # the second call was moved, the first was not
        first, second = bob.dest
        assert first[1] != second[1]  # the PBX now sends the two calls from two ports
        assert abs(alice.heard_frequency(0.8) - 700) < 10
        assert abs(carol.heard_frequency(0.8) - 1300) < 10
        assert pbx.engine.stats["own_ports"] >= 1
    finally:
        for p in (alice, carol, bob):
            await p.stop()
