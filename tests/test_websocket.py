"""SIP over WebSocket (RFC 7118) in the daemon: a client that speaks WebSocket (wsproto on a
plain socket, as a browser's SIP library would) registers with digest auth over ws: and
wss:, is called back over its own connection (Via WS/WSS), and what a stranger sends is
bounded: no ``sip`` subprotocol, an oversized message, requests without credentials."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import ssl
from pathlib import Path

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    RejectConnection,
    Request,
    TextMessage,
)

import sip
from sip.websocket import WebSocketFramer

from .netutil import ROOT
from .office import demo_pbx


class WsPhone:
    """A SIP phone over one WebSocket connection, driven by hand."""

    def __init__(self, user: str, password: str, port: int, *, secure: bool = False) -> None:
        self.user, self.password, self.port, self.secure = user, password, port, secure
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.inbox: asyncio.Queue[sip.Message] = asyncio.Queue()
        self.accepted: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.cseq = 0
        self.domain = "demo.softswitch"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def connect(self, subprotocols: tuple[str, ...] = ("sip",)) -> bool:
        context = None
        if self.secure:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=context
        )
        request = Request(host="127.0.0.1", target="/any/path", subprotocols=list(subprotocols))
        self.writer.write(self.ws.send(request))
        self._task = asyncio.create_task(self._read())
        return await asyncio.wait_for(self.accepted, 5)

    async def _read(self) -> None:
        assert self.reader is not None and self.writer is not None
        while data := await self.reader.read(65536):
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, AcceptConnection):
                    assert event.subprotocol == "sip"
                    self.accepted.set_result(True)
                elif isinstance(event, RejectConnection):
                    self.accepted.set_result(False)
                elif isinstance(event, TextMessage):
                    await self.inbox.put(sip.parse(event.data.encode()))
                elif isinstance(event, CloseConnection):
                    return
        if not self.accepted.done():
            self.accepted.set_result(False)

    def send(self, text: str) -> None:
        assert self.writer is not None
        self.writer.write(self.ws.send(Message(data=text)))

    def request(self, method: str, uri: str, *, to: str, extra: str = "", body: str = "") -> str:
        self.cseq += 1
        via = "WSS" if self.secure else "WS"
        return (
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/{via} df7jal23ls0d.invalid;branch=z9hG4bK{self.cseq}x{id(self)}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{self.user}@{self.domain}>;tag=ws{self.user}\r\n"
            f"To: <{to}>\r\n"
            f"Call-ID: ws-{self.user}-{id(self)}-{method}\r\n"
            f"CSeq: {self.cseq} {method}\r\n"
            f"Contact: <sip:{self.user}@df7jal23ls0d.invalid;transport=ws>\r\n"
            f"{extra}"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        )

    async def receive(self, timeout: float = 5.0) -> sip.Message:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def register(self) -> int:
        aor = f"sip:{self.user}@{self.domain}"
        uri = f"sip:{self.domain}"
        self.send(self.request("REGISTER", uri, to=aor, extra="Expires: 300\r\n"))
        challenge = await self.receive()
        assert isinstance(challenge, sip.Response) and challenge.status == 401
        parsed = sip.parse_challenge(challenge.headers.get("WWW-Authenticate") or "")
        credentials = sip.DigestClient(self.user, self.password).answer(parsed, "REGISTER", uri)
        extra = f"Expires: 300\r\nAuthorization: {credentials}\r\n"
        self.send(self.request("REGISTER", uri, to=aor, extra=extra))
        response = await self.receive()
        assert isinstance(response, sip.Response)
        return response.status

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.writer is not None:
            self.writer.close()


@pytest.mark.parametrize("secure", [False, True])
async def test_a_websocket_phone_registers_and_is_called_over_its_connection(
    tmp_path: Path, secure: bool
) -> None:
    pbx = await demo_pbx(tmp_path, ws=True)
    ws_port = next(x.port for x in pbx.ua.listeners if x.transport == ("wss" if secure else "ws"))
    udp_port = pbx.ua.listeners[0].port
    phone = WsPhone("101", "bob101", ws_port, secure=secure)
    try:
        assert await phone.connect()
        assert await phone.register() == 200
        [binding] = pbx.registrar.lookup("sip:101@demo.softswitch", pbx.ua.now())
        assert binding.source[0] == ("wss" if secure else "ws")
        async with sip.UserAgent("udp:127.0.0.1:0", user="100") as alice:
            offer = sip.make_offer("127.0.0.1", 40000)
            call = await alice.invite(
                f"sip:101@127.0.0.1:{udp_port}",
                bytes(offer),
                wait=False,
                credentials=("100", "alice100"),
            )
            invite = await phone.receive()  # over the phone's own WebSocket connection
            assert isinstance(invite, sip.Request) and invite.method == "INVITE"
            assert invite.via[0].transport == ("WSS" if secure else "WS")
            phone.send(bytes(sip.make_response(invite, 486, to_tag="busy")).decode())
            ack = await phone.receive()  # our 486 was taken: its ACK, over the connection
            assert isinstance(ack, sip.Request) and ack.method == "ACK"
            answered = await call.wait_answer(timeout=10)  # Bob busy: his voicemail
            assert answered.status == 200
            await call.bye()
    finally:
        await phone.close()
        await pbx.stop()


async def test_what_a_stranger_sends_over_websocket_is_bounded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pbx = await demo_pbx(tmp_path, ws=True)
    ws_port = next(x.port for x in pbx.ua.listeners if x.transport == "ws")
    try:
        chat = WsPhone("101", "x", ws_port)
        assert not await chat.connect(subprotocols=("chat",))  # no sip subprotocol: 400
        await chat.close()
        stranger = WsPhone("100", "wrong", ws_port)
        assert await stranger.connect()
        invite = stranger.request("INVITE", "sip:101@demo.softswitch", to="sip:101@x")
        stranger.send(invite)
        refused = await stranger.receive()
        assert isinstance(refused, sip.Response) and refused.status == 407  # no credentials
        stranger.send("x" * 70_000)  # longer than any SIP message: the connection closes
        assert stranger._task is not None
        await asyncio.wait_for(stranger._task, 5)
        await stranger.close()
    finally:
        await pbx.stop()
    security = [r.getMessage() for r in caplog.records if r.name == "security"]
    assert any("no_'sip'_subprotocol_offered" in line for line in security), security
    assert any("WebSocket_message_longer_than" in line for line in security), security


def test_the_framer_refuses_before_a_long_message_is_complete() -> None:
    framer = WebSocketFramer(max_message=100)
    client = WSConnection(ConnectionType.CLIENT)
    _, reply = framer.feed(client.send(Request(host="h", target="/", subprotocols=["sip"])))
    client.receive_data(reply)
    assert framer.open and isinstance(next(client.events()), AcceptConnection)
    first = client.send(Message(data="a" * 60, message_finished=False))
    assert framer.feed(first) == ([], b"") and framer.partial
    with pytest.raises(sip.ParseError):
        framer.feed(client.send(Message(data="b" * 60, message_finished=True)))


async def jssip_register(url: str, user: str, password: str) -> str:
    """JsSIP's registration over ``url``, run by Node (js/, installed by ``make test``)."""
    node = shutil.which("node")
    assert node is not None, "node is not installed: run scripts/system-deps.sh"
    script = ROOT / "js" / "jssip_register.js"
    proc = await asyncio.create_subprocess_exec(
        node,
        str(script),
        url,
        user,
        password,
        "demo.softswitch",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "NODE_TLS_REJECT_UNAUTHORIZED": "0"},  # the demo certificate
        cwd=ROOT / "js",
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    return out.decode().strip()


async def test_jssip_registers_over_ws_and_wss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """JsSIP, the SIP library of browser phones (not written here), registers with digest
    auth over both WebSocket listeners; a wrong password is refused."""
    caplog.set_level(logging.INFO, logger="softswitch")
    pbx = await demo_pbx(tmp_path, ws=True)
    ws, wss = (next(x.port for x in pbx.ua.listeners if x.transport == t) for t in ("ws", "wss"))
    try:
        assert await jssip_register(f"ws://127.0.0.1:{ws}", "100", "alice100") == "registered"
        assert await jssip_register(f"wss://127.0.0.1:{wss}", "101", "bob101") == "registered"
        refused = await jssip_register(f"ws://127.0.0.1:{ws}", "102", "wrong")
        assert refused.startswith("registrationFailed"), refused
        registered = [
            r.getMessage() for r in caplog.records if "event=registered" in r.getMessage()
        ]
        for aor in ("sip:100@demo.softswitch", "sip:101@demo.softswitch"):
            assert any(aor in line and "transport=ws" in line for line in registered), registered
    finally:
        await pbx.stop()


async def test_a_websocket_flood_is_bounded_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """WebSocket connections count against the TCP/TLS limits: from one address, beyond
    tcp_max_per_address the next are closed at once (logged once per burst)."""
    pbx = await demo_pbx(tmp_path, ws=True, server="tcp_max_per_address = 4")
    ws_port = next(x.port for x in pbx.ua.listeners if x.transport == "ws")
    phones = [WsPhone("100", "alice100", ws_port) for _ in range(12)]
    try:
        opened = [await asyncio.wait_for(p.connect(), 5) for p in phones]
        assert opened.count(True) == 4  # the others were closed before the handshake
    finally:
        for p in phones:
            await p.close()
        await pbx.stop()
    refused = [r.getMessage() for r in caplog.records if "event=tcp_refused" in r.getMessage()]
    assert refused and all("reason=max_per_address" in line for line in refused)
    assert len(refused) <= 10  # the security log's burst bound, not one line per attempt


async def test_a_browser_is_one_of_the_users_devices_for_a_ring_group(tmp_path: Path) -> None:
    """A phone registered over WebSocket rings for a ring group of its user like a desk
    phone (the group's INVITE arrives over its connection, with a WebRTC offer)."""
    group = (
        '\n[[ring_groups]]\nextension = "600"\nname = "Sales"\n'
        'steps = [ { targets = ["101"], ring_seconds = 10 } ]\n'
    )
    pbx = await demo_pbx(tmp_path, ws=True, extra=group)
    ws_port = next(x.port for x in pbx.ua.listeners if x.transport == "ws")
    phone = WsPhone("101", "bob101", ws_port)
    try:
        assert await phone.connect()
        assert await phone.register() == 200
        async with sip.UserAgent("udp:127.0.0.1:0", user="100") as alice:
            call = await alice.invite(
                f"sip:600@127.0.0.1:{pbx.ua.listeners[0].port}",
                bytes(sip.make_offer("127.0.0.1", 40000)),
                wait=False,
                credentials=("100", "alice100"),
            )
            invite = await phone.receive(timeout=10)
            assert isinstance(invite, sip.Request) and invite.method == "INVITE"
            offer = sip.parse_sdp(invite.body)
            assert offer.media[0].proto == "UDP/TLS/RTP/SAVPF"  # a browser gets WebRTC
            assert offer.attribute("ice-lite") is not None
            await call.cancel()
    finally:
        await phone.close()
        await pbx.stop()
