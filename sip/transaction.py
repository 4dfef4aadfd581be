"""RFC 3261 §17 transactions as pure state machines (with the RFC 6026 Accepted states).

Nothing here reads a clock or touches a socket: every input carries ``now``, every output
is an action (send these bytes there, pass this up, report a timeout) and each
transaction says when it next needs a timer call through ``deadline``.

Transitions are tables keyed by (state, event); a pair that is not in the table is
absorbed, which is what the RFC asks of a transaction for unexpected input (a stray
response, a late retransmission).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from . import entropy
from .headers import Headers
from .message import Request, Response

BRANCH_COOKIE = "z9hG4bK"

# (transport, host, port). Transport is "udp", "tcp" or "tls".
Address = tuple[str, str, int]


def new_branch() -> str:
    return BRANCH_COOKIE + entropy.token_hex(8)


def is_reliable(address: Address) -> bool:
    return address[0] != "udp"


@dataclass(frozen=True, slots=True)
class Timers:
    """RFC 3261 timer values (seconds); T1 is the RTT estimate, T2 the retransmit cap.

    ``trying`` is how long an INVITE server transaction waits for the TU before it sends
    100 Trying itself (§17.2.1 allows 200 ms): a request answered at once, such as a
    challenged INVITE, gets its final response and nothing else.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    trying: float = 0.2

    @property
    def b(self) -> float:  # also F, H, J, L, M
        return 64 * self.t1

    @property
    def d(self) -> float:
        return max(32.0, 64 * self.t1)


# -- actions (what the caller must do) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    message: Request | Response
    destination: Address


@dataclass(frozen=True, slots=True)
class Deliver:
    """Pass a response (client side) or a request (server side) to the transaction user.

    ``transaction`` is None for messages no transaction matched: an ACK for a 2xx, or a
    2xx retransmitted after its client transaction ended. The UA core handles those.
    """

    message: Request | Response
    transaction: Transaction | None


@dataclass(frozen=True, slots=True)
class Timeout:
    """Timer B/F (client) or H (server, no ACK for a final response) fired."""

    transaction: Transaction


@dataclass(frozen=True, slots=True)
class Terminated:
    transaction: Transaction


Action = Send | Deliver | Timeout | Terminated


class State(Enum):
    CALLING = "calling"  # client INVITE before any response
    TRYING = "trying"  # non-INVITE before any response
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"  # INVITE after a 2xx (RFC 6026)
    COMPLETED = "completed"
    CONFIRMED = "confirmed"  # server INVITE after ACK of a non-2xx
    TERMINATED = "terminated"


def _kind(status: int) -> str:
    if status < 200:
        return "1xx"
    if status < 300:
        return "2xx"
    return "final"


@dataclass(eq=False)
class Transaction:
    """Common part: timers by letter, the key, the state."""

    request: Request
    peer: Address
    timers: Timers
    state: State
    key: tuple[str, ...]
    _deadlines: dict[str, float] = field(default_factory=dict)

    @property
    def reliable(self) -> bool:
        return is_reliable(self.peer)

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def deadline(self) -> float | None:
        return min(self._deadlines.values()) if self._deadlines else None

    def on_timer(self, now: float) -> list[Action]:
        actions: list[Action] = []
        while self._deadlines and self.state is not State.TERMINATED:
            name, when = min(self._deadlines.items(), key=lambda kv: kv[1])
            if when > now:
                break
            del self._deadlines[name]
            actions += self._fire(name, now)
        return actions

    def _fire(self, name: str, now: float) -> list[Action]:
        raise NotImplementedError

    def _terminate(self) -> list[Action]:
        self.state = State.TERMINATED
        self._deadlines.clear()
        return [Terminated(self)]

    def _arm(self, name: str, now: float, delay: float) -> None:
        self._deadlines[name] = now + delay


# -- client side ----------------------------------------------------------------------


def client_key(branch: str, method: str) -> tuple[str, ...]:
    return ("client", branch, "INVITE" if method == "ACK" else method)


@dataclass(eq=False)
class ClientTransaction(Transaction):
    """Sends ``request`` to ``peer``; responses come in through :meth:`receive`."""

    last_response: Response | None = None
    _interval: float = 0.0
    _ack: Request | None = None

    @classmethod
    def create(
        cls, request: Request, peer: Address, now: float, timers: Timers | None = None
    ) -> tuple[ClientTransaction, list[Action]]:
        timers = timers or Timers()
        branch = request.via[0].branch or ""
        invite = request.method == "INVITE"
        tx = cls(
            request,
            peer,
            timers,
            State.CALLING if invite else State.TRYING,
            client_key(branch, request.method),
        )
        if not tx.reliable:
            tx._interval = timers.t1
            tx._arm("A" if invite else "E", now, timers.t1)
        tx._arm("B" if invite else "F", now, timers.b)
        return tx, [Send(request, peer)]

    def receive(self, response: Response, now: float) -> list[Action]:
        key = (self.request.method == "INVITE", self.state, _kind(response.status))
        handler = _CLIENT_TABLE.get(key)
        if handler is None:
            return []  # absorbed: e.g. a late retransmission after Completed
        return handler(self, response, now)

    def _fire(self, name: str, now: float) -> list[Action]:
        if name in ("A", "E"):
            if name == "A" and self.state is State.CALLING:
                self._interval *= 2
            elif name == "E":
                # Trying doubles up to T2; Proceeding retransmits every T2 (§17.1.2.2)
                self._interval = (
                    self.timers.t2
                    if self.state is State.PROCEEDING
                    else min(2 * self._interval, self.timers.t2)
                )
            else:
                return []
            self._arm(name, now, self._interval)
            return [Send(self.request, self.peer)]
        if name in ("B", "F"):
            return [Timeout(self), *self._terminate()]
        return self._terminate()  # D, K, M

    # INVITE client (§17.1.1, RFC 6026 §8.4)
    def _ict_provisional(self, response: Response, now: float) -> list[Action]:
        self.state = State.PROCEEDING
        self._deadlines.pop("A", None)
        self._deadlines.pop("B", None)
        self.last_response = response
        return [Deliver(response, self)]

    def _ict_2xx(self, response: Response, now: float) -> list[Action]:
        self.state = State.ACCEPTED
        self._deadlines.clear()
        self._arm("M", now, self.timers.b)
        self.last_response = response
        return [Deliver(response, self)]

    def _ict_accepted_2xx(self, response: Response, now: float) -> list[Action]:
        return [Deliver(response, self)]  # retransmitted or forked 2xx: the UA core ACKs

    def _ict_final(self, response: Response, now: float) -> list[Action]:
        self.state = State.COMPLETED
        self._deadlines.clear()
        self._arm("D", now, 0.0 if self.reliable else self.timers.d)
        self.last_response = response
        self._ack = make_ack_for_error(self.request, response)
        return [Send(self._ack, self.peer), Deliver(response, self)]

    def _ict_completed_final(self, response: Response, now: float) -> list[Action]:
        assert self._ack is not None
        return [Send(self._ack, self.peer)]

    # non-INVITE client (§17.1.2)
    def _nict_provisional(self, response: Response, now: float) -> list[Action]:
        self.state = State.PROCEEDING
        self.last_response = response
        return [Deliver(response, self)]

    def _nict_final(self, response: Response, now: float) -> list[Action]:
        self.state = State.COMPLETED
        self._deadlines.clear()
        self._arm("K", now, 0.0 if self.reliable else self.timers.t4)
        self.last_response = response
        return [Deliver(response, self)]


_ClientHandler = Callable[[ClientTransaction, Response, float], list[Action]]
# (is INVITE, state, response kind) -> handler. Pairs not listed are absorbed.
_CLIENT_TABLE: dict[tuple[bool, State, str], _ClientHandler] = {
    (True, State.CALLING, "1xx"): ClientTransaction._ict_provisional,
    (True, State.CALLING, "2xx"): ClientTransaction._ict_2xx,
    (True, State.CALLING, "final"): ClientTransaction._ict_final,
    (True, State.PROCEEDING, "1xx"): ClientTransaction._ict_provisional,
    (True, State.PROCEEDING, "2xx"): ClientTransaction._ict_2xx,
    (True, State.PROCEEDING, "final"): ClientTransaction._ict_final,
    (True, State.ACCEPTED, "2xx"): ClientTransaction._ict_accepted_2xx,
    (True, State.COMPLETED, "final"): ClientTransaction._ict_completed_final,
    (False, State.TRYING, "1xx"): ClientTransaction._nict_provisional,
    (False, State.TRYING, "2xx"): ClientTransaction._nict_final,
    (False, State.TRYING, "final"): ClientTransaction._nict_final,
    (False, State.PROCEEDING, "1xx"): ClientTransaction._nict_provisional,
    (False, State.PROCEEDING, "2xx"): ClientTransaction._nict_final,
    (False, State.PROCEEDING, "final"): ClientTransaction._nict_final,
}


def make_ack_for_error(invite: Request, response: Response) -> Request:
    """The ACK a client transaction sends for a non-2xx final response (§17.1.1.3)."""
    headers = Headers()
    headers.add("Via", invite.headers.get_lines("Via")[0].split(",")[0])
    for name in ("Route",):
        for value in invite.headers.get_lines(name):
            headers.add(name, value)
    headers.add("Max-Forwards", "70")
    headers.add("From", invite.headers.get("From"))
    headers.add("To", response.headers.get("To"))
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", f"{invite.cseq.seq} ACK")
    return Request("ACK", invite.uri.copy(), headers)


# -- server side ----------------------------------------------------------------------


def server_key(request: Request) -> tuple[str, ...]:
    """§17.2.3 matching key; ACK maps onto its INVITE. RFC 2543 requests (no magic cookie)
    are keyed by the fields that identify them instead of the branch."""
    via = request.via[0]
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    sent_by = f"{via.host.lower()}:{via.port or ''}"
    if branch.startswith(BRANCH_COOKIE):
        return ("server", branch, sent_by, method)
    to_tag = request.to.tag or "" if request.method != "ACK" else ""
    return (
        "server2543",
        str(request.uri),
        to_tag,
        request.from_.tag or "",
        request.call_id,
        str(request.cseq.seq),
        str(via),
        method,
    )


@dataclass(eq=False)
class ServerTransaction(Transaction):
    """Created for a new request from ``peer``; the TU answers through :meth:`respond`."""

    last_response: Response | None = None
    _interval: float = 0.0

    @classmethod
    def create(
        cls,
        request: Request,
        peer: Address,
        now: float,
        timers: Timers | None = None,
        *,
        auto_trying: bool = True,
    ) -> tuple[ServerTransaction, list[Action]]:
        """A new server transaction. For an INVITE, 100 Trying goes out after
        ``timers.trying`` unless the TU responded by then (§17.2.1)."""
        invite = request.method == "INVITE"
        tx = cls(
            request,
            peer,
            timers or Timers(),
            State.PROCEEDING if invite else State.TRYING,
            server_key(request),
        )
        actions: list[Action] = [Deliver(request, tx)]
        if invite and auto_trying:
            if tx.timers.trying > 0:
                tx._arm("100", now, tx.timers.trying)
            else:
                actions.insert(0, tx._trying())
        return tx, actions

    def _trying(self) -> Send:
        from .message import make_response

        self._deadlines.pop("100", None)
        self.last_response = make_response(self.request, 100)
        return Send(self.last_response, self.peer)

    def receive(self, request: Request, now: float) -> list[Action]:
        """A retransmission (or the ACK of a non-2xx) matched this transaction."""
        if "100" in self._deadlines and request.method == "INVITE":
            return [self._trying()]  # the client is waiting: do not make it wait more
        if request.method == "ACK":
            if self.state is State.COMPLETED:
                self.state = State.CONFIRMED
                self._deadlines.pop("G", None)
                self._deadlines.pop("H", None)
                self._arm("I", now, 0.0 if self.reliable else self.timers.t4)
                return []
            if self.state is State.ACCEPTED:
                return [Deliver(request, self)]  # RFC 6026: ACK for 2xx goes to the TU
            return []
        if self.state in (State.PROCEEDING, State.COMPLETED) and self.last_response:
            return [Send(self.last_response, self.peer)]
        return []  # Trying, Accepted, Confirmed: absorbed

    def respond(self, response: Response, now: float) -> list[Action]:
        if self.state not in (State.TRYING, State.PROCEEDING):
            if self.state is State.ACCEPTED and 200 <= response.status < 300:
                return [Send(response, self.peer)]  # 2xx retransmission by the UA core
            return []
        self.last_response = response
        self._deadlines.pop("100", None)
        actions: list[Action] = [Send(response, self.peer)]
        invite = self.request.method == "INVITE"
        if response.status < 200:
            self.state = State.PROCEEDING
        elif invite and response.status < 300:
            self.state = State.ACCEPTED
            self._arm("L", now, self.timers.b)
        elif invite:
            self.state = State.COMPLETED
            if not self.reliable:
                self._interval = self.timers.t1
                self._arm("G", now, self.timers.t1)
            self._arm("H", now, self.timers.b)
        else:
            self.state = State.COMPLETED
            self._arm("J", now, 0.0 if self.reliable else self.timers.b)
        return actions

    def _fire(self, name: str, now: float) -> list[Action]:
        if name == "100":
            return [self._trying()]
        if name == "G":
            self._interval = min(2 * self._interval, self.timers.t2)
            self._arm("G", now, self._interval)
            assert self.last_response is not None
            return [Send(self.last_response, self.peer)]
        if name == "H":
            return [Timeout(self), *self._terminate()]
        return self._terminate()  # I, J, L


class TransactionLayer:
    """All transactions of one user agent: matching, creation, timers.

    ``deadline`` is the earliest timer of any transaction; call :meth:`on_timer` then.
    """

    def __init__(self, timers: Timers | None = None, *, max_transactions: int = 100_000) -> None:
        self.timers = timers or Timers()
        self.max_transactions = max_transactions
        self._by_key: dict[tuple[str, ...], Transaction] = {}
        self._heap: list[tuple[float, int, Transaction]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._by_key)

    @property
    def deadline(self) -> float | None:
        while self._heap:
            when, _, tx = self._heap[0]
            if tx.deadline == when and tx.state is not State.TERMINATED:
                return when
            heapq.heappop(self._heap)  # stale entry
        return None

    def _track(self, tx: Transaction, actions: list[Action]) -> list[Action]:
        if any(isinstance(a, Terminated) for a in actions) or tx.state is State.TERMINATED:
            if self._by_key.get(tx.key) is tx:
                del self._by_key[tx.key]
        elif tx.deadline is not None:
            heapq.heappush(self._heap, (tx.deadline, next(self._seq), tx))
        return actions

    def send_request(
        self, request: Request, peer: Address, now: float
    ) -> tuple[ClientTransaction, list[Action]]:
        tx, actions = ClientTransaction.create(request, peer, now, self.timers)
        self._by_key[tx.key] = tx
        return tx, self._track(tx, actions)

    def receive_response(self, response: Response, now: float) -> list[Action]:
        via = response.via[0]
        tx = self._by_key.get(client_key(via.branch or "", response.cseq.method))
        if not isinstance(tx, ClientTransaction):
            return [Deliver(response, None)]
        return self._track(tx, tx.receive(response, now))

    def receive_request(self, request: Request, peer: Address, now: float) -> list[Action]:
        key = server_key(request)
        tx = self._by_key.get(key)
        if isinstance(tx, ServerTransaction):
            return self._track(tx, tx.receive(request, now))
        if request.method == "ACK":
            return [Deliver(request, None)]  # ACK for a 2xx: end-to-end, no transaction
        if len(self._by_key) >= self.max_transactions:
            from .message import make_response

            busy = make_response(request, 503, "Too Many Transactions")
            return [Send(busy, peer)]
        new, actions = ServerTransaction.create(request, peer, now, self.timers)
        self._by_key[key] = new
        return self._track(new, actions)

    def matches(self, request: Request) -> bool:
        """Is ``request`` a retransmission of one a server transaction holds?"""
        return isinstance(self._by_key.get(server_key(request)), ServerTransaction)

    def respond(self, tx: ServerTransaction, response: Response, now: float) -> list[Action]:
        return self._track(tx, tx.respond(response, now))

    def forget(self, tx: Transaction) -> None:
        """Drop ``tx`` at once, without its timers (a request answered statelessly)."""
        tx._terminate()
        if self._by_key.get(tx.key) is tx:
            del self._by_key[tx.key]

    def find_invite(self, cancel: Request) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL refers to (§9.2)."""
        key = server_key(cancel)
        tx = self._by_key.get((*key[:-1], "INVITE"))
        return tx if isinstance(tx, ServerTransaction) else None

    def on_timer(self, now: float) -> list[Action]:
        actions: list[Action] = []
        while self._heap and self._heap[0][0] <= now:
            when, _, tx = heapq.heappop(self._heap)
            if tx.deadline != when or tx.state is State.TERMINATED:
                continue
            actions += self._track(tx, tx.on_timer(now))
        return actions
