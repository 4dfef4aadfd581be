"""The asyncio user agent: transports + transaction layer + dialogs, behind one object.

The adapter is small on purpose: messages from the transports are fed to the pure
:class:`TransactionLayer`, its actions are carried out, and one ``call_at`` timer is
re-armed to the layer's next deadline. Everything with meaning (calls, registrations,
subscriptions) lives in :mod:`sip.call`, :mod:`sip.registration` and
:mod:`sip.subscription`.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .address import bind_error, checked_destination, is_ip, parse_listen, transport_of
from .auth import DigestClient, parse_challenge
from .connections import ConnectionLimits
from .dialog import Dialog, new_call_id, new_tag
from .errors import ParseError, ResolveError, SipUsageError
from .headers import Headers, NameAddr
from .message import Request, Response, make_response
from .netroute import source_address_for
from .overload import OverloadControl, OverloadSettings
from .security import SecurityLog
from .transaction import (
    Address,
    ClientTransaction,
    Deliver,
    Send,
    ServerTransaction,
    Terminated,
    Timeout,
    Timers,
    TransactionLayer,
    new_branch,
)
from .transport import Listener, TransportLayer
from .uri import URI, parse_uri

if TYPE_CHECKING:
    from .call import Call, IncomingCall, OutgoingCall
    from .registration import Registration
    from .session_timer import TimerSettings
    from .subscription import ServerSubscription, Subscription

log = logging.getLogger(__name__)

_CONTACT_METHODS = ("INVITE", "SUBSCRIBE", "REFER", "REGISTER", "UPDATE")
IDLE_PROBE = 1.0  # s: the overload probe's period while nothing arrives
_OVERLOAD_GUARDED = ("INVITE", "REGISTER")  # new ones are refused first under overload
_DIALOG_CREATING = frozenset(("INVITE", "SUBSCRIBE", "REFER", "NOTIFY"))  # RFC 3261 §12.1, 6665
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY, SUBSCRIBE, MESSAGE, UPDATE"
SCHEMES = ("sip", "sips", "tel")  # Request-URI schemes served; others get 416
RequestHandler = Callable[["IncomingRequest"], Awaitable[None] | None]
ResponseHandler = Callable[[Response], None]


class RequestFailed(Exception):
    """A request got a final error response (or timed out: a synthetic 408)."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"{response.status} {response.reason}")
        self.response = response

    @property
    def status(self) -> int:
        return self.response.status


@dataclass(eq=False)
class IncomingRequest:
    """A request received in a new server transaction; answer it with :meth:`respond`."""

    ua: UserAgent
    request: Request
    source: Address
    listener: Listener
    transaction: ServerTransaction
    responded: bool = False

    @property
    def method(self) -> str:
        return self.request.method

    def make_response(self, status: int, reason: str | None = None, **kw: Any) -> Response:
        return make_response(self.request, status, reason, **kw)

    def respond(
        self,
        status: int,
        reason: str | None = None,
        *,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        to_tag: str | None = None,
        contact: bool = False,
    ) -> Response:
        response = make_response(self.request, status, reason, to_tag=to_tag, body=body)
        if contact:
            sips = self.request.uri.scheme == "sips"
            response.headers.add("Contact", NameAddr(self.ua.contact_uri(self.source, sips=sips)))
        for name, value in headers or ():
            response.headers.add(name, value)
        if content_type is not None:
            response.headers.add("Content-Type", content_type)
        self.send(response)
        return response

    def respond_stateless(
        self,
        status: int,
        reason: str | None = None,
        *,
        headers: list[tuple[str, str]] | None = None,
        to_tag: str | None = None,
    ) -> Response:
        """Answer once, without a transaction (RFC 3261 §8.2.7), and forget the request.

        For answers that must cost nothing, such as a digest challenge to a request
        that may come from a spoofed source: no retransmission, no memory kept. A
        retransmitted request is a new request and gets a new answer; the ACK of a
        stateless error to an INVITE matches nothing and is dropped.
        """
        self.responded = True
        self.ua.ringing.pop(self.transaction, None)
        self.ua.transactions.forget(self.transaction)
        self.ua._rearm()
        return self.ua.respond_stateless(
            self.request, self.source, status, reason, headers=headers, to_tag=to_tag
        )

    def send(self, response: Response) -> None:
        if "Server" not in response.headers:
            response.headers.add("Server", self.ua.user_agent)
        if response.status >= 200:
            self.responded = True
        self.ua._execute(self.ua.transactions.respond(self.transaction, response, self.ua.now()))


class UserAgent:
    """A SIP user agent: send and receive requests, make and take calls.

    ``async with UserAgent(...) as ua`` binds the listeners given as ``listen``
    (``"udp:127.0.0.1:5060"``, ``"tcp:[::1]:5060"``, ``"tls:0.0.0.0:5061"``) and closes
    everything on exit: calls get BYE, registrations are removed, sockets closed.
    """

    def __init__(
        self,
        listen: list[str] | str = "udp:127.0.0.1:0",
        *,
        user: str = "softswitch",
        display_name: str | None = None,
        domain: str | None = None,
        timers: Timers | None = None,
        user_agent: str = "softswitch/0.1",
        local_address: str | None = None,
        outbound_proxy: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        client_tls_context: ssl.SSLContext | None = None,
        connection_limits: ConnectionLimits | None = None,
        security: SecurityLog | None = None,
        overload: OverloadSettings | None = OverloadSettings(),  # noqa: B008 (frozen)
    ) -> None:
        """``connection_limits`` bound TCP/TLS connections (:mod:`sip.connections`);
        ``security`` is the security event log to report to (:mod:`sip.security`),
        shared with whatever else in the process reports security events; ``overload``
        bounds the work taken on (:mod:`sip.overload`; None: no overload control)."""
        self.listen_specs = [listen] if isinstance(listen, str) else list(listen)
        self.user = user
        self.display_name = display_name
        self.domain = domain
        self.user_agent = user_agent
        self.local_address = local_address  # override for Via/Contact/SDP (NAT, multihoming)
        self.outbound_proxy = parse_uri(outbound_proxy) if outbound_proxy else None
        self.tls_context = tls_context
        self.transactions = TransactionLayer(timers)
        self.transport = TransportLayer(
            self._on_message,
            client_ssl=client_tls_context,
            limits=connection_limits,
            security=security,
        )
        self.security = self.transport.security
        self.transport.on_send_error = self._on_send_error
        self.handlers: dict[str, RequestHandler] = {}
        self.supported: set[str] = set()  # option tags a Require may name (none by default)
        # RFC 4028 session timers for calls (None: off); add "timer" to ``supported`` too
        self.session_timers: TimerSettings | None = None
        self.on_invite: Callable[[IncomingCall], Awaitable[None] | None] | None = None
        self.calls: dict[tuple[str, str, str], Call] = {}
        self.ringing: dict[ServerTransaction, IncomingCall] = {}  # unanswered incoming calls
        self.subscriptions: dict[tuple[str, str, str], Subscription | ServerSubscription] = {}
        self.registrations: list[Registration] = []
        self.pending_subscriptions: list[Subscription] = []  # SUBSCRIBE sent, no dialog yet
        self._incoming: asyncio.Queue[IncomingCall] = asyncio.Queue(maxsize=1000)
        self._client_handlers: dict[ClientTransaction, ResponseHandler] = {}
        self._stray_handlers: dict[str, ResponseHandler] = {}  # by Call-ID: 2xx retransmits
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.overload = OverloadControl(overload) if overload is not None else None
        self._probe_timer: asyncio.TimerHandle | None = None
        self._probe_due = self._probe_at = self._probe_cpu = 0.0
        self._heard = False  # a message came since the last probe (its idle period)
        self._probe_idle = False
        self.closed = False

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every listener; :class:`BindError` names the one that cannot be bound
        (and the ones already bound are closed again)."""
        self._loop = asyncio.get_running_loop()
        for spec in self.listen_specs:
            transport, host, port = parse_listen(spec)
            try:
                await self.transport.listen(
                    transport,
                    host,
                    port,
                    ssl_context=self.tls_context if transport in ("tls", "wss") else None,
                )
            except OSError as exc:
                await self.transport.close()
                raise bind_error(f"{transport}:{host}:{port}", exc) from exc
        if self.overload is not None:
            self._probe_at, self._probe_cpu = self._loop.time(), time.process_time()
            self._probe_due = self._probe_at + self.overload.settings.interval
            self._probe_timer = self._loop.call_at(self._probe_due, self._probe)

    async def __aenter__(self) -> UserAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """End calls with BYE, remove registrations, close sockets."""
        if self.closed:
            return
        self.closed = True
        ending = [call.hangup() for call in list(self.calls.values())]
        ending += [reg.close() for reg in list(self.registrations)]
        ending += [sub.close() for sub in list(self.subscriptions.values())]
        if ending:
            try:
                await asyncio.wait_for(asyncio.gather(*ending, return_exceptions=True), 5.0)
            except TimeoutError:
                log.warning("event=close_timeout pending=%d", len(ending))
        for task in list(self._tasks):
            task.cancel()
        for timer in (self._timer, self._probe_timer):
            if timer is not None:
                timer.cancel()
        await self.transport.close()

    @property
    def listeners(self) -> list[Listener]:
        return self.transport.listeners

    def now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the UA keeps and cancels on close."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("event=task_failed error=%r", task.exception(), exc_info=task.exception())

    # -- addresses -----------------------------------------------------------------------

    def local_host(self, destination: Address) -> str:
        """The address to advertise toward ``destination``."""
        if self.local_address:
            return self.local_address
        listener = self.transport.listener_for(destination)
        if listener.host not in ("0.0.0.0", "::"):
            return listener.host
        return source_address_for(destination[1])

    def sent_by(self, destination: Address) -> str:
        listener = self.transport.listener_for(destination)
        return f"{_bracket(self.local_host(destination))}:{listener.port}"

    def contact_uri(
        self, destination: Address, user: str | None = None, *, sips: bool = False
    ) -> URI:
        """Our Contact toward ``destination``: ``sip:...;transport=tls`` over TLS (what
        phones expect; baresip 1.0 cannot even ACK a ``sips:`` Contact), a SIPS URI only
        where the request was one (``sips``, RFC 3261 §8.1.1.8)."""
        listener = self.transport.listener_for(destination)
        params: dict[str, str | None] = {}
        secure = sips and listener.transport == "tls"
        if listener.transport != "udp" and not secure:
            params["transport"] = listener.transport
        return URI(
            "sips" if secure else "sip",
            user if user is not None else self.user,
            host=_bracket(self.local_host(destination)),
            port=listener.port,
            params=params,
        )

    async def resolve(self, uri: URI) -> Address:
        """RFC 3263 without DNS SRV/NAPTR: transport from the URI, A/AAAA for names."""
        transport = transport_of(uri)
        if transport not in ("udp", "tcp", "tls"):
            raise SipUsageError(f"unsupported transport {transport!r} in {uri}")
        host = uri.params.get("maddr") or uri.host_bare
        port = uri.port or (5061 if transport == "tls" else 5060)
        if not is_ip(host):
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(host, port, type=2)  # SOCK_DGRAM: one each
            except (OSError, UnicodeError) as exc:  # socket.gaierror; IDNA refuses the name
                raise ResolveError(f"cannot resolve {host!r} (in {uri}): {_why(exc)}") from None
            if not infos:
                raise ResolveError(f"cannot resolve {host!r} (in {uri}): no address") from None
            host = str(infos[0][4][0])
        return (transport, host, port)

    # -- sending requests ----------------------------------------------------------------

    def new_request(
        self,
        method: str,
        uri: URI | str,
        *,
        from_: NameAddr | str | None = None,
        to: NameAddr | str | None = None,
        call_id: str | None = None,
        cseq: int = 1,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """An out-of-dialog request with fresh tag, Call-ID and the UA's identity."""
        target = parse_uri(uri) if isinstance(uri, str) else uri
        if from_ is None:
            domain = self.domain or target.host
            from_addr = NameAddr(URI("sip", self.user, host=domain), self.display_name)
        else:
            from_addr = _name_addr(from_)
        from_addr.params.setdefault("tag", new_tag())
        to_addr = _name_addr(to) if to is not None else NameAddr(target.copy(params={}, headers={}))
        h = Headers()
        h.add("Via", "SIP/2.0/UDP placeholder")  # set for the real destination when sent
        h.add("Max-Forwards", "70")
        h.add("From", from_addr)
        h.add("To", to_addr)
        h.add("Call-ID", call_id or new_call_id(self.domain or "softswitch"))
        h.add("CSeq", f"{cseq} {method}")
        h.add("User-Agent", self.user_agent)
        for name, value in headers or ():
            h.add(name, value)
        if content_type is not None:
            h.add("Content-Type", content_type)
        return Request(method, target, h, body)

    async def destination_of(self, request: Request) -> Address:
        """§8.1.2: the first Route if any, else the outbound proxy, else the Request-URI."""
        if "Route" in request.headers:
            return await self.resolve(request.route[0].uri)
        if self.outbound_proxy is not None:
            return await self.resolve(self.outbound_proxy)
        return await self.resolve(request.uri)

    async def next_hop(self, dialog: Dialog, learned: Address | None) -> Address:
        """Where an in-dialog request goes: the first route if any, else the address the
        peer's dialog-creating message came from or went to (NAT-safe), else its target."""
        if dialog.route_set:
            return await self.resolve(dialog.route_set[0].uri)
        if learned is not None:
            return learned
        return await self.resolve(dialog.remote_target)

    def _stamp(self, request: Request, destination: Address) -> None:
        """Top Via for ``destination`` with a fresh branch; our Contact where needed."""
        sent_by = self.sent_by(destination)
        via = f"SIP/2.0/{destination[0].upper()} {sent_by};branch={new_branch()};rport"
        if "Via" in request.headers:
            request.headers.remove_first_value("Via")
        request.headers.prepend("Via", via)
        if request.method in _CONTACT_METHODS and "Contact" not in request.headers:
            user = request.from_.uri.user if request.method == "REGISTER" else None
            sips = request.uri.scheme == "sips"
            request.headers.add("Contact", NameAddr(self.contact_uri(destination, user, sips=sips)))

    def send_request(
        self,
        request: Request,
        destination: Address,
        on_response: ResponseHandler,
    ) -> ClientTransaction:
        """Start a client transaction; ``on_response`` sees every response (and a
        synthetic 408 on timeout or transport failure)."""
        destination = checked_destination(destination)
        self._stamp(request, destination)
        tx, actions = self.transactions.send_request(request, destination, self.now())
        self._client_handlers[tx] = on_response
        self._execute(actions)
        return tx

    async def send(
        self,
        request: Request,
        destination: Address | None = None,
        *,
        credentials: tuple[str, str] | None = None,
        on_provisional: ResponseHandler | None = None,
    ) -> Response:
        """Send ``request``, answer one digest challenge if ``credentials`` are given
        (and a second when the nonce was stale), return the final response."""
        dest = checked_destination(destination) if destination is not None else None
        dest = dest or await self.destination_of(request)
        client = DigestClient(*credentials) if credentials else None
        for attempt in range(3):
            response = await self._transact(request, dest, on_provisional)
            if response.status not in (401, 407) or client is None or attempt == 2:
                return response
            header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
            challenges = []
            for value in response.headers.get_lines(header):
                try:
                    challenges.append(parse_challenge(value))
                except ParseError as exc:
                    log.info("event=bad_challenge error=%s", exc)
            if not challenges:
                return response
            if attempt == 1 and not any(c.stale for c in challenges):
                return response  # the credentials were refused, not just stale
            request = self._reauthorised(request, response.status, challenges[0], client)
        return response

    def _reauthorised(
        self, request: Request, status: int, challenge: Any, client: DigestClient
    ) -> Request:
        again = Request(request.method, request.uri.copy(), request.headers.copy(), request.body)
        credentials = client.answer(challenge, request.method, str(request.uri), request.body)
        name = "Authorization" if status == 401 else "Proxy-Authorization"
        again.headers.remove(name)
        again.headers.add(name, str(credentials))
        cseq = again.cseq
        again.headers.set("CSeq", f"{cseq.seq + 1} {cseq.method}")
        return again

    async def _transact(
        self, request: Request, destination: Address, on_provisional: ResponseHandler | None
    ) -> Response:
        loop = asyncio.get_running_loop()
        final: asyncio.Future[Response] = loop.create_future()

        def on_response(response: Response) -> None:
            if response.status < 200:
                if on_provisional is not None:
                    on_provisional(response)
            elif not final.done():
                final.set_result(response)

        self.send_request(request, destination, on_response)
        return await final

    async def request(
        self,
        method: str,
        uri: URI | str,
        *,
        credentials: tuple[str, str] | None = None,
        destination: Address | None = None,
        **kw: Any,
    ) -> Response:
        """Send an out-of-dialog request (OPTIONS, MESSAGE, NOTIFY, ...); the final response."""
        return await self.send(
            self.new_request(method, uri, **kw), destination, credentials=credentials
        )

    def send_stateless(self, request: Request, destination: Address) -> None:
        """Send without a transaction (ACK for a 2xx)."""
        destination = checked_destination(destination)
        self._stamp(request, destination)
        self.transport.send(request, destination)

    def respond_stateless(
        self,
        request: Request,
        source: Address,
        status: int,
        reason: str | None = None,
        *,
        headers: list[tuple[str, str]] | None = None,
        to_tag: str | None = None,
    ) -> Response:
        """Send one response to ``request`` (from ``source``) without a transaction.

        The To tag, when not given, is derived from the request, so a retransmission
        gets the same one (§8.2.7)."""
        response = make_response(request, status, reason, to_tag=to_tag or stateless_tag(request))
        for name, value in headers or ():
            response.headers.add(name, value)
        response.headers.add("Server", self.user_agent)
        self.transport.send(response, source)
        return response

    def security_event(
        self,
        event: str,
        source: Address,
        *,
        user: str | None = None,
        method: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Report ``event`` from ``source`` to the security log (:mod:`sip.security`)."""
        self.security.event(event, source, self.now(), user=user, method=method, reason=reason)

    # -- calls, registrations, subscriptions ---------------------------------------------

    async def invite(
        self,
        uri: URI | str,
        sdp: bytes | None = None,
        *,
        wait: bool = True,
        credentials: tuple[str, str] | None = None,
        destination: Address | None = None,
        timeout: float | None = None,
        **kw: Any,
    ) -> OutgoingCall:
        """Call ``uri`` offering ``sdp``. With ``wait`` (default) return once answered
        (raise :class:`RequestFailed` for an error); else at once, to ring or cancel."""
        from .call import OutgoingCall

        if destination is not None:
            destination = checked_destination(destination)
        request = self.new_request(
            "INVITE",
            uri,
            body=sdp or b"",
            content_type="application/sdp" if sdp else None,
            **kw,
        )
        call = OutgoingCall(self, request, credentials=credentials)
        await call.start(destination)
        if wait:
            await call.wait_answer(timeout)
        return call

    async def register(
        self,
        registrar: URI | str,
        *,
        aor: str | None = None,
        username: str | None = None,
        password: str | None = None,
        expires: int = 3600,
    ) -> Registration:
        """Register (and keep registered) until :meth:`Registration.close`."""
        from .registration import Registration

        reg = Registration(
            self, registrar, aor=aor, username=username, password=password, expires=expires
        )
        await reg.start()
        return reg

    async def subscribe(
        self,
        uri: URI | str,
        event: str,
        *,
        expires: int = 3600,
        accept: str | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> Subscription:
        from .subscription import Subscription

        sub = Subscription(
            self, uri, event, expires=expires, accept=accept, credentials=credentials
        )
        await sub.start()
        return sub

    async def incoming_calls(self) -> AsyncIterator[IncomingCall]:
        """New calls, as they arrive (when no ``on_invite`` handler is set)."""
        while not self.closed:
            yield await self._incoming.get()

    # -- receiving -----------------------------------------------------------------------

    def _on_message(self, message: Request | Response, source: Address, listener: Listener) -> None:
        now = self.now()
        self._heard = True
        if self._probe_idle:
            self._wake_probe()
        actions: list[Any]
        if isinstance(message, Response):
            actions = self.transactions.receive_response(message, now)
        elif message.uri.scheme not in SCHEMES:
            # §8.2.2.1: 416, statelessly: nothing here serves such a request
            if message.method != "ACK":
                self.respond_stateless(message, source, 416)
                self.security_event(
                    "request_refused",
                    source,
                    method=message.method,
                    reason=f"unsupported URI scheme {message.uri.scheme}",
                )
            return
        else:
            if (
                self.overload is not None
                and self.overload.overloaded
                and message.method in _OVERLOAD_GUARDED
                and not self._admit(message, source)
            ):
                return
            received = self.transactions.receive_request(message, source, now)
            actions = [
                _Incoming(a, source, listener) if isinstance(a, Deliver) else a for a in received
            ]
        self._execute(actions)

    # -- overload control (sip.overload) ----------------------------------------------

    def _probe(self) -> None:
        """How late the event loop runs, and how many calls wait: the overload signal."""
        assert self.overload is not None and self._loop is not None
        now = self._loop.time()
        cpu = time.process_time()
        busy = (cpu - self._probe_cpu) / max(1e-3, now - self._probe_at)
        self._probe_cpu, self._probe_at = cpu, now
        backlog = self.transport.backlog()
        wait = self.transport.queue_wait()
        control = self.overload
        change = control.observe(now - self._probe_due, len(self.ringing), busy, backlog, wait)
        if change == "start":
            log.warning(
                "event=overload state=start busy=%.2f backlog=%.2f wait_ms=%.0f lag_ms=%.0f"
                " pending=%d",
                control.busy,
                control.backlog,
                control.wait * 1000,
                control.lag * 1000,
                len(self.ringing),
            )
        elif change == "end":
            log.warning(
                "event=overload state=end refused=%d max_lag_ms=%.0f max_wait_ms=%.0f",
                control.refused_in_episode,
                control.stats.max_lag * 1000,
                control.stats.max_wait * 1000,
            )
        # a quiet UA (nothing received since the last probe, not overloaded) probes once a
        # second: twenty wake-ups a second cost an idle daemon ~0.5 % of a core; the next
        # message brings the short period back at once (_wake_probe)
        self._probe_idle = not self._heard and not control.overloaded
        self._heard = False
        interval = IDLE_PROBE if self._probe_idle else control.settings.interval
        self._probe_due = now + interval
        if not self.closed:
            self._probe_timer = self._loop.call_at(self._probe_due, self._probe)

    def _wake_probe(self) -> None:
        assert self.overload is not None and self._loop is not None
        self._probe_idle = False
        if self._probe_timer is not None and not self.closed:
            self._probe_timer.cancel()
            self._probe_due = self._loop.time() + self.overload.settings.interval
            self._probe_timer = self._loop.call_at(self._probe_due, self._probe)

    def _admit(self, request: Request, source: Address) -> bool:
        """Under overload: a new INVITE or REGISTER is served, or refused at once with
        503 + Retry-After (no transaction, nothing kept). In-dialog requests and
        retransmissions of accepted ones always pass."""
        assert self.overload is not None
        if request.to.tag is not None or self.transactions.matches(request):
            return True
        if self.overload.admit():
            return True
        retry = str(self.overload.settings.retry_after)
        self.respond_stateless(
            request,
            source,
            503,
            "Service Unavailable (overload)",
            headers=[("Retry-After", retry)],
        )
        return False

    def _execute(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self.transport.send(action.message, action.destination)
            elif isinstance(action, _Incoming):
                self._deliver_request(action)
            elif isinstance(action, Deliver):
                self._deliver_response(action)
            elif isinstance(action, Timeout):
                self._on_timeout(action)
            elif isinstance(action, Terminated) and isinstance(
                action.transaction, ClientTransaction
            ):
                self._client_handlers.pop(action.transaction, None)
        self._rearm()

    def _rearm(self) -> None:
        deadline = self.transactions.deadline
        if self._timer is not None:
            if deadline is not None and self._timer.when() == deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None and not self.closed:
            loop = self._loop or asyncio.get_running_loop()
            self._timer = loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._execute(self.transactions.on_timer(self.now()))

    def _on_timeout(self, action: Timeout) -> None:
        tx = action.transaction
        if isinstance(tx, ClientTransaction):
            handler = self._client_handlers.pop(tx, None)
            if handler is not None:
                handler(make_response(tx.request, 408, "Request Timeout"))
        else:
            log.info("event=no_ack call_id=%s", tx.request.call_id)

    def _on_send_error(self, destination: Address, exc: Exception) -> None:
        for tx, handler in list(self._client_handlers.items()):
            if tx.peer == destination:
                del self._client_handlers[tx]
                handler(make_response(tx.request, 503, "Service Unavailable (transport error)"))

    def _deliver_response(self, action: Deliver) -> None:
        response = action.message
        assert isinstance(response, Response)
        if isinstance(action.transaction, ClientTransaction):
            handler = self._client_handlers.get(action.transaction)
            if handler is not None:
                handler(response)
            return
        stray = self._stray_handlers.get(response.call_id)
        if stray is not None:
            stray(response)

    def _deliver_request(self, action: _Incoming) -> None:
        request = action.deliver.message
        assert isinstance(request, Request)
        tx = action.deliver.transaction
        if request.method == "ACK":
            call = self._find_call(request)
            if call is not None:
                call._on_ack(request)
            return
        assert isinstance(tx, ServerTransaction)
        incoming = IncomingRequest(self, request, action.source, action.listener, tx)
        if request.method == "CANCEL":
            self._on_cancel(incoming)
            return
        if request.method in _DIALOG_CREATING and request.to.tag is None:
            try:  # parsed on first use: a bad one is refused before any handler runs
                _ = request.record_route
            except ParseError as exc:
                incoming.respond_stateless(400, f"Bad Request ({exc})")
                return
        unsupported = [
            option
            for option in request.headers.values("Require")
            if option.strip().lower() not in self.supported
        ]
        if unsupported:  # RFC 3261 §8.2.2.3: refuse extensions we would not honour
            incoming.respond_stateless(420, headers=[("Unsupported", ", ".join(unsupported))])
            return
        if request.to.tag is not None:
            self._in_dialog(incoming)
            return
        if request.method == "NOTIFY":
            for sub in self.pending_subscriptions:
                if sub.matches_notify(request):
                    self._run_handler(sub._on_request, incoming)
                    return
        if request.method == "INVITE":
            self._on_new_invite(incoming)
            return
        handler = self.handlers.get(request.method)
        if handler is not None:
            self._run_handler(handler, incoming)
        elif request.method == "OPTIONS":
            incoming.respond(200, headers=[("Allow", ALLOW), ("Accept", "application/sdp")])
        else:
            incoming.respond_stateless(405, headers=[("Allow", ALLOW)])

    def _find_call(self, request: Request) -> Call | None:
        return self.calls.get((request.call_id, request.to.tag or "", request.from_.tag or ""))

    def _in_dialog(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        key = (request.call_id, request.to.tag or "", request.from_.tag or "")
        call = self.calls.get(key)
        if call is not None:
            self._run_handler(call._on_request, incoming)
            return
        sub = self.subscriptions.get(key)
        if sub is not None:
            self._run_handler(sub._on_request, incoming)
            return
        handler = self.handlers.get(request.method)
        if handler is not None and request.method in ("NOTIFY", "SUBSCRIBE"):
            self._run_handler(handler, incoming)  # e.g. a refresh for a server subscription
            return
        incoming.respond_stateless(481)

    def _on_new_invite(self, incoming: IncomingRequest) -> None:
        from .call import IncomingCall

        try:
            call = IncomingCall(self, incoming)
        except ParseError as exc:
            incoming.respond_stateless(400, f"Bad Request ({exc})")
            return
        if self.on_invite is not None:
            self._run_handler(self.on_invite, call)
        elif self._incoming.full():
            incoming.respond(503)
        else:
            self._incoming.put_nowait(call)

    def _on_cancel(self, incoming: IncomingRequest) -> None:
        invite_tx = self.transactions.find_invite(incoming.request)
        if invite_tx is None:
            incoming.respond_stateless(481)
            return
        incoming.respond(200)
        call = self.ringing.get(invite_tx)
        if call is not None:
            call._on_cancel()
        elif invite_tx.last_response is None or invite_tx.last_response.status < 200:
            terminated = make_response(invite_tx.request, 487, to_tag=new_tag())
            self._execute(self.transactions.respond(invite_tx, terminated, self.now()))

    def _run_handler(self, handler: Callable[[Any], Awaitable[None] | None], arg: Any) -> None:
        try:
            result = handler(arg)
        except Exception:
            log.exception("event=handler_failed")
            _fail(arg)
            return
        if inspect.isawaitable(result):
            task = self.spawn(result)
            task.add_done_callback(
                lambda t: _fail(arg) if not t.cancelled() and t.exception() else None
            )


@dataclass(frozen=True, slots=True)
class _Incoming:
    deliver: Deliver
    source: Address
    listener: Listener


def _fail(arg: Any) -> None:
    """A handler raised: answer 500 if the request was not answered yet."""
    incoming = getattr(arg, "incoming", arg)
    if isinstance(incoming, IncomingRequest) and not incoming.responded:
        incoming.respond(500)


def stateless_tag(request: Request) -> str:
    """A To tag that is the same for every retransmission of ``request``."""
    via = request.via[0]
    key = f"{request.call_id}|{request.from_.tag}|{via.branch}|{request.cseq.seq}"
    return hashlib.blake2s(key.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def _why(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _name_addr(value: NameAddr | str) -> NameAddr:
    if isinstance(value, NameAddr):
        return value.copy()
    from .headers import parse_name_addr

    return parse_name_addr(value)
