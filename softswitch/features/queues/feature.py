"""Call queues on the plugin seam: ``[[queues]]`` numbers hold callers until an agent
is free, and ``*45`` / ``*46`` / ``*47`` log agents in, out, and pause them.

A caller who dials a queue is answered, hears the greeting and its position, then the
queue's hold music, with the position (and the estimated wait) said again every
``announce_position_seconds``. The order and the choice of agents are the pure
:class:`~.machine.CallCenter`'s; this module turns its offers into rings
(:meth:`Services.ring`, every device of the agent) and its callers into waiting calls.
An agent who answers is bridged to the caller like any call; when that call ends its
wrap-up starts. An agent on another call, or in Do-Not-Disturb (``no_queue`` or
``all``), is not offered queue calls; one who lets an offer ring out rests
``retry_seconds`` and goes to the back of its strategy's line. Logins and pauses are kept
in ``DATA/queues.json`` across restarts. What happened to each caller goes to the call
history (``queued`` event: wait, agent, outcome) and to the wallboard
(``queues.snapshot``, served to the web console; ``queues.agent`` changes an agent).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sip
from ivr import Prompt

from ...feature import BaseFeature, CallListener, Dial, Done, Failed, Handler, Hint, Outcome
from ...feature import Target as RingTarget
from ...private_files import write_private_text
from ...prompts import configured, number_names
from ...rules import conflicts, number_matches
from ...services import caller_number
from .machine import Agent, CallCenter, Member, Queue, QueueError
from .settings import QueueSettings

if TYPE_CHECKING:
    from ...calls import Party
    from ...config import User
    from ...registrar import Binding
    from ...services import Services

log = logging.getLogger("softswitch")
ESTABLISHED = sip.CallState.ESTABLISHED

LOGIN, LOGOUT, PAUSE = "*45", "*46", "*47"
RECENT = 20  # callers that left, kept for the wallboard
MAX_STATE = 1 << 20  # bytes of queues.json read at start (a few thousand agents)
GREETING = Prompt("builtin", "queue-greeting")


@dataclass(eq=False)
class Waiter:
    """A caller in line: its call, and how its wait ends."""

    id: str
    settings: QueueSettings
    dial: Dial
    label: str
    number: str
    joined: float  # loop time
    in_line: bool = True  # False once answered or sent on: announcements stop touching it
    answered: asyncio.Future[Party] = field(default_factory=asyncio.Future)
    # set when the caller leaves the line: a ring in progress for it stops
    gone: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def party(self) -> Party:
        return self.dial.party


class Runtime:
    """What outlives a configuration applied live: the call center, the callers in line,
    the rings in progress and today's figures."""

    def __init__(self) -> None:
        self.center = CallCenter()
        self.waiters: dict[str, Waiter] = {}
        self.recent: dict[str, deque[dict[str, Any]]] = {}
        self.talking: dict[str, str] = {}  # agent -> the caller it talks to (label)
        self.timer: asyncio.TimerHandle | None = None
        self.pumping = False  # a plan is due on the next turn of the loop
        self.loaded = False  # agents' state read from queues.json
        self.ringing: set[str] = set()  # agents a queue call rings now (one at a time)
        self.counter = 0


class Queues(BaseFeature, CallListener):
    name = "queues"
    section = "queues"
    config_model = list[QueueSettings]
    state = ("runtime",)

    def __post_init__(self) -> None:
        queues: list[QueueSettings] = self.settings() or []
        self.queues = {q.extension: q for q in queues}
        self.runtime = Runtime()
        self.greetings: dict[str, Prompt | None] = {}
        self.path: Path | None = None
        for i, queue in enumerate(queues):
            if queue.music != "default" and queue.music not in self.config.hold_music:
                raise ValueError(f"queues[{i}].music: no slot {queue.music!r} in [hold_music]")
            if queue.greeting is None:
                self.greetings[queue.extension] = GREETING
            elif queue.greeting.strip():
                try:
                    self.greetings[queue.extension] = configured(queue.greeting, self.config)
                except ValueError as exc:
                    raise ValueError(f"queues[{i}].greeting: {exc}") from None
            else:
                self.greetings[queue.extension] = None

    # -- tables ---------------------------------------------------------------------------

    def numbers(self) -> Mapping[str, Handler]:
        if not self.queues:
            return {}
        codes = {LOGIN: self.log_in_code, LOGOUT: self.log_out_code, PAUSE: self.pause_code}
        return {**{ext: self.call_queue for ext in self.queues}, **codes}

    def describe(self, number: str) -> str | None:
        queue = self.queues.get(number)
        if queue is not None:
            return f"call queue {queue.name} ({len(queue.members)} agents, {queue.strategy})"
        return {
            LOGIN: "queues: log in as an agent of your queues",
            LOGOUT: "queues: log out of your queues",
            PAUSE: "queues: pause your queue calls; again to resume",
        }.get(number)

    def listeners(self) -> Iterable[CallListener]:
        return (self,) if self.queues else ()

    def hints(self) -> Mapping[str, Hint]:
        """BLF keys on the codes: ``*45`` lit while the watching agent is logged in
        (blinking while paused), ``*47`` lit while it is paused."""
        return {LOGIN: self._login_lamp, PAUSE: self._pause_lamp} if self.queues else {}

    def _login_lamp(self, user: User) -> str:
        agent = self.runtime.center.agents.get(user.extension)
        if agent is None or not agent.logged_in:
            return "terminated"
        return "early" if agent.paused else "confirmed"

    def _pause_lamp(self, user: User) -> str:
        agent = self.runtime.center.agents.get(user.extension)
        paused = agent is not None and agent.logged_in and agent.paused
        return "confirmed" if paused else "terminated"

    def destinations(self) -> Iterable[tuple[str, str, User | None]]:
        for i, queue in enumerate(self.queues.values()):
            yield f"queues[{i}].overflow", queue.overflow, None
            if queue.leave_message is not None:
                yield f"queues[{i}].leave_message", queue.leave_message, None
            for key in ("in_hours", "after_hours"):
                value = getattr(queue, key)
                if value != "ring" and not value.startswith("announce:"):
                    yield f"queues[{i}].{key}", value, None
            for j, rule in enumerate(queue.rules):
                if rule.action not in ("ring", "voicemail") and not rule.action.startswith(
                    "announce:"
                ):
                    yield f"queues[{i}].rules[{j}].action", rule.action, None

    def warnings(self) -> Iterable[str]:
        for i, queue in enumerate(self.queues.values()):
            where = f"queues[{i}] ({queue.extension})"
            if not queue.members:
                yield f"{where}: no members: callers wait until max_wait_seconds, if any"
            for member in queue.member_list():
                if self.config.user(member.extension) is None:
                    yield f"{where}: member {member.extension} is not a user (left out)"
            loop = self._overflow_loop(queue)
            if loop:
                yield f"{where}: overflow goes back to the queue ({' > '.join(loop)})"
            for conflict in conflicts(queue.rules):
                yield f"{where}: {conflict}"

    def _overflow_loop(self, queue: QueueSettings) -> list[str]:
        """The queues an overflow passes through back to ``queue`` (empty: no loop)."""
        path = [queue.extension]
        current = queue
        while True:
            target = current.overflow.removeprefix("ext:")
            if target == queue.extension:
                return [*path, target]
            following = self.queues.get(target)
            if following is None or target in path:
                return []
            path.append(target)
            current = following

    # -- life cycle -----------------------------------------------------------------------

    async def start(self, svc: Services) -> None:
        await super().start(svc)
        self._configure()
        if not self.queues:
            return
        self.path = svc.data_dir / "queues.json"
        if not self.runtime.loaded:  # once: a live apply keeps the state in memory
            self.runtime.loaded = True
            self._load()
        await svc.prompts.prepare(g for g in self.greetings.values() if g is not None)
        svc.web.handle("queues.snapshot", lambda _: self.snapshot())
        svc.web.handle("queues.agent", self._agent_request)
        self.pump()

    async def resume(self, old: object, svc: Services) -> None:
        await super().resume(old, svc)  # the runtime moves over: callers keep waiting
        await self.start(svc)

    async def stop(self) -> None:
        runtime = self.runtime
        if runtime.timer is not None:
            runtime.timer.cancel()
            runtime.timer = None

    def _configure(self) -> None:
        """The machine's queues follow the configuration (callers and figures stay)."""
        runtime = self.runtime
        center = runtime.center
        for extension in list(center.queues):
            if extension not in self.queues:
                for caller_id in center.remove_queue(extension):
                    waiter = runtime.waiters.get(caller_id)
                    if waiter is not None:
                        waiter.gone.set()
        for queue in self.queues.values():
            members = [
                Member(m.extension, m.penalty)
                for m in queue.member_list()
                if self.config.user(m.extension) is not None
            ]
            center.set_queue(
                Queue(
                    queue.extension,
                    members,
                    strategy=queue.strategy,
                    wrap_up=queue.wrap_up_seconds,
                    retry=queue.retry_seconds,
                    max_callers=queue.max_callers,
                    join_empty=queue.join_empty,
                    service_level=queue.service_level_seconds,
                )
            )
            runtime.recent.setdefault(queue.extension, deque(maxlen=RECENT))
        for waiter in runtime.waiters.values():  # callers in line follow the new settings
            waiter.settings = self.queues.get(waiter.settings.extension, waiter.settings)

    # -- agents' state on disk ---------------------------------------------------------------

    def _load(self) -> None:
        """Agents' log-ins and pauses from the last run; a file that is too large or not
        what this module writes is ignored (logged), never a reason not to start."""
        assert self.path is not None
        try:
            if self.path.stat().st_size > MAX_STATE:
                raise ValueError(f"larger than {MAX_STATE} bytes")
            saved = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError, RecursionError) as exc:
            log.warning("event=queues_state_ignored file=%s error=%s", self.path, exc)
            return
        if not isinstance(saved, dict):
            return
        now = self._now()
        for extension, state in saved.items():
            agent = self.runtime.center.agents.get(str(extension))
            if agent is None or not isinstance(state, dict):
                continue
            logged_in, paused = state.get("logged_in", True), state.get("paused", False)
            if isinstance(logged_in, bool) and isinstance(paused, bool):
                agent.logged_in, agent.paused = logged_in, paused
                agent.idle_since = now

    def _save(self) -> None:
        if self.path is None:
            return
        state = {
            a.extension: {"logged_in": a.logged_in, "paused": a.paused}
            for a in self.runtime.center.agents.values()
        }
        try:
            write_private_text(self.path, json.dumps(state))
        except OSError as exc:  # the change holds until a restart
            log.warning("event=queues_state_not_saved file=%s error=%s", self.path, exc)

    # -- callers ----------------------------------------------------------------------------

    async def call_queue(self, dial: Dial) -> Outcome:
        svc = self.services
        queue = self.queues[dial.target]
        party = dial.party
        action = svc.handling(dial, list(queue.rules), queue.in_hours, queue.after_hours)
        if action != "ring":
            return await svc.send_on(dial, action)
        # answered before it joins: only a caller that can hear the queue is offered
        # (a late-offer caller whose ACK never comes is never put through to an agent)
        if not await svc.answer(party):
            return Done()
        runtime = self.runtime
        runtime.counter += 1
        caller_id = f"{party.call.call_id}#{runtime.counter}"
        number = caller_number(dial)
        priority = max(
            (p.priority for p in queue.priorities if number_matches(p.caller, number)), default=0
        )
        position = runtime.center.join(queue.extension, caller_id, self._now(), priority)
        user = dial.caller
        label = f"{user.name} <{user.extension}>" if user is not None else party.label or number
        if position is None:
            log.info("event=queue_refused queue=%s caller=%s", queue.extension, number)
            self._left(queue, party, label, number, "overflow", 0.0, None)
            return await svc.send_on(dial, queue.overflow)
        waiter = Waiter(caller_id, queue, dial, label, number, self._now())
        runtime.waiters[caller_id] = waiter
        # a hang-up leaves the line before the call's end is told to others (the call
        # history's row then says which queue it gave up in)
        party.on_gone.append(lambda _: self._leave(waiter, "abandoned"))
        log.info(
            "event=queue_join queue=%s caller=%s position=%d priority=%d",
            queue.extension,
            number,
            position,
            priority,
        )
        try:
            return await self._wait(waiter)
        finally:
            runtime.waiters.pop(caller_id, None)
            waiter.gone.set()
            agent = waiter.answered.result() if waiter.answered.done() else None
            if agent is not None and agent.peer is None and not agent.ended:
                svc.spawn(agent.call.hangup())  # answered for a caller no longer there
            if caller_id in runtime.center.callers:  # ended by an error: out of line
                runtime.center.leave(caller_id, self._now(), "abandoned")
                self.pump()

    async def _wait(self, waiter: Waiter) -> Outcome:
        svc = self.services
        party, queue = waiter.party, waiter.settings
        leg = party.leg
        leg.listen_dtmf = True
        music = svc.music(queue.music) if svc.music is not None else None
        self.pump()  # a free agent rings while the greeting plays
        speaking: asyncio.Task[None] | None = svc.spawn(self._announce(waiter, music, first=True))
        next_announce: float | None = None
        ended = asyncio.ensure_future(party.call.ended.wait())
        gone = asyncio.ensure_future(waiter.gone.wait())

        def out_of_line(outcome: str | None) -> None:
            waiter.in_line = False
            if speaking is not None:
                speaking.cancel()
            leg.stop_playing()
            leg.listen_dtmf = False
            if outcome is not None:
                self._leave(waiter, outcome)

        try:
            while True:
                queue = waiter.settings  # as configured now (a live apply changes it)
                every = queue.announce_position_seconds
                wait = queue.max_wait_seconds
                give_up = waiter.joined + wait if wait else None
                key = asyncio.ensure_future(leg.dtmf.get())
                waits: set[asyncio.Future[Any]] = {key, ended, gone, waiter.answered}
                if speaking is not None:
                    waits.add(speaking)
                deadlines = [t for t in (give_up, next_announce) if t is not None]
                timeout = max(0.0, min(deadlines) - self._now()) if deadlines else None
                done, _ = await asyncio.wait(
                    waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if not key.done():
                    key.cancel()
                if waiter.answered in done:
                    out_of_line(None)
                    return await svc.connect(party, waiter.answered.result())
                if ended in done or party.ended:
                    out_of_line("abandoned")
                    return Done()
                if gone in done:  # the queue was removed from the configuration
                    out_of_line("overflow")
                    return await svc.send_on(waiter.dial, queue.overflow)
                if key in done and not key.cancelled():
                    if key.result() == "1" and queue.leave_message is not None:
                        out_of_line("message")
                        return await svc.send_on(waiter.dial, queue.leave_message)
                    continue
                now = self._now()
                if give_up is not None and now >= give_up:
                    out_of_line("timeout")
                    log.info("event=queue_timeout queue=%s to=%s", queue.extension, queue.overflow)
                    return await svc.send_on(waiter.dial, queue.overflow)
                if speaking is not None and speaking.done():
                    speaking = None
                    next_announce = now + every if every else None
                elif next_announce is not None and now >= next_announce:
                    next_announce = None
                    speaking = svc.spawn(self._announce(waiter, music, first=False))
        finally:
            ended.cancel()
            gone.cancel()
            if speaking is not None:
                speaking.cancel()

    async def _announce(self, waiter: Waiter, music: Any, *, first: bool) -> None:
        """The greeting (first time), the caller's position and estimated wait, the
        message key; then the music again."""
        svc = self.services
        queue, leg = waiter.settings, waiter.party.leg
        prompts: list[Prompt] = []
        greeting = self.greetings.get(queue.extension)
        if first and greeting is not None:
            prompts.append(greeting)
        line = self.runtime.center.queues.get(queue.extension)
        if line is None:  # the queue was removed meanwhile
            return
        position = line.position(waiter.id)
        if queue.announce_position_seconds and position is not None:
            prompts += [Prompt("builtin", "queue-caller-number"), *_number_prompts(position)]
            estimate = self.runtime.center.estimated_wait(waiter.id)
            if queue.announce_wait and estimate is not None:
                if estimate < 60:
                    prompts.append(Prompt("builtin", "queue-less-than-minute"))
                else:
                    minutes = round(estimate / 60)
                    prompts += [
                        Prompt("builtin", "queue-wait-about"),
                        *_number_prompts(minutes),
                        Prompt("builtin", "queue-minutes"),
                    ]
        if queue.leave_message is not None:
            prompts.append(Prompt("builtin", "queue-press-1"))
        try:
            if prompts:
                await svc.prompts.say(leg, *prompts)
        finally:
            if waiter.in_line and not leg.closed:
                leg.source = music

    def _leave(self, waiter: Waiter, outcome: str) -> None:
        runtime = self.runtime
        if waiter.id not in runtime.center.callers:
            return
        waited = self._now() - waiter.joined
        runtime.center.leave(waiter.id, self._now(), outcome)  # type: ignore[arg-type]
        waiter.gone.set()  # its ring, if any, stops
        log.info(
            "event=queue_leave queue=%s caller=%s outcome=%s waited=%.1f",
            waiter.settings.extension,
            waiter.number,
            outcome,
            waited,
        )
        self._left(
            waiter.settings, waiter.party, waiter.label, waiter.number, outcome, waited, None
        )
        self.pump()

    def _left(
        self,
        queue: QueueSettings,
        party: Party,
        label: str,
        number: str,
        outcome: str,
        waited: float,
        agent: str | None,
    ) -> None:
        """A caller left ``queue``: the wallboard's last callers and the ``queued`` call
        event (the call history) say how."""
        user = self.config.user(agent) if agent else None
        self.runtime.recent[queue.extension].appendleft(
            {
                "caller": label,
                "number": number,
                "agent": agent,
                "agent_name": user.name if user else None,
                "outcome": outcome,
                "waited": round(waited, 1),
                "at": time.time(),
            }
        )
        self.services.emit("queued", party, queue.extension, outcome, waited, agent)

    # -- offers -----------------------------------------------------------------------------

    def pump(self) -> None:
        """Offer free agents to waiting callers, soon (several events of one moment, such
        as an agent's hang-up and its call's end, make one plan); and plan again when a
        wrap-up or a rest ends."""
        runtime = self.runtime
        if self.svc is None or runtime.pumping:
            return
        runtime.pumping = True
        asyncio.get_running_loop().call_soon(self._plan)

    def _plan(self) -> None:
        runtime = self.runtime
        runtime.pumping = False
        now = self._now()
        for offer in runtime.center.plan(now, self._unavailable()):
            waiter = runtime.waiters.get(offer.caller)
            if waiter is None:  # no call behind it any more (cannot happen: joined and
                runtime.center.leave(offer.caller, now, "abandoned")  # registered at once)
                continue
            self.services.spawn(self._offer(waiter, offer.agents))
        if runtime.timer is not None:
            runtime.timer.cancel()
            runtime.timer = None
        at = runtime.center.next_change(now)
        if at is not None:
            loop = asyncio.get_running_loop()
            runtime.timer = loop.call_at(at + 0.01, self._plan)

    def _unavailable(self) -> dict[str, str]:
        """Agents that may not get a queue call now, with why (the wallboard's word): in
        DND (``dnd``), with no phone registered (``offline``), on another call or not a
        user any more (``busy``)."""
        svc = self.services
        talking = {  # one pass over the calls: on any call, bridged or not (voicemail, a
            p.user.extension  # menu, this very queue as a caller)
            for p in svc.parties
            if p.user is not None and p.call.state is ESTABLISHED
        }
        talking |= self.runtime.ringing  # a ring of a withdrawn offer still going
        out: dict[str, str] = {}
        for extension in self.runtime.center.agents:
            user = svc.user(extension)
            if user is None:
                out[extension] = "busy"
            elif user.dnd != "off":
                out[extension] = "dnd"
            elif not svc.devices.registered(user):
                out[extension] = "offline"
            elif extension in talking:
                out[extension] = "busy"
        return out

    async def _offer(self, waiter: Waiter, agents: tuple[str, ...]) -> None:
        svc = self.services
        queue = waiter.settings
        runtime = self.runtime
        timeout = float(queue.ring_seconds)
        if queue.max_wait_seconds:
            timeout = min(timeout, waiter.joined + queue.max_wait_seconds - self._now())
        targets = [
            RingTarget("user", extension, shown=(queue.name, queue.extension))
            for extension in agents
        ]
        log.info(
            "event=queue_offer queue=%s caller=%s agents=%s",
            queue.extension,
            waiter.number,
            ",".join(agents),
        )
        runtime.ringing.update(agents)
        try:
            result = await svc.ring(
                waiter.party,
                targets,
                max(0.5, timeout),
                skip_busy=True,
                progress=False,
                stop=waiter.gone,
            )
        except Exception:
            runtime.center.declined(waiter.id, agents, self._now())
            raise
        finally:
            runtime.ringing.difference_update(agents)
        now = self._now()
        callee = result.party
        if result.outcome != "answered" or callee is None:
            runtime.center.declined(waiter.id, agents, now)
            log.info(
                "event=queue_offer_missed queue=%s agents=%s outcome=%s",
                queue.extension,
                ",".join(agents),
                result.outcome,
            )
            self.pump()
            return
        extension = callee.user.extension if callee.user is not None else None
        caller = runtime.center.callers.get(waiter.id)
        if caller is None or waiter.party.ended:
            await callee.call.hangup()  # the caller left as the agent answered
            self.pump()
            return
        waited = now - waiter.joined
        offered = extension is not None and extension in caller.offered_to
        if offered:
            assert extension is not None
            runtime.center.answered(waiter.id, extension, now)
        else:  # picked up by someone else, or by an agent that logged out as it rang
            runtime.center.leave(waiter.id, now, "answered")
        log.info(
            "event=queue_answered queue=%s caller=%s agent=%s waited=%.1f",
            queue.extension,
            waiter.number,
            extension,
            waited,
        )
        self._left(queue, waiter.party, waiter.label, waiter.number, "answered", waited, extension)
        if offered:
            assert extension is not None
            runtime.talking[extension] = waiter.label
            callee.on_gone.append(lambda _: self._agent_done(extension, queue))
        waiter.answered.set_result(callee)
        self.pump()

    def _agent_done(self, extension: str, queue: QueueSettings) -> None:
        self.runtime.talking.pop(extension, None)
        self.runtime.center.hung_up(extension, self._now(), queue.wrap_up_seconds)
        log.info("event=queue_wrap_up agent=%s seconds=%d", extension, queue.wrap_up_seconds)
        self.pump()

    # -- call events: an agent's other call ends, it may take queue calls again ---------------

    def ended(self, party: Party) -> None:
        center = self.runtime.center
        if center.callers and party.user is not None and party.user.extension in center.agents:
            self.pump()

    def registered(self, binding: Binding) -> None:
        if self.runtime.center.callers:  # perhaps an agent's phone, back
            self.pump()

    # -- agents -------------------------------------------------------------------------------

    def agent_action(self, extension: str, action: str) -> Agent:
        """Log an agent in or out, pause or resume it (feature codes, portal, API)."""
        center = self.runtime.center
        agent = center.agent(extension)  # QueueError: not a member
        withdrawn: str | None = None
        if action == "login":
            center.log_in(extension, self._now())
        elif action == "logout":
            withdrawn = center.log_out(extension)
        elif action == "pause":
            withdrawn = center.pause(extension, True)
        elif action == "unpause":
            center.pause(extension, False)
        else:
            raise ValueError(f"action: expected login, logout, pause or unpause, not {action!r}")
        if withdrawn is not None:  # its ring goes on to its end; answered, it still counts
            log.info("event=queue_offer_withdrawn agent=%s", extension)
        log.info("event=queue_agent agent=%s action=%s", extension, action)
        self._save()
        for code in (LOGIN, PAUSE):  # the agent's BLF keys on the codes
            self.services.emit("hint_changed", code)
        self.pump()
        return agent

    def _agent_request(self, args: dict[str, Any]) -> dict[str, Any]:
        extension, action = args.get("extension"), args.get("action")
        if not isinstance(extension, str) or not isinstance(action, str):
            raise ValueError("expected extension and action")
        if not self.runtime.center.member_of(extension):
            raise ValueError(f"{extension} is not a member of any queue")
        try:
            agent = self.agent_action(extension, action)
        except QueueError as exc:
            raise ValueError(str(exc)) from None
        return self._agent_state(agent)

    def _agent_state(self, agent: Agent) -> dict[str, Any]:
        return {
            "extension": agent.extension,
            "logged_in": agent.logged_in,
            "paused": agent.paused,
            "queues": self.runtime.center.member_of(agent.extension),
        }

    async def _code(self, dial: Dial, action: str) -> Outcome:
        svc = self.services
        user = dial.caller
        if user is None:
            return Failed(403, "refused", "Forbidden (queue codes are for users)")
        if not await svc.answer(dial.party):
            return Done()
        leg = dial.party.leg
        if not self.runtime.center.member_of(user.extension):
            await leg.play_prompt("queue-not-member")
            return Done()
        agent = self.runtime.center.agents[user.extension]
        if action == "pause" and agent.paused:
            action = "unpause"
        self.agent_action(user.extension, action)
        prompt = {
            "login": "queue-agent-in",
            "logout": "queue-agent-out",
            "pause": "queue-agent-paused",
            "unpause": "queue-agent-resumed",
        }[action]
        await leg.play_prompt(prompt)
        return Done()

    async def log_in_code(self, dial: Dial) -> Outcome:
        return await self._code(dial, "login")

    async def log_out_code(self, dial: Dial) -> Outcome:
        return await self._code(dial, "logout")

    async def pause_code(self, dial: Dial) -> Outcome:
        """``*47``: pause, or resume when paused."""
        return await self._code(dial, "pause")

    # -- the wallboard ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        runtime = self.runtime
        center = runtime.center
        now = self._now()
        unavailable = self._unavailable()
        out = []
        for extension, settings in self.queues.items():
            queue = center.queues.get(extension)
            if queue is None:
                continue
            waiting = []
            for position, caller in enumerate(queue.callers, 1):
                waiter = runtime.waiters.get(caller.id)
                waiting.append(
                    {
                        "id": caller.id,
                        "caller": waiter.label if waiter else "",
                        "number": waiter.number if waiter else "",
                        "position": position,
                        "waited": round(now - caller.arrived, 1),
                        "state": "ringing" if caller.offered_to else "waiting",
                        "agents": list(caller.offered_to),
                    }
                )
            agents = []
            for member in queue.members:
                agent = center.agents[member.extension]
                user = self.config.user(member.extension)
                state = agent.state
                if state == "available":
                    if member.extension in unavailable:
                        state = unavailable[member.extension]
                    elif now < agent.wrap_until:
                        state = "wrap_up"
                agents.append(
                    {
                        "extension": member.extension,
                        "name": user.name if user else member.extension,
                        "state": state,
                        "talking_to": runtime.talking.get(member.extension),
                        "answered": agent.answered,
                        "penalty": member.penalty,
                        "logged_in": agent.logged_in,
                        "paused": agent.paused,
                    }
                )
            stats = queue.stats
            out.append(
                {
                    "extension": extension,
                    "name": settings.name,
                    "strategy": settings.strategy,
                    "service_level_seconds": settings.service_level_seconds,
                    "waiting": waiting,
                    "agents": agents,
                    "recent": list(runtime.recent.get(extension, ())),
                    "stats": {
                        "answered": stats.answered,
                        "abandoned": stats.abandoned,
                        "timeout": stats.timeout,
                        "overflow": stats.overflow,
                        "message": stats.message,
                        "average_wait": round(stats.waited_total / stats.answered, 1)
                        if stats.answered
                        else None,
                        "longest_wait": round(stats.longest_wait, 1),
                        "service_level": round(stats.within_service_level / stats.answered, 3)
                        if stats.answered
                        else None,
                    },
                }
            )
        return {"queues": out}

    def _now(self) -> float:
        return asyncio.get_running_loop().time()


def _number_prompts(n: int) -> list[Prompt]:
    return [Prompt("builtin", name) for name in number_names(n)]
