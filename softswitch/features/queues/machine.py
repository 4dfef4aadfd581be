"""Call queues as a pure state machine: events and the current time in, offers out.

Nothing here waits, rings or plays: the feature (:mod:`.feature`) tells the machine what
happened (a caller joined, hung up; an agent logged in, answered, rejected, finished a
call) and asks it :meth:`CallCenter.plan` which waiting callers to offer to which agents
now. The rules, after Asterisk ``app_queue`` and FreeSWITCH ``mod_callcenter``:

- **Callers** wait in strict order: higher ``priority`` first, then arrival. Offers are
  made in that order: a caller is never offered an agent while one ahead of it waits
  with none. A caller has at most one offer at a time (one agent, or every agent of a
  ``simultaneous`` queue ringing together).
- **Agents** are global (one person, several queues): logged in or out, paused or not.
  An agent takes one queue call at a time: none is offered while it rings for another
  caller, talks to a queue caller, is in its wrap-up, rests after letting an offer ring
  out (``retry``), or is named unavailable by the caller of :meth:`~CallCenter.plan`
  (on another call, Do-Not-Disturb).
- **Strategies** order the free members of a queue: only those of the lowest penalty
  among them are offered (a higher tier rings only when no lower one is free), then
  ``fixed_order`` (as listed), ``rotating`` (round robin from the one after the last
  offered), ``longest_idle`` (the longest since its last queue call or refusal),
  ``fewest_calls`` (fewest answered today), ``simultaneous`` (all of them together).
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from typing import Literal

Strategy = Literal["simultaneous", "rotating", "fixed_order", "longest_idle", "fewest_calls"]
STRATEGIES: tuple[Strategy, ...] = (
    "simultaneous",
    "rotating",
    "fixed_order",
    "longest_idle",
    "fewest_calls",
)
# how a caller left the queue (the call history's outcome)
Outcome = Literal["answered", "abandoned", "timeout", "overflow", "message", "refused"]


@dataclass
class Agent:
    extension: str
    logged_in: bool = True
    paused: bool = False
    offered: str | None = None  # the caller it rings for
    talking: str | None = None  # the queue caller it talks to
    wrap_until: float = 0.0  # no queue call before this (wrap-up after a call)
    rest_until: float = 0.0  # no queue call before this (it let an offer ring out)
    idle_since: float = 0.0  # its last queue call ended, or its last refusal
    answered: int = 0  # queue calls taken (fewest_calls)

    def free(self, now: float) -> bool:
        return (
            self.logged_in
            and not self.paused
            and self.offered is None
            and self.talking is None
            and now >= self.wrap_until
            and now >= self.rest_until
        )

    @property
    def state(self) -> str:
        """For people (the wallboard, BLF): one word."""
        if not self.logged_in:
            return "logged_out"
        if self.talking is not None:
            return "talking"
        if self.offered is not None:
            return "ringing"
        if self.paused:
            return "paused"
        return "available"


@dataclass
class Caller:
    id: str
    queue: str
    arrived: float
    priority: int
    order: int  # arrival number across the call center (ties of arrival times)
    offered_to: tuple[str, ...] = ()  # the agents ringing for it now

    def key(self) -> tuple[int, float, int]:
        return (-self.priority, self.arrived, self.order)


@dataclass
class Member:
    extension: str
    penalty: int = 0


@dataclass
class Stats:
    """Today's figures of one queue (the wallboard)."""

    answered: int = 0
    abandoned: int = 0
    timeout: int = 0  # left for the max-wait destination
    overflow: int = 0  # refused on joining (full, nobody logged in)
    message: int = 0  # pressed the key to leave a message
    waited_total: float = 0.0  # by answered callers
    longest_wait: float = 0.0  # of answered callers
    within_service_level: int = 0  # answered within service_level seconds
    average_wait_ewma: float | None = None  # for the estimated wait announced


@dataclass
class Queue:
    extension: str
    members: list[Member]
    strategy: Strategy = "rotating"
    wrap_up: float = 0.0
    retry: float = 5.0
    max_callers: int = 0  # 0: no limit
    join_empty: bool = True  # join when no member is logged in
    service_level: float = 30.0
    callers: list[Caller] = field(default_factory=list)  # in order (Caller.key)
    last_offered: str | None = None  # rotating: where the next round starts
    stats: Stats = field(default_factory=Stats)

    def position(self, caller_id: str) -> int | None:
        """1 for the caller at the head of the line."""
        for i, caller in enumerate(self.callers, 1):
            if caller.id == caller_id:
                return i
        return None


@dataclass(frozen=True, slots=True)
class Offer:
    """Ring ``agents`` together for ``caller`` (of ``queue``)."""

    queue: str
    caller: str
    agents: tuple[str, ...]


class QueueError(ValueError):
    """An event that does not fit the state (an unknown caller, a stale offer)."""


class CallCenter:
    """Every queue and agent of the office."""

    def __init__(self) -> None:
        self.queues: dict[str, Queue] = {}
        self.agents: dict[str, Agent] = {}
        self.callers: dict[str, Caller] = {}
        self._arrivals = 0

    # -- configuration -------------------------------------------------------------------

    def set_queue(self, queue: Queue) -> None:
        """Add or replace a queue's settings; its waiting callers and figures stay."""
        old = self.queues.get(queue.extension)
        if old is not None:
            queue.callers, queue.stats, queue.last_offered = (
                old.callers,
                old.stats,
                old.last_offered,
            )
        self.queues[queue.extension] = queue
        for member in queue.members:
            self.agents.setdefault(member.extension, Agent(member.extension))

    def remove_queue(self, extension: str) -> list[str]:
        """A queue gone from the configuration: the ids of its callers (to send on)."""
        queue = self.queues.pop(extension, None)
        return [c.id for c in queue.callers] if queue is not None else []

    def member_of(self, extension: str) -> list[str]:
        return [q.extension for q in self.queues.values() if _member(q, extension) is not None]

    # -- agents ----------------------------------------------------------------------------

    def agent(self, extension: str) -> Agent:
        agent = self.agents.get(extension)
        if agent is None:
            raise QueueError(f"{extension} is not a member of any queue")
        return agent

    def log_in(self, extension: str, now: float) -> None:
        agent = self.agent(extension)
        if not agent.logged_in:
            agent.logged_in, agent.paused = True, False
            agent.idle_since = now

    def log_out(self, extension: str) -> str | None:
        """The caller whose offer to this agent is withdrawn, if any."""
        agent = self.agent(extension)
        agent.logged_in = False
        return self._withdraw(agent)

    def pause(self, extension: str, paused: bool) -> str | None:
        agent = self.agent(extension)
        agent.paused = paused
        return self._withdraw(agent) if paused else None

    def _withdraw(self, agent: Agent) -> str | None:
        caller_id = agent.offered
        if caller_id is None:
            return None
        caller = self.callers.get(caller_id)
        if caller is not None:
            caller.offered_to = tuple(a for a in caller.offered_to if a != agent.extension)
        agent.offered = None
        return caller_id

    # -- callers ---------------------------------------------------------------------------

    def join(self, queue_ext: str, caller_id: str, now: float, priority: int = 0) -> int | None:
        """The caller's position (1: next), or None when the queue refuses it (full,
        or no member logged in and ``join_empty`` is off)."""
        queue = self.queues[queue_ext]
        if caller_id in self.callers:
            raise QueueError(f"caller {caller_id} is already queued")
        if queue.max_callers and len(queue.callers) >= queue.max_callers:
            queue.stats.overflow += 1
            return None
        if not queue.join_empty and not any(
            self.agents[m.extension].logged_in for m in queue.members
        ):
            queue.stats.overflow += 1
            return None
        self._arrivals += 1
        caller = Caller(caller_id, queue_ext, now, priority, self._arrivals)
        self.callers[caller_id] = caller
        queue.callers.append(caller)
        queue.callers.sort(key=Caller.key)
        return queue.position(caller_id)

    def leave(self, caller_id: str, now: float, outcome: Outcome) -> tuple[str, ...]:
        """The caller left without an agent (hung up, timed out, pressed for a message;
        ``answered``: by someone the queue did not offer it to, such as a pickup): the
        agents that were ringing for it, whose rings are to stop."""
        caller = self._pop(caller_id)
        for extension in caller.offered_to:
            self.agents[extension].offered = None
        queue = self.queues.get(caller.queue)
        if queue is not None:
            stats = queue.stats
            if outcome == "answered":
                self._count_answer(queue, caller, now)
            elif outcome == "abandoned":
                stats.abandoned += 1
            elif outcome == "timeout":
                stats.timeout += 1
            elif outcome == "message":
                stats.message += 1
            elif outcome == "overflow":
                stats.overflow += 1
        return caller.offered_to

    def _pop(self, caller_id: str) -> Caller:
        caller = self.callers.pop(caller_id, None)
        if caller is None:
            raise QueueError(f"caller {caller_id} is not queued")
        queue = self.queues.get(caller.queue)
        if queue is not None:
            queue.callers.remove(caller)
        return caller

    # -- offers ----------------------------------------------------------------------------

    def plan(self, now: float, unavailable: Container[str] = ()) -> list[Offer]:
        """The offers to make now (each recorded as made): for every waiting caller in
        order, the agents its queue's strategy picks among the free ones."""
        offers: list[Offer] = []
        waiting = sorted(
            (c for c in self.callers.values() if not c.offered_to),
            key=lambda c: (c.key(), c.queue),
        )
        blocked: set[str] = set()  # queues whose head is unserved: nobody behind it jumps
        for caller in waiting:
            queue = self.queues.get(caller.queue)
            if queue is None:  # removed: the caller is being sent on (see remove_queue)
                continue
            if queue.extension in blocked:  # its first caller found no agent: nor would
                continue  # those behind it (free agents only grow fewer within one plan)
            agents = self.pick(queue, now, unavailable)
            if not agents:
                blocked.add(queue.extension)
                continue
            caller.offered_to = agents
            for extension in agents:
                self.agents[extension].offered = caller.id
            if queue.strategy == "rotating":
                queue.last_offered = agents[0]
            offers.append(Offer(queue.extension, caller.id, agents))
        return offers

    def pick(self, queue: Queue, now: float, unavailable: Container[str] = ()) -> tuple[str, ...]:
        """The agents ``queue``'s strategy offers its next caller to (empty: none free)."""
        free = [
            (i, m)
            for i, m in enumerate(queue.members)
            if m.extension not in unavailable and self.agents[m.extension].free(now)
        ]
        if not free:
            return ()
        tier = min(m.penalty for _, m in free)
        free = [(i, m) for i, m in free if m.penalty == tier]
        if queue.strategy == "simultaneous":
            return tuple(m.extension for _, m in free)
        if queue.strategy == "fixed_order":
            chosen = free[0]
        elif queue.strategy == "rotating":
            start = _index(queue, queue.last_offered) + 1
            n = len(queue.members)
            chosen = min(free, key=lambda im: (im[0] - start) % n)
        elif queue.strategy == "longest_idle":
            chosen = min(free, key=lambda im: (self.agents[im[1].extension].idle_since, im[0]))
        else:  # fewest_calls
            chosen = min(free, key=lambda im: (self.agents[im[1].extension].answered, im[0]))
        return (chosen[1].extension,)

    def answered(self, caller_id: str, extension: str, now: float) -> tuple[str, ...]:
        """``extension`` took the caller: the other agents ringing for it (to stop)."""
        caller = self.callers.get(caller_id)
        if caller is None or extension not in caller.offered_to:
            raise QueueError(f"{extension} was not offered caller {caller_id}")
        self._pop(caller_id)
        others = tuple(a for a in caller.offered_to if a != extension)
        for other in others:
            self.agents[other].offered = None
        agent = self.agents[extension]
        agent.offered, agent.talking = None, caller_id
        queue = self.queues.get(caller.queue)
        if queue is not None:
            self._count_answer(queue, caller, now)
        return others

    def _count_answer(self, queue: Queue, caller: Caller, now: float) -> None:
        stats = queue.stats
        waited = max(0.0, now - caller.arrived)
        stats.answered += 1
        stats.waited_total += waited
        stats.longest_wait = max(stats.longest_wait, waited)
        if waited <= queue.service_level:
            stats.within_service_level += 1
        previous = stats.average_wait_ewma
        stats.average_wait_ewma = waited if previous is None else 0.75 * previous + 0.25 * waited

    def declined(self, caller_id: str, extensions: Iterable[str], now: float) -> None:
        """The offer to these agents ended unanswered (rejected, rang out, unreachable):
        they rest ``retry`` seconds (a rotating queue has moved past them already) and
        count as idle from now (the back of a longest-idle line)."""
        caller = self.callers.get(caller_id)
        gone = set(extensions)  # once: it may be an iterator
        for extension in gone:
            agent = self.agents.get(extension)
            if agent is None or agent.offered != caller_id:
                continue
            agent.offered = None
            queue = self.queues.get(caller.queue) if caller is not None else None
            agent.rest_until = now + (queue.retry if queue is not None else 0.0)
            agent.idle_since = now
        if caller is not None:
            caller.offered_to = tuple(a for a in caller.offered_to if a not in gone)

    def hung_up(self, extension: str, now: float, wrap_up: float) -> None:
        """The agent's queue call ended: wrap-up starts."""
        agent = self.agents.get(extension)
        if agent is None or agent.talking is None:
            return
        agent.talking = None
        agent.answered += 1
        agent.idle_since = now
        agent.wrap_until = now + wrap_up

    # -- time ------------------------------------------------------------------------------

    def next_change(self, now: float) -> float | None:
        """When an agent's wrap-up or rest ends next (plan again then), if any caller waits."""
        if not self.callers:
            return None
        times = [
            t
            for a in self.agents.values()
            if a.logged_in
            for t in (a.wrap_until, a.rest_until)
            if t > now
        ]
        return min(times) if times else None

    def estimated_wait(self, caller_id: str) -> float | None:
        """Seconds: the queue's average wait (recent answered callers weigh most) scaled
        by the caller's position; None before any caller was answered."""
        caller = self.callers.get(caller_id)
        if caller is None:
            return None
        queue = self.queues.get(caller.queue)
        if queue is None:
            return None
        average = queue.stats.average_wait_ewma
        position = queue.position(caller_id)
        if average is None or position is None:
            return None
        return average * position


def _member(queue: Queue, extension: str) -> Member | None:
    return next((m for m in queue.members if m.extension == extension), None)


def _index(queue: Queue, extension: str | None) -> int:
    for i, member in enumerate(queue.members):
        if member.extension == extension:
            return i
    return -1
