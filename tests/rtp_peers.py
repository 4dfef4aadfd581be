"""RTP peers for in-process PBX tests: a phone (this project's UA with a real RTP stream),
a NAT in front of a phone's RTP, and an attacker that sends well-formed RTP."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

import sip
from media import codecs, g711
from media.stream import AudioStream
from media.tones import sine_mix
from rtp import DtmfSender, ReceiverReport, RtpPacket, Session, build_compound

from .netutil import free_port

Address = tuple[str, int]
Samples = npt.NDArray[np.int16]
ATTACKER_IP = "127.0.0.9"  # another loopback address: not the phones', not the PBX's


def band_share(samples: Samples, hz: float, width: float = 40.0) -> float:
    """The share of the signal's energy within ``hz`` ± ``width`` (0..1)."""
    x = samples.astype(np.float64)
    if len(x) < 160 or not np.any(x):
        return 0.0
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / 8000)
    return float(spectrum[np.abs(freqs - hz) <= width].sum() / spectrum.sum())


async def until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.01)


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, handler: Callable[[bytes, Address], None]) -> None:
        self.handler = handler

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.handler(data, (addr[0], addr[1]))


async def _bind(host: str, handler: Callable[[bytes, Address], None]) -> asyncio.DatagramTransport:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Endpoint(handler), local_addr=(host, 0)
    )
    return transport


class Nat:
    """A NAT in front of one phone's RTP: the phone sends to ``inner``; the NAT sends on
    from its outer port and relays the answers back. :meth:`rebind` gives the mapping a
    new outer port and closes the old one, as a home router does when a mapping expires."""

    def __init__(self) -> None:
        self.server: Address | None = None
        self.phone: Address | None = None
        self._inner: asyncio.DatagramTransport | None = None
        self._outer: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        self._inner = await _bind("127.0.0.1", self._up)
        self._outer = await _bind("127.0.0.1", self._down)

    @property
    def inner(self) -> Address:
        assert self._inner is not None
        return self._inner.get_extra_info("sockname")[:2]  # type: ignore[no-any-return]

    @property
    def outer(self) -> Address:
        assert self._outer is not None
        return self._outer.get_extra_info("sockname")[:2]  # type: ignore[no-any-return]

    def _up(self, data: bytes, addr: Address) -> None:
        self.phone = addr
        if self._outer is not None and self.server is not None:
            self._outer.sendto(data, self.server)

    def _down(self, data: bytes, addr: Address) -> None:
        if self._inner is not None and self.phone is not None and addr == self.server:
            self._inner.sendto(data, self.phone)

    async def rebind(self) -> None:
        old = self._outer
        self._outer = await _bind("127.0.0.1", self._down)
        if old is not None:
            old.close()

    def close(self) -> None:
        for t in (self._inner, self._outer):
            if t is not None:
                t.close()


class Phone:
    """A UA with a real RTP stream: sends its tone while ``talking``, keeps what it hears
    (with when), and the RFC 4733 keys it receives. Auto-answers."""

    def __init__(self, ext: str, password: str, pbx_port: int, tone_hz: float) -> None:
        self.ext, self.password, self.pbx_port = ext, password, pbx_port
        self.ua = sip.UserAgent("udp:127.0.0.1:0", user=ext)
        self.tone = sine_mix((tone_hz,), 8000 * 30, 8000, -12)
        self.talking = True
        self.heard: list[tuple[float, Samples]] = []
        self.digits: list[str] = []
        self.call: sip.Call | None = None
        self.session: Session | None = None
        self.stream: AudioStream | None = None
        self.pbx_media: Address | None = None  # the PBX's RTP address, from its SDP
        self.nat: Nat | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, *, register: bool = True) -> None:
        await self.ua.start()
        self.ua.on_invite = self._on_invite
        if register:
            await self.ua.register(
                f"sip:127.0.0.1:{self.pbx_port}",
                aor=f"sip:{self.ext}@demo.softswitch",
                username=self.ext,
                password=self.password,
                expires=300,
            )
        self._task = asyncio.create_task(self._media())

    async def _session(self) -> Session:
        session = Session(payload_type=0, rtcp=False)
        await session.open("127.0.0.1")
        session.on_dtmf = self.digits.append
        return session

    def _attach(self, session: Session, stream: sip.AudioStream) -> None:
        self.pbx_media = (stream.remote_address, stream.remote_port)
        if self.nat is not None:
            self.nat.server = self.pbx_media
            session.set_remote(self.nat.inner)
        else:
            session.set_remote(self.pbx_media)
        self.session = session
        self.stream = AudioStream(session, codecs.PCMU)

    async def _on_invite(self, call: sip.IncomingCall) -> None:
        session = await self._session()
        assert session.local is not None
        answer, stream = sip.answer(
            sip.parse_sdp(call.remote_sdp or b""), "127.0.0.1", session.local[1], (sip.PCMU,)
        )
        assert stream is not None
        self._attach(session, stream)
        self.call = call
        call.answer(bytes(answer))

    async def dial(self, number: str, *, nat: Nat | None = None) -> sip.OutgoingCall:
        """Call ``number``; behind ``nat``, the SDP names an address the PBX cannot reach
        (a private one) and the RTP goes out through the NAT."""
        self.nat = nat
        session = await self._session()
        assert session.local is not None
        sdp_port = free_port() if nat is not None else session.local[1]
        offer = sip.make_offer("127.0.0.1", sdp_port, (sip.PCMU,))
        call = await self.ua.invite(
            f"sip:{number}@127.0.0.1:{self.pbx_port}",
            bytes(offer),
            credentials=(self.ext, self.password),
            timeout=10,
        )
        self._attach(session, sip.process_answer(offer, sip.parse_sdp(call.remote_sdp or b"")))
        self.call = call
        return call

    async def _media(self) -> None:
        loop = asyncio.get_running_loop()
        n = 0
        while True:
            await asyncio.sleep(0.02)
            stream = self.stream
            if stream is None:
                continue
            if self.talking:
                stream.write(self.tone[(n * 160) % len(self.tone) :][:160])
            else:
                stream.session.skip()  # silence suppressed: no packet, time goes on
            self.heard.append((loop.time(), stream.read()))
            n += 1

    def audio(self, start: float, end: float) -> Samples:
        frames = [f for t, f in self.heard if start <= t < end]
        return np.concatenate(frames) if frames else np.zeros(0, np.int16)

    def first_heard(self, hz: float, after: float, run: int = 10) -> float | None:
        """When ``hz`` was heard again after ``after``, for ``run`` frames in a row."""
        frames = [(t, f) for t, f in self.heard if t >= after]
        for i in range(len(frames) - run + 1):
            if all(
                np.abs(f).max() > 1000 and band_share(f, hz, 60) > 0.8
                for _, f in frames[i : i + run]
            ):
                return frames[i][0]
        return None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.session is not None:
            self.session.close()
        if self.nat is not None:
            self.nat.close()
        await self.ua.close()


@dataclass
class _Target:
    ssrc: int = field(default_factory=lambda: secrets.randbits(32))
    seq: int = field(default_factory=lambda: secrets.randbits(16))
    ts: int = field(default_factory=lambda: secrets.randbits(32))
    event_ts: int = 0
    keys: DtmfSender = field(default_factory=DtmfSender)


class Attacker:
    """Sends well-formed RTP (a tone, RFC 4733 keys, RTCP) from :data:`ATTACKER_IP` to
    RTP ports it learnt from SDP, in sequence at 50 packets/s per port, one SSRC per
    port, and counts what comes back."""

    def __init__(self, tone_hz: float = 1500.0, dtmf_pt: int = 101) -> None:
        self.payloads = g711.ulaw_encode(sine_mix((tone_hz,), 8000, 8000, -6))
        self.dtmf_pt = dtmf_pt
        self.sent = 0
        self.received: list[Address] = []
        self._targets: dict[Address, _Target] = {}
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        self._rtp = await _bind(ATTACKER_IP, lambda d, a: self.received.append(a))
        self._rtcp = await _bind(ATTACKER_IP, lambda d, a: self.received.append(a))

    def keys(self, target: Address, digits: str) -> None:
        self._targets.setdefault(target, _Target()).keys.queue(digits, 100)

    def send(self, target: Address) -> None:
        assert self._rtp is not None and self._rtcp is not None
        t = self._targets.setdefault(target, _Target())
        event, starting = t.keys.next_packet() if t.keys.active else (None, False)
        if event is not None:
            if starting:
                t.event_ts = t.ts
            packet = RtpPacket(self.dtmf_pt, t.seq, t.event_ts, t.ssrc, event.payload, event.marker)
        else:
            offset = (t.seq * 160) % (len(self.payloads) - 160)
            packet = RtpPacket(0, t.seq, t.ts, t.ssrc, bytes(self.payloads[offset : offset + 160]))
        self._rtp.sendto(bytes(packet), target)
        if t.seq % 25 == 0:  # and RTCP twice a second
            self._rtcp.sendto(
                build_compound([ReceiverReport(t.ssrc, ())]), (target[0], target[1] + 1)
            )
        t.seq = (t.seq + 1) & 0xFFFF
        t.ts = (t.ts + 160) & 0xFFFFFFFF
        self.sent += 1

    async def attack(self, targets: list[Address], seconds: float) -> None:
        for _ in range(int(seconds * 50)):
            for target in targets:
                self.send(target)
            await asyncio.sleep(0.02)

    def close(self) -> None:
        for t in (self._rtp, self._rtcp):
            if t is not None:
                t.close()
