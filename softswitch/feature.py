"""The plugin seam: what a feature module is, and the values that cross the seam.

A feature (ring groups, voicemail, the conference, call flip, ...) is a class built from
the configuration alone, so that ``softswitch check`` can ask it which numbers it answers
and which destinations it names before anything starts. At start it receives a narrow
:class:`~softswitch.services.Services` object, never the PBX. Everything a feature offers
is a table: numbers it answers, destination kinds it resolves (``voicemail:100``),
endpoints it can ring (``tel``), in-call key codes, SUBSCRIBE event packages, in-dialog
request handlers and call-event listeners. Tables from every feature are merged by
:mod:`softswitch.plugins`; a number or code claimed twice is a configuration error naming
both features. This follows FreeSWITCH applications/endpoints, Asterisk ``app_*`` modules
and Kamailio module exports.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import sip
from sip.transaction import Address

from .config import Config, User

if TYPE_CHECKING:
    from .calls import Party
    from .registrar import Binding
    from .services import Services


# -- what happens to a call ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dial:
    """One entry of a call into the dialplan (a new call, a forward, a transfer...)."""

    party: Party  # the caller's side: an incoming call or an established party
    target: str  # what is dialled: a number, or the argument of a destination kind
    caller: User | None  # the authenticated user who placed the call (None: external)
    # whose outbound permission an external leg uses (a forwarding user, a ring group)
    on_behalf: User | None = None
    depth: int = 0  # how many times this call was sent on (forwarding loops stop)
    via: tuple[str, ...] = ()  # the destinations it went through, oldest first
    called: str = ""  # the number the caller dialled (a DID from the trunk, an extension)

    def next(self, target: str, *, on_behalf: User | None = None, via: str = "") -> Dial:
        """The same call sent on to ``target`` (one level deeper)."""
        return replace(
            self,
            target=target,
            on_behalf=on_behalf if on_behalf is not None else self.on_behalf,
            depth=self.depth + 1,
            via=(*self.via, via) if via else self.via,
        )


@dataclass(frozen=True, slots=True)
class Connected:
    """The caller is bridged to a callee; the bridge now owns both."""


@dataclass(frozen=True, slots=True)
class Done:
    """The call was handled to its end by an application (voicemail, conference...)."""


@dataclass(frozen=True, slots=True)
class Failed:
    """Nothing took the call; ``cause`` is busy, noanswer, unreachable, refused or
    cancelled (the caller hung up). The caller is still the dialplan's to send on."""

    status: int
    cause: str
    reason: str | None = None


Outcome = Connected | Done | Failed
Handler = Callable[[Dial], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class Kind:
    """A destination kind (``voicemail:100``): how to take a call there, and how to
    check a configured value (an error message, or None when it is fine)."""

    handler: Handler
    check: Callable[[str, User | None], str | None] | None = None


# Run on every new call before the dialplan (office-wide blocking...): an Outcome takes
# the call, None lets it through.
CallCheck = Callable[[Dial], Awaitable["Outcome | None"]]
# An in-call code (``*2``) pressed by ``party`` while bridged: True when it was used (the
# keys are consumed), False to relay them to the other party unchanged.
InCallHandler = Callable[["Party", str], bool]
# A SUBSCRIBE for an event package, already authenticated as ``user``.
SubscribeHandler = Callable[[sip.IncomingRequest, str], None]
# A busy lamp a feature lights for one of its numbers (a BLF key on that number): its
# state as the watching user's phone should show it, "confirmed" (lit), "early"
# (blinking) or "terminated" (dark). Features say when it may have changed with the
# ``hint_changed`` call event.
Hint = Callable[[User], str]
# An in-dialog request (REFER...) on ``party``'s call.
InDialogHandler = Callable[["Party", sip.IncomingRequest], Awaitable[None] | None]


# -- ringing ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fork:
    """One INVITE of a ring: where it goes and as whom."""

    uri: sip.URI
    destination: Address | None = None  # None: resolve ``uri``
    to: str | None = None
    from_: sip.NameAddr | None = None
    credentials: tuple[str, str] | None = None
    label: str = ""
    user: User | None = None  # the user this fork reaches (its party's user)
    device: str | None = None  # the device name, for call flip
    codecs: list[str] | None = None  # the callee's codec preference (softswitch.codec_policy)
    headers: tuple[tuple[str, str], ...] = ()  # extra INVITE headers (intercom auto-answer)
    encryption: str | None = None  # the callee's SRTP policy; None: its user's or the server's


@dataclass(frozen=True, slots=True)
class Target:
    """What a ring step rings: ``kind`` is an endpoint (``user``: every device of an
    extension; ``device``: one device of a user; ``tel``: an external number)."""

    kind: str
    value: str
    permission: str = "internal"  # for external numbers: the outbound permission
    caller_id: str | None = None  # the number shown on external legs
    device: str | None = None  # for kind "device": the device name
    # (name, number) of what the caller dialled (a group, a receptionist, a DID): shown
    # instead of the caller to users whose caller_id_display is "dialled"
    shown: tuple[str, str] | None = None


class Endpoint(Protocol):
    """Turns a target into the INVITEs that ring it (empty: nothing to ring)."""

    async def forks(self, target: Target, caller: Party) -> list[Fork]: ...


# -- events -------------------------------------------------------------------------------


class CallListener:
    """Call events, each a no-op here: a feature overrides what it follows. Any number of
    listeners hear every event."""

    def trying(self, party: Party) -> None:
        """``party``'s INVITE is on its way: a call from a phone arrived, or a fork of a
        ring was sent to a device (its dialog state is "trying", RFC 4235)."""

    def ringing(self, party: Party) -> None:
        """``party`` (a callee's leg) is ringing."""

    def answered(self, party: Party) -> None:
        """``party`` answered (a callee) or was answered by us (a caller)."""

    def bridged(self, a: Party, b: Party) -> None:
        """``a`` and ``b`` hear each other."""

    def held(self, party: Party, holding: bool) -> None:
        """``party`` put its peer on hold (``holding``) or resumed."""

    def ended(self, party: Party) -> None:
        """``party``'s call ended."""

    def registered(self, binding: Binding) -> None:
        """A device registered a new contact."""

    def unregistered(self, binding: Binding) -> None:
        """A contact was removed (unregistered, expired, unreachable)."""

    def voicemail_left(self, mailbox: str, message_id: str) -> None:
        """A caller left message ``message_id`` in ``mailbox``."""

    def routed(self, dial: Dial, kind: str) -> None:
        """The dialplan sends ``dial.party``'s call to ``dial.target``: ``kind`` is
        ``number`` (an extension, a group, a feature code) or the destination kind
        (``voicemail``, ``tel``, ``announce``, ``hangup``...). A forward, a group's
        exhaustion or a transfer is one more ``routed`` of the same party."""

    def queued(
        self, party: Party, queue: str, outcome: str, waited: float, agent: str | None
    ) -> None:
        """``party`` left call queue ``queue`` after ``waited`` seconds: ``answered`` (by
        ``agent``), ``abandoned``, ``timeout``, ``overflow`` (refused on joining) or
        ``message`` (pressed the key to leave one)."""

    def hint_changed(self, number: str) -> None:
        """The busy lamp a feature lights for ``number`` may have changed (``hints``)."""

    def finished(self, party: Party, outcome: Outcome) -> None:
        """The dialplan is done with ``party``'s call: it was connected, handled by an
        application (voicemail, a menu...), or failed (busy, no answer, refused...)."""


# -- the feature contract -----------------------------------------------------------------


class Feature(Protocol):
    """What every feature module implements. Features subclass :class:`BaseFeature`
    (empty tables by default) and are built as ``Feature(config)``; ``section`` and
    ``config_model`` name the TOML table a feature owns and the type that validates it
    (the validated value is ``config.section(section)``)."""

    name: ClassVar[str]
    section: ClassVar[str | None]
    config_model: ClassVar[Any]

    def numbers(self) -> Mapping[str, Handler]: ...

    def destination_kinds(self) -> Mapping[str, Kind]: ...

    def endpoints(self) -> Mapping[str, Endpoint]: ...

    def in_call_codes(self) -> Mapping[str, InCallHandler]: ...

    def event_packages(self) -> Mapping[str, SubscribeHandler]: ...

    def in_dialog(self) -> Mapping[str, InDialogHandler]: ...

    def hints(self) -> Mapping[str, Hint]: ...

    def listeners(self) -> Iterable[CallListener]: ...

    def call_checks(self) -> Iterable[CallCheck]: ...

    def warnings(self) -> Iterable[str]: ...

    def destinations(self) -> Iterable[tuple[str, str, User | None]]: ...
    def describe(self, number: str) -> str | None: ...

    async def start(self, svc: Services) -> None: ...

    async def stop(self) -> None: ...

    async def resume(self, old: Any, svc: Services) -> None: ...


@dataclass
class BaseFeature:
    """Empty tables and no-op life cycle: subclass and fill in what the feature offers."""

    config: Config
    svc: Services | None = field(default=None, init=False)

    name: ClassVar[str] = "feature"
    section: ClassVar[str | None] = None
    config_model: ClassVar[Any] = None
    # what start() builds and a new configuration keeps (open stores, subscriptions,
    # conference rooms): moved to the feature built from the new configuration by resume()
    state: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        """Build what the feature needs from ``self.config`` (no I/O); a ValueError
        naming the key at fault is reported as a configuration error."""

    @property
    def services(self) -> Services:
        if self.svc is None:
            raise RuntimeError(f"feature {self.name} is not started")
        return self.svc

    def settings(self) -> Any:
        return self.config.section(self.section) if self.section else None

    def numbers(self) -> Mapping[str, Handler]:
        return {}

    def destination_kinds(self) -> Mapping[str, Kind]:
        return {}

    def endpoints(self) -> Mapping[str, Endpoint]:
        return {}

    def in_call_codes(self) -> Mapping[str, InCallHandler]:
        return {}

    def event_packages(self) -> Mapping[str, SubscribeHandler]:
        return {}

    def in_dialog(self) -> Mapping[str, InDialogHandler]:
        return {}

    def hints(self) -> Mapping[str, Hint]:
        """Busy lamps of this feature's numbers (``*45``: lit while the agent is logged
        in), shown to BLF keys by the presence feature."""
        return {}

    def listeners(self) -> Iterable[CallListener]:
        return ()

    def call_checks(self) -> Iterable[CallCheck]:
        return ()

    def warnings(self) -> Iterable[str]:
        """What ``softswitch check`` should point out without refusing the configuration
        (rules that can match the same call, ...)."""
        return ()

    def destinations(self) -> Iterable[tuple[str, str, User | None]]:
        """Every destination this feature's settings name, as (key path, destination,
        the user it is relative to): checked when the dialplan is built."""
        return ()

    def describe(self, number: str) -> str | None:
        """What one of this feature's numbers does, for the banner (None: the banner's
        own words)."""
        return None

    async def start(self, svc: Services) -> None:
        self.svc = svc

    async def stop(self) -> None:
        return None

    async def resume(self, old: Any, svc: Services) -> None:
        """Take over from ``old``, this feature built from the previous configuration,
        while calls go on (a configuration applied live): the attributes named in
        ``state`` move over and nothing restarts. A feature whose start() acts on its
        settings (hooks on the services, prompts to render) does that again here."""
        self.svc = svc
        for name in self.state:
            setattr(self, name, getattr(old, name))


# A feature module is loaded by its class: built from the configuration alone.
FeatureType = type[BaseFeature]
