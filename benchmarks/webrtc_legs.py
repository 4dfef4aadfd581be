"""CPU per browser leg (ICE-lite, DTLS-SRTP, Opus) against a plain PCMU leg, in one run.

Real legs of the PBX's media engine (softswitch.media_engine) on its shared port, with
peers on loopback sockets in this process:

- *browser calls*: N bridges of a browser leg (the peer does what Chromium does: an ICE
  connectivity check with USE-CANDIDATE, the DTLS 1.2 handshake as client, then SRTP,
  AEAD_AES_128_GCM, Opus at 16 kHz) and a desk phone leg (plain PCMU): every packet the
  browser sends is verified and decrypted, decoded from Opus, encoded to PCMU and sent;
  the other way PCMU is decoded, encoded to Opus, protected and sent;
- *desk calls*: N bridges of two plain PCMU legs (a relay: no decode, no encode).

Each tick every peer sends one packet to its leg, then the engine's tick runs and is
timed alone (``time.process_time`` around it: the peers' work is outside); the peers'
sockets are drained after. Reported: the engine's CPU per tick for each kind and
``ratio`` = browser calls / desk calls (the cost of the browser leg and its transcoding
over a relay of the same number of calls). One browser call's desk end is checked to
hear the browser's tone (700 Hz) and its browser end the desk's (1100 Hz).

    python benchmarks/webrtc_legs.py [--calls 100] [--ticks 250] [--json]
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from aioice import stun
from pylibsrtp import Policy, Session

import sip
from media import codecs, g711
from media.clock import MediaClock
from media.tones import sine_mix
from rtp import PortAllocator
from rtp.dtls_srtp import DtlsSrtp, Identity
from softswitch.media_engine import LegSource, MediaEngine, MediaLeg

HEADER = struct.Struct("!BBHII")
OPUS_PT, PCMU_PT = 111, 0
PROFILE = {
    "AEAD_AES_128_GCM": Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
}


def encoded(codec: str, hz: float, count: int = 50) -> list[bytes]:
    c = codecs.codec(codec)
    encoder, rate = c.encoder(codecs.Options()), c.sample_rate
    samples = sine_mix((hz,), rate * 2, rate, -15)
    step = rate // 50
    return [encoder.encode(samples[i * step : (i + 1) * step]) for i in range(count)]


def dominant(samples: np.ndarray, rate: int) -> float:
    x = samples.astype(np.float64) - samples.mean()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum[5:]) + 5) * rate / len(x)


class Peer:
    """One end on its own socket (127.0.10.x): plain PCMU, or a browser once connected."""

    def __init__(self, n: int, leg: MediaLeg, payloads: list[bytes], pt: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((f"127.0.{10 + n // 250}.{1 + n % 250}", 0))
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.leg, self.payloads, self.pt, self.seq = leg, payloads, pt, 0
        self.step = 960 if pt == OPUS_PT else 160
        self.tx: Session | None = None
        self.rx: Session | None = None
        self.heard: list[bytes] = []

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()  # type: ignore[no-any-return]

    def send(self) -> None:
        packet = HEADER.pack(0x80, self.pt, self.seq & 0xFFFF, self.seq * self.step, 0x7000)
        packet += self.payloads[self.seq % len(self.payloads)]
        self.seq += 1
        self.sock.sendto(self.tx.protect(packet) if self.tx else packet, self.leg.local)

    def drain(self, keep: bool = False) -> None:
        while True:
            try:
                data = self.sock.recv(2048)
            except BlockingIOError:
                return
            if keep and data[1] & 0x7F in (OPUS_PT, PCMU_PT):
                self.heard.append(self.rx.unprotect(data) if self.rx else data)


def connect_browser(engine: MediaEngine, peer: Peer, identity: Identity) -> None:
    """What Chromium does once it has our answer: a check, then DTLS as the client."""
    leg = peer.leg
    assert leg.ice is not None
    check = stun.Message(
        stun.Method.BINDING,
        stun.Class.REQUEST,
        attributes={"USERNAME": f"{leg.ice.ufrag}:peer", "USE-CANDIDATE": None},
    )
    check.add_message_integrity(leg.ice.pwd.encode())
    check.add_fingerprint()
    peer.sock.sendto(bytes(check), leg.local)
    dtls = DtlsSrtp(identity, server=False, remote_fingerprint=engine.identity.fingerprint)
    flight = dtls.start()
    for tick in range(200):
        for data in flight:
            peer.sock.sendto(data, leg.local)
        engine._tick(tick)
        flight = []
        while True:
            try:
                data = peer.sock.recv(4096)
            except BlockingIOError:
                break
            if 20 <= data[0] < 64:
                flight += dtls.receive(data)
        if dtls.keys is not None and leg.srtp is not None:
            break
    if dtls.keys is None:
        raise RuntimeError(f"DTLS did not complete: {dtls.failed}")
    for data in flight:  # the client's last flight, if any
        peer.sock.sendto(data, leg.local)
    suite, local, remote = dtls.keys
    profile = PROFILE[suite]
    peer.tx = Session(Policy(key=local, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))
    peer.rx = Session(Policy(key=remote, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile))


def run(calls: int, ticks: int, browsers: bool, opus: bool = True) -> dict[str, float]:
    engine = MediaEngine(MediaClock(), PortAllocator(44000, 44100), capacity=2 * calls + 8)
    identity = Identity()  # the browsers' certificate (one for all: it costs nothing here)
    opus_frames = encoded("OPUS", 700.0)
    pcmu_browser_side = encoded("PCMU", 700.0)
    codec, pt = (sip.OPUS, OPUS_PT) if browsers and opus else (sip.PCMU, PCMU_PT)
    pcmu = encoded("PCMU", 1100.0)
    peers: list[Peer] = []
    try:
        for k in range(calls):
            a = engine._add(engine._shared_pair("127.0.0.1"))
            b = engine._add(engine._shared_pair("127.0.0.1"))
            pa = Peer(2 * k, a, opus_frames if pt == OPUS_PT else pcmu_browser_side, pt)
            pb = Peer(2 * k + 1, b, pcmu, PCMU_PT)
            if browsers:
                terms = a.browser_terms()
                assert terms.ufrag
                browser = sip.webrtc.Peer("peer", "p" * 22, identity.fingerprint, True, "0")
                a.configure(
                    sip.AudioStream(
                        codec, pt, *pa.address, "sendrecv", codecs=[(pt, codec)], webrtc=browser
                    ),
                    signalling=pa.address[0],
                )
            else:
                a.configure(
                    sip.AudioStream(
                        sip.PCMU, PCMU_PT, *pa.address, "sendrecv", codecs=[(PCMU_PT, sip.PCMU)]
                    ),
                    signalling=pa.address[0],
                )
            b.configure(
                sip.AudioStream(
                    sip.PCMU, PCMU_PT, *pb.address, "sendrecv", codecs=[(PCMU_PT, sip.PCMU)]
                ),
                signalling=pb.address[0],
            )
            a.source, b.source = LegSource(b), LegSource(a)
            peers += [pa, pb]
            if browsers:
                connect_browser(engine, pa, identity)
        busy = 0.0
        for tick in range(ticks):
            for peer in peers:
                peer.send()
            start = time.process_time()
            engine._tick(1000 + tick)
            busy += time.process_time() - start
            for i, peer in enumerate(peers):
                peer.drain(keep=i < 2 and tick > ticks // 2)
        browser_end, desk_end = peers[0], peers[1]
        desk_hz = dominant(
            g711.ULAW_DECODE[np.frombuffer(b"".join(p[12:] for p in desk_end.heard), np.uint8)],
            8000,
        )
        if pt == OPUS_PT:
            decoder = codecs.codec("OPUS").decoder()
            audio = np.concatenate([decoder.decode(p[12:]) for p in browser_end.heard])
            browser_hz = dominant(audio, codecs.codec("OPUS").sample_rate)
        else:
            browser_hz = dominant(
                g711.ULAW_DECODE[
                    np.frombuffer(b"".join(p[12:] for p in browser_end.heard), np.uint8)
                ],
                8000,
            )
        return {
            "cpu_ms_per_tick": round(1000 * busy / ticks, 3),
            "srtp_refused": engine.stats["srtp_refused"],
            "desk_hears_hz": round(desk_hz, 1),
            "browser_hears_hz": round(browser_hz, 1),
        }
    finally:
        for peer in peers:
            peer.sock.close()
        engine.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--ticks", type=int, default=250)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    desk = run(args.calls, args.ticks, browsers=False)
    browser = run(args.calls, args.ticks, browsers=True)
    browser_pcmu = run(args.calls, args.ticks, browsers=True, opus=False)
    base = desk["cpu_ms_per_tick"] or float("nan")
    result = {
        "calls": args.calls,
        "ticks": args.ticks,
        "desk": desk,
        "browser": browser,
        "browser_pcmu": browser_pcmu,
        # the browser call (Opus, DTLS-SRTP) over the desk call (PCMU relay), same N
        "ratio": round(browser["cpu_ms_per_tick"] / base, 2),
        # the same browser on PCMU: what SRTP alone costs over the relay
        "ratio_srtp_only": round(browser_pcmu["cpu_ms_per_tick"] / base, 2),
        "tones_ok": all(
            abs(r["desk_hears_hz"] - 700) < 15 and abs(r["browser_hears_hz"] - 1100) < 15
            for r in (desk, browser, browser_pcmu)
        ),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{'calls':>6} {'desk ms/tick':>13} {'browser ms/tick':>16} {'ratio':>6}"
        f" {'browser PCMU':>13} {'ratio':>6} tones"
    )
    print(
        f"{args.calls:>6} {desk['cpu_ms_per_tick']:>13} {browser['cpu_ms_per_tick']:>16}"
        f" {result['ratio']:>6} {browser_pcmu['cpu_ms_per_tick']:>13}"
        f" {result['ratio_srtp_only']:>6} {'ok' if result['tones_ok'] else 'WRONG'}"
    )
    print(
        "ms/tick = the media engine's CPU per 20 ms tick (peers' work excluded); ratio ="
        " browser calls (Opus + DTLS-SRTP <-> PCMU) over desk calls (PCMU relay), same N;"
        " browser PCMU: the browser leg on PCMU (DTLS-SRTP, no transcoding)"
    )


if __name__ == "__main__":
    main()
