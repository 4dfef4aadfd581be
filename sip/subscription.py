"""SUBSCRIBE/NOTIFY primitives (RFC 6665), both sides, for presence, BLF and MWI.

:class:`Subscription` is ours (we subscribe, NOTIFYs arrive in ``notifications``);
:class:`ServerSubscription` is the peer's (we accept a SUBSCRIBE, then :meth:`notify`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .dialog import Dialog, DialogError, new_tag
from .errors import ParseError
from .headers import NameAddr, parse_params
from .message import Request, Response
from .transaction import Address
from .uri import URI, parse_uri

if TYPE_CHECKING:
    from .ua import IncomingRequest, UserAgent

log = logging.getLogger(__name__)
MAX_QUEUED_NOTIFY = 64


def subscription_state(request: Request) -> tuple[str, dict[str, str | None]]:
    """``("active", {"expires": "3600"})`` from a NOTIFY's Subscription-State."""
    value = request.headers.get("Subscription-State") or "active"
    state, _, rest = value.partition(";")
    return state.strip().lower(), parse_params(";" + rest if rest else "", 0, "Subscription-State")


def event_package(request: Request) -> str:
    return (request.headers.get("Event") or "").split(";", 1)[0].strip().lower()


class Subscription:
    """A subscription we hold: refreshed before it expires, removed on :meth:`close`."""

    def __init__(
        self,
        ua: UserAgent,
        uri: URI | str,
        event: str,
        *,
        expires: int = 3600,
        accept: str | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.ua = ua
        self.uri = parse_uri(uri) if isinstance(uri, str) else uri
        self.event = event
        self.expires = expires
        self.accept = accept
        self.credentials = credentials
        self.dialog: Dialog | None = None
        self.state = "init"
        self.notifications: asyncio.Queue[Request] = asyncio.Queue(MAX_QUEUED_NOTIFY)
        self.destination: Address | None = None
        self._request: Request | None = None
        self._task: asyncio.Task[None] | None = None

    def _headers(self, expires: int) -> list[tuple[str, str]]:
        headers = [("Event", self.event), ("Expires", str(expires))]
        if self.accept:
            headers.append(("Accept", self.accept))
        return headers

    async def start(self) -> None:
        request = self.ua.new_request("SUBSCRIBE", self.uri, headers=self._headers(self.expires))
        self._request = request
        self.destination = await self.ua.destination_of(request)
        self.ua.pending_subscriptions.append(self)
        try:
            response = await self.ua.send(request, self.destination, credentials=self.credentials)
        finally:
            self.ua.pending_subscriptions.remove(self)
        if not 200 <= response.status < 300:
            from .ua import RequestFailed

            raise RequestFailed(response)
        if self.dialog is None:  # a NOTIFY may have created it already
            self._bind(Dialog.from_uac(request, response))
        if self.state == "init":
            self.state = "pending" if response.status == 202 else "active"
        granted = response.expires if response.expires is not None else self.expires
        self._task = self.ua.spawn(self._refresh(granted))

    def _bind(self, dialog: Dialog) -> None:
        self.dialog = dialog
        self.ua.subscriptions[dialog.id] = self

    def matches_notify(self, request: Request) -> bool:
        """A NOTIFY for us that arrived before the SUBSCRIBE's 2xx (RFC 6665 §4.1.2.4)."""
        return (
            self.dialog is None
            and self._request is not None
            and request.call_id == self._request.call_id
            and request.to.tag == self._request.from_.tag
            and event_package(request) == self.event.split(";")[0].lower()
        )

    async def _on_request(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        if request.method != "NOTIFY":
            incoming.respond(501)
            return
        if self.dialog is None:
            assert self._request is not None
            try:
                dialog = Dialog.from_uas(
                    request,
                    self._request.from_.tag or new_tag(),
                    self.ua.contact_uri(incoming.source),
                )
            except ParseError as exc:
                incoming.respond(400, str(exc))
                return
            dialog.local_seq = self._request.cseq.seq
            self._bind(dialog)
        else:
            try:
                self.dialog.receive_request(request)
            except DialogError as exc:
                incoming.respond(exc.status, str(exc))
                return
        incoming.respond(200)
        state, _ = subscription_state(request)
        self.state = state
        if not self.notifications.full():
            self.notifications.put_nowait(request)
        if state == "terminated":
            self._finish()

    async def _refresh(self, granted: int) -> None:
        while self.state != "terminated":
            await asyncio.sleep(max(1.0, granted * 0.8 if granted > 60 else granted - 5))
            if self.dialog is None:
                return
            request = self.dialog.make_request("SUBSCRIBE", headers=self._headers(self.expires))
            response = await self.ua.send(
                request, await self._next_hop(), credentials=self.credentials
            )
            if not 200 <= response.status < 300:
                log.info("event=subscription_refresh_failed status=%d", response.status)
                self._finish()
                return
            granted = response.expires if response.expires is not None else self.expires

    async def _next_hop(self) -> Address:
        assert self.dialog is not None
        return await self.ua.next_hop(self.dialog, self.destination)

    def _finish(self) -> None:
        self.state = "terminated"
        if self.dialog is not None:
            self.ua.subscriptions.pop(self.dialog.id, None)
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        self._task = None  # as Call._end: a cancelled task's traceback would hold us

    async def close(self) -> None:
        """Unsubscribe (Expires: 0)."""
        if self.state == "terminated" or self.dialog is None:
            self._finish()
            return
        request = self.dialog.make_request("SUBSCRIBE", headers=self._headers(0))
        self._finish()
        try:
            await asyncio.wait_for(self.ua.send(request, await self._next_hop()), 5.0)
        except (OSError, TimeoutError) as exc:
            log.info("event=unsubscribe_failed error=%s", exc)


class ServerSubscription:
    """A subscription a peer holds with us; we send NOTIFYs until it ends."""

    def __init__(
        self, ua: UserAgent, incoming: IncomingRequest, dialog: Dialog, expires: int
    ) -> None:
        self.ua = ua
        self.event = event_package(incoming.request)
        self.dialog = dialog
        self.destination: Address = incoming.source
        self.expires_at = ua.now() + expires
        self.state = "active"
        self.on_end: Callable[[ServerSubscription], None] | None = None
        # after a refresh, whose 200 is sent: RFC 6665 §4.2.1.3 wants a NOTIFY now
        self.on_refresh: Callable[[ServerSubscription], None] | None = None
        self.max_expires = expires
        self._expiry: asyncio.TimerHandle | None = None
        self._arm(expires)

    @classmethod
    def accept(
        cls, incoming: IncomingRequest, *, expires: int = 3600, max_expires: int = 3600
    ) -> ServerSubscription:
        """Answer a SUBSCRIBE with 200 and create the subscription's dialog."""
        ua = incoming.ua
        asked = incoming.request.expires
        granted = min(max_expires, asked if asked is not None else expires)
        tag = new_tag()
        dialog = Dialog.from_uas(incoming.request, tag, ua.contact_uri(incoming.source))
        incoming.respond(200, to_tag=tag, contact=True, headers=[("Expires", str(granted))])
        sub = cls(ua, incoming, dialog, granted)
        sub.max_expires = max_expires
        ua.subscriptions[dialog.id] = sub
        return sub

    def _arm(self, seconds: int) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(seconds, self._expired)

    def _expired(self) -> None:
        self.ua.spawn(self.notify(b"", None, state="terminated;reason=timeout"))

    async def notify(
        self, body: bytes, content_type: str | None, *, state: str | None = None
    ) -> Response | None:
        """Send a NOTIFY (``state`` defaults to active with the time left)."""
        if self.state == "terminated":
            return None
        if state is None:
            left = max(0, int(self.expires_at - self.ua.now()))
            state = f"active;expires={left}"
        if state.startswith("terminated"):
            self._end()
        request = self.dialog.make_request(
            "NOTIFY",
            body=body,
            content_type=content_type,
            headers=[("Event", self.event), ("Subscription-State", state)],
        )
        response = await self.ua.send(request, self.destination)
        if response.status in (408, 481):
            self._end()
        return response

    async def _on_request(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        if request.method != "SUBSCRIBE":
            incoming.respond(501)
            return
        try:
            self.dialog.receive_request(request)
        except DialogError as exc:
            incoming.respond(exc.status, str(exc))
            return
        asked = request.expires if request.expires is not None else 3600
        asked = min(asked, self.max_expires)
        incoming.respond(200, headers=[("Expires", str(asked))], contact=True)
        self.destination = incoming.source
        if asked == 0:
            await self.notify(b"", None, state="terminated;reason=timeout")
        else:
            self.expires_at = self.ua.now() + asked
            self._arm(asked)
            if self.on_refresh is not None:
                self.on_refresh(self)

    def _end(self) -> None:
        self.state = "terminated"
        if self._expiry is not None:
            self._expiry.cancel()
        self.ua.subscriptions.pop(self.dialog.id, None)
        if self.on_end is not None:
            self.on_end(self)

    async def close(self) -> None:
        await self.notify(b"", None, state="terminated;reason=noresource")


__all__ = ["NameAddr", "ServerSubscription", "Subscription", "event_package", "subscription_state"]
