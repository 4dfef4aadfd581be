"""INVITE dialog usages: calls we place (:class:`OutgoingCall`) and take (:class:`IncomingCall`).

A call owns its dialog, its SDP (local and remote, as bytes) and answers in-dialog
requests: BYE ends it, a re-INVITE is offered to ``on_reinvite`` (hold, resume, codec
change), INFO carries DTMF, REFER goes to ``on_refer``. Everything else goes to
``on_request`` when set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import TYPE_CHECKING
from urllib.parse import quote

from .dialog import Dialog, DialogError, DialogState, new_tag
from .errors import ParseError
from .events import Listeners
from .headers import NameAddr
from .message import Request, Response, make_response
from .session_timer import (
    Action,
    IntervalTooSmall,
    Negotiated,
    SessionTimer,
    negotiate_uac,
    negotiate_uas,
    request_headers,
)
from .transaction import Address

if TYPE_CHECKING:
    from .ua import IncomingRequest, UserAgent

log = logging.getLogger(__name__)

_DTMF_RELAY = re.compile(r"^\s*Signal\s*=\s*([0-9A-Da-d*#]|1[0-6])\s*$", re.M | re.I)
_EVENT_DIGITS = "0123456789*#ABCD"


class CallState(Enum):
    CALLING = "calling"  # INVITE sent or received, nothing else yet
    EARLY = "early"  # ringing / early media
    ESTABLISHED = "established"
    ENDED = "ended"


class Call:
    """State shared by both directions of an INVITE dialog."""

    def __init__(self, ua: UserAgent, invite: Request) -> None:
        self.ua = ua
        self.invite = invite
        self.dialog: Dialog | None = None
        self.state = CallState.CALLING
        self.local_sdp: bytes | None = None
        self.remote_sdp: bytes | None = invite.body if _is_sdp(invite) else None
        self.destination: Address | None = None  # where in-dialog requests go (NAT-safe)
        self.ended = asyncio.Event()
        self.end_reason = ""
        self.dtmf: asyncio.Queue[str] = asyncio.Queue(maxsize=256)
        # Handlers for in-dialog requests. on_reinvite returns the SDP to answer with
        # (None: keep ours) or raises RequestRefused to refuse.
        self.on_reinvite: Callable[[Call, Request], Awaitable[bytes | None]] | None = None
        self.on_refer: Callable[[Call, IncomingRequest], Awaitable[None] | None] | None = None
        self.on_request: Callable[[Call, IncomingRequest], Awaitable[None] | None] | None = None
        self.on_end: Listeners[Call] = Listeners()  # once, when the call ends
        # digits received by SIP INFO; kept in ``dtmf`` while nobody listens
        self.on_dtmf: Listeners[str] = Listeners()
        self._acks: dict[int, Request] = {}  # ACKs we sent, by CSeq: resent on 2xx repeats
        self._reinvite_pending = False
        self._awaiting_ack: int | None = None  # CSeq of a 2xx we repeat until its ACK
        self.acked = asyncio.Event()  # the ACK of our 2xx arrived
        # RFC 4028 session timer, when both sides agreed on one (ua.session_timers)
        self.session_timer: SessionTimer | None = None
        self._session_task: asyncio.Task[None] | None = None
        self.peer_allows_update = False  # refresh by UPDATE rather than re-INVITE

    @property
    def call_id(self) -> str:
        return self.invite.call_id

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.call_id} {self.state.value}>"

    # -- in-dialog requests we send -------------------------------------------------------

    async def _next_hop(self) -> Address:
        assert self.dialog is not None
        return await self.ua.next_hop(self.dialog, self.destination)

    async def request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> Response:
        """Send an in-dialog request and return its final response."""
        if self.dialog is None or self.state is CallState.ENDED:
            raise ParseError(f"cannot send {method}: the call has no live dialog")
        request = self.dialog.make_request(
            method, body=body, content_type=content_type, headers=headers
        )
        response = await self.ua.send(request, await self._next_hop())
        if response.status in (408, 481):  # RFC 5057: the dialog is gone
            self._end(f"{method} got {response.status}")
        return response

    async def reinvite(
        self, sdp: bytes | None = None, *, headers: list[tuple[str, str]] | None = None
    ) -> Response:
        """Re-INVITE with ``sdp`` (hold, resume, new media); ACKs a 2xx."""
        if self.dialog is None or self.state is not CallState.ESTABLISHED:
            raise ParseError("re-INVITE needs an established call")
        request = self.dialog.make_request(
            "INVITE",
            body=sdp or b"",
            content_type="application/sdp" if sdp else None,
            headers=headers,
        )
        self._reinvite_pending = True
        try:
            response = await self.ua.send(request, await self._next_hop())
        finally:
            self._reinvite_pending = False
        if 200 <= response.status < 300:
            if sdp is not None:
                self.local_sdp = sdp
            if _is_sdp(response):
                self.remote_sdp = response.body
            self.dialog.receive_response(response)
            await self._send_ack(request.cseq.seq)
        elif response.status in (408, 481):
            self._end(f"re-INVITE got {response.status}")
        return response

    async def bye(self) -> None:
        """End an established call (BYE) — see :meth:`hangup` for any state."""
        if self.state is not CallState.ESTABLISHED or self.dialog is None:
            return
        self._end("local BYE")
        request = self.dialog.make_request("BYE")
        try:
            await self.ua.send(request, await self._next_hop())
        except OSError as exc:
            log.info("event=bye_failed call_id=%s error=%s", self.call_id, exc)

    async def hangup(self) -> None:
        await self.bye()

    async def refer(self, target: str, *, replaces: Call | None = None) -> Response:
        """Transfer the peer to ``target`` (blind), or to ``replaces``' peer (attended)."""
        refer_to = target
        if replaces is not None and replaces.dialog is not None:
            d = replaces.dialog
            value = f"{d.call_id};to-tag={d.remote_tag};from-tag={d.local_tag}"
            refer_to = f"{target}?Replaces={quote(value, safe='')}"
        return await self.request("REFER", headers=[("Refer-To", f"<{refer_to}>")])

    async def send_dtmf(self, digit: str, duration_ms: int = 160) -> Response:
        """DTMF by SIP INFO (application/dtmf-relay), for peers without RFC 4733."""
        body = f"Signal={digit}\r\nDuration={duration_ms}\r\n".encode()
        return await self.request("INFO", body=body, content_type="application/dtmf-relay")

    async def notify_refer(self, status_line: str, *, final: bool) -> Response:
        """Report REFER progress with a sipfrag NOTIFY (RFC 3515 §2.4.5)."""
        state = "terminated;reason=noresource" if final else "active;expires=60"
        return await self.request(
            "NOTIFY",
            body=status_line.encode() + b"\r\n",
            content_type="message/sipfrag;version=2.0",
            headers=[("Event", "refer"), ("Subscription-State", state)],
        )

    # -- session timers (RFC 4028) ------------------------------------------------------

    def _allows_update(self, message: Request | Response) -> bool:
        return any(m.strip().upper() == "UPDATE" for m in message.headers.values("Allow"))

    def _start_session_timer(self, negotiated: Negotiated | None) -> None:
        """Run (or refresh) the session timer agreed in the last INVITE/UPDATE exchange."""
        if negotiated is None or self.state is not CallState.ESTABLISHED:
            return
        if self.session_timer is None:
            self.session_timer = SessionTimer(negotiated, self.ua.now())
            self._session_task = self.ua.spawn(self._run_session_timer())
            log.debug(
                "event=session_timer call_id=%s interval=%d refresher=%s",
                self.call_id,
                negotiated.interval,
                "us" if negotiated.we_refresh else "peer",
            )
        else:
            self.session_timer.refreshed(self.ua.now(), negotiated)

    async def _run_session_timer(self) -> None:
        while self.state is CallState.ESTABLISHED and self.session_timer is not None:
            timer = self.session_timer
            await asyncio.sleep(max(0.0, timer.deadline - self.ua.now()))
            action = timer.on_timer(self.ua.now())
            if action is Action.EXPIRE:
                log.info(
                    "event=session_expired call_id=%s interval=%d", self.call_id, timer.interval
                )
                await self.bye()
                return
            if action is Action.REFRESH:
                await self._refresh_session(timer)

    async def _refresh_session(self, timer: SessionTimer) -> None:
        headers = [
            ("Session-Expires", f"{timer.interval};refresher=uac"),
            ("Supported", "timer"),
        ]
        try:
            if self.peer_allows_update:
                response = await self.request("UPDATE", headers=headers)
            else:
                response = await self.reinvite(self.local_sdp, headers=headers)
        except (ParseError, OSError) as exc:
            log.info("event=session_refresh_failed call_id=%s error=%s", self.call_id, exc)
            timer.refreshed(self.ua.now())
            return
        now = self.ua.now()
        if 200 <= response.status < 300:
            try:
                negotiated = negotiate_uac(response.headers)
            except ParseError:
                negotiated = timer.negotiated
            if negotiated is None:
                self.session_timer = None  # the peer turned the timer off
            else:
                timer.refreshed(now, negotiated)
        elif response.status == 491 or (self.peer_allows_update and response.status in (405, 501)):
            self.peer_allows_update = False  # glare, or no UPDATE after all: retry soon
            timer.refreshed(now - timer.interval / 2 + 2.0)
        else:  # 408/481 ended the call in request(); other errors leave the session up
            timer.refreshed(now)

    def _refreshed_by_peer(self, request: Request) -> list[tuple[str, str]]:
        """A re-INVITE/UPDATE from the peer refreshes the session: the Session-Expires
        headers for our 2xx."""
        settings = self.ua.session_timers
        if settings is None or (self.session_timer is None and not _has_timer(request)):
            return []
        try:
            negotiated = negotiate_uas(request.headers, settings)
        except ParseError:  # also IntervalTooSmall: keep the session as it is
            return []
        if negotiated is None:
            return []
        self._start_session_timer(negotiated)
        return negotiated.response_headers()

    async def _send_ack(self, cseq: int, body: bytes = b"") -> None:
        assert self.dialog is not None
        ack = self.dialog.make_request(
            "ACK", cseq=cseq, body=body, content_type="application/sdp" if body else None
        )
        self._acks = {cseq: ack}
        self.ua.send_stateless(ack, await self._next_hop())

    # -- in-dialog requests we receive ---------------------------------------------------

    async def _on_request(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        assert self.dialog is not None
        try:
            self.dialog.receive_request(request)
        except DialogError as exc:
            incoming.respond(exc.status, str(exc))
            return
        method = request.method
        if method == "BYE":
            incoming.respond(200)
            self._end("remote BYE")
        elif method == "INVITE":
            await self._on_reinvite(incoming)
        elif method == "INFO" and self.on_request is None:
            digit = _dtmf_from_info(request)
            if digit is not None:
                if self.on_dtmf:
                    self.on_dtmf.emit(digit)
                elif not self.dtmf.full():
                    self.dtmf.put_nowait(digit)
            incoming.respond(200)
        elif method == "REFER" and self.on_refer is not None:
            result = self.on_refer(self, incoming)
            if result is not None:
                await result
        elif self.on_request is not None:
            result = self.on_request(self, incoming)
            if result is not None:
                await result
        elif method == "UPDATE":
            incoming.respond(200, headers=self._refreshed_by_peer(request) or None)
        elif method in ("NOTIFY", "OPTIONS", "MESSAGE"):
            incoming.respond(200)
        elif method == "REFER":
            incoming.respond(603, "Decline (transfer not accepted)")
        else:
            incoming.respond(501)

    async def _on_reinvite(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        if self._reinvite_pending:
            incoming.respond(491)  # glare (RFC 3261 §14.2)
            return
        answer = self.local_sdp
        if self.on_reinvite is not None:
            try:
                answer = await self.on_reinvite(self, request) or self.local_sdp
            except RequestRefused as exc:
                incoming.respond(exc.status, exc.reason)
                return
        if _is_sdp(request):
            self.remote_sdp = request.body
        assert self.dialog is not None
        response = incoming.respond(
            200,
            body=answer or b"",
            content_type="application/sdp" if answer else None,
            contact=True,
            headers=self._refreshed_by_peer(request) or None,
        )
        self.local_sdp = answer
        self._retransmit_2xx(incoming, response)

    def _retransmit_2xx(self, incoming: IncomingRequest, response: Response) -> None:
        """UAS core: repeat a 2xx to INVITE until its ACK (§13.3.1.4)."""
        if incoming.source[0] != "udp":
            return
        self._awaiting_ack = response.cseq.seq
        self.ua.spawn(self._repeat_2xx(incoming, response))

    async def _repeat_2xx(self, incoming: IncomingRequest, response: Response) -> None:
        timers = self.ua.transactions.timers
        interval, waited = timers.t1, 0.0
        while waited < timers.b and self._awaiting_ack == response.cseq.seq:
            await asyncio.sleep(interval)
            waited += interval
            if self._awaiting_ack != response.cseq.seq:
                return
            incoming.send(response)
            interval = min(2 * interval, timers.t2)
        if self._awaiting_ack == response.cseq.seq:
            log.info("event=no_ack_for_2xx call_id=%s", self.call_id)
            self._awaiting_ack = None
            await self.bye()

    def _on_ack(self, request: Request) -> None:
        if self._awaiting_ack == request.cseq.seq:
            self._awaiting_ack = None
        if _is_sdp(request):
            self.remote_sdp = request.body  # late offer answered in the ACK
        self.acked.set()

    def _on_2xx_repeat(self, response: Response) -> None:
        """A retransmitted 2xx to our INVITE: send the same ACK again."""
        ack = self._acks.get(response.cseq.seq)
        if ack is not None and self.destination is not None:
            self.ua.transport.send(ack, self.destination)

    def _end(self, reason: str) -> None:
        if self.state is CallState.ENDED:
            return
        self.state = CallState.ENDED
        self.end_reason = reason
        self._awaiting_ack = None
        if self._session_task is not None and self._session_task is not asyncio.current_task():
            self._session_task.cancel()
        # the cancelled task keeps its CancelledError, whose traceback holds the timer's
        # frame and so this call: a cycle only the collector would free
        self._session_task = None
        if self.dialog is not None:
            self.ua.calls.pop(self.dialog.id, None)
        self.ua._stray_handlers.pop(self.call_id, None)
        self.ended.set()
        log.debug("event=call_ended call_id=%s reason=%s", self.call_id, reason)
        self.on_end.emit(self)
        # the handlers close over whoever followed this call (the PBX's parties): let
        # go of them, so an ended call is freed when its last user drops it, not by the
        # cycle collector in a pause that grows with the traffic
        self.on_end, self.on_dtmf = Listeners(), Listeners()
        self.on_reinvite = self.on_refer = self.on_request = None

    async def wait_ended(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self.ended.wait(), timeout)


class RequestRefused(Exception):
    """Raised by a handler to refuse an in-dialog request with ``status``."""

    def __init__(self, status: int, reason: str | None = None) -> None:
        super().__init__(f"{status} {reason or ''}")
        self.status = status
        self.reason = reason


class OutgoingCall(Call):
    """A call we place. ``answered`` resolves with the 2xx; errors raise RequestFailed."""

    def __init__(
        self, ua: UserAgent, invite: Request, *, credentials: tuple[str, str] | None = None
    ) -> None:
        super().__init__(ua, invite)
        self.local_sdp = invite.body if _is_sdp(invite) else None
        self.remote_sdp = None
        self.credentials = credentials
        self.answered: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.on_progress: Listeners[Response] = Listeners()  # 1xx responses
        # for an INVITE without SDP: turns the offer in the 2xx into the answer in the ACK
        self.on_offer: Callable[[bytes], bytes] | None = None
        self.last_provisional: Response | None = None
        self._cancel_wanted = False
        self._cancelled = False
        self._auth_tries = 0
        settings = ua.session_timers
        if settings is not None and "Session-Expires" not in invite.headers:
            for name, value in request_headers(settings):
                invite.headers.add(name, value)

    def _end(self, reason: str) -> None:
        super()._end(reason)
        self.on_progress, self.on_offer = Listeners(), None  # closures over this call

    async def start(self, destination: Address | None = None) -> None:
        self.destination = destination or await self.ua.destination_of(self.invite)
        self.ua._stray_handlers[self.call_id] = self._on_stray
        self._send_invite()

    def _send_invite(self) -> None:
        assert self.destination is not None
        self.ua.send_request(self.invite, self.destination, self._on_response)

    def _on_stray(self, response: Response) -> None:
        if 200 <= response.status < 300 and response.cseq.method == "INVITE":
            self._on_2xx(response)

    def _on_response(self, response: Response) -> None:
        status = response.status
        if status < 200:
            self._on_provisional(response)
        elif status < 300:
            self._on_2xx(response)
        elif status in (401, 407) and self.credentials and self._auth_tries < 2:
            self._auth_tries += 1
            self._retry_with_auth(response)
        else:
            if not self.answered.done():
                from .ua import RequestFailed

                self.answered.set_exception(RequestFailed(response))
                self.answered.exception()  # retrieved: a caller may never await it
            self._end("cancelled" if self._cancelled else f"{status} {response.reason}")

    def _retry_with_auth(self, response: Response) -> None:
        from .auth import DigestClient, parse_challenge

        header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        value = response.headers.get(header)
        if value is None or self.credentials is None:
            return
        try:
            challenge = parse_challenge(value)
        except ParseError:
            return
        self.invite = self.ua._reauthorised(
            self.invite, response.status, challenge, DigestClient(*self.credentials)
        )
        self._send_invite()

    def _on_provisional(self, response: Response) -> None:
        self.last_provisional = response
        if response.status > 100 and response.to.tag and self.dialog is None:
            with contextlib.suppress(ParseError):
                self.dialog = Dialog.from_uac(self.invite, response)
        if response.status > 100 and self.state is CallState.CALLING:
            self.state = CallState.EARLY
        if _is_sdp(response):
            self.remote_sdp = response.body  # early media
        if self._cancel_wanted and not self._cancelled:
            self.ua.spawn(self._send_cancel())
        self.on_progress.emit(response)

    def _on_2xx(self, response: Response) -> None:
        tag = response.to.tag
        if self.state is CallState.ESTABLISHED and self.dialog is not None:
            if tag == self.dialog.remote_tag:
                self._on_2xx_repeat(response)
            else:
                self.ua.spawn(self._drop_fork(response))
            return
        if self.state is CallState.ENDED:
            self.ua.spawn(self._drop_fork(response))  # answered after we gave up
            return
        try:
            self.dialog = Dialog.from_uac(self.invite, response)
        except ParseError as exc:
            log.info("event=bad_2xx call_id=%s error=%s", self.call_id, exc)
            return
        self.state = CallState.ESTABLISHED
        self.ua.calls[self.dialog.id] = self
        if _is_sdp(response):
            self.remote_sdp = response.body
        self.peer_allows_update = self._allows_update(response)
        if self.ua.session_timers is not None:
            try:
                self._start_session_timer(negotiate_uac(response.headers))
            except ParseError as exc:
                log.info("event=bad_session_expires call_id=%s error=%s", self.call_id, exc)
        answer = b""
        if self.local_sdp is None and self.on_offer is not None and self.remote_sdp:
            # we sent no offer: the 2xx carries one, and the ACK our answer (RFC 3264)
            answer = self.on_offer(self.remote_sdp)
            self.local_sdp = answer
        self.ua.spawn(self._send_ack(self.invite.cseq.seq, answer))
        if not self.answered.done():
            self.answered.set_result(response)
        if self._cancel_wanted:
            self.ua.spawn(self.bye())  # CANCEL crossed the 2xx: end with BYE

    async def _drop_fork(self, response: Response) -> None:
        """ACK and BYE an extra 2xx from another fork (§13.2.2.4)."""
        try:
            dialog = Dialog.from_uac(self.invite, response)
        except ParseError:
            return
        destination = await self.ua.resolve(dialog.next_hop())
        self.ua.send_stateless(dialog.make_request("ACK", cseq=self.invite.cseq.seq), destination)
        await self.ua.send(dialog.make_request("BYE"), destination)

    async def cancel(self) -> None:
        """CANCEL a call not answered yet (sent once a provisional response arrived)."""
        if self.state not in (CallState.CALLING, CallState.EARLY) or self._cancel_wanted:
            return
        self._cancel_wanted = True
        if self.last_provisional is not None:
            await self._send_cancel()

    async def _send_cancel(self) -> None:
        if self._cancelled or self.state is CallState.ENDED:
            return
        self._cancelled = True
        invite = self.invite
        cancel = Request("CANCEL", invite.uri.copy(), invite.headers.copy())
        for name in ("Content-Type", "Contact", "Authorization", "Proxy-Authorization"):
            cancel.headers.remove(name)
        cancel.headers.set("CSeq", f"{invite.cseq.seq} CANCEL")
        cancel.headers.set("To", invite.headers.get("To"))
        assert self.destination is not None
        tx = self.ua.transactions
        # CANCEL reuses the INVITE's Via (same branch): send without re-stamping it
        ctx, actions = tx.send_request(cancel, self.destination, self.ua.now())
        self.ua._client_handlers[ctx] = lambda r: None
        self.ua._execute(actions)

    async def hangup(self) -> None:
        if self.state in (CallState.CALLING, CallState.EARLY):
            await self.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(self.ended.wait()), 5.0)
            except TimeoutError:
                self._end("cancel timed out")
        else:
            await self.bye()

    async def wait_answer(self, timeout: float | None = None) -> Response:
        """The 2xx; raises :class:`RequestFailed` for an error final response."""
        try:
            return await asyncio.wait_for(asyncio.shield(self.answered), timeout)
        except TimeoutError:
            await self.cancel()
            raise


class IncomingCall(Call):
    """A call offered to us: :meth:`ring`, then :meth:`answer` or :meth:`reject`."""

    def __init__(self, ua: UserAgent, incoming: IncomingRequest) -> None:
        super().__init__(ua, incoming.request)
        contacts = incoming.request.contact
        if not contacts or contacts[0].star:
            raise ParseError("INVITE without a Contact")
        if incoming.request.from_.tag is None:
            raise ParseError("INVITE without a From tag")
        self.incoming = incoming
        self.to_tag = new_tag()
        self.destination = incoming.source
        self.cancelled = asyncio.Event()
        ua.ringing[incoming.transaction] = self
        self._timer: Negotiated | None = None
        self._timer_checked = False

    @property
    def caller(self) -> NameAddr:
        return self.invite.from_

    def _dialog(self) -> Dialog:
        if self.dialog is None:
            sips = self.invite.uri.scheme == "sips"
            contact = self.ua.contact_uri(self.incoming.source, self.invite.uri.user, sips=sips)
            self.dialog = Dialog.from_uas(self.invite, self.to_tag, contact)
        return self.dialog

    def _provisional_or_final(
        self,
        status: int,
        reason: str | None,
        sdp: bytes | None,
        headers: list[tuple[str, str]] | None,
    ) -> Response:
        self._dialog()
        return self.incoming.respond(
            status,
            reason,
            to_tag=self.to_tag,
            body=sdp or b"",
            content_type="application/sdp" if sdp else None,
            contact=True,
            headers=headers,
        )

    def ring(
        self, sdp: bytes | None = None, *, headers: list[tuple[str, str]] | None = None
    ) -> None:
        """180 Ringing, or 183 Session Progress with early-media ``sdp``."""
        if self.state not in (CallState.CALLING, CallState.EARLY):
            return
        self._provisional_or_final(183 if sdp else 180, None, sdp, headers)
        if sdp:
            self.local_sdp = sdp
        self.state = CallState.EARLY

    def check_session_timer(self) -> bool:
        """Negotiate the RFC 4028 session timer (``ua.session_timers``) before anything
        rings: False when the INVITE was refused (422 with our Min-SE, or 400)."""
        self._timer_checked = True
        settings = self.ua.session_timers
        if settings is None:
            return True
        try:
            self._timer = negotiate_uas(self.invite.headers, settings)
        except IntervalTooSmall as exc:
            log.info("event=session_interval_too_small call_id=%s %s", self.call_id, exc)
            self.reject(422, headers=exc.headers())
            return False
        except ParseError as exc:
            self.reject(400, f"Bad Request ({exc})")
            return False
        return True

    def answer(
        self, sdp: bytes | None = None, *, headers: list[tuple[str, str]] | None = None
    ) -> None:
        """200 OK with ``sdp``; retransmitted until the ACK arrives."""
        if self.state not in (CallState.CALLING, CallState.EARLY):
            raise ParseError(f"cannot answer a call that is {self.state.value}")
        self.ua.ringing.pop(self.incoming.transaction, None)
        if not self._timer_checked and self.ua.session_timers is not None:
            with contextlib.suppress(ParseError):  # answered without a timer then
                self._timer = negotiate_uas(self.invite.headers, self.ua.session_timers)
        if self._timer is not None:
            headers = [*(headers or []), *self._timer.response_headers()]
        self.peer_allows_update = self._allows_update(self.invite)
        response = self._provisional_or_final(200, None, sdp, headers)
        self.local_sdp = sdp
        dialog = self._dialog()
        dialog.state = DialogState.CONFIRMED
        self.state = CallState.ESTABLISHED
        self.ua.calls[dialog.id] = self
        self._retransmit_2xx(self.incoming, response)
        self._start_session_timer(self._timer)

    def reject(
        self,
        status: int = 486,
        reason: str | None = None,
        *,
        headers: list[tuple[str, str]] | None = None,
        stateless: bool = False,
    ) -> None:
        """Refuse the call with ``status``. ``stateless`` answers once and keeps nothing
        (:meth:`IncomingRequest.respond_stateless`): for a call that never was one, such
        as a digest challenge; its end is logged at debug level only. A call that rang
        already has a dialog at the caller: it is refused statefully."""
        if self.state not in (CallState.CALLING, CallState.EARLY):
            return
        self.ua.ringing.pop(self.incoming.transaction, None)
        stateless = stateless and self.state is CallState.CALLING
        if stateless:
            self.incoming.respond_stateless(status, reason, headers=headers)
        else:
            self.incoming.respond(status, reason, to_tag=self.to_tag, headers=headers)
        self._end(f"rejected {status}")

    async def hangup(self) -> None:
        if self.state in (CallState.CALLING, CallState.EARLY):
            self.reject(480)
        else:
            await self.bye()

    def _end(self, reason: str) -> None:
        self.ua.ringing.pop(self.incoming.transaction, None)
        super()._end(reason)

    def _on_cancel(self) -> None:
        if self.state not in (CallState.CALLING, CallState.EARLY):
            return
        self.ua.ringing.pop(self.incoming.transaction, None)
        self.incoming.respond(487, to_tag=self.to_tag)
        self.cancelled.set()
        self._end("cancelled by caller")


def _is_sdp(message: Request | Response) -> bool:
    return bool(message.body) and message.content_type == "application/sdp"


def _has_timer(request: Request) -> bool:
    return "Session-Expires" in request.headers


def _dtmf_from_info(request: Request) -> str | None:
    kind = request.content_type
    text = request.body.decode("ascii", "replace")
    if kind == "application/dtmf-relay":
        m = _DTMF_RELAY.search(text)
        if m is None:
            return None
        signal = m.group(1).upper()
        return _EVENT_DIGITS[int(signal)] if signal.isdigit() and len(signal) == 2 else signal
    if kind == "application/dtmf":
        signal = text.strip().upper()
        if signal.isdigit() and int(signal) < 16:
            return _EVENT_DIGITS[int(signal)]
        return signal if signal in _EVENT_DIGITS else None
    return None


__all__ = ["Call", "CallState", "IncomingCall", "OutgoingCall", "RequestRefused", "make_response"]
