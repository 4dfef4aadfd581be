"""200 callers waiting in one call queue with music and announcements, 20 agents taking
their calls at random: the daemon under a real load, measured from outside.

The daemon (`softswitch run`, its own process) serves one ``[[queues]]`` number on
loopback: hold music, the greeting and the position said every
``announce_position_seconds`` (``--announce``, 10 s) to every waiting caller, offers to
the agents by the ``rotating`` strategy, no wrap-up (``--wrap-up``). The load generator
(this file with ``--generator``, one process, built on this project's sip + rtp, as
``benchmarks/call_relay.py``) is both sides:

- **callers**: phones dialling the queue (extension 100, PCMU, each on its own loopback
  IP, every phone's packet of a tick in one ``sendmmsg``: rtp.batch), silence sent all
  along as a phone on hold does; a new caller dials whenever one is taken by an agent,
  so ``--callers`` wait at any time;
- **agents**: ``--agents`` registered user agents (``sip.UserAgent``, users 200, 201,
  ...), each ringing 0.5-3 s (at random) when offered a call, then answering, talking
  2-6 s (sending silence) and hanging up.

Reported over the window where the line is full: the daemon's CPU (% of one core) and
per waiting caller (all of it, the agents' calls included, over the mean number waiting),
its late media ticks (the stats file, target < 1 %), RSS, the
generator's CPU, the calls answered, and the **longest time from an agent becoming free
(its BYE sent) to its next call being offered (the INVITE received)**, with its p95 and
median, measured on the agent side while callers wait (with no wrap-up all of it is the
daemon's). The phone of the last caller to dial at first keeps what it hears: it
must hear the music and its position said.

Two baselines in the same run, on the same generator:

- **hold**: the same callers waiting in a queue with no members, no greeting and no
  announcement: hold music alone (``ratio_to_hold``: CPU per waiting caller over it);
- **I/O floor**: as many calls as the queue run carried streams (waiting callers, plus
  both ends of every agent's call) to benchmarks/io_floor.py, a bare batched echo
  (``ratio_to_floor``: the daemon's CPU over the floor's).

    python benchmarks/queue_load.py [--callers 200] [--agents 20] [--seconds 20] [--json]
                                    [--no-floor] [--no-hold] [--daemon-log FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sip  # noqa: E402
from media.audio import load_audio  # noqa: E402
from softswitch.loadgen import ConferenceLoad, Leg  # noqa: E402
from softswitch.media_engine import prompt_path  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from call_relay import Lines, steady_window, stop  # noqa: E402
from conference_load import free_port, start_floor, started  # noqa: E402

CALLER = ("100", "caller-secret")
QUEUE = "700"
DOMAIN = "queue.test"
FIRST_AGENT = 200
SPARE = 50  # caller phones beyond callers + agents: new callers dial while calls end
CONCURRENCY = 20  # INVITEs outstanding at once while the line fills (more: 503s)


def agent_extension(k: int) -> str:
    return str(FIRST_AGENT + k)


def agent_password(k: int) -> str:
    return f"agent-secret-{k}"


# -- the generator (callers and agents) ---------------------------------------------------


@dataclass(eq=False)
class AgentPhone:
    extension: str
    password: str
    ua: sip.UserAgent
    leg: Leg
    free_at: float | None = None  # its last call ended here (monotonic); None: on a call
    offered: int = 0
    answered: int = 0
    cancelled: int = 0  # the offer was withdrawn as it rang
    busy_offers: int = 0  # offered while ringing or talking already (must stay 0)
    call: sip.IncomingCall | None = None


class QueueLoad(ConferenceLoad):
    """Phones 0..S-1 are callers (reused as their calls end), S..S+A-1 the agents'."""

    def __init__(
        self,
        target: str,
        callers: int,
        agents: int,
        ring: tuple[float, float],
        talk: tuple[float, float],
        seed: int,
    ) -> None:
        self.slots = callers + agents + SPARE
        super().__init__(
            target,
            user=CALLER[0],
            password=CALLER[1],
            legs=self.slots + agents,
            talkers=0,
            record=(callers - 1,),  # the last to dial at first: it waits the longest
            concurrency=CONCURRENCY,
        )
        self.waiting_target = callers
        self.ring, self.talk = ring, talk
        self.random = random.Random(seed)
        self.free: list[Leg] = list(reversed(self.legs[: self.slots]))
        self.agents = [
            AgentPhone(
                agent_extension(k),
                agent_password(k),
                sip.UserAgent("udp:127.0.0.1:0", user=agent_extension(k), domain=DOMAIN),
                self.legs[self.slots + k],
            )
            for k in range(agents)
        ]
        self.dialling = 0  # INVITEs sent, not answered yet
        self.up = 0  # callers answered by the queue, their call not ended
        self.placed = 0
        self.failures: list[str] = []
        self.measuring_since: float | None = None
        self.gaps: list[float] = []  # agent free -> its next offer, seconds (measured)
        self.waiting_samples: list[int] = []
        self.talking_samples: list[int] = []
        self.running = True
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def talking(self) -> int:
        return sum(
            1
            for a in self.agents
            if a.call is not None and a.call.state is sip.CallState.ESTABLISHED
        )

    @property
    def waiting(self) -> int:
        """Callers in line as far as the phones can tell: answered by the queue, not
        (yet) talking to an agent."""
        return self.up - self.talking

    # -- agents ---------------------------------------------------------------------------

    async def register(self, registrar: str) -> None:
        async def one(agent: AgentPhone) -> None:
            await agent.ua.start()
            agent.ua.on_invite = lambda call: self._offered(agent, call)
            await agent.ua.register(
                registrar,
                aor=f"sip:{agent.extension}@{DOMAIN}",
                username=agent.extension,
                password=agent.password,
                expires=3600,
            )
            agent.free_at = time.monotonic()

        await asyncio.gather(*(one(a) for a in self.agents))

    async def _offered(self, agent: AgentPhone, call: sip.IncomingCall) -> None:
        now = time.monotonic()
        if agent.call is not None and agent.call.state is not sip.CallState.ENDED:
            agent.busy_offers += 1  # a second queue call while one rings or talks
            call.reject(486)
            return
        agent.offered += 1
        since = self.measuring_since
        if agent.free_at is not None and since is not None and agent.free_at >= since:
            self.gaps.append(now - agent.free_at)
        agent.free_at, agent.call = None, call
        call.on_end.add(lambda _: self._ended(agent, call))
        try:
            await self._take(agent, call)
        finally:
            self._ended(agent, call)

    def _ended(self, agent: AgentPhone, call: sip.IncomingCall) -> None:
        """The agent is free from the moment its call ends (its BYE sent, the offer
        cancelled, the caller gone)."""
        if agent.call is call:
            agent.call, agent.free_at, agent.leg.remote = None, time.monotonic(), None

    async def _take(self, agent: AgentPhone, call: sip.IncomingCall) -> None:
        call.ring()
        try:
            await asyncio.wait_for(call.ended.wait(), self.random.uniform(*self.ring))
            agent.cancelled += 1  # the caller left, or the offer was withdrawn
            return
        except TimeoutError:
            pass
        if call.state not in (sip.CallState.CALLING, sip.CallState.EARLY):
            agent.cancelled += 1
            return
        leg = agent.leg
        answer, stream = sip.answer(
            sip.parse_sdp(call.invite.body or b""), leg.ip, leg.port, (sip.PCMU,)
        )
        if stream is None:
            call.reject(488)
            self.failures.append("agent: no common codec")
            return
        call.answer(bytes(answer))
        agent.answered += 1
        leg.pt, leg.remote_bytes = stream.payload_type, None
        leg.remote = (stream.remote_address, stream.remote_port)
        try:  # talking; the caller may hang up first
            await asyncio.wait_for(call.ended.wait(), self.random.uniform(*self.talk))
            return
        except TimeoutError:
            pass
        await call.hangup()  # free from here: the call ends as its BYE leaves

    # -- callers --------------------------------------------------------------------------

    async def keep_waiting(self) -> None:
        """Dial whenever fewer than the target wait (counting INVITEs on their way)."""
        while self.running:
            missing = self.waiting_target - self.waiting - self.dialling
            room = self.concurrency - self.dialling
            for _ in range(max(0, min(missing, room, len(self.free)))):
                task = asyncio.create_task(self._caller(self.free.pop()))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            await asyncio.sleep(0.02)

    async def _caller(self, leg: Leg) -> None:
        self.dialling += 1
        self.placed += 1
        offer = bytes(sip.make_offer(leg.ip, leg.port, (sip.PCMU,)))
        leg.failed = None
        try:
            call = await self.invite(leg, offer)
        finally:
            self.dialling -= 1
        if call is None:
            self.failures.append(str(leg.failed))
            await asyncio.sleep(1.0)  # a refused phone rests before it dials again
            self.free.insert(0, leg)
            return
        stream = sip.process_answer(sip.parse_sdp(offer), sip.parse_sdp(call.remote_sdp or b""))
        leg.pt, leg.remote_bytes = 0, None
        leg.remote = (stream.remote_address, stream.remote_port)
        leg.call = call
        self.up += 1
        try:
            await call.ended.wait()  # the agent hung up (or the generator stops)
        finally:
            self.up -= 1
            leg.remote, leg.call = None, None
            self.free.insert(0, leg)

    async def sample(self) -> None:
        """How many wait and talk, twice a second while measuring."""
        while self.running:
            await asyncio.sleep(0.5)
            if self.measuring_since is not None:
                self.waiting_samples.append(self.waiting)
                self.talking_samples.append(self.talking)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        self.running = False
        calls: list[sip.Call] = [a.call for a in self.agents if a.call is not None]
        calls += [leg.call for leg in self.legs if leg.call is not None]
        await asyncio.gather(*(c.hangup() for c in calls), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        for agent in self.agents:
            await agent.ua.close()
        await super().stop()


def correlation(signal: np.ndarray, reference: np.ndarray) -> float:
    """Peak normalised cross-correlation of ``reference`` within ``signal`` (0..1)."""
    s, r = signal.astype(np.float64), reference.astype(np.float64)
    if len(s) < len(r) or not r.any():
        return 0.0
    size = 1 << (len(s) + len(r) - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(s, size) * np.conj(np.fft.rfft(r, size)), size)[: len(s)]
    running = np.concatenate([[0.0], np.cumsum(s * s)])
    lags = np.arange(len(s))
    window = running[np.minimum(lags + len(r), len(s))] - running[lags]
    lag = int(np.argmax(corr))
    denom = np.sqrt(float(np.dot(r, r)) * max(float(window[lag]), 1e-9))
    return float(corr[lag] / denom)


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


async def generate(args: argparse.Namespace) -> None:
    load = QueueLoad(
        args.target,
        args.callers,
        args.agents,
        (args.ring_min, args.ring_max),
        (args.talk_min, args.talk_max),
        args.seed,
    )
    await load.start()
    if load.agents:
        await load.register(args.registrar)
    started_at = time.monotonic()
    load.spawn(load.keep_waiting())
    load.spawn(load.sample())
    while load.waiting < args.callers and time.monotonic() - started_at < 120:
        await asyncio.sleep(0.1)
    filled = time.monotonic() - started_at
    await asyncio.sleep(2.0)  # the first greetings and offers settle
    load.measuring_since = time.monotonic()
    answered0 = sum(a.answered for a in load.agents)
    offered0 = sum(a.offered for a in load.agents)
    print(
        json.dumps(
            {
                "event": "up",
                "seconds": round(filled, 2),
                "waiting": load.waiting,
                "failed": load.failures[:5],
            }
        ),
        flush=True,
    )
    await asyncio.sleep(args.seconds)
    measured = time.monotonic() - load.measuring_since
    gaps = load.gaps
    heard = load.heard(args.callers - 1)  # it waited through the window
    loud = float(np.mean(np.abs(heard.astype(np.float64)))) if len(heard) else 0.0
    said = load_audio(prompt_path("queue-caller-number"), 8000)  # "you are caller number"
    done = {
        "event": "done",
        "generator_measured_s": round(measured, 1),
        "waiting_mean": round(float(np.mean(load.waiting_samples)), 1)
        if load.waiting_samples
        else None,
        "waiting_min": min(load.waiting_samples, default=None),
        "talking_mean": round(float(np.mean(load.talking_samples)), 1)
        if load.talking_samples
        else None,
        "answered": sum(a.answered for a in load.agents) - answered0,
        "offered": sum(a.offered for a in load.agents) - offered0,
        "offers_cancelled": sum(a.cancelled for a in load.agents),  # these two: all along
        "offers_while_busy": sum(a.busy_offers for a in load.agents),
        "calls_placed": load.placed,
        "failed": len(load.failures),
        "failures": load.failures[:5],
        "free_to_offer_n": len(gaps),
        "free_to_offer_max_ms": round(max(gaps) * 1000, 1) if gaps else None,
        "free_to_offer_p95_ms": percentile(gaps, 95),
        "free_to_offer_median_ms": percentile(gaps, 50),
        "heard_s": round(len(heard) / 8000, 1),
        "heard_mean_level": round(loud, 1),
        "heard_position_correlation": round(correlation(heard, said), 3),
        "generator_late_ticks": load.late,
        "generator_ticks": load.ticks,
    }
    print(json.dumps(done), flush=True)
    await load.stop()


# -- the measurements -------------------------------------------------------------------


def generator(
    target: str, callers: int, agents: int, seconds: float, *extra: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--generator",
            "--target",
            target,
            "--callers",
            str(callers),
            "--agents",
            str(agents),
            "--seconds",
            str(seconds),
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def write_config(
    work: Path, port: int, callers: int, agents: int, announce: int, wrap_up: int, hold: bool
) -> Path:
    """The office: the callers' user, the agents, one queue (``hold``: no members, no
    greeting, no announcements: hold music alone)."""
    rtp = random.randrange(30000, 40000, 2)
    phones = callers + 2 * agents + SPARE
    users = [
        f"""
[[users]]
extension = "{CALLER[0]}"
name = "Caller"
password = "{CALLER[1]}"
pin = "1100"
"""
    ]
    for k in range(agents):
        users.append(f"""
[[users]]
extension = "{agent_extension(k)}"
name = "Agent {k}"
password = "{agent_password(k)}"
pin = "{5000 + k}"
""")
    members = [] if hold else [agent_extension(k) for k in range(agents)]
    queue = f"""
[[queues]]
extension = "{QUEUE}"
name = "Load"
members = {json.dumps(members)}
strategy = "rotating"
ring_seconds = 15
wrap_up_seconds = {wrap_up}
announce_position_seconds = {0 if hold else announce}
music = "default"
"""
    if hold:
        queue += 'greeting = ""\n'
    config = work / "queue.toml"
    config.write_text(
        f"""
[server]
listen = ["udp:127.0.0.1:{port}"]
domain = "{DOMAIN}"
data_dir = "{work / "data"}"
rtp_ports = [{rtp}, {rtp + 8 * phones + 400}]
max_calls = {phones + 100}
keepalive_interval = 3600
"""
        + "".join(users)
        + queue
    )
    return config


def start_daemon(config: Path, stats_path: Path, log_level: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "softswitch.cli", "run", "--config", str(config)]
    command += ["--log-level", log_level, "--stats-file", str(stats_path)]
    return started(command, "softswitch running")


def run_pbx(
    args: argparse.Namespace, work: Path, *, hold: bool = False, seconds: float | None = None
) -> dict[str, object]:
    port = free_port()
    agents = 0 if hold else args.agents
    config = write_config(work, port, args.callers, args.agents, args.announce, args.wrap_up, hold)
    stats_path = work / "stats.json"
    log_level = "info" if args.daemon_log and not hold else "warning"
    daemon = start_daemon(config, stats_path, log_level)
    daemon_lines = Lines(daemon)
    extra = ["--registrar", f"sip:127.0.0.1:{port}", "--seed", str(args.seed)]
    for name in ("ring_min", "ring_max", "talk_min", "talk_max"):
        extra += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    gen = generator(
        f"sip:{QUEUE}@127.0.0.1:{port}",
        args.callers,
        agents,
        seconds if seconds is not None else args.seconds,
        *extra,
    )
    lines = Lines(gen)
    window = steady_window(daemon, gen, lines, stats_path)
    lines.finish()
    stop(daemon)
    log = daemon_lines.finish()
    if args.daemon_log and not hold:
        Path(args.daemon_log).write_text(log)
    events = lines.events()
    done = events.get("done", {})
    result: dict[str, object] = {k: v for k, v in done.items() if k != "event"}
    result.update(window)  # the daemon's CPU and ticks over the steady window
    result["fill_s"] = events.get("up", {}).get("seconds")
    result["daemon_errors"] = sum(1 for x in log.splitlines() if " ERROR " in x or "Traceback" in x)
    if not window:
        result["generator_output"] = lines.finish()[-2000:]
    cpu, waiting = result.get("cpu_pct"), result.get("waiting_mean")
    if isinstance(cpu, float) and isinstance(waiting, float) and waiting:
        result["cpu_pct_per_waiting_caller"] = round(cpu / waiting, 3)
    return result


def run_floor(streams: int, seconds: float, seed: int) -> dict[str, float]:
    """The same generator's ``streams`` calls answered by the bare batched echo."""
    port, rtp = free_port(), free_port()
    floor = start_floor(port, rtp)
    gen = generator(f"sip:echo@127.0.0.1:{port}", streams, 0, seconds, "--seed", str(seed))
    lines = Lines(gen)
    window = steady_window(floor, gen, lines)
    lines.finish()
    stop(floor)
    return {
        "floor_streams": streams,
        "floor_cpu_pct": window.get("cpu_pct", 0.0),
        "floor_generator_cpu_pct": window.get("generator_cpu_pct", 0.0),
    }


def measure(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        result = run_pbx(args, Path(tmp))
    result = {
        "callers": args.callers,
        "agents": args.agents,
        "seconds": args.seconds,
        "announce_position_seconds": args.announce,
        "wrap_up_seconds": args.wrap_up,
        **result,
    }
    cpu = result.get("cpu_pct")
    if not args.no_hold:
        with tempfile.TemporaryDirectory() as tmp:
            hold = run_pbx(args, Path(tmp), hold=True, seconds=args.baseline_seconds)
        result["hold"] = {
            k: hold.get(k)
            for k in (
                "cpu_pct",
                "waiting_mean",
                "cpu_pct_per_waiting_caller",
                "late_pct",
                "generator_cpu_pct",
                "measured_s",
            )
        }
        mine, base = (
            result.get("cpu_pct_per_waiting_caller"),
            hold.get("cpu_pct_per_waiting_caller"),
        )
        if isinstance(mine, float) and isinstance(base, float) and base:
            result["ratio_to_hold"] = round(mine / base, 2)
    waiting, talking = result.get("waiting_mean"), result.get("talking_mean")
    if not args.no_floor and isinstance(waiting, float) and isinstance(talking, float):
        streams = round(waiting + 2 * talking)
        result.update(run_floor(streams, args.baseline_seconds, args.seed))
        base = result.get("floor_cpu_pct")
        if isinstance(cpu, float) and isinstance(base, float) and base:
            result["ratio_to_floor"] = round(cpu / base, 2)
    return result


def show(r: dict[str, object]) -> None:
    hold = r.get("hold")
    hold_d = hold if isinstance(hold, dict) else {}
    rows = [
        ("line filled after", f"{r.get('fill_s')} s"),
        ("measured", f"{r.get('measured_s')} s"),
        (
            "waiting callers (mean, min)",
            f"{r.get('waiting_mean')}, {r.get('waiting_min')} (target {r.get('callers')})",
        ),
        ("agents talking (mean)", f"{r.get('talking_mean')} of {r.get('agents')}"),
        (
            "queue calls offered, answered",
            f"{r.get('offered')}, {r.get('answered')} ({r.get('offers_cancelled')} withdrawn, "
            f"{r.get('offers_while_busy')} to a busy agent, {r.get('failed')} calls failed)",
        ),
        ("daemon CPU, % of one core", f"{r.get('cpu_pct')}"),
        ("  per waiting caller", f"{r.get('cpu_pct_per_waiting_caller')} %"),
    ]
    if hold_d:
        rows += [
            (
                "hold music alone (same callers)",
                f"{hold_d.get('cpu_pct')} % ({hold_d.get('cpu_pct_per_waiting_caller')} % per"
                f" caller, late ticks {hold_d.get('late_pct')} %)",
            ),
            ("  per caller, queue / hold", f"{r.get('ratio_to_hold')}"),
        ]
    if "floor_cpu_pct" in r:
        rows += [
            (
                "I/O floor (same streams)",
                f"{r.get('floor_cpu_pct')} % ({r.get('floor_streams')} calls)",
            ),
            ("  daemon / floor", f"{r.get('ratio_to_floor')}"),
        ]
    rows += [
        (
            "late ticks",
            f"{r.get('late_ticks')} of {r.get('ticks')} = {r.get('late_pct')} % (target < 1 %)",
        ),
        (
            "agent free -> next offer",
            f"max {r.get('free_to_offer_max_ms')} ms, p95 {r.get('free_to_offer_p95_ms')} ms, "
            f"median {r.get('free_to_offer_median_ms')} ms (n={r.get('free_to_offer_n')}, "
            f"wrap-up {r.get('wrap_up_seconds')} s)",
        ),
        (
            "generator CPU (queue, floor)",
            f"{r.get('generator_cpu_pct')}, {r.get('floor_generator_cpu_pct')}",
        ),
        ("peak RSS", f"{r.get('rss_mb')} MB"),
        (
            "a caller heard",
            f"{r.get('heard_s')} s of audio, mean level {r.get('heard_mean_level')}, its"
            f" position said: correlation {r.get('heard_position_correlation')}",
        ),
        ("daemon ERROR lines", f"{r.get('daemon_errors')}"),
    ]
    print(f"queue of {r.get('callers')} callers, {r.get('agents')} agents")
    for name, value in rows:
        print(f"  {name:34} {value}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--callers", type=int, default=200, help="callers waiting at any time")
    ap.add_argument("--agents", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=20.0, help="measured, once the line is full")
    ap.add_argument("--baseline-seconds", type=float, default=8.0, help="hold and floor runs")
    ap.add_argument("--announce", type=int, default=10, help="announce_position_seconds")
    ap.add_argument("--wrap-up", type=int, default=0, help="wrap_up_seconds")
    ap.add_argument("--ring-min", type=float, default=0.5)
    ap.add_argument("--ring-max", type=float, default=3.0)
    ap.add_argument("--talk-min", type=float, default=2.0)
    ap.add_argument("--talk-max", type=float, default=6.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-floor", action="store_true", help="skip the I/O floor run")
    ap.add_argument("--no-hold", action="store_true", help="skip the hold-music baseline run")
    ap.add_argument(
        "--daemon-log", help="keep the queue run's daemon log here (at info level: costs CPU)"
    )
    ap.add_argument("--generator", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    ap.add_argument("--registrar", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generator:
        asyncio.run(generate(args))
        return
    if args.callers < 1 or not 1 <= args.agents <= 100:
        ap.error("--callers: at least 1; --agents: 1 to 100 (a queue's members at most)")
    result = measure(args)
    show(result)
    print(
        "CPU % of one core over the window where the line is full; per waiting caller = CPU /"
        " mean callers waiting; hold = the same callers on hold music alone, floor = the same"
        " streams to a bare batched echo, both in this run; agent free = its BYE sent, offer ="
        " the next INVITE it received"
    )
    if args.json:
        print(
            json.dumps(
                {"benchmark": "queue_load", **{k: v for k, v in result.items() if k != "samples"}}
            )
        )


if __name__ == "__main__":
    main()
