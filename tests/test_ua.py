"""The asyncio user agent over real loopback sockets, UA against UA."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import sip
from sip import CallState, Timers, UserAgent
from softswitch.authguard import AuthGuard
from softswitch.registrar import Registrar

from .netutil import LossyRelay

FAST = Timers(t1=0.05, t2=0.4, t4=0.5)


def offer(port: int = 40000) -> bytes:
    return bytes(sip.make_offer("127.0.0.1", port))


@pytest.fixture
async def pair() -> AsyncIterator[tuple[UserAgent, UserAgent]]:
    async with (
        UserAgent(["udp:127.0.0.1:0", "tcp:127.0.0.1:0"], user="alice", timers=FAST) as a,
        UserAgent(["udp:127.0.0.1:0", "tcp:127.0.0.1:0"], user="bob", timers=FAST) as b,
    ):
        yield a, b


def uri(ua: UserAgent, transport: str = "udp", user: str = "bob") -> str:
    port = next(lst.port for lst in ua.listeners if lst.transport == transport)
    userinfo = f"{user}@" if user else ""
    return f"sip:{userinfo}127.0.0.1:{port};transport={transport}"


def answer_all(ua: UserAgent, *, ring: bool = True) -> list[sip.IncomingCall]:
    calls: list[sip.IncomingCall] = []

    def on_invite(call: sip.IncomingCall) -> None:
        calls.append(call)
        answer, _ = sip.answer(sip.parse_sdp(call.remote_sdp or b""), "127.0.0.1", 50000)
        if ring:
            call.ring()
        call.answer(bytes(answer))

    ua.on_invite = on_invite
    return calls


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_call_and_bye(pair: tuple[UserAgent, UserAgent], transport: str) -> None:
    a, b = pair
    calls = answer_all(b)
    progress: list[int] = []
    call = await a.invite(uri(b, transport), offer(), wait=False)
    call.on_progress.add(lambda r: progress.append(r.status))
    response = await call.wait_answer(5)
    assert response.status == 200 and 180 in progress
    assert call.state is CallState.ESTABLISHED
    stream = sip.process_answer(sip.parse_sdp(offer()), sip.parse_sdp(call.remote_sdp or b""))
    assert stream.remote_port == 50000
    await asyncio.sleep(0.05)
    assert calls[0].state is CallState.ESTABLISHED and calls[0]._awaiting_ack is None  # ACKed
    await call.bye()
    await calls[0].wait_ended(2)
    assert calls[0].end_reason == "remote BYE"
    assert not a.calls and not b.calls


async def test_reject_and_cancel(pair: tuple[UserAgent, UserAgent]) -> None:
    a, b = pair
    seen: list[sip.IncomingCall] = []

    def on_invite(call: sip.IncomingCall) -> None:
        seen.append(call)
        if call.invite.uri.user == "busy":
            call.reject(486)
        else:
            call.ring()  # and never answer

    b.on_invite = on_invite
    with pytest.raises(sip.RequestFailed) as info:
        await a.invite(uri(b, user="busy"), offer())
    assert info.value.status == 486
    call = await a.invite(uri(b, user="ring"), offer(), wait=False)
    while call.state is not CallState.EARLY:
        await asyncio.sleep(0.01)
    await call.cancel()
    await call.wait_ended(2)
    assert call.end_reason == "cancelled"
    await seen[1].cancelled.wait()
    assert seen[1].state is CallState.ENDED


async def test_reinvite_hold_info_and_refer(pair: tuple[UserAgent, UserAgent]) -> None:
    a, b = pair
    calls = answer_all(b)
    holds: list[str] = []

    async def on_reinvite(call: sip.Call, request: sip.Request) -> bytes | None:
        o = sip.parse_sdp(request.body)
        ans, stream = sip.answer(o, "127.0.0.1", 50000)
        assert stream is not None
        holds.append(stream.direction)
        return bytes(ans)

    call = await a.invite(uri(b), offer())
    await asyncio.sleep(0.02)
    callee = calls[0]
    callee.on_reinvite = on_reinvite
    hold = sip.make_offer("127.0.0.1", 40000, direction="sendonly")
    response = await call.reinvite(bytes(hold))
    assert response.status == 200
    assert sip.parse_sdp(call.remote_sdp or b"").media[0].direction == "recvonly"
    await call.reinvite(offer())
    assert holds == ["recvonly", "sendrecv"]

    assert (await call.send_dtmf("5")).status == 200
    assert (await call.send_dtmf("#")).status == 200
    assert [await callee.dtmf.get(), await callee.dtmf.get()] == ["5", "#"]

    refers: list[str] = []

    def on_refer(c: sip.Call, incoming: sip.IncomingRequest) -> None:
        refers.append(incoming.request.headers.get("Refer-To") or "")
        incoming.respond(202)

    call.on_refer = on_refer
    assert (await callee.refer("sip:carol@127.0.0.1")).status == 202
    assert refers == ["<sip:carol@127.0.0.1>"]
    # the callee refuses REFER by default
    assert (await call.refer("sip:dave@127.0.0.1")).status == 603
    await callee.bye()
    await call.wait_ended(2)


async def test_register_with_digest(pair: tuple[UserAgent, UserAgent]) -> None:
    client, server = pair
    guard = AuthGuard("pbx.test", {"100": "secret"}.get, algorithms=("SHA-256", "MD5"))
    registrar = Registrar()

    def on_register(incoming: sip.IncomingRequest) -> None:
        verdict = guard.check(incoming.request, incoming.source[1], server.now())
        if verdict.user is None:
            incoming.respond(verdict.status, verdict.reason, headers=list(verdict.headers))
            return
        result = registrar.process(
            incoming.request, "sip:100@pbx.test", incoming.source, server.now()
        )
        incoming.respond(result.status, result.reason, headers=result.headers)

    server.handlers["REGISTER"] = on_register
    reg = await client.register(
        uri(server, user=""), aor="sip:100@pbx.test", username="100", password="secret", expires=120
    )
    assert reg.granted == 120
    [binding] = registrar.lookup("sip:100@pbx.test", server.now())
    assert binding.contact.port == client.listeners[0].port
    with pytest.raises(sip.RegistrationFailed) as info:
        await client.register(
            uri(server, user=""), aor="sip:100@pbx.test", username="100", password="wrong"
        )
    assert info.value.status == 403
    await reg.close()
    assert registrar.lookup("sip:100@pbx.test", server.now()) == []


async def test_subscribe_notify(pair: tuple[UserAgent, UserAgent]) -> None:
    a, b = pair
    servers: list[sip.ServerSubscription] = []

    async def on_subscribe(incoming: sip.IncomingRequest) -> None:
        sub = sip.ServerSubscription.accept(incoming, expires=60)
        servers.append(sub)
        await sub.notify(b"Messages-Waiting: no\r\n", "application/simple-message-summary")

    b.handlers["SUBSCRIBE"] = on_subscribe
    sub = await a.subscribe(uri(b, user="100"), "message-summary", expires=60)
    first = await asyncio.wait_for(sub.notifications.get(), 2)
    assert first.body == b"Messages-Waiting: no\r\n"
    await servers[0].notify(
        b"Messages-Waiting: yes\r\nVoice-Message: 1/0\r\n", "application/simple-message-summary"
    )
    second = await asyncio.wait_for(sub.notifications.get(), 2)
    assert b"Voice-Message: 1/0" in second.body
    assert sub.state == "active"
    await sub.close()
    await asyncio.sleep(0.1)
    assert servers[0].state == "terminated"


async def test_options_and_malformed_datagram(pair: tuple[UserAgent, UserAgent]) -> None:
    a, b = pair
    response = await a.request("OPTIONS", uri(b))
    assert response.status == 200 and "INVITE" in (response.headers.get("Allow") or "")
    port = b.listeners[0].port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(
            b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: bad\r\n"
            b"CSeq: 1 INVITE\r\nMax-Forwards: 999\r\nContent-Length: 0\r\n\r\n",
            ("127.0.0.1", port),
        )
        data, _ = await asyncio.to_thread(s.recvfrom, 65535)
        s.sendto(b"\x00garbage\xff" * 10, ("127.0.0.1", port))
    reply = sip.parse(data)
    assert isinstance(reply, sip.Response) and reply.status == 400
    assert "Max-Forwards" in reply.reason
    await asyncio.sleep(0.05)
    assert b.transport.stats.malformed == 2 and b.transport.stats.answered_400 == 1
    assert (await a.request("OPTIONS", uri(b))).status == 200  # still serving


async def test_an_invite_with_a_bad_record_route_is_refused_400(
    pair: tuple[UserAgent, UserAgent],
) -> None:
    """Record-Route is parsed on first read, not by ``parse``: the UA reads it before any
    handler runs, so a dialog-creating request with a bad one is still answered 400."""
    _, b = pair
    calls = answer_all(b)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(
            b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKrr\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: rr\r\n"
            b"CSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:9>\r\n"
            b"Record-Route: <sip:proxy;lr\r\nContent-Length: 0\r\n\r\n",
            ("127.0.0.1", b.listeners[0].port),
        )
        data, _ = await asyncio.to_thread(s.recvfrom, 65535)
    reply = sip.parse(data)
    assert isinstance(reply, sip.Response) and reply.status == 400
    assert "Record-Route" in reply.reason
    assert calls == []  # no handler saw it


async def test_unsupported_require_is_refused(pair: tuple[UserAgent, UserAgent]) -> None:
    a, b = pair
    answer_all(b)
    request = a.new_request(
        "INVITE",
        uri(b),
        headers=[("Require", "100rel, foo")],
        body=offer(),
        content_type="application/sdp",
    )
    response = await a.send(request)
    assert response.status == 420
    assert response.headers.get("Unsupported") == "100rel, foo"


async def test_ipv6_call() -> None:
    async with (
        UserAgent("udp:[::1]:0", user="alice", timers=FAST) as a,
        UserAgent("udp:[::1]:0", user="bob", timers=FAST) as b,
    ):
        answer_all(b)
        call = await a.invite(f"sip:bob@[::1]:{b.listeners[0].port}", offer())
        assert call.state is CallState.ESTABLISHED
        assert call.invite.via[0].host == "[::1]"
        await call.bye()


async def test_close_ends_calls_with_bye(pair: tuple[UserAgent, UserAgent]) -> None:
    a, b = pair
    calls = answer_all(b)
    await a.invite(uri(b), offer())
    await a.close()
    await calls[0].wait_ended(2)
    assert calls[0].end_reason == "remote BYE"


# -- retransmission through a lossy relay ------------------------------------------------


@pytest.mark.parametrize("drop", [1, 2, 3])
async def test_calls_complete_through_loss(drop: int) -> None:
    """Drop the first ``drop`` datagrams each way: INVITE retransmits at T1, 2T1, 4T1
    (timer A), the callee repeats its 2xx until the ACK, and the call completes."""
    async with (
        UserAgent("udp:127.0.0.1:0", user="alice", timers=FAST) as a,
        UserAgent("udp:127.0.0.1:0", user="bob", timers=FAST) as b,
    ):
        calls = answer_all(b, ring=False)
        relay = LossyRelay(("127.0.0.1", b.listeners[0].port), drop)
        await relay.start()
        try:
            call = await a.invite(f"sip:bob@127.0.0.1:{relay.port}", offer(), timeout=10)
            # in-dialog requests go to the callee's Contact (not through the relay)
            await call.bye()
            await calls[0].wait_ended(2)
        finally:
            relay.close()
    invites = relay.times("up", "INVITE")
    assert len(invites) >= drop + 1
    gaps = [b2 - b1 for b1, b2 in itertools.pairwise(invites)]
    expected = [FAST.t1 * 2**i for i in range(len(gaps))]
    for gap, want in zip(gaps, expected, strict=True):
        assert want * 0.8 <= gap <= want + 0.05, (gaps, expected)
    ok = relay.times("down", "SIP/2.0 200")
    if drop >= 2:  # 100 Trying took the first drop; 2xx copies were lost and repeated
        assert len(ok) >= 2
    assert len([s for s in relay.seen if s.direction == "up" and not s.dropped]) >= 1


async def test_timer_b_when_nothing_answers() -> None:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setblocking(False)
    try:
        async with UserAgent("udp:127.0.0.1:0", timers=Timers(t1=0.02)) as a:
            start = a.now()
            with pytest.raises(sip.RequestFailed) as info:
                await a.invite(f"sip:nobody@127.0.0.1:{sink.getsockname()[1]}", offer())
            elapsed = a.now() - start
        assert info.value.status == 408
        assert 64 * 0.02 - 0.01 <= elapsed <= 64 * 0.02 + 0.5
        received = 0
        while True:
            try:
                sink.recv(65535)
                received += 1
            except BlockingIOError:
                break
        assert received == 7  # INVITE at 0, 1, 3, 7, 15, 31, 63 T1: timer A until B
    finally:
        sink.close()


async def test_tls_call_and_incoming_iterator(tmp_path: Path) -> None:
    """TLS with a certificate made for the test; the callee takes calls by iteration."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    async with (
        UserAgent(
            "tls:127.0.0.1:0", user="alice", tls_context=server_ctx, client_tls_context=client_ctx
        ) as a,
        UserAgent("tls:127.0.0.1:0", user="bob", tls_context=server_ctx) as b,
    ):

        async def callee() -> sip.IncomingCall:
            async for call in b.incoming_calls():
                answer, _ = sip.answer(sip.parse_sdp(call.remote_sdp or b""), "127.0.0.1", 5)
                call.answer(bytes(answer))
                return call
            raise AssertionError("no call")

        task = asyncio.create_task(callee())
        call = await a.invite(f"sips:bob@127.0.0.1:{b.listeners[0].port}", offer(), timeout=5)
        incoming = await task
        assert call.invite.via[0].transport == "TLS"
        assert incoming.invite.contact[0].uri.scheme == "sips"
        await call.bye()
        await incoming.wait_ended(2)


async def test_tcp_keepalive_ping_gets_pong(pair: tuple[UserAgent, UserAgent]) -> None:
    _, b = pair
    port = next(lst.port for lst in b.listeners if lst.transport == "tcp")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\r\n\r\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"
    writer.close()


def _raw_request(method: str, target: str, local: int, n: int) -> bytes:
    return (
        f"{method} {target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKraw{n}\r\n"
        f"From: <sip:a@127.0.0.1>;tag=r{n}\r\nTo: <sip:bob@127.0.0.1>\r\n"
        f"Call-ID: raw{n}@127.0.0.1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:a@127.0.0.1:{local}>\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def test_stateless_answers_keep_nothing_and_are_not_repeated(
    pair: tuple[UserAgent, UserAgent],
) -> None:
    """A stateless 407 goes out once, without 100 Trying, and leaves no transaction; a
    Request-URI scheme the UA does not serve gets 416."""
    _, b = pair

    def challenge(call: sip.IncomingCall) -> None:
        call.reject(
            407, headers=[("Proxy-Authenticate", 'Digest realm="t", nonce="n"')], stateless=True
        )

    b.on_invite = challenge
    port = b.listeners[0].port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        local = s.getsockname()[1]
        s.sendto(_raw_request("INVITE", f"sip:bob@127.0.0.1:{port}", local, 1), ("127.0.0.1", port))
        s.sendto(_raw_request("OPTIONS", "http://example.com/x", local, 2), ("127.0.0.1", port))
        await asyncio.sleep(64 * FAST.t1 * 0.3)  # well past several timer G intervals
        replies = []
        with contextlib.suppress(BlockingIOError):
            while True:
                replies.append(sip.parse(s.recv(65535)))
    statuses = sorted(r.status for r in replies if isinstance(r, sip.Response))
    assert statuses == [407, 416]
    challenge_reply = next(r for r in replies if isinstance(r, sip.Response) and r.status == 407)
    assert challenge_reply.to.tag and challenge_reply.headers.get("Proxy-Authenticate")
    assert len(b.transactions) == 0 and not b.ringing
