"""N bridged calls through the PBX, half of them transcoded (PCMU <-> PCMA), measured from
outside against the I/O floor in the same run.

The daemon (`softswitch run`, its own process) anchors every call: two RTP legs per call
on the media clock, packets relayed byte for byte between two PCMU legs, decoded and
re-encoded between a PCMU and a PCMA leg. The load generator (this file with
``--generator``, one process, built on this project's sip + rtp) is both ends: N callers
(extension 100, PCMU only) dial extension 101, registered from the same process, whose
device answers every other call with PCMA only; each end is a phone on its own loopback
IP (127.77.x.y, one port for all) and every end's packet of a tick leaves in one
``sendmmsg`` (rtp.batch, source IP per packet with IP_PKTINFO): callers send a 700 Hz
tone, callees 1300 Hz. Two calls of each kind are recorded at both ends and checked:
each end must hear the other's tone.

Reported: the daemon's CPU (% of one core) over the window where every call is up, its
late media ticks (target < 1 %), RSS, the generator's CPU, and the **I/O floor**: the
same generator with every end calling benchmarks/io_floor.py (a bare batched echo: one
recvmmsg and one sendmmsg per tick), so the same 2N streams in and 2N out;
``ratio_to_floor`` is the daemon's CPU over the floor's (target <= 2).

``--srtp`` measures, in the same run and on a daemon of its own, the same load with every
leg SRTP (RFC 3711 with SDES keys, RFC 4568): both users require it (``media_encryption =
"required"``), so the daemon offers and accepts only RTP/SAVP with ``a=crypto`` on each of
the 2N legs; SIP goes over TLS (the daemon's self-signed demo certificate, not checked;
keys are only exchanged over TLS), the same PCMU relay / PCMU<->PCMA transcoding mix. The
generator is an SRTP phone at both ends: callers offer RTP/SAVP with keys, callees answer
with keys of their own, every tick's packets are protected in place in the send batch's
rows (``rtp.srtp.protect_rows``, one libsrtp call per packet, as the engine does) and what
the recorded ends receive (the other ends' sockets are never read, as in the plain run) is
verified and decrypted in the rows of a receive batch (``unprotect_rows``) before the same
tone check: each end must hear the other's tone after decryption. Packets that fail to
verify are counted at both ends (``generator_srtp_failed``, the daemon's
``daemon_srtp_refused``) and flagged under the table. Reported under ``"srtp"``: the
daemon's CPU, its late ticks %, its ratio to the same (plain) floor, and ``srtp_ratio``:
the daemon's CPU with SRTP over its CPU plain for the same N (goal <= 1.5 at 200 calls).
A traceback in either daemon's log fails the benchmark (exit status 1, traceback printed).

rtpengine (the relay a user would pick instead) is run side by side on the same load
when ``rtpengine`` is installed (Debian: ``apt-get install rtpengine-daemon``): userspace
forwarding (``--table=-1``), calls set up over its ng control protocol (bencoded offer
and answer over UDP), all PCMU (it does not transcode here). ``--no-rtpengine`` skips it.

    python benchmarks/call_relay.py [--calls 100 | --calls 50,250,500] [--seconds 30]
                                    [--json] [--no-floor] [--no-rtpengine] [--srtp]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sip  # noqa: E402
from media import g711  # noqa: E402
from sip.sdes import new_key  # noqa: E402
from softswitch.loadgen import ConferenceLoad, Leg, tls_user_agent, tone_frames  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
import conference_load  # noqa: E402
from conference_load import (  # noqa: E402
    cpu_seconds,
    free_port,
    rss_mb,
    start_daemon,
    start_floor,
)

CALLER = ("100", "caller-secret")
CALLEE = ("101", "callee-secret")
CALLER_HZ, CALLEE_HZ = 700.0, 1300.0
TRANSCODED = [0.5]  # --transcoded, handed to the generator processes


def dominant_hz(samples: np.ndarray, rate: int = 8000) -> float:
    if len(samples) < rate // 2:
        return 0.0
    x = samples[-rate:].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum[5:]) + 5) * rate / len(x)


# -- the generator (both ends of every call) -------------------------------------------


def pcma_call(k: int, share: float) -> bool:
    """Whether call ``k``'s callee answers PCMA only (transcoded): ``share`` of the calls,
    spread evenly (0.5: every other one)."""
    return int((k + 1) * share) > int(k * share)


class RelayLoad(ConferenceLoad):
    """Legs 0..N-1 call, legs N..2N-1 answer (every other one with PCMA only)."""

    def __init__(
        self,
        target: str,
        calls: int,
        record: tuple[int, ...],
        transcoded: float = 0.5,
        srtp: bool = False,
    ) -> None:
        super().__init__(
            target,
            user=CALLER[0],
            password=CALLER[1],
            legs=2 * calls,
            talkers=0,
            record=record,
            srtp=srtp,
        )
        self.calls = calls
        self.transcoded = transcoded
        self.callee_ua = (
            tls_user_agent("127.0.0.1", CALLEE[0])
            if srtp
            else sip.UserAgent("udp:127.0.0.1:0", user=CALLEE[0])
        )
        self.answered = 0
        self.pcmu = tone_frames(CALLER_HZ, 2.0, "PCMU")
        self.callee_tones = {0: tone_frames(CALLEE_HZ, 2.0, "PCMU")}
        self.callee_tones[8] = tone_frames(CALLEE_HZ, 2.0, "PCMA")
        self.kinds: dict[int, int] = {}  # callee leg -> payload type answered
        for leg in self.legs[:calls]:
            leg.tone = self.pcmu
        self._incoming: list[sip.IncomingCall] = []

    async def register(self, registrar: str) -> None:
        await self.callee_ua.start()
        self.callee_ua.on_invite = self._on_invite
        await self.callee_ua.register(
            registrar,
            aor=f"sip:{CALLEE[0]}@relay.test",
            username=CALLEE[0],
            password=CALLEE[1],
            expires=3600,
        )

    def _on_invite(self, call: sip.IncomingCall) -> None:
        k = self.answered
        if k >= self.calls:
            call.reject(486)
            return
        self.answered += 1
        self.answer(self.legs[self.calls + k], call, pcma_call(k, self.transcoded))

    def answer(self, leg: Leg, call: sip.IncomingCall, pcma: bool) -> None:
        codec = sip.PCMA if pcma else sip.PCMU
        offer = sip.parse_sdp(call.remote_sdp or b"")
        key = new_key() if self.srtp else None
        answer, stream = sip.answer(
            offer, leg.ip, leg.port, (codec,), encryption=self.encryption, key=key
        )
        if stream is None:
            call.reject(488)
            leg.failed = "no common codec" + (" with SRTP keys" if self.srtp else "")
            return
        leg.secure(stream.srtp)
        leg.pt = stream.payload_type
        leg.tone = self.callee_tones[8 if pcma else 0]
        leg.remote = (stream.remote_address, stream.remote_port)
        leg.remote_bytes = None
        leg.answered_at = time.monotonic()
        self.kinds[leg.index] = leg.pt
        self._incoming.append(call)
        call.answer(bytes(answer))

    async def call_all(self, codec_of: dict[int, sip.Codec] | None = None) -> float:
        """Place the N calls (or, against the floor, 2N: every leg dials it)."""
        started = time.monotonic()
        limit = asyncio.Semaphore(self.concurrency)
        legs = self.legs if codec_of is not None else self.legs[: self.calls]

        async def one(leg: Leg) -> None:
            async with limit:
                codec = (codec_of or {}).get(leg.index, sip.PCMU)
                if codec_of is not None and leg.index >= self.calls:
                    leg.pt = codec.static_pt or 0
                    leg.tone = self.callee_tones[leg.pt]
                offer = bytes(self.offer(leg, (codec,)))
                call = await self.invite(leg, offer)
                if call is None:
                    return
                stream = sip.process_answer(
                    sip.parse_sdp(offer), sip.parse_sdp(call.remote_sdp or b"")
                )
                leg.secure(stream.srtp)
                leg.remote = (stream.remote_address, stream.remote_port)
                leg.remote_bytes = None
                leg.call = call
                leg.answered_at = time.monotonic()

        await asyncio.gather(*(one(leg) for leg in legs))
        return time.monotonic() - started

    def _drain(self, leg: Leg) -> None:
        for data in self.received(leg):  # SRTP: verified and decrypted
            if len(data) > 12 and data[1] & 0x7F in (0, 8):
                leg.heard.append(bytes([data[1] & 0x7F]) + data[12:])

    def heard_audio(self, index: int, seconds: float) -> np.ndarray:
        frames = self.legs[index].heard[-int(seconds * 50) :]
        out = [
            g711.alaw_decode(np.frombuffer(f[1:], np.uint8))
            if f[0] == 8
            else g711.ulaw_decode(np.frombuffer(f[1:], np.uint8))
            for f in frames
        ]
        return np.concatenate(out) if out else np.zeros(0, np.int16)

    async def stop(self) -> None:
        for leg in self.legs:
            leg.remote = None
        await asyncio.gather(*(c.hangup() for c in self._incoming), return_exceptions=True)
        await self.callee_ua.close()
        await super().stop()


async def generate(args: argparse.Namespace) -> None:
    n = args.calls
    record = (0, 1, n, n + 1)
    load = RelayLoad(args.target, n, record, args.transcoded, srtp=args.srtp)
    await load.start()
    if args.floor:
        # every end dials the echo itself: the same 2N streams in and out
        codecs = {n + k: sip.PCMA if pcma_call(k, args.transcoded) else sip.PCMU for k in range(n)}
        took = await load.call_all(codecs)
    else:
        await load.register(args.registrar)
        took = await load.call_all()
    up = sum(1 for leg in load.legs if leg.remote is not None)
    print(
        json.dumps(
            {
                "event": "up",
                "seconds": round(took, 2),
                "legs_up": up,
                "srtp_legs": sum(1 for leg in load.legs if leg.srtp_out is not None),
                "transcoded": sum(1 for pt in load.kinds.values() if pt == 8),
                "failed": [leg.failed for leg in load.legs if leg.failed][:5],
            }
        ),
        flush=True,
    )
    await asyncio.sleep(args.seconds)
    heard = {str(i): round(dominant_hz(load.heard_audio(i, 2.0)), 1) for i in record}
    print(json.dumps({"event": "heard", "hz": heard}), flush=True)
    done = {"event": "done", "late_ticks": load.late, "ticks": load.ticks}
    done |= {"srtp_verified": load.srtp_verified, "srtp_failed": load.srtp_failed}
    print(json.dumps(done), flush=True)
    await load.stop()


# -- the measurements -----------------------------------------------------------------


class Lines(conference_load.Lines):
    """The generator's output lines, with its JSON events by name."""

    def events(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for line in list(self.lines):
            if line.startswith("{"):
                event = json.loads(line)
                out[str(event.get("event"))] = event
        return out

    def finish(self) -> str:
        self._thread.join(10)
        return "".join(self.lines)


def generator(target: str, calls: int, seconds: float, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--generator",
            "--target",
            target,
            "--calls",
            str(calls),
            "--seconds",
            str(seconds),
            "--transcoded",
            str(TRANSCODED[0]),
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def steady_window(
    server: subprocess.Popen[str],
    gen: subprocess.Popen[str],
    lines: Lines,
    stats_path: Path | None = None,
) -> dict[str, float]:
    """Sample the server's and the generator's CPU each second once every call is up;
    the window's CPU shares (whole seconds inside it) and the late ticks counted in it."""
    steady: list[tuple[float, float, float, dict[str, float]]] = []
    peak_rss = 0.0
    while gen.poll() is None:
        time.sleep(1.0)
        if "up" not in lines.events():
            continue
        try:
            sample = (time.monotonic(), cpu_seconds(server.pid), cpu_seconds(gen.pid))
            peak_rss = max(peak_rss, rss_mb(server.pid))
        except (OSError, IndexError):
            break
        stats: dict[str, float] = {}
        if stats_path is not None and stats_path.exists():
            try:
                stats = json.loads(stats_path.read_text())
            except ValueError:
                stats = {}
        steady.append((*sample, stats))
    if len(steady) < 4:
        return {}
    (t0, s0, g0, st0), (t1, s1, g1, st1) = steady[1], steady[-2]
    out = {
        "cpu_pct": round((s1 - s0) / (t1 - t0) * 100, 1),
        "generator_cpu_pct": round((g1 - g0) / (t1 - t0) * 100, 1),
        "measured_s": round(t1 - t0, 1),
        "rss_mb": round(peak_rss, 1),
    }
    if st0 and st1:
        ticks = st1.get("ticks", 0) - st0.get("ticks", 0)
        late = st1.get("late_ticks", 0) - st0.get("late_ticks", 0)
        out["ticks"] = ticks
        out["late_ticks"] = late
        out["late_pct"] = round(late / ticks * 100, 2) if ticks else 0.0
        out["skipped_ticks"] = st1.get("skipped_ticks", 0) - st0.get("skipped_ticks", 0)
    return out


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_pbx(calls: int, seconds: float, work: Path, srtp: bool = False) -> dict[str, object]:
    """The daemon under the load; with ``srtp`` both users' phones must use SRTP
    (``media_encryption = "required"``) and the generator signals over TLS."""
    port = free_port()
    rtp = random.randrange(20000, 30000, 2)
    config = work / "relay.toml"
    listen = [f"udp:127.0.0.1:{port}"]
    where = f"127.0.0.1:{port}"
    registrar = f"sip:{where}"
    user_policy = ""
    extra: list[str] = []
    if srtp:
        tls = free_tcp_port()
        listen.append(f"tls:127.0.0.1:{tls}")
        where = f"127.0.0.1:{tls};transport=tls"
        registrar = f"sip:127.0.0.1:{tls};transport=tls"
        user_policy = 'media_encryption = "required"\n'
        extra = ["--srtp"]
    config.write_text(f"""
[server]
listen = {json.dumps(listen)}
domain = "relay.test"
data_dir = "{work / "data"}"
rtp_ports = [{rtp}, {rtp + 8 * calls + 200}]
max_calls = {2 * calls + 100}
keepalive_interval = 3600

[[users]]
extension = "{CALLER[0]}"
name = "Caller"
password = "{CALLER[1]}"
pin = "1100"
{user_policy}
[[users]]
extension = "{CALLEE[0]}"
name = "Callee"
password = "{CALLEE[1]}"
pin = "1101"
{user_policy}""")
    stats_path = work / "stats.json"
    daemon = start_daemon(config, stats_path)
    daemon_lines = Lines(daemon)
    gen = generator(f"sip:{CALLEE[0]}@{where}", calls, seconds, "--registrar", registrar, *extra)
    lines = Lines(gen)
    window = steady_window(daemon, gen, lines, stats_path)
    lines.finish()
    stop(daemon)
    log = daemon_lines.finish()
    events = lines.events()
    result: dict[str, object] = {"calls": calls, "seconds": seconds, **window}
    up = events.get("up", {})
    result["legs_up"] = up.get("legs_up", 0)
    result["transcoded_calls"] = up.get("transcoded", 0)
    result["setup_s"] = up.get("seconds")
    # calls refused (overload control answers 503 when the daemon falls behind) leave
    # fewer legs than the floor run carries: the ratio is then not like for like
    result["all_up"] = result["legs_up"] == 2 * calls
    result["failed"] = up.get("failed", [])
    heard = events.get("heard", {}).get("hz", {})
    assert isinstance(heard, dict)
    result["heard_hz"] = heard
    # callers (legs 0, 1) hear the callee's tone, callees (N, N+1) the caller's
    want = {"0": CALLEE_HZ, "1": CALLEE_HZ, str(calls): CALLER_HZ, str(calls + 1): CALLER_HZ}
    result["tones_ok"] = bool(heard) and all(
        abs(float(heard.get(k, 0.0)) - hz) < 40 for k, hz in want.items()
    )
    done = events.get("done", {})
    result["generator_late_ticks"] = done.get("late_ticks")
    result["daemon_errors"] = sum(1 for x in log.splitlines() if " ERROR " in x or "Traceback" in x)
    result["daemon_log"] = log  # taken out by one() (not reported): tracebacks fail the run
    if srtp:
        result["srtp_legs"] = up.get("srtp_legs", 0)
        # packets the recorded ends verified and decrypted, and any that did not verify
        result["generator_srtp_verified"] = done.get("srtp_verified", 0)
        result["generator_srtp_failed"] = done.get("srtp_failed", 0)
        stats = conference_load.read_stats(stats_path)
        result["daemon_srtp_refused"] = stats.get("srtp_refused")
    return result


def run_floor(calls: int, seconds: float) -> dict[str, float]:
    port, rtp = free_port(), free_port()
    floor = start_floor(port, rtp)
    gen = generator(f"sip:echo@127.0.0.1:{port}", calls, seconds, "--floor")
    lines = Lines(gen)
    window = steady_window(floor, gen, lines)
    lines.finish()
    stop(floor)
    return {
        "floor_cpu_pct": window.get("cpu_pct", 0.0),
        "floor_generator_cpu_pct": window.get("generator_cpu_pct", 0.0),
    }


# -- rtpengine, side by side ------------------------------------------------------------


def bencode(value: object) -> bytes:
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(type(value))


def bdecode(data: bytes, i: int = 0) -> tuple[object, int]:
    c = data[i : i + 1]
    if c == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1 : end]), end + 1
    if c == b"l":
        i, items = i + 1, []
        while data[i : i + 1] != b"e":
            item, i = bdecode(data, i)
            items.append(item)
        return items, i + 1
    if c == b"d":
        i, out = i + 1, {}
        while data[i : i + 1] != b"e":
            key, i = bdecode(data, i)
            value, i = bdecode(data, i)
            out[key.decode() if isinstance(key, bytes) else str(key)] = value
        return out, i + 1
    colon = data.index(b":", i)
    size = int(data[i:colon])
    return data[colon + 1 : colon + 1 + size], colon + 1 + size


def sdp_of(reply: dict[str, object]) -> bytes:
    sdp = reply.get("sdp")
    if not isinstance(sdp, bytes):
        raise RuntimeError(f"rtpengine refused: {reply}")
    return sdp


def rtpengine_binary() -> str | None:
    return shutil.which("rtpengine") or (
        "/usr/bin/rtpengine" if Path("/usr/bin/rtpengine").exists() else None
    )


def run_rtpengine(calls: int, seconds: float) -> dict[str, object]:
    binary = rtpengine_binary()
    if binary is None:
        return {"rtpengine": "not installed (apt-get install rtpengine-daemon)"}
    ng = free_port()
    low = random.randrange(30000, 40000, 2)
    proc = subprocess.Popen(
        [
            binary,
            "--foreground",
            "--log-stderr",
            "--table=-1",
            "--interface=127.0.0.1",
            f"--listen-ng=127.0.0.1:{ng}",
            f"--port-min={low}",
            f"--port-max={low + 8 * calls + 100}",
            "--log-level=3",
            "--num-threads=1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(1.0)
    if proc.poll() is not None:
        out = proc.stdout.read() if proc.stdout else ""
        return {"rtpengine": f"failed to start: {out[-300:]}"}
    gen = generator(f"ng:127.0.0.1:{ng}", calls, seconds, "--rtpengine")
    lines = Lines(gen)
    window = steady_window(proc, gen, lines)
    lines.finish()
    stop(proc)
    events = lines.events()
    heard = events.get("heard", {}).get("hz", {})
    return {
        "rtpengine_cpu_pct": window.get("cpu_pct"),
        "rtpengine_generator_cpu_pct": window.get("generator_cpu_pct"),
        "rtpengine_legs_up": events.get("up", {}).get("legs_up", 0),
        "rtpengine_heard_hz": heard,
    }


async def generate_rtpengine(args: argparse.Namespace) -> None:
    """Both ends of N PCMU calls relayed by rtpengine: offer/answer over ng, then the
    same batched media as against the PBX."""
    n = args.calls
    record = (0, 1, n, n + 1)
    load = RelayLoad("sip:unused@127.0.0.1", n, record)
    host, port = args.target.split(":", 1)[1].rsplit(":", 1)
    ng = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ng.settimeout(5)
    started = time.monotonic()

    def command(body: dict[str, object]) -> dict[str, object]:
        cookie = secrets.token_hex(6).encode()
        ng.sendto(cookie + b" " + bencode(body), (host, int(port)))
        while True:
            data = ng.recv(65536)
            if data.startswith(cookie + b" "):
                reply, _ = bdecode(data, len(cookie) + 1)
                assert isinstance(reply, dict)
                return reply

    for k in range(n):
        caller, callee = load.legs[k], load.legs[n + k]
        callee.tone = load.callee_tones[0]
        call_id = f"relay-{k}"
        offer = bytes(sip.make_offer(caller.ip, caller.port, (sip.PCMU,)))
        reply = command(
            {
                "command": "offer",
                "call-id": call_id,
                "from-tag": f"a{k}",
                "sdp": offer,
                "flags": ["loop-protect"],
            }
        )
        to_callee = sip.parse_sdp(sdp_of(reply))
        answer, stream = sip.answer(to_callee, callee.ip, callee.port, (sip.PCMU,))
        assert stream is not None
        callee.remote = (stream.remote_address, stream.remote_port)
        reply = command(
            {
                "command": "answer",
                "call-id": call_id,
                "from-tag": f"a{k}",
                "to-tag": f"b{k}",
                "sdp": bytes(answer),
            }
        )
        to_caller = sip.process_answer(
            sip.parse_sdp(offer),
            sip.parse_sdp(sdp_of(reply)),
        )
        caller.remote = (to_caller.remote_address, to_caller.remote_port)
    await load.start()
    up = sum(1 for leg in load.legs if leg.remote is not None)
    took = round(time.monotonic() - started, 2)
    print(json.dumps({"event": "up", "seconds": took, "legs_up": up}), flush=True)
    await asyncio.sleep(args.seconds)
    heard = {str(i): round(dominant_hz(load.heard_audio(i, 2.0)), 1) for i in record}
    print(json.dumps({"event": "heard", "hz": heard}), flush=True)
    for k in range(n):
        command({"command": "delete", "call-id": f"relay-{k}", "from-tag": f"a{k}"})
    print(json.dumps({"event": "done", "late_ticks": load.late, "ticks": load.ticks}), flush=True)
    for leg in load.legs:
        leg.remote = None
    await load.ua.close()
    ng.close()


SRTP_KEYS = {  # the SRTP run's result -> its key under "srtp"
    "cpu_pct": "daemon_cpu",
    "late_pct": "late_ticks_pct",
    "ratio_to_floor": "ratio_to_floor",
    "generator_cpu_pct": "generator_cpu_pct",
    "rss_mb": "rss_mb",
    "measured_s": "measured_s",
    "ticks": "ticks",
    "late_ticks": "late_ticks",
    "skipped_ticks": "skipped_ticks",
    "legs_up": "legs_up",
    "srtp_legs": "srtp_legs",
    "all_up": "all_up",
    "transcoded_calls": "transcoded_calls",
    "setup_s": "setup_s",
    "failed": "failed",
    "heard_hz": "heard_hz",
    "tones_ok": "tones_ok",
    "generator_late_ticks": "generator_late_ticks",
    "generator_srtp_verified": "generator_srtp_verified",
    "generator_srtp_failed": "generator_srtp_failed",
    "daemon_srtp_refused": "daemon_srtp_refused",
    "daemon_errors": "daemon_errors",
}


def tracebacks(log: str) -> list[str]:
    """Every traceback in a daemon's log, with the line before it and the lines after it
    up to the exception's (the first line not indented after the frames)."""
    lines = log.splitlines()
    found = []
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            end = i + 1
            while end < len(lines) and lines[end].startswith(" "):
                end += 1
            found.append("\n".join(lines[max(0, i - 1) : end + 1]))
    return found


def one(
    calls: int, seconds: float, floor: bool, rtpengine: bool, srtp: bool = False
) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        result = run_pbx(calls, seconds, Path(tmp))
    logs = {"plain": str(result.pop("daemon_log", ""))}
    secure: dict[str, object] = {}
    if srtp:  # the same load, every leg SRTP, on a daemon of its own
        with tempfile.TemporaryDirectory() as tmp:
            secure = run_pbx(calls, seconds, Path(tmp), srtp=True)
        logs["srtp"] = str(secure.pop("daemon_log", ""))
    found = {k: t for k, log in logs.items() if (t := tracebacks(log))}
    if found:  # main() prints them and fails
        result["daemon_tracebacks"] = found
    if floor:
        result.update(run_floor(calls, seconds))
        cpu, base = result.get("cpu_pct"), result.get("floor_cpu_pct")
        if isinstance(cpu, float) and isinstance(base, float) and base:
            result["ratio_to_floor"] = round(cpu / base, 2)
        cpu = secure.get("cpu_pct")
        if isinstance(cpu, float) and isinstance(base, float) and base:
            secure["ratio_to_floor"] = round(cpu / base, 2)
    if srtp:
        result["srtp"] = {v: secure.get(k) for k, v in SRTP_KEYS.items()}
        cpu, plain = secure.get("cpu_pct"), result.get("cpu_pct")
        if isinstance(cpu, float) and isinstance(plain, float) and plain:
            result["srtp_ratio"] = round(cpu / plain, 2)
    if rtpengine:
        result.update(run_rtpengine(calls, seconds))
        cpu, other = result.get("cpu_pct"), result.get("rtpengine_cpu_pct")
        if isinstance(cpu, float) and isinstance(other, float) and other:
            result["ratio_to_rtpengine"] = round(cpu / other, 2)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", default="100", help="bridged calls (comma-separated: a sweep)")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument(
        "--transcoded",
        type=float,
        default=0.5,
        help="share of the calls transcoded PCMU<->PCMA (0: all relayed, as rtpengine does)",
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-floor", action="store_true")
    ap.add_argument("--no-rtpengine", action="store_true")
    ap.add_argument(
        "--srtp",
        action="store_true",
        help="also run the same load with every leg SRTP (SIP over TLS) and compare",
    )
    ap.add_argument("--generator", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--rtpengine", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    ap.add_argument("--registrar", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generator:
        args.calls = int(args.calls)
        asyncio.run(generate_rtpengine(args) if args.rtpengine else generate(args))
        return
    TRANSCODED[0] = args.transcoded
    with_rtpengine = not args.no_rtpengine and rtpengine_binary() is not None
    results = []
    srtp_head = (
        f" {'srtp %':>6} {'late %':>6} {'ratio':>5} {'gen %':>5} {'srtp/plain':>10} {'tones':>5}"
        if args.srtp
        else ""
    )
    print(
        f"{'calls':>5} {'daemon %':>8} {'late %':>6} {'floor %':>7} {'ratio':>5} "
        f"{'gen %':>5} {'rtpengine %':>11} {'tones':>5}{srtp_head}"
    )
    failures: list[str] = []
    for calls in (int(c) for c in args.calls.split(",")):
        r = one(calls, args.seconds, not args.no_floor, with_rtpengine, args.srtp)
        results.append(r)
        srtp_row = ""
        x = r.get("srtp")
        if isinstance(x, dict):
            srtp_row = (
                f" {x.get('daemon_cpu')!s:>6} {x.get('late_ticks_pct')!s:>6} "
                f"{x.get('ratio_to_floor')!s:>5} {x.get('generator_cpu_pct')!s:>5} "
                f"{r.get('srtp_ratio')!s:>10} {'ok' if x.get('tones_ok') else 'FAIL':>5}"
            )
        print(
            f"{calls:5d} {r.get('cpu_pct')!s:>8} {r.get('late_pct')!s:>6} "
            f"{r.get('floor_cpu_pct')!s:>7} {r.get('ratio_to_floor')!s:>5} "
            f"{r.get('generator_cpu_pct')!s:>5} {r.get('rtpengine_cpu_pct')!s:>11} "
            f"{'ok' if r.get('tones_ok') else 'FAIL':>5}{srtp_row}",
            flush=True,
        )
        if isinstance(x, dict):
            if not x.get("all_up") or x.get("srtp_legs") != 2 * calls:
                failed = x.get("failed")
                first = failed[0] if isinstance(failed, list) and failed else None
                print(
                    f"      SRTP: {x.get('legs_up')} of {2 * calls} legs up, {x.get('srtp_legs')}"
                    f" of them SRTP (refused: {first}); srtp_ratio compares unequal loads",
                    flush=True,
                )
            bad = (x.get("generator_srtp_failed"), x.get("daemon_srtp_refused"))
            if any(bad) or not x.get("generator_srtp_verified"):
                print(
                    f"      SRTP: recorded ends verified {x.get('generator_srtp_verified')}"
                    f" packets, refused {bad[0]}; the daemon refused {bad[1]}",
                    flush=True,
                )
        traced = r.get("daemon_tracebacks")
        if isinstance(traced, dict):
            for run, found in traced.items():
                failures += [f"{calls} calls, {run} run: daemon traceback:\n{t}" for t in found]
        if not r.get("all_up"):
            failed = r.get("failed")
            first = failed[0] if isinstance(failed, list) and failed else None
            print(
                f"      only {r.get('legs_up')} of {2 * calls} legs up (the rest refused:"
                f" {first}); ratios compare unequal loads",
                flush=True,
            )
    if not with_rtpengine and not args.no_rtpengine:
        print("rtpengine: not installed (apt-get install rtpengine-daemon): not compared")
    print(
        "daemon/floor/rtpengine % = CPU of one core while every call is up; late % = media"
        " ticks started late; floor = the same generator against a bare batched echo"
    )
    if args.srtp:
        print(
            "srtp % = the daemon's CPU with every leg SRTP (same calls, same mix), its late %"
            " and ratio to the floor; srtp/plain = srtp % / daemon % (srtp_ratio)"
        )
    if args.json:
        print(json.dumps({"benchmark": "call_relay", "runs": results}))
    if failures:
        for failure in failures:
            print(failure, file=sys.stderr)
        sys.exit("FAILED: the daemon logged a traceback (above)")


if __name__ == "__main__":
    main()
