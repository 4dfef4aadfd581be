"""The call-queue state machine, pure (no asyncio): a hypothesis rule-based machine drives a
:class:`CallCenter` with random arrivals, hang-ups, log-ins/outs, pauses, rejections and
answers against a reference model kept here; then one example per rule of the docstring."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from softswitch.features.queues.machine import (
    STRATEGIES,
    CallCenter,
    Member,
    Offer,
    Outcome,
    Queue,
    QueueError,
    Strategy,
)

AGENTS = ("a1", "a2", "a3", "a4", "a5")  # shared between the queues
LEAVING: tuple[Outcome, ...] = ("abandoned", "timeout", "message")
BOOLEANS = st.booleans()
UNAVAILABLE = st.frozensets(st.sampled_from(AGENTS), max_size=2)


@cache
def choice(options: tuple[str, ...]) -> st.SearchStrategy[str]:
    """sampled_from, built once per set of options (drawing is most of the run time)."""
    return st.sampled_from(options)


@cache
def some_of(options: tuple[str, ...], min_size: int, max_size: int) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(options), min_size=min_size, max_size=max_size, unique=True)


# -- the reference model ---------------------------------------------------------------


@dataclass
class QueueConf:
    extension: str
    members: list[tuple[str, int]]  # (extension, penalty), in the configured order
    strategy: Strategy
    wrap_up: float
    retry: float
    max_callers: int
    join_empty: bool
    service_level: float


@dataclass
class ModelAgent:
    logged_in: bool = True
    paused: bool = False
    offered: str | None = None
    talking: str | None = None
    wrap_until: float = 0.0
    rest_until: float = 0.0
    idle_since: float = 0.0
    answered: int = 0


@dataclass
class ModelCaller:
    id: str
    queue: str
    priority: int
    arrived: float
    offer: tuple[str, ...] = ()


@dataclass
class ModelStats:
    answered: int = 0
    abandoned: int = 0
    timeout: int = 0
    message: int = 0
    overflow: int = 0
    waits: list[float] = field(default_factory=list)  # of the answered callers
    within_service_level: int = 0


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cc = CallCenter()
        self.now = 100.0
        self.conf: dict[str, QueueConf] = {}
        self.agents: dict[str, ModelAgent] = {}  # every member of some queue
        self.callers: dict[str, ModelCaller] = {}  # every caller ever accepted
        self.status: dict[str, str] = {}  # caller id: waiting, answered or left
        self.order: dict[str, list[str]] = {}  # the waiting callers of a queue, in turn
        self.stats: dict[str, ModelStats] = {}
        self.last_offered: dict[str, str | None] = {}
        self.arrivals = 0

    # -- views of the model ---------------------------------------------------------------

    def waiting(self) -> list[str]:
        return [cid for q in sorted(self.order) for cid in self.order[q]]

    def offered(self) -> list[str]:
        return [cid for cid in self.waiting() if self.callers[cid].offer]

    def talking(self) -> list[str]:
        return sorted(e for e, a in self.agents.items() if a.talking is not None)

    def busy(self, extension: str, unavailable: frozenset[str]) -> str | None:
        """Why the agent may not be offered a queue call now (None: it may)."""
        a = self.agents[extension]
        if not a.logged_in:
            return "logged out"
        if a.paused:
            return "paused"
        if extension in unavailable:
            return "named unavailable"
        if a.offered is not None:
            return f"ringing for {a.offered}"
        if a.talking is not None:
            return f"talking to {a.talking}"
        if self.now < a.wrap_until:
            return f"in wrap-up until {a.wrap_until}"
        if self.now < a.rest_until:
            return f"resting until {a.rest_until}"
        return None

    def acceptable(self, conf: QueueConf, free: list[tuple[str, int]]) -> set[str]:
        """The agents the strategy may pick among the free members (lowest tier first)."""
        tier = min(p for _, p in free)
        lowest = [e for e, p in free if p == tier]
        if conf.strategy == "fixed_order":
            return {lowest[0]}
        if conf.strategy == "rotating":
            names = [e for e, _ in conf.members]
            last = self.last_offered[conf.extension]
            start = names.index(last) + 1 if last in names else 0
            return {next(e for e in names[start:] + names[:start] if e in lowest)}
        if conf.strategy == "longest_idle":
            since = min(self.agents[e].idle_since for e in lowest)
            return {e for e in lowest if self.agents[e].idle_since == since}
        if conf.strategy == "fewest_calls":
            fewest = min(self.agents[e].answered for e in lowest)
            return {e for e in lowest if self.agents[e].answered == fewest}
        return set(lowest)  # simultaneous: all of them together

    def withdraw(self, extension: str) -> None:
        agent = self.agents[extension]
        if agent.offered is not None:
            caller = self.callers[agent.offered]
            caller.offer = tuple(e for e in caller.offer if e != extension)
            agent.offered = None

    def maybe_plan(self, data: st.DataObject) -> None:
        """The feature plans after most events: so do the rules, half of the time."""
        if data.draw(BOOLEANS, label="then plan"):
            self.plan(data)

    # -- configuration --------------------------------------------------------------------

    @initialize(data=st.data())
    def configure(self, data: st.DataObject) -> None:
        for k in range(data.draw(st.integers(1, 3), label="queues")):
            ext = f"q{k}"
            members = data.draw(
                st.lists(
                    st.tuples(st.sampled_from(AGENTS), st.sampled_from([0, 0, 1, 2])),
                    min_size=2 if k == 0 else 1,
                    max_size=5,
                    unique_by=lambda m: m[0],
                ),
                label=f"{ext} members",
            )
            conf = QueueConf(
                ext,
                members,
                data.draw(st.sampled_from(STRATEGIES), label=f"{ext} strategy"),
                wrap_up=data.draw(st.sampled_from([0.0, 5.0, 10.0]), label="wrap_up"),
                retry=data.draw(st.sampled_from([0.0, 2.0, 5.0]), label="retry"),
                max_callers=data.draw(st.sampled_from([0, 0, 0, 1, 3]), label="max_callers"),
                join_empty=data.draw(st.booleans(), label="join_empty"),
                service_level=data.draw(st.sampled_from([0.0, 5.0, 30.0]), label="sl"),
            )
            self.cc.set_queue(
                Queue(
                    ext,
                    [Member(e, p) for e, p in members],
                    conf.strategy,
                    wrap_up=conf.wrap_up,
                    retry=conf.retry,
                    max_callers=conf.max_callers,
                    join_empty=conf.join_empty,
                    service_level=conf.service_level,
                )
            )
            self.conf[ext] = conf
            self.order[ext] = []
            self.stats[ext] = ModelStats()
            self.last_offered[ext] = None
            for e, _ in members:
                self.agents.setdefault(e, ModelAgent())
        # a history: the agents have been idle for a while, have taken calls today
        for e in sorted(self.agents):
            idle_since = data.draw(st.sampled_from([0.0, 20.0, 40.0]), label=f"{e} idle since")
            answered = data.draw(st.integers(0, 2), label=f"{e} answered")
            self.agents[e].idle_since = self.cc.agents[e].idle_since = idle_since
            self.agents[e].answered = self.cc.agents[e].answered = answered

    # -- callers --------------------------------------------------------------------------

    @rule(data=st.data(), priority=st.sampled_from([0, 0, 0, 1, 2]))
    def join(self, data: st.DataObject, priority: int) -> None:
        qext = data.draw(choice(tuple(sorted(self.conf))), label="queue")
        conf, order = self.conf[qext], self.order[qext]
        self.arrivals += 1
        cid = f"c{self.arrivals}"
        full = conf.max_callers > 0 and len(order) >= conf.max_callers
        empty = not conf.join_empty and not any(self.agents[e].logged_in for e, _ in conf.members)
        position = self.cc.join(qext, cid, self.now, priority)
        if full or empty:
            assert position is None, f"{cid} joined a queue that is full or empty"
            self.stats[qext].overflow += 1
            return
        # behind every caller of the same or a higher priority, ahead of the others
        index = next(
            (i for i, c in enumerate(order) if self.callers[c].priority < priority), len(order)
        )
        assert position == index + 1
        order.insert(index, cid)
        self.callers[cid] = ModelCaller(cid, qext, priority, self.now)
        self.status[cid] = "waiting"
        self.maybe_plan(data)

    @precondition(lambda self: self.waiting())
    @rule(data=st.data(), outcome=st.sampled_from(LEAVING))
    def leave(self, data: st.DataObject, outcome: Outcome) -> None:
        cid = data.draw(choice(tuple(self.waiting())), label="caller")
        caller = self.callers[cid]
        stopped = self.cc.leave(cid, self.now, outcome)
        assert sorted(stopped) == sorted(caller.offer)
        for ext in caller.offer:
            self.agents[ext].offered = None
        caller.offer = ()
        self.order[caller.queue].remove(cid)
        self.status[cid] = "left"
        stats = self.stats[caller.queue]
        if outcome == "abandoned":
            stats.abandoned += 1
        elif outcome == "timeout":
            stats.timeout += 1
        else:
            stats.message += 1
        self.maybe_plan(data)

    # -- agents ---------------------------------------------------------------------------

    @precondition(lambda self: self.agents)
    @rule(data=st.data(), action=st.sampled_from(["log_in", "log_out", "pause", "unpause"]))
    def agent_event(self, data: st.DataObject, action: str) -> None:
        """An agent logs in or out, pauses or comes back."""
        ext = data.draw(choice(tuple(sorted(self.agents))), label="agent")
        agent = self.agents[ext]
        if action == "log_in":
            self.cc.log_in(ext, self.now)
            if not agent.logged_in:
                agent.logged_in, agent.paused, agent.idle_since = True, False, self.now
        elif action == "log_out":
            assert self.cc.log_out(ext) == agent.offered  # its offer withdrawn
            self.withdraw(ext)
            agent.logged_in = False
        else:
            paused = action == "pause"
            assert self.cc.pause(ext, paused) == (agent.offered if paused else None)
            if paused:
                self.withdraw(ext)
            agent.paused = paused
        self.maybe_plan(data)

    # -- offers ---------------------------------------------------------------------------

    @rule(data=st.data())
    def plan(self, data: st.DataObject) -> None:
        unavailable = data.draw(UNAVAILABLE, label="unavailable")
        free_before = {e for e in self.agents if self.busy(e, unavailable) is None}
        offers = self.cc.plan(self.now, unavailable)
        for offer in offers:
            assert self.status.get(offer.caller) == "waiting", f"{offer}: not a waiting caller"
            caller = self.callers[offer.caller]
            assert caller.queue == offer.queue
            assert not caller.offer, f"{offer}: it rings already for {caller.offer}"
            order = self.order[offer.queue]
            ahead = order[: order.index(offer.caller)]
            unserved = [c for c in ahead if not self.callers[c].offer]
            assert not unserved, f"{offer} while {unserved} wait ahead without an offer"
            conf = self.conf[offer.queue]
            members = dict(conf.members)
            assert offer.agents, f"{offer}: nobody"
            assert len(set(offer.agents)) == len(offer.agents), f"{offer}: twice the same"
            for ext in offer.agents:
                assert ext in members, f"{offer}: {ext} is no member of {offer.queue}"
                reason = self.busy(ext, unavailable)
                assert reason is None, f"{offer} at {self.now}: {ext} is {reason}"
            free = [(e, p) for e, p in conf.members if self.busy(e, unavailable) is None]
            expected = self.acceptable(conf, free)
            if conf.strategy == "simultaneous":
                assert set(offer.agents) == expected, f"{offer}: all of {expected} ring"
            else:
                assert len(offer.agents) == 1 and offer.agents[0] in expected, (
                    f"{conf.strategy} {offer}: expected one of {sorted(expected)}"
                )
            # made: the model records it as the machine should have
            caller.offer = offer.agents
            for ext in offer.agents:
                self.agents[ext].offered = offer.caller
            if conf.strategy == "rotating":
                self.last_offered[offer.queue] = offer.agents[0]
        left_free = {e for e in free_before if self.agents[e].offered is None}
        for offer in offers:
            members = dict(self.conf[offer.queue].members)
            for ext in offer.agents:
                lower = [e for e in left_free if e in members and members[e] < members[ext]]
                assert not lower, f"{offer}: {ext} rings while {lower} (lower tier) stay free"
        # nobody left waiting at the head of a queue while one of its members is free
        for qext, order in self.order.items():
            head = next((c for c in order if not self.callers[c].offer), None)
            if head is not None:
                idle = [e for e, _ in self.conf[qext].members if e in left_free]
                assert not idle, f"{head} waits at the head of {qext} while {idle} are free"

    @precondition(lambda self: self.offered())
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        cid = data.draw(choice(tuple(self.offered())), label="caller")
        caller = self.callers[cid]
        ext = data.draw(choice(caller.offer), label="agent")
        others = self.cc.answered(cid, ext, self.now)
        assert sorted(others) == sorted(e for e in caller.offer if e != ext)
        for other in others:
            self.agents[other].offered = None
        agent = self.agents[ext]
        agent.offered, agent.talking = None, cid
        caller.offer = ()
        self.order[caller.queue].remove(cid)
        self.status[cid] = "answered"
        stats, waited = self.stats[caller.queue], self.now - caller.arrived
        stats.answered += 1
        stats.waits.append(waited)
        if waited <= self.conf[caller.queue].service_level:
            stats.within_service_level += 1
        self.maybe_plan(data)

    @precondition(lambda self: self.offered())
    @rule(data=st.data(), as_iterator=st.booleans())
    def decline(self, data: st.DataObject, as_iterator: bool) -> None:
        cid = data.draw(choice(tuple(self.offered())), label="caller")
        caller = self.callers[cid]
        refused = data.draw(some_of(caller.offer, 1, len(caller.offer)), label="refused")
        others = sorted(set(self.agents) - set(caller.offer))
        # an agent that was not offered this caller (a stale event) changes nothing
        stale = data.draw(some_of(tuple(others), 0, 1), label="stale") if others else []
        names = refused + stale
        self.cc.declined(cid, iter(names) if as_iterator else names, self.now)
        for ext in refused:
            agent = self.agents[ext]
            agent.offered = None
            agent.rest_until = self.now + self.conf[caller.queue].retry
            agent.idle_since = self.now
        caller.offer = tuple(e for e in caller.offer if e not in refused)
        self.maybe_plan(data)

    @precondition(lambda self: self.agents)
    @rule(data=st.data())
    def stale_event(self, data: st.DataObject) -> None:
        """A late rejection for a caller already answered or gone, or the end of a call
        that was no queue call: nothing changes."""
        ext = data.draw(choice(tuple(sorted(self.agents))), label="agent")
        gone = sorted(c for c, s in self.status.items() if s != "waiting")
        if len(gone) > 0 and data.draw(BOOLEANS, label="late rejection"):
            self.cc.declined(data.draw(choice(tuple(gone)), label="caller"), [ext], self.now)
        elif self.agents[ext].talking is None:
            self.cc.hung_up(ext, self.now, 10.0)

    @precondition(lambda self: self.talking())
    @rule(data=st.data())
    def hang_up(self, data: st.DataObject) -> None:
        ext = data.draw(choice(tuple(self.talking())), label="agent")
        agent = self.agents[ext]
        assert agent.talking is not None
        wrap_up = self.conf[self.callers[agent.talking].queue].wrap_up
        self.cc.hung_up(ext, self.now, wrap_up)
        agent.talking = None
        agent.answered += 1
        agent.idle_since = self.now
        agent.wrap_until = self.now + wrap_up
        self.maybe_plan(data)

    # -- time -----------------------------------------------------------------------------

    @rule(data=st.data(), dt=st.sampled_from([0.5, 1.0, 2.0, 5.0, 10.0]))
    def advance(self, data: st.DataObject, dt: float) -> None:
        self.now += dt
        self.maybe_plan(data)

    @rule(data=st.data())
    def until_next_change(self, data: st.DataObject) -> None:
        when = self.cc.next_change(self.now)
        if when is not None:
            self.now = when
        self.maybe_plan(data)

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def callers_are_never_lost(self) -> None:
        assert set(self.cc.callers) == set(self.waiting())
        for qext, queue in self.cc.queues.items():
            ids = [c.id for c in queue.callers]
            assert ids == self.order[qext], f"{qext} holds {ids}, expected {self.order[qext]}"
            for c in queue.callers:
                assert self.cc.callers[c.id] is c and c.queue == qext
                model = self.callers[c.id]
                assert (c.priority, c.arrived) == (model.priority, model.arrived)
            keys = [(-c.priority, c.arrived) for c in queue.callers]
            assert keys == sorted(keys), f"{qext} out of order: {ids}"
        talking_to: dict[str, list[str]] = {}
        for ext, agent in self.cc.agents.items():
            if agent.talking is not None:
                talking_to.setdefault(agent.talking, []).append(ext)
        for cid, status in self.status.items():
            model_talkers = [e for e, a in self.agents.items() if a.talking == cid]
            assert talking_to.get(cid, []) == model_talkers
            if status == "waiting":
                assert not model_talkers
            elif status == "left":
                assert cid not in self.cc.callers and not model_talkers
            else:  # answered: by exactly one agent (until it hangs up)
                assert cid not in self.cc.callers and len(model_talkers) <= 1

    @invariant()
    def agents_take_one_call_at_a_time(self) -> None:
        assert set(self.cc.agents) == set(self.agents)
        ringing: dict[str, str] = {}
        for caller in self.cc.callers.values():
            assert caller.offered_to == self.callers[caller.id].offer
            for ext in caller.offered_to:
                assert ext not in ringing, f"{ext} rings for {ringing[ext]} and {caller.id}"
                ringing[ext] = caller.id
                assert self.cc.agents[ext].offered == caller.id
        for ext, agent in self.cc.agents.items():
            model = self.agents[ext]
            assert agent.offered == ringing.get(ext), f"{ext} offered {agent.offered}"
            assert agent.offered == model.offered
            assert agent.talking == model.talking
            if agent.talking is not None:
                assert agent.offered is None and ext not in ringing
            assert (agent.logged_in, agent.paused) == (model.logged_in, model.paused)
            assert (agent.wrap_until, agent.rest_until) == (model.wrap_until, model.rest_until)
            assert (agent.idle_since, agent.answered) == (model.idle_since, model.answered)
            if not model.logged_in:
                assert agent.state == "logged_out"
            elif model.talking is not None:
                assert agent.state == "talking"
            elif model.offered is not None:
                assert agent.state == "ringing"
            else:
                assert agent.state == ("paused" if model.paused else "available")

    @invariant()
    def figures_add_up(self) -> None:
        for qext, model in self.stats.items():
            stats = self.cc.queues[qext].stats
            assert (stats.answered, stats.abandoned, stats.timeout, stats.message) == (
                model.answered,
                model.abandoned,
                model.timeout,
                model.message,
            )
            assert stats.overflow == model.overflow
            assert stats.within_service_level == model.within_service_level
            assert stats.waited_total == pytest.approx(sum(model.waits))
            assert stats.longest_wait == max(model.waits, default=0.0)
            for position, cid in enumerate(self.order[qext], 1):
                assert self.cc.queues[qext].position(cid) == position
                estimate = self.cc.estimated_wait(cid)
                if not model.waits:
                    assert estimate is None
                else:  # an average of the waits, by the position
                    assert estimate is not None
                    average = estimate / position
                    assert min(model.waits) - 1e-9 <= average <= max(model.waits) + 1e-9

    @invariant()
    def next_change_misses_nothing(self) -> None:
        when = self.cc.next_change(self.now)
        if not self.waiting():
            assert when is None
            return
        ends = [
            t
            for a in self.agents.values()
            if a.logged_in and not a.paused
            for t in (a.wrap_until, a.rest_until)
            if t > self.now
        ]
        if ends:
            assert when is not None and when <= min(ends), f"{when}: sleeps past {min(ends)}"
        if when is not None:
            assert when > self.now
            assert any(when in (a.wrap_until, a.rest_until) for a in self.agents.values())


def test_random_queue_life() -> None:
    run_state_machine_as_test(
        QueueMachine,
        settings=settings(
            max_examples=300,
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# -- examples --------------------------------------------------------------------------


def center(*queues: Queue) -> CallCenter:
    cc = CallCenter()
    for queue in queues:
        cc.set_queue(queue)
    return cc


def members(*names: str) -> list[Member]:
    return [Member(n) for n in names]


def take(cc: CallCenter, caller: str, now: float) -> str:
    """Plan now: the caller is offered one agent, who answers; that agent."""
    offers = [o for o in cc.plan(now) if o.caller == caller]
    assert len(offers) == 1 and len(offers[0].agents) == 1, offers
    agent = offers[0].agents[0]
    cc.answered(caller, agent, now)
    return agent


def test_fixed_order_starts_from_the_top_every_time() -> None:
    cc = center(Queue("q", members("a", "b", "c"), "fixed_order"))
    cc.join("q", "c0", 0.0)
    assert take(cc, "c0", 0.0) == "a"
    cc.join("q", "c1", 1.0)
    assert take(cc, "c1", 1.0) == "b"  # a talks
    cc.hung_up("a", 2.0, 0.0)
    cc.join("q", "c2", 3.0)
    assert take(cc, "c2", 3.0) == "a"  # not c: the list again from its first


def test_rotating_continues_after_the_last_offered() -> None:
    cc = center(Queue("q", members("a", "b", "c"), "rotating"))
    for i, expected in enumerate(["a", "b", "c", "a"]):
        cc.join("q", f"c{i}", float(i))
        assert take(cc, f"c{i}", float(i)) == expected
        if i < 3:
            cc.hung_up(expected, float(i), 0.0)
    # a talks: the round goes on with b, then skips paused c and talking a
    cc.pause("c", True)
    cc.join("q", "c4", 5.0)
    cc.join("q", "c5", 5.0)
    assert cc.plan(5.0) == [Offer("q", "c4", ("b",))]
    assert cc.queues["q"].last_offered == "b"


def test_rotating_moves_past_an_agent_that_declined() -> None:
    cc = center(Queue("q", members("a", "b", "c"), "rotating", retry=0.0))
    cc.join("q", "c0", 0.0)
    assert cc.plan(0.0) == [Offer("q", "c0", ("a",))]
    cc.declined("c0", ["a"], 1.0)
    assert cc.plan(1.0) == [Offer("q", "c0", ("b",))]  # a is free again (retry 0)
    cc.declined("c0", ["b"], 2.0)
    assert cc.plan(2.0) == [Offer("q", "c0", ("c",))]
    cc.declined("c0", ["c"], 3.0)
    assert cc.plan(3.0) == [Offer("q", "c0", ("a",))]


def test_longest_idle_picks_the_one_idle_the_longest() -> None:
    cc = center(Queue("q", members("a", "b", "c"), "longest_idle", retry=0.0))
    for ext in ("a", "b", "c"):
        cc.log_out(ext)
    cc.log_in("b", 1.0)
    cc.log_in("c", 2.0)
    cc.log_in("a", 3.0)
    cc.join("q", "c0", 4.0)
    assert take(cc, "c0", 4.0) == "b"  # idle since 1
    cc.hung_up("b", 5.0, 0.0)  # idle since 5
    cc.join("q", "c1", 5.0)
    assert cc.plan(5.0) == [Offer("q", "c1", ("c",))]  # idle since 2
    cc.declined("c1", ["c"], 6.0)  # a refusal: to the back of the line
    assert cc.plan(6.0) == [Offer("q", "c1", ("a",))]  # idle since 3
    cc.declined("c1", ["a"], 7.0)
    assert cc.plan(7.0) == [Offer("q", "c1", ("b",))]  # 5, before c's 6 and a's 7


def test_fewest_calls_picks_the_one_that_answered_fewest() -> None:
    cc = center(Queue("q", members("a", "b", "c"), "fewest_calls"))
    for n, ext in enumerate(["a", "a", "c", "b", "b"]):
        for other in ("a", "b", "c"):
            cc.pause(other, other != ext)
        cc.join("q", f"x{n}", float(n))
        assert take(cc, f"x{n}", float(n)) == ext
        cc.hung_up(ext, float(n), 0.0)
    for ext in ("a", "b", "c"):
        cc.pause(ext, False)
    assert [cc.agents[e].answered for e in ("a", "b", "c")] == [2, 2, 1]
    cc.join("q", "c0", 10.0)
    assert take(cc, "c0", 10.0) == "c"
    cc.join("q", "c1", 11.0)
    assert take(cc, "c1", 11.0) in ("a", "b")  # c talks; a and b tie at 2


def test_simultaneous_rings_every_free_agent_of_the_lowest_tier() -> None:
    queue = Queue("q", [Member("a"), Member("b"), Member("c", 1)], "simultaneous")
    cc = center(queue)
    cc.join("q", "c0", 0.0)
    assert cc.plan(0.0) == [Offer("q", "c0", ("a", "b"))]
    assert cc.answered("c0", "b", 1.0) == ("a",)  # a stops ringing
    assert cc.agents["a"].offered is None and cc.agents["b"].talking == "c0"
    cc.join("q", "c1", 2.0)
    cc.join("q", "c2", 2.0)
    # a alone in tier 0 for c1, then c (tier 1) for c2: nobody free in tier 0 then
    assert cc.plan(2.0) == [Offer("q", "c1", ("a",)), Offer("q", "c2", ("c",))]


def test_a_higher_penalty_rings_only_when_no_lower_is_free() -> None:
    cc = center(Queue("q", [Member("a", 1), Member("b", 0)], "fixed_order"))
    cc.join("q", "c0", 0.0)
    assert take(cc, "c0", 0.0) == "b"  # listed second, but tier 0
    cc.join("q", "c1", 1.0)
    assert cc.plan(1.0, unavailable={"a"}) == []
    assert cc.plan(1.0) == [Offer("q", "c1", ("a",))]  # b talks


def test_wrap_up_is_honoured() -> None:
    cc = center(Queue("q", members("a"), "rotating", wrap_up=15.0))
    cc.join("q", "c0", 0.0)
    assert take(cc, "c0", 1.0) == "a"
    cc.hung_up("a", 10.0, 15.0)
    cc.join("q", "c1", 11.0)
    assert cc.plan(11.0) == []
    assert cc.next_change(11.0) == 25.0
    assert cc.plan(24.9) == []
    assert cc.plan(25.0) == [Offer("q", "c1", ("a",))]


def test_an_agent_that_declined_rests_then_is_offered_again() -> None:
    cc = center(Queue("q", members("a"), "rotating", retry=5.0))
    cc.join("q", "c0", 0.0)
    assert cc.plan(0.0) == [Offer("q", "c0", ("a",))]
    cc.declined("c0", ["a"], 3.0)
    assert cc.callers["c0"].offered_to == () and cc.agents["a"].offered is None
    assert cc.plan(3.0) == []
    assert cc.next_change(3.0) == 8.0
    assert cc.plan(7.5) == []
    assert cc.plan(8.0) == [Offer("q", "c0", ("a",))]


def test_a_decline_given_as_an_iterator() -> None:
    cc = center(Queue("q", members("a", "b"), "simultaneous"))
    cc.join("q", "c0", 0.0)
    assert cc.plan(0.0) == [Offer("q", "c0", ("a", "b"))]
    cc.declined("c0", iter(["a"]), 1.0)
    assert cc.callers["c0"].offered_to == ("b",)
    assert cc.agents["a"].offered is None and cc.agents["a"].rest_until == 6.0


def test_next_change() -> None:
    cc = center(Queue("q", members("a", "b"), "rotating", retry=5.0))
    cc.agents["a"].rest_until = 20.0
    cc.agents["b"].wrap_until = 12.0
    assert cc.next_change(10.0) is None  # nobody waits
    cc.join("q", "c0", 10.0)
    assert cc.next_change(10.0) == 12.0
    assert cc.next_change(12.0) == 20.0
    assert cc.next_change(20.0) is None
    cc.log_out("a")
    assert cc.next_change(15.0) is None  # a logged out: its rest changes nothing


def test_estimated_wait() -> None:
    cc = center(Queue("q", members("a"), "rotating"))
    cc.join("q", "c0", 0.0)
    cc.join("q", "c1", 0.0)
    cc.join("q", "c2", 0.0)
    assert cc.estimated_wait("c0") is None  # nobody answered yet
    assert cc.estimated_wait("nobody") is None
    assert take(cc, "c0", 10.0) == "a"
    assert cc.estimated_wait("c1") == 10.0  # first in line, 10 s average
    assert cc.estimated_wait("c2") == 20.0
    cc.hung_up("a", 20.0, 0.0)
    assert take(cc, "c1", 20.0) == "a"  # waited 20: the recent weigh most
    assert cc.queues["q"].stats.average_wait_ewma == pytest.approx(12.5)
    assert cc.estimated_wait("c2") == pytest.approx(12.5)


def test_join_refuses_a_full_queue() -> None:
    cc = center(Queue("q", members("a"), max_callers=2))
    assert cc.join("q", "c0", 0.0) == 1
    assert cc.join("q", "c1", 0.0) == 2
    assert cc.join("q", "c2", 0.0) is None
    assert "c2" not in cc.callers and cc.queues["q"].stats.overflow == 1
    cc.leave("c0", 1.0, "abandoned")
    assert cc.join("q", "c2", 1.0) == 2
    with pytest.raises(QueueError):
        cc.join("q", "c1", 2.0)  # already queued


def test_join_refuses_when_nobody_is_logged_in_unless_join_empty() -> None:
    cc = center(
        Queue("strict", members("a", "b"), join_empty=False),
        Queue("lenient", members("a"), join_empty=True),
    )
    cc.log_out("a")
    cc.log_out("b")
    assert cc.join("strict", "c0", 0.0) is None
    assert cc.join("lenient", "c1", 0.0) == 1
    assert cc.queues["strict"].stats.overflow == 1
    assert cc.queues["lenient"].stats.overflow == 0
    cc.log_in("b", 1.0)
    cc.pause("b", True)  # paused, yet logged in: a caller waits for it
    assert cc.join("strict", "c0", 1.0) == 1


def test_stats() -> None:
    cc = center(Queue("q", members("a"), service_level=30.0))
    cc.join("q", "c0", 0.0)
    for i in range(1, 5):
        cc.join("q", f"c{i}", 35.0)
    assert take(cc, "c0", 40.0) == "a"  # 40 s: beyond the service level
    cc.hung_up("a", 50.0, 0.0)
    assert take(cc, "c1", 65.0) == "a"  # 30 s: within
    cc.leave("c2", 70.0, "abandoned")
    cc.leave("c3", 80.0, "timeout")
    cc.leave("c4", 90.0, "message")
    stats = cc.queues["q"].stats
    assert (stats.answered, stats.abandoned, stats.timeout, stats.message) == (2, 1, 1, 1)
    assert stats.longest_wait == 40.0  # not the last one's
    assert stats.waited_total == 70.0
    assert stats.within_service_level == 1
    assert stats.overflow == 0
    assert cc.callers == {} and cc.queues["q"].callers == []


def test_a_later_caller_of_a_higher_priority_goes_first() -> None:
    cc = center(Queue("q", members("a"), "rotating"))
    cc.log_out("a")
    assert cc.join("q", "c0", 0.0) == 1
    assert cc.join("q", "c1", 1.0) == 2
    assert cc.join("q", "c2", 2.0, priority=1) == 1
    assert cc.join("q", "c3", 3.0, priority=1) == 2
    assert [c.id for c in cc.queues["q"].callers] == ["c2", "c3", "c0", "c1"]
    cc.log_in("a", 4.0)
    assert cc.plan(4.0) == [Offer("q", "c2", ("a",))]


def test_a_withdrawn_offer_leaves_the_caller_first_in_line() -> None:
    cc = center(Queue("q", members("a", "b"), "fixed_order"))
    cc.join("q", "c0", 0.0)
    cc.join("q", "c1", 1.0)
    assert cc.plan(1.0) == [Offer("q", "c0", ("a",)), Offer("q", "c1", ("b",))]
    assert cc.log_out("a") == "c0"  # c0 waits again, c1 behind it still rings b
    assert cc.callers["c0"].offered_to == ()
    cc.join("q", "c2", 2.0)
    cc.log_in("a", 3.0)
    assert cc.plan(3.0) == [Offer("q", "c0", ("a",))]  # not c2


def test_callers_of_all_queues_are_served_in_turn() -> None:
    # b serves q1 (behind a) and q2: it goes to the earliest caller, of either queue
    cc = center(
        Queue("q1", [Member("a"), Member("b", 1)], "fixed_order"),
        Queue("q2", members("b"), "fixed_order"),
    )
    cc.join("q2", "c0", 0.0)
    cc.join("q1", "c1", 1.0)
    cc.join("q1", "c2", 2.0)
    assert cc.plan(3.0, unavailable={"a", "b"}) == []
    assert cc.plan(3.0, unavailable={"a"}) == [Offer("q2", "c0", ("b",))]
    assert cc.plan(3.0) == [Offer("q1", "c1", ("a",))]
    cc.declined("c0", ["b"], 4.0)  # b rests 5 s
    assert cc.plan(9.0) == [Offer("q2", "c0", ("b",))]  # c0 arrived before c2


def test_a_queue_without_a_free_agent_does_not_hold_up_the_others() -> None:
    cc = center(Queue("q1", members("a")), Queue("q2", members("b")))
    cc.join("q1", "c0", 0.0)
    cc.join("q1", "c1", 1.0)
    cc.join("q2", "c2", 2.0)
    assert cc.plan(3.0, unavailable={"a"}) == [Offer("q2", "c2", ("b",))]


def test_log_out_and_pause_withdraw_offers_but_not_calls() -> None:
    cc = center(Queue("q", members("a", "b"), "fixed_order"))
    cc.join("q", "c0", 0.0)
    cc.join("q", "c1", 0.0)
    assert cc.plan(0.0) == [Offer("q", "c0", ("a",)), Offer("q", "c1", ("b",))]
    assert cc.log_out("a") == "c0"
    assert cc.pause("b", True) == "c1"
    assert cc.callers["c0"].offered_to == cc.callers["c1"].offered_to == ()
    assert cc.plan(1.0) == []
    cc.log_in("a", 2.0)
    assert take(cc, "c0", 2.0) == "a"
    assert cc.log_out("a") is None  # talking: the call goes on
    assert cc.agents["a"].talking == "c0" and cc.agents["a"].state == "logged_out"
    cc.hung_up("a", 3.0, 5.0)
    assert cc.agents["a"].talking is None and cc.agents["a"].answered == 1
    assert cc.agents["a"].wrap_until == 8.0
    cc.log_in("b", 9.0)  # b was paused, not logged out: still paused
    assert cc.agents["b"].paused
    cc.log_out("b")
    cc.log_in("b", 10.0)  # a new shift: available
    assert not cc.agents["b"].paused and cc.agents["b"].state == "available"
    assert cc.agents["b"].idle_since == 10.0


def test_new_settings_keep_the_callers_and_figures() -> None:
    cc = center(Queue("q", members("a", "b", "c"), "rotating", max_callers=5))
    cc.join("q", "c0", 0.0)
    assert take(cc, "c0", 1.0) == "a"
    cc.join("q", "c1", 2.0)
    cc.set_queue(Queue("q", members("a", "b", "c", "d"), "rotating", max_callers=1))
    assert [c.id for c in cc.queues["q"].callers] == ["c1"]
    assert cc.queues["q"].stats.answered == 1
    assert cc.agents["d"].state == "available"
    assert cc.member_of("d") == ["q"]
    assert cc.join("q", "c2", 3.0) is None  # the new limit
    assert cc.plan(3.0) == [Offer("q", "c1", ("b",))]  # the round goes on


def test_stale_events_are_refused() -> None:
    cc = center(Queue("q", members("a", "b"), "fixed_order"))
    cc.join("q", "c0", 0.0)
    assert cc.plan(0.0) == [Offer("q", "c0", ("a",))]
    with pytest.raises(QueueError):
        cc.answered("c0", "b", 1.0)  # b was not offered c0
    with pytest.raises(QueueError):
        cc.answered("nobody", "a", 1.0)
    with pytest.raises(QueueError):
        cc.leave("nobody", 1.0, "abandoned")
    with pytest.raises(QueueError):
        cc.log_in("stranger", 1.0)
    assert cc.leave("c0", 1.0, "abandoned") == ("a",)
    cc.declined("c0", ["a"], 2.0)  # the ring stopped after the caller left: nothing
    assert cc.agents["a"].rest_until == 0.0


def test_callers_of_a_removed_queue_do_not_stop_the_others() -> None:
    cc = center(Queue("q1", members("a")), Queue("q2", members("a")))
    cc.join("q1", "c0", 0.0)
    cc.join("q2", "c1", 1.0)
    assert cc.remove_queue("q1") == ["c0"]
    assert cc.estimated_wait("c0") is None
    assert cc.plan(2.0) == [Offer("q2", "c1", ("a",))]
    assert cc.leave("c0", 3.0, "overflow") == ()
    assert set(cc.callers) == {"c1"}
