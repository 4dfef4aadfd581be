"""A conference load generator built on this project's ``sip`` and ``rtp``: many phones in
one process, dialling the bridge, entering a code by RFC 4733, then talking or listening.

Every leg is a phone of its own on its own loopback IP (127.77.x.y, one port for all),
so the bridge tells them apart as it would real phones. One task sends every leg's
packet each 20 ms against absolute deadlines, all of them in one ``sendmmsg`` from one
socket (rtp.batch; the source IP set per packet with IP_PKTINFO), headers written as
columns: a tone for talkers, silence for the others, DTMF events while keys are being
pressed. The generator must cost less than what it loads. Each leg's IP has a socket
bound that the kernel fills and drops (read only for the legs chosen for recording,
whose received audio is decoded and kept). A share of the legs may be wideband (G.722,
16 kHz: ``--wideband 0.1``), as desk phones are.

With ``ConferenceLoad(..., srtp=True)`` every leg is an SRTP phone (RFC 3711, SDES keys of RFC
4568): the UA signals over TLS (a throwaway self-signed certificate for its own listener,
the PBX's not checked: target URIs name ``;transport=tls``), offers RTP/SAVP with keys,
and each tick's packets are protected in place in the send batch's rows
(``rtp.srtp.protect_rows``, as the media engine does) before the one ``sendmmsg``; what a
recorded leg receives is read into the rows of a batch and verified and decrypted there
(``unprotect_rows``), a packet that does not verify dropped and counted (``srtp_failed``).

    python -m softswitch.loadgen --target sip:800@127.0.0.1:5060 --user 100 --password x \\
        --code 2001 --legs 100 --talkers 3 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import socket
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

import sip
from media import codecs, g711
from media.tones import sine_mix
from rtp import DtmfSender
from rtp.batch import Batch, BatchSocket, address_bytes
from rtp.columns import write_headers
from rtp.srtp import SrtpContext, protect_rows, unprotect_rows
from sip.sdes import new_key

SILENCE = b"\xff" * 160  # µ-law zero
TALKER_TONES = (400.0, 1000.0, 1700.0, 2300.0, 300.0, 2700.0, 500.0, 1200.0, 1900.0, 2500.0)


def leg_ip(index: int) -> str:
    """The loopback IP of leg ``index`` (65,000 of them before a repeat)."""
    return f"127.77.{index // 250}.{index % 250 + 1}"


@dataclass(eq=False)
class Leg:
    index: int
    sock: socket.socket
    port: int
    ip: str = "127.0.0.1"
    tone: list[bytes] | None = None  # frames of this leg's voice (its codec), cycled
    silence: list[bytes] = field(default_factory=lambda: [SILENCE])  # cycled when quiet
    pt: int = 0  # payload type: 0 PCMU, 9 G.722
    remote: tuple[str, int] | None = None
    call: sip.OutgoingCall | None = None
    ssrc: int = 0
    seq: int = 0
    ts: int = 0
    dtmf: DtmfSender = field(default_factory=DtmfSender)
    event_ts: int = 0
    muted: bool = False
    record: bool = False
    heard: list[bytes] = field(default_factory=list)
    answered_at: float | None = None
    failed: str | None = None
    remote_bytes: bytes | None = None  # remote's IP as the batch columns hold it
    source_bytes: bytes = b""  # this leg's IPv4 address (IP_PKTINFO)
    srtp_out: SrtpContext | None = None  # SRTP: what this leg sends is protected with it
    srtp_in: SrtpContext | None = None  # and what it receives verified and decrypted

    def secure(self, keys: sip.SrtpKeys | None) -> None:
        """SRTP with ``keys`` (offer/answer's ``AudioStream.srtp``; None: plain RTP) from
        the next packet on, both ways."""
        if keys is None:
            self.srtp_out = self.srtp_in = None
            return
        self.srtp_out = SrtpContext(keys.suite, keys.local, inbound=False)
        self.srtp_in = SrtpContext(keys.suite, keys.remote, inbound=True)


@functools.cache
def tls_contexts(host: str = "127.0.0.1") -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """For a UA on ``host`` that reaches the PBX over TLS: its own listener's context (a
    self-signed certificate made for the run; a UA's TLS listener needs one, the PBX does
    not check it) and a client context that checks nothing (the PBX's certificate is its
    self-signed demo one)."""
    from softswitch.certificates import demo_certificate

    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:
        server.load_cert_chain(*demo_certificate(Path(tmp), [host]))
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    return server, client


def tls_user_agent(host: str, user: str, domain: str | None = None) -> sip.UserAgent:
    """A UA listening on UDP and TLS (any ports) of ``host`` that connects over TLS without
    checking the peer's certificate (see :func:`tls_contexts`)."""
    server, client = tls_contexts(host)
    return sip.UserAgent(
        [f"udp:{host}:0", f"tls:{host}:0"],
        user=user,
        domain=domain,
        tls_context=server,
        client_tls_context=client,
    )


def tone_frames(freq: float, seconds: float = 2.0, codec: str = "PCMU") -> list[bytes]:
    """``freq`` for ``seconds`` encoded frame by frame with ``codec`` (one encoder: the
    frames form one stream, cycled)."""
    c = codecs.codec(codec)
    n = c.samples_per_frame()
    samples = sine_mix((freq,), int(c.sample_rate * seconds), c.sample_rate, -15)
    encoder = c.encoder()
    return [encoder.encode(samples[i : i + n]) for i in range(0, len(samples), n)]


class ConferenceLoad:
    def __init__(
        self,
        target: str,
        *,
        user: str,
        password: str,
        legs: int,
        talkers: int = 3,
        record: tuple[int, ...] = (),
        host: str = "127.0.0.1",
        concurrency: int = 50,
        wideband: float = 0.0,
        srtp: bool = False,
    ) -> None:
        """``srtp``: every leg is an SRTP phone (RTP/SAVP with SDES keys, SIP over TLS: the
        target must name ``;transport=tls``)."""
        self.target = target
        self.credentials = (user, password)
        self.host = host
        self.concurrency = concurrency
        self.srtp = srtp
        self.encryption = "required" if srtp else "off"  # sip.make_offer/answer's policy
        self.ua = (
            tls_user_agent(host, user, "loadgen")
            if srtp
            else sip.UserAgent(f"udp:{host}:0", user=user, domain="loadgen")
        )
        self.legs: list[Leg] = []
        # one socket sends every leg's packets (source IP per packet); each leg's IP has a
        # socket on the same port for what the bridge sends back
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        out.bind((host, 0))
        out.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.port = out.getsockname()[1]
        self.out = BatchSocket(out)
        self.batch = Batch(max(legs, 1), 12 + 320)  # room for SRTP's tag (rtp.srtp.TRAILER)
        self.inbox = Batch(64, 2048)  # a recorded leg's packets, read in turn
        self.readers: dict[int, BatchSocket] = {}  # recorded leg -> its socket, batched
        for i in range(legs):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((leg_ip(i), self.port))
            s.setblocking(False)
            if i not in record:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # never read
            leg = Leg(i, s, self.port, leg_ip(i), record=i in record)
            if leg.record:
                self.readers[i] = BatchSocket(s)
            leg.ssrc = 0x10000 + i
            # every 1/wideband-th leg is G.722, never a talker nor a recorded one
            every = round(1 / wideband) if wideband > 0 else 0
            wide = every > 0 and i >= talkers and i % every == every - 1 and i not in record
            if wide:
                leg.pt = 9
                leg.silence = tone_frames(0.0, 1.0, "G722")
            if i < talkers:
                leg.tone = tone_frames(TALKER_TONES[i % len(TALKER_TONES)])
            self.legs.append(leg)
        self.late = 0
        self.ticks = 0
        self.retried = 0  # INVITEs tried again after a 503
        self.srtp_failed = 0  # packets received that did not verify (or refused to protect)
        self.srtp_verified = 0  # SRTP packets received that verified (recorded legs)
        self._sender: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.ua.start()
        self._sender = asyncio.create_task(self._media())

    async def call(self, leg: Leg, code: str) -> None:
        codec = sip.G722 if leg.pt == 9 else sip.PCMU
        offer = bytes(self.offer(leg, (codec,)))
        call = await self.invite(leg, offer)
        if call is None:
            return
        answer = sip.parse_sdp(call.remote_sdp or b"")
        stream = sip.process_answer(sip.parse_sdp(offer), answer)
        leg.secure(stream.srtp)
        leg.remote_bytes = None
        leg.remote = (stream.remote_address, stream.remote_port)
        leg.call = call
        leg.answered_at = time.monotonic()
        leg.dtmf.queue(code + "#", 80)

    def offer(self, leg: Leg, codecs: tuple[sip.Codec, ...]) -> sip.SessionDescription:
        """``leg``'s SDP offer: RTP/SAVP with keys of its own when the load is SRTP."""
        key = new_key() if self.srtp else None
        return sip.make_offer(leg.ip, leg.port, codecs, encryption=self.encryption, key=key)

    async def invite(self, leg: Leg, offer: bytes) -> sip.OutgoingCall | None:
        """INVITE the target as a phone would: a 503 (the PBX's overload control) is
        tried again after its Retry-After, up to 3 times; None when it failed."""
        for attempt in range(4):
            try:
                return await self.ua.invite(
                    self.target, offer, credentials=self.credentials, timeout=30
                )
            except sip.RequestFailed as exc:
                retry = exc.response.headers.get("Retry-After")
                if exc.status != 503 or retry is None or attempt == 3:
                    leg.failed = repr(exc)
                    return None
                self.retried += 1
                seconds = retry.split(";")[0].split("(")[0].strip()
                await asyncio.sleep(min(10.0, float(seconds) if seconds.isdigit() else 1.0))
            except (TimeoutError, OSError) as exc:
                leg.failed = repr(exc)
                return None
        return None

    async def join_all(
        self, code: str, codes: dict[int, str] | None = None, indexes: list[int] | None = None
    ) -> float:
        """Dial and enter the code on every leg (or ``indexes``); seconds it took."""
        started = time.monotonic()
        limit = asyncio.Semaphore(self.concurrency)
        chosen = [self.legs[i] for i in indexes] if indexes is not None else self.legs

        async def one(leg: Leg) -> None:
            async with limit:
                await self.call(leg, (codes or {}).get(leg.index, code))

        await asyncio.gather(*(one(leg) for leg in chosen))
        while any(leg.dtmf.active for leg in chosen if leg.call):
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    def press(self, index: int, keys: str) -> None:
        self.legs[index].dtmf.queue(keys, 80)

    async def _media(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while True:
            due = start + n * 0.02
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.01:
                self.late += 1
            self.ticks += 1
            self._send_tick(n)
            for leg in self.legs:
                if leg.record and leg.remote is not None:
                    self._drain(leg)
            n += 1

    def _send_tick(self, n: int) -> None:
        """Every leg's packet of tick ``n``, in one batch: the payloads shared by many
        (silence) copied to their rows at once, headers as columns."""
        batch, data = self.batch, self.batch.data
        rows, pts, seqs, tss, ssrcs, sources = [], [], [], [], [], []
        secure: list[int] = []
        contexts: list[SrtpContext] = []
        groups: dict[bytes, list[int]] = {}
        for i, leg in enumerate(self.legs):
            if leg.remote is None:
                continue
            event, starting = leg.dtmf.next_packet() if leg.dtmf.active else (None, False)
            if event is not None:
                if starting:
                    leg.event_ts = leg.ts
                pt, ts, payload = (0x80 if event.marker else 0) | 101, leg.event_ts, event.payload
            else:
                if leg.tone and not leg.muted:
                    payload = leg.tone[n % len(leg.tone)]
                else:
                    payload = leg.silence[n % len(leg.silence)]
                pt, ts = leg.pt, leg.ts
            groups.setdefault(payload, []).append(i)
            rows.append(i)
            pts.append(pt)
            seqs.append(leg.seq)
            tss.append(ts)
            ssrcs.append(leg.ssrc)
            if leg.remote_bytes is None:
                leg.remote_bytes = address_bytes(leg.remote[0])
                leg.source_bytes = address_bytes(leg.ip)[12:]
            sources.append(leg.source_bytes)
            if leg.srtp_out is not None:
                secure.append(i)
                contexts.append(leg.srtp_out)
            leg.seq = (leg.seq + 1) & 0xFFFF
            leg.ts = (leg.ts + 160) & 0xFFFFFFFF
        if not rows:
            return
        r = np.array(rows, dtype=np.int64)
        for payload, members in groups.items():
            at = np.array(members, dtype=np.int64)
            data[at, 12 : 12 + len(payload)] = np.frombuffer(payload, dtype=np.uint8)
            batch.length[at] = 12 + len(payload)
        write_headers(data, r, np.array(pts), np.array(seqs), np.array(tss), np.array(ssrcs))
        for i in rows:  # destinations: the bridge's port(s)
            leg = self.legs[i]
            assert leg.remote is not None and leg.remote_bytes is not None
            batch.ip[i] = np.frombuffer(leg.remote_bytes, dtype=np.uint8)
            batch.port[i] = leg.remote[1]
        source = np.frombuffer(b"".join(sources), dtype=np.uint8).reshape(-1, 4)
        if secure:  # SRTP: protected in place, rows and lengths as sendmmsg takes them
            failed = protect_rows(contexts, data, np.array(secure, dtype=np.int64), batch.length)
            if failed:
                self.srtp_failed += len(failed)
                keep = ~np.isin(r, failed)
                r, source = r[keep], source[keep]
        self.out.send(batch, r, source=source)

    def received(self, leg: Leg) -> list[bytes]:
        """Every RTP packet a recorded leg got since the last call, read into the rows of
        :attr:`inbox`; an SRTP leg's verified and decrypted there, those that do not
        verify dropped (counted in ``srtp_failed``)."""
        reader, inbox = self.readers.get(leg.index), self.inbox
        if reader is None:
            return []
        packets: list[bytes] = []
        while True:
            inbox.count = 0
            n = reader.receive(inbox)
            if not n:
                return packets
            rows = np.arange(n, dtype=np.int64)
            if leg.srtp_in is not None:
                failed, _ = unprotect_rows([leg.srtp_in] * n, inbox.data, rows, inbox.length)
                self.srtp_failed += len(failed)
                self.srtp_verified += n - len(failed)
                if failed:
                    rows = rows[~np.isin(rows, failed)]
            length = inbox.length
            packets += [inbox.data[i, : length[i]].tobytes() for i in rows.tolist()]
            if n < inbox.capacity:
                return packets

    def _drain(self, leg: Leg) -> None:
        for data in self.received(leg):
            if len(data) > 12 and data[1] & 0x7F == 0:
                leg.heard.append(data[12:])

    def heard(self, index: int, last_seconds: float | None = None) -> npt.NDArray[np.int16]:
        frames = self.legs[index].heard
        if last_seconds is not None:
            frames = frames[-int(last_seconds * 50) :]
        data = b"".join(frames)
        return g711.ulaw_decode(np.frombuffer(data, dtype=np.uint8))

    def mark(self, index: int) -> int:
        """The number of frames heard so far by a recorded leg (to slice later)."""
        return len(self.legs[index].heard)

    def heard_since(self, index: int, mark: int, until: int | None = None) -> npt.NDArray[np.int16]:
        data = b"".join(self.legs[index].heard[mark:until])
        return g711.ulaw_decode(np.frombuffer(data, dtype=np.uint8))

    async def hangup(self, index: int) -> None:
        leg = self.legs[index]
        if leg.call is not None:
            await leg.call.hangup()
            leg.remote = None

    async def stop(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
        for leg in self.legs:
            leg.remote = None
        await asyncio.gather(
            *(leg.call.hangup() for leg in self.legs if leg.call), return_exceptions=True
        )
        await self.ua.close()
        for leg in self.legs:
            leg.sock.close()
        self.out.close()


async def _main(args: argparse.Namespace) -> None:
    record = tuple(int(x) for x in args.record.split(",")) if args.record else ()
    load = ConferenceLoad(
        args.target,
        user=args.user,
        password=args.password,
        legs=args.legs,
        talkers=args.talkers,
        record=record,
        wideband=args.wideband,
    )
    await load.start()
    join = await load.join_all(args.code, {0: args.host_code} if args.host_code else None)
    print(
        json.dumps(
            {
                "event": "joined",
                "seconds": round(join, 3),
                "answered": sum(1 for leg in load.legs if leg.call),
                "failed": [leg.failed for leg in load.legs if leg.failed][:5],
            }
        ),
        flush=True,
    )
    await asyncio.sleep(args.seconds)
    for index in record:
        audio = load.heard(index, args.seconds)
        print(json.dumps({"event": "heard", "leg": index, "samples": len(audio)}), flush=True)
        if args.save_prefix:
            np.save(f"{args.save_prefix}{index}.npy", audio)
    print(json.dumps({"event": "done", "late_ticks": load.late, "ticks": load.ticks}), flush=True)
    await load.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--target", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--code", required=True, help="participant code")
    ap.add_argument("--host-code", help="leg 0 joins with this code (the host)")
    ap.add_argument("--legs", type=int, default=100)
    ap.add_argument("--talkers", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--record", default="", help="comma-separated leg indexes to record")
    ap.add_argument("--save-prefix", help="save recorded audio as PREFIX<leg>.npy")
    ap.add_argument("--wideband", type=float, default=0.0, help="share of G.722 legs (0-1)")
    args = ap.parse_args()
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
