"""RFC 3261 §17 timers and transitions, driven by a fake clock (no sockets)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import sip
from sip.transaction import (
    ClientTransaction,
    Deliver,
    Send,
    ServerTransaction,
    State,
    Terminated,
    Timeout,
    Timers,
    TransactionLayer,
)

UDP = ("udp", "192.0.2.2", 5060)
TCP = ("tcp", "192.0.2.2", 5060)


def request(method: str = "INVITE", branch: str = "z9hG4bKabc") -> sip.Request:
    return sip.Request(
        method,
        "sip:bob@192.0.2.2",
        sip.Headers(
            [
                ("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={branch}"),
                ("From", "<sip:alice@192.0.2.1>;tag=a1"),
                ("To", "<sip:bob@192.0.2.2>"),
                ("Call-ID", "c1@192.0.2.1"),
                ("CSeq", f"1 {method}"),
                ("Contact", "<sip:alice@192.0.2.1>"),
                ("Max-Forwards", "70"),
            ]
        ),
    )


def response(req: sip.Request, status: int) -> sip.Response:
    return sip.make_response(req, status, to_tag="b1")


def run_timers(
    tx: ClientTransaction | ServerTransaction, until: float
) -> list[tuple[float, object]]:
    """Fire every timer up to ``until``; returns (time, action) pairs."""
    out: list[tuple[float, object]] = []
    while tx.deadline is not None and tx.deadline <= until:
        now = tx.deadline
        out += [(now, a) for a in tx.on_timer(now)]
    return out


def sends(events: list[tuple[float, object]]) -> list[float]:
    return [t for t, a in events if isinstance(a, Send)]


def test_invite_client_timer_a_doubles_and_b_times_out() -> None:
    tx, actions = ClientTransaction.create(request(), UDP, 0.0)
    assert isinstance(actions[0], Send) and tx.state is State.CALLING
    events = run_timers(tx, 100.0)
    assert sends(events) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert [type(a) for t, a in events if t == 32.0] == [Timeout, Terminated]
    assert tx.state is State.TERMINATED


def test_invite_client_reliable_never_retransmits() -> None:
    tx, _ = ClientTransaction.create(request(), TCP, 0.0)
    events = run_timers(tx, 100.0)
    assert sends(events) == [] and isinstance(events[0][1], Timeout)


def test_invite_client_error_response_acked_and_absorbed() -> None:
    req = request()
    tx, _ = ClientTransaction.create(req, UDP, 0.0)
    assert [type(a) for a in tx.receive(response(req, 180), 0.1)] == [Deliver]
    assert tx.state is State.PROCEEDING
    assert run_timers(tx, 10.0) == []  # no retransmission, no timer B in Proceeding
    actions = tx.receive(response(req, 486), 1.0)
    ack = actions[0]
    assert isinstance(ack, Send) and isinstance(ack.message, sip.Request)
    assert ack.message.method == "ACK" and ack.message.cseq == sip.CSeq(1, "ACK")
    assert ack.message.to.tag == "b1" and ack.message.via[0].branch == "z9hG4bKabc"
    assert isinstance(actions[1], Deliver)
    again = tx.receive(response(req, 486), 2.0)  # retransmitted final: ACK again, not passed up
    assert [type(a) for a in again] == [Send]
    events = run_timers(tx, 100.0)
    assert [(t, type(a)) for t, a in events] == [(33.0, Terminated)]


def test_invite_client_2xx_accepted_state() -> None:
    req = request()
    tx, _ = ClientTransaction.create(req, UDP, 0.0)
    assert [type(a) for a in tx.receive(response(req, 200), 0.2)] == [Deliver]
    assert tx.state is State.ACCEPTED
    assert [type(a) for a in tx.receive(response(req, 200), 0.7)] == [Deliver]  # retransmission
    assert tx.receive(response(req, 180), 0.8) == []
    assert [(t, type(a)) for t, a in run_timers(tx, 100.0)] == [(32.2, Terminated)]


def test_non_invite_client_timer_e_caps_at_t2() -> None:
    tx, _ = ClientTransaction.create(request("OPTIONS"), UDP, 0.0)
    events = run_timers(tx, 100.0)
    assert sends(events) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [type(a) for t, a in events if t == 32.0] == [Timeout, Terminated]


def test_non_invite_client_proceeding_retransmits_every_t2() -> None:
    req = request("BYE")
    tx, _ = ClientTransaction.create(req, UDP, 0.0)
    tx.receive(response(req, 100), 0.1)
    assert tx.state is State.PROCEEDING
    events = run_timers(tx, 9.0)
    assert sends(events) == [0.5, 4.5, 8.5]
    tx.receive(response(req, 200), 9.0)
    assert tx.state is State.COMPLETED
    assert [(t, type(a)) for t, a in run_timers(tx, 100.0)] == [(14.0, Terminated)]  # K = T4


def test_custom_t1() -> None:
    tx, _ = ClientTransaction.create(request("OPTIONS"), UDP, 0.0, Timers(t1=0.1, t2=0.4))
    events = run_timers(tx, 100.0)
    assert sends(events)[:4] == [0.1, 0.30000000000000004, 0.7000000000000001, 1.1]
    assert events[-1][0] == 6.4


def test_invite_server_retransmits_error_until_ack() -> None:
    req = request()
    tx, actions = ServerTransaction.create(req, UDP, 0.0)
    assert [type(a) for a in actions] == [Deliver]  # 100 Trying waits for the TU (200 ms)
    resent = [a.message for a in tx.receive(req, 0.1) if isinstance(a, Send)]
    assert [m.status for m in resent if isinstance(m, sip.Response)] == [100]  # at once now
    resent = [a.message for a in tx.receive(req, 0.15) if isinstance(a, Send)]
    assert [m.status for m in resent if isinstance(m, sip.Response)] == [100]
    tx.respond(response(req, 486), 1.0)
    assert tx.state is State.COMPLETED
    events = run_timers(tx, 9.0)
    assert sends(events) == [1.5, 2.5, 4.5, 8.5]
    assert tx.receive(request("ACK"), 9.0) == []
    assert tx.state is State.CONFIRMED
    assert [(t, type(a)) for t, a in run_timers(tx, 100.0)] == [(14.0, Terminated)]


def test_invite_server_sends_100_only_when_the_tu_is_slow() -> None:
    req = request()
    tx, _ = ServerTransaction.create(req, UDP, 0.0)
    events = run_timers(tx, 0.5)
    assert [(t, a.message.status) for t, a in events if isinstance(a, Send)] == [(0.2, 100)]  # type: ignore[union-attr]
    fast, _ = ServerTransaction.create(req, UDP, 0.0)
    sent = fast.respond(response(req, 407), 0.01)
    assert [a.message.status for a in sent if isinstance(a, Send)] == [407]  # type: ignore[union-attr]
    events = run_timers(fast, 0.3)
    assert sends(events) == []  # the challenge, and no 100 Trying after it
    _, actions = ServerTransaction.create(req, UDP, 0.0, Timers(trying=0.0))
    assert [type(a) for a in actions] == [Send, Deliver]


def test_layer_forgets_a_statelessly_answered_request() -> None:
    layer = TransactionLayer()
    req = request()
    actions = layer.receive_request(req, UDP, 0.0)
    tx = actions[0].transaction  # type: ignore[union-attr]
    assert isinstance(tx, ServerTransaction) and len(layer) == 1
    layer.forget(tx)
    assert len(layer) == 0 and tx.state is State.TERMINATED and tx.deadline is None
    assert layer.on_timer(1.0) == []  # its 100 Trying timer is gone with it
    assert layer.deadline is None
    again = layer.receive_request(req, UDP, 0.5)  # a retransmission is a new request
    assert [type(a) for a in again] == [Deliver] and len(layer) == 1


def test_invite_server_timer_h_without_ack() -> None:
    req = request()
    tx, _ = ServerTransaction.create(req, UDP, 0.0)
    tx.respond(response(req, 603), 0.0)
    events = run_timers(tx, 100.0)
    assert [type(a) for t, a in events if t == 32.0] == [Timeout, Terminated]


def test_invite_server_2xx_accepted_absorbs_retransmissions() -> None:
    req = request()
    tx, _ = ServerTransaction.create(req, UDP, 0.0)
    tx.respond(response(req, 200), 0.5)
    assert tx.state is State.ACCEPTED
    assert tx.receive(req, 1.0) == []
    acks = tx.receive(request("ACK"), 1.1)
    assert [type(a) for a in acks] == [Deliver]
    assert [(t, type(a)) for t, a in run_timers(tx, 100.0)] == [(32.5, Terminated)]


def test_non_invite_server() -> None:
    req = request("OPTIONS")
    tx, actions = ServerTransaction.create(req, UDP, 0.0)
    assert [type(a) for a in actions] == [Deliver]
    assert tx.receive(req, 0.1) == []  # Trying: absorbed
    tx.respond(response(req, 200), 0.2)
    assert [type(a) for a in tx.receive(req, 0.3)] == [Send]  # Completed: resend final
    assert [(t, type(a)) for t, a in run_timers(tx, 100.0)] == [(32.2, Terminated)]


def test_layer_matches_and_cleans_up() -> None:
    layer = TransactionLayer()
    req = request()
    layer.send_request(req, UDP, 0.0)
    assert len(layer) == 1
    stray = response(request(branch="z9hG4bKother"), 200)
    assert [type(a) for a in layer.receive_response(stray, 0.1)] == [Deliver]
    assert all(
        a.transaction is None for a in layer.receive_response(stray, 0.1) if isinstance(a, Deliver)
    )
    layer.receive_response(response(req, 486), 0.2)
    assert layer.deadline == 32.2
    layer.on_timer(32.2)
    assert len(layer) == 0 and layer.deadline is None

    inv = request(branch="z9hG4bKsrv")
    first = layer.receive_request(inv, UDP, 0.0)
    assert any(isinstance(a, Deliver) for a in first)
    again = layer.receive_request(inv, UDP, 0.1)
    assert not any(isinstance(a, Deliver) for a in again)
    cancel = request("CANCEL", branch="z9hG4bKsrv")
    assert layer.find_invite(cancel) is not None
    layer.receive_request(cancel, UDP, 0.2)
    assert len(layer) == 2


def test_layer_bounds_transactions() -> None:
    layer = TransactionLayer(max_transactions=2)
    for i in range(2):
        layer.receive_request(request("OPTIONS", branch=f"z9hG4bK{i}"), UDP, 0.0)
    refused = layer.receive_request(request("OPTIONS", branch="z9hG4bKx"), UDP, 0.0)
    assert isinstance(refused[0], Send) and refused[0].message.status == 503  # type: ignore[union-attr]


# -- random event orders and clocks ---------------------------------------------------

statuses = st.sampled_from([100, 180, 183, 200, 202, 302, 404, 486, 503, 603])
client_events = st.lists(
    st.one_of(statuses.map(lambda s: ("resp", s)), st.floats(0.0, 40.0).map(lambda d: ("wait", d))),
    max_size=25,
)


@given(st.sampled_from(["INVITE", "OPTIONS"]), st.sampled_from([UDP, TCP]), client_events)
@settings(max_examples=300)
def test_client_transaction_invariants(
    method: str, peer: tuple[str, str, int], events: list[tuple[str, float]]
) -> None:
    req = request(method)
    tx, _ = ClientTransaction.create(req, peer, 0.0)
    now = 0.0
    timeouts = finals_delivered = 0
    for kind, value in events:
        if kind == "resp":
            actions = tx.receive(response(req, int(value)), now)
        else:
            now += value
            actions = tx.on_timer(now)
        if tx.state is State.TERMINATED:
            assert tx.deadline is None
        for a in actions:
            if isinstance(a, Timeout):
                timeouts += 1
            if (
                isinstance(a, Deliver)
                and isinstance(a.message, sip.Response)
                and (a.message.status >= 300 or (method != "INVITE" and a.message.status >= 200))
            ):
                finals_delivered += 1
            if isinstance(a, Send) and peer[0] == "tcp":
                assert isinstance(a.message, sip.Request)
                # reliable: the request is never retransmitted; only ACKs go out
                assert a.message.method == "ACK"
        if kind == "wait":
            assert tx.deadline is None or tx.deadline > now
    assert timeouts <= 1 and finals_delivered <= 1
    assert not (timeouts and finals_delivered)


@given(
    st.sampled_from(["INVITE", "BYE"]),
    st.lists(
        st.one_of(
            statuses.map(lambda s: ("respond", s)),
            st.just(("retransmit", 0)),
            st.just(("ack", 0)),
            st.floats(0.0, 40.0).map(lambda d: ("wait", d)),
        ),
        max_size=25,
    ),
)
@settings(max_examples=300)
def test_server_transaction_invariants(method: str, events: list[tuple[str, float]]) -> None:
    req = request(method)
    tx, _ = ServerTransaction.create(req, UDP, 0.0)
    now = 0.0
    final_sent: int | None = None
    for kind, value in events:
        if kind == "respond":
            actions = tx.respond(response(req, int(value)), now)
        elif kind == "retransmit":
            actions = tx.receive(req, now)
        elif kind == "ack":
            actions = tx.receive(request("ACK"), now) if method == "INVITE" else []
        else:
            now += value
            actions = tx.on_timer(now)
        for a in actions:
            if isinstance(a, Send):
                assert isinstance(a.message, sip.Response)
                if a.message.status >= 200:
                    # once a final response went out, only that same final goes out again
                    # (or a 2xx retransmitted by the UA core)
                    if final_sent is not None and final_sent < 300:
                        assert 200 <= a.message.status < 300
                    elif final_sent is not None:
                        assert a.message.status == final_sent
                    final_sent = final_sent or a.message.status
            if isinstance(a, Deliver):
                assert isinstance(a.message, sip.Request) and a.message.method == "ACK"
        if tx.state is State.TERMINATED:
            assert tx.deadline is None and tx.on_timer(now + 100) == []
