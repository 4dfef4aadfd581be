"""RFC 3261 §12 dialogs as pure values: identity, sequence numbers, route set, target.

A dialog builds its in-dialog requests (:meth:`Dialog.make_request`) and checks and
absorbs the peer's (:meth:`Dialog.receive_request`); target refresh (re-INVITE, UPDATE)
updates the remote target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from . import entropy
from .errors import ParseError
from .headers import Headers, NameAddr
from .message import Request, Response
from .transaction import new_branch
from .uri import URI

TARGET_REFRESH = frozenset(("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"))


def new_tag() -> str:
    return entropy.token_hex(6)


def new_call_id(host: str) -> str:
    return f"{entropy.token_hex(12)}@{host}"


def _untagged(address: NameAddr) -> NameAddr:
    copy = address.copy()
    copy.params.pop("tag", None)
    return copy


class DialogState(Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DialogError(ParseError):
    """An in-dialog request that must be refused; ``status`` says how (500, 481...)."""


@dataclass(eq=False)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: NameAddr  # our From (UAC) / To (UAS) without tag
    remote_uri: NameAddr
    remote_target: URI
    route_set: list[NameAddr] = field(default_factory=list)
    local_seq: int = 0
    remote_seq: int | None = None
    secure: bool = False
    state: DialogState = DialogState.EARLY
    local_contact: URI | None = None

    @property
    def id(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    # -- creation ------------------------------------------------------------------------

    @classmethod
    def from_uac(cls, request: Request, response: Response) -> Dialog:
        """The UAC's dialog from a 1xx (early) or 2xx (confirmed) with a To tag (§12.1.2)."""
        remote_tag = response.to.tag
        local_tag = request.from_.tag
        if not remote_tag or not local_tag:
            raise ParseError("a dialog needs tags on both From and To")
        contacts = response.contact
        if not contacts or contacts[0].star:
            raise ParseError("dialog-creating response without a Contact")
        return cls(
            request.call_id,
            local_tag,
            remote_tag,
            _untagged(request.from_),
            _untagged(request.to),
            contacts[0].uri.copy(),
            [r.copy() for r in reversed(response.record_route)],
            local_seq=request.cseq.seq,
            secure=request.uri.scheme == "sips",
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
            local_contact=request.contact[0].uri.copy() if "Contact" in request.headers else None,
        )

    @classmethod
    def from_uas(cls, request: Request, local_tag: str, local_contact: URI) -> Dialog:
        """The UAS's dialog for a request it answers with a tagged response (§12.1.1)."""
        remote_tag = request.from_.tag
        if not remote_tag:
            raise ParseError("request without a From tag cannot create a dialog")
        contacts = request.contact
        if not contacts or contacts[0].star:
            raise ParseError("dialog-creating request without a Contact")
        return cls(
            request.call_id,
            local_tag,
            remote_tag,
            _untagged(request.to),
            _untagged(request.from_),
            contacts[0].uri.copy(),
            [r.copy() for r in request.record_route],
            local_seq=entropy.randbits(16) + 1,
            remote_seq=request.cseq.seq,
            secure=request.uri.scheme == "sips",
            local_contact=local_contact,
        )

    def matches(self, message: Request | Response, *, incoming: bool = True) -> bool:
        """Whether ``message`` belongs to this dialog (tags swap with direction)."""
        if message.call_id != self.call_id:
            return False
        if isinstance(message, Request) and incoming:
            return message.to.tag == self.local_tag and message.from_.tag == self.remote_tag
        return message.from_.tag == self.local_tag and message.to.tag == self.remote_tag

    # -- requests ------------------------------------------------------------------------

    def make_request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        via: str | None = None,
        cseq: int | None = None,
    ) -> Request:
        """An in-dialog request (§12.2.1.1). ACK and CANCEL reuse the INVITE's CSeq via
        ``cseq``; other methods take the next local sequence number."""
        if method in ("ACK", "CANCEL"):
            if cseq is None:
                raise ValueError(f"{method} needs the CSeq of its INVITE")
            seq = cseq
        else:
            self.local_seq += 1
            seq = self.local_seq
        routes = list(self.route_set)
        target = self.remote_target
        if routes and "lr" not in routes[0].uri.params:
            # strict router (RFC 2543): it goes in the Request-URI, the target last in Route
            target = routes[0].uri.copy(headers={})
            routes = [*routes[1:], NameAddr(self.remote_target.copy())]
        h = Headers()
        h.add("Via", via if via is not None else f"SIP/2.0/UDP 0.0.0.0;branch={new_branch()}")
        h.add("Max-Forwards", "70")
        local = self.local_uri.copy()
        local.params["tag"] = self.local_tag
        remote = self.remote_uri.copy()
        remote.params["tag"] = self.remote_tag
        h.add("From", local)
        h.add("To", remote)
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{seq} {method}")
        for route in routes:
            h.add("Route", route)
        if self.local_contact is not None and method in TARGET_REFRESH:
            h.add("Contact", NameAddr(self.local_contact))
        for name, value in headers or ():
            h.add(name, value)
        if content_type is not None:
            h.add("Content-Type", content_type)
        return Request(method, target.copy(), h, body)

    def receive_request(self, request: Request) -> None:
        """Check and absorb an in-dialog request (§12.2.2); raises :class:`DialogError`."""
        if request.method in ("ACK", "CANCEL"):
            return
        seq = request.cseq.seq
        if self.remote_seq is not None and seq <= self.remote_seq:
            raise DialogError(f"CSeq {seq} not above {self.remote_seq}", status=500)
        self.remote_seq = seq
        if request.method in TARGET_REFRESH and "Contact" in request.headers:
            contacts = request.contact
            if contacts and not contacts[0].star:
                self.remote_target = contacts[0].uri.copy()

    def receive_response(self, response: Response) -> None:
        """A 2xx to a target refresh updates the remote target; 2xx confirms the dialog."""
        if 200 <= response.status < 300:
            if self.state is DialogState.EARLY and response.cseq.method == "INVITE":
                self.state = DialogState.CONFIRMED
            if response.cseq.method in TARGET_REFRESH and "Contact" in response.headers:
                contacts = response.contact
                if contacts and not contacts[0].star:
                    self.remote_target = contacts[0].uri.copy()

    def next_hop(self) -> URI:
        """Where in-dialog requests go: the first route, else the remote target."""
        return self.route_set[0].uri if self.route_set else self.remote_target
