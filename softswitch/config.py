"""The PBX configuration: one TOML file, validated at load with pydantic.

Every error names the file, the key path and what was expected, e.g.
``office.toml: users[1].forward.no_answer_after: Input should be less than or equal to 60``.
Audio files (hold music, greetings) are checked too: present, readable audio, ≤ 5 MB.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from media.audio import AudioFileError, load_audio
from media.codecs import CODECS
from sip.address import TRANSPORTS

from .model import Strict
from .rules import Rule

Permission = Literal["internal", "emergency", "national", "international"]
PERMISSION_RANK = {"internal": 0, "emergency": 1, "national": 2, "international": 3}
Extension = Annotated[str, Field(pattern=r"^[0-9]{2,8}$")]
# Where a call is sent (forwarding, ring-group exhaustion, ...): a number of the dialplan
# (an extension, a ring group, the bridge, a feature code), ``voicemail`` (the user's own)
# or ``voicemail:NNN``, an external number (``tel:+33...`` or a bare number the dialplan
# classifies as external), ``ext:NNN`` (same as NNN) or ``hangup``. The syntax is checked
# here; that the destination exists is checked when the dialplan is built (softswitch.plugins).
DESTINATION_PATTERN = (
    r"^(voicemail(:[0-9]{2,8})?|ext:[0-9]{2,8}|tel:\+?[0-9]{3,20}|hangup|\+?[0-9*#]{2,20})$"
)
Target = Annotated[str, Field(pattern=DESTINATION_PATTERN)]
# What to do with a call (rules, business / after hours): "ring" as usual, a destination
# (forward: "voicemail", "102", "tel:+33..."), or "announce:<text or file>" then hang up.
Handling = Annotated[str, Field(pattern=r"^(ring|announce:.+)$|" + DESTINATION_PATTERN)]
# A blocked caller: a number, a prefix ending in *, "anonymous" or "external" (every
# call that does not come from one of our users).
Blocked = Annotated[str, Field(pattern=r"^(anonymous|external|\+?[0-9]{1,20}\*?)$")]
# What a ring step rings: an extension (all of that user's devices) or an external number.
RingTarget = Annotated[str, Field(pattern=r"^(ext:)?[0-9]{2,8}$|^(tel:)?\+?[0-9]{3,20}$")]
MAX_RING_TARGETS = 10


def _codec_list(names: list[str]) -> list[str]:
    """Codec names as media knows them (PCMU, PCMA, G722, OPUS), each once, best first."""
    out: list[str] = []
    for name in names:
        canonical = name.upper()
        if canonical not in CODECS:
            raise ValueError(f"unknown codec {name!r}: use some of {sorted(CODECS)}")
        if canonical in out:
            raise ValueError(f"codec {name!r} is listed twice")
        out.append(canonical)
    return out


# Codec preference, best first (e.g. ["G722", "PCMU", "PCMA"]); see softswitch.codec_policy.
Codecs = Annotated[list[str], Field(min_length=1, max_length=8), AfterValidator(_codec_list)]


_HOST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")


def listen_entry(spec: str) -> str:
    """``[udp:|tcp:|tls:|ws:|wss:]HOST:PORT`` as :mod:`sip` binds it (no transport: UDP); anything
    else would only fail at start, as an address that "cannot be bound"."""
    head, sep, tail = spec.partition(":")
    rest = tail if sep and head.lower() in TRANSPORTS else spec
    if rest.startswith("["):
        host, sep, port = rest[1:].partition("]:")
    else:
        host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{spec!r}: expected [udp:|tcp:|tls:]HOST:PORT, e.g. 'udp:0.0.0.0:5060'")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        word = host.partition(":")[0]
        if ":" in host and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", word):
            example = f"tcp:{rest[len(word) + 1 :]}"
            raise ValueError(
                f"{spec!r}: unknown transport {word!r} (one of {', '.join(TRANSPORTS)},"
                f" e.g. {example!r})"
            ) from None
        if not _HOST_NAME.match(host):
            raise ValueError(f"{spec!r}: {host!r} is not an IP address or host name") from None
    return spec


ListenEntry = Annotated[str, AfterValidator(listen_entry)]
# SRTP for a user, device, trunk or by default (sip.offer_answer explains the three):
# keys are only ever exchanged over TLS; "required" over anything else refuses the call
Encryption = Literal["off", "optional", "required"]


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names file, key and expectation."""


class Step(Strict):
    """One step of a ring sequence: every target rings together for ``ring_seconds``."""

    targets: list[RingTarget] = Field(min_length=1, max_length=MAX_RING_TARGETS)
    ring_seconds: int = Field(20, ge=5, le=120)


def check_steps(steps: list[Step]) -> list[Step]:
    count = sum(len(step.targets) for step in steps)
    if count > MAX_RING_TARGETS:
        raise ValueError(f"at most {MAX_RING_TARGETS} targets in all steps, not {count}")
    return steps


class Forward(Strict):
    """Where a call goes when the user is busy, does not answer, or has no device.

    ``steps`` ("ring my devices, then these numbers") replaces the single default step
    of the user's own devices for ``no_answer_after`` seconds; the user's own extension in
    a step rings the user's devices there, and when it appears in no step the user's devices
    ring first. The busy/no-answer/unreachable rules apply once the steps are exhausted."""

    busy: Target | None = "voicemail"
    no_answer: Target | None = "voicemail"
    no_answer_after: int = Field(20, ge=10, le=60)
    unreachable: Target | None = "voicemail"
    steps: list[Step] = []
    # said to the caller before the call is forwarded ("please hold while I connect you")
    connecting_message: str | None = Field(None, min_length=1, max_length=1000)
    # an external number that answers must press 1 first ("call for Bob, press 1"), so a
    # mobile's own voicemail never takes a forwarded call; no key: not answered
    confirm_external: bool = False
    # or must type this PIN (then #) before it gets the call
    answer_pin: str | None = Field(None, pattern=r"^[0-9]{4,12}$")

    _steps = field_validator("steps")(check_steps)


class Email(Strict):
    """Voicemail to e-mail (sent through ``[smtp]``)."""

    address: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    attach: bool = True  # the WAV attached, or a notification only
    delete_after: bool = False  # delete the message once the mail is accepted


class Recording(Strict):
    """Call recording for a user: "on_demand" (the ``[recording]`` code, ``*9``, starts and
    stops it during a call), "always", or "off" (the user may not record)."""

    mode: Literal["off", "on_demand", "always"] = "off"
    announce: bool = False  # "this call is being recorded", to both parties


class Greetings(Strict):
    """Voicemail greetings by state (audio files; a user can also record them by phone)."""

    business_hours: Path | None = None
    after_hours: Path | None = None
    temporary: Path | None = None  # until ``temporary_until`` (inclusive), then gone
    temporary_until: date | None = None


class Device(Strict):
    """One of a user's devices: a SIP device with its own credentials (it registers as
    itself and rings as part of its user) or an external number (through the trunk).
    ``flip`` is its call-flip number: ``*N`` during a call moves the call to it."""

    name: str = Field(min_length=1, max_length=32)
    username: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    password: str | None = Field(None, min_length=4, max_length=128)
    number: str | None = Field(None, pattern=r"^\+?[0-9]{3,20}$")
    flip: int | None = Field(None, ge=1, le=8)
    ring_seconds: int = Field(20, ge=5, le=60)
    media_encryption: Encryption | None = None  # this device's; unset: its user's

    @model_validator(mode="after")
    def _kind(self) -> Device:
        if (self.username is None) == (self.number is None):
            raise ValueError("a device has either username (+ password) or number")
        if self.username is not None and self.password is None:
            raise ValueError("a SIP device needs a password")
        return self


class Directory(Strict):
    """How callers of a receptionist may reach this user."""

    by_extension: bool = True  # typing the extension during the greeting
    by_name: bool = True  # dial-by-name


class User(Strict):
    extension: Extension
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=4, max_length=128)
    pin: str = Field(pattern=r"^[0-9]{4,12}$")
    permission: Permission = "national"
    caller_id: str | None = Field(None, pattern=r"^\+?[0-9]{3,20}$")
    hide_caller_id: bool = False
    dnd: Literal["off", "no_queue", "all"] = "off"
    hold_music: str = "default"
    greeting: Path | None = None
    voicemail: bool = True
    forward: Forward = Forward()
    devices: list[Device] = Field([], max_length=8)
    directory: Directory = Directory()
    name_recording: Path | None = None  # the user's own name, said by dial-by-name
    rules: list[Rule] = []  # custom rules: first match wins, before the hours
    in_hours: Handling = "ring"  # during [business_hours]
    after_hours: Handling = "ring"  # outside them
    blocked: list[Blocked] = []  # callers who hear the blocking message; nothing rings
    screening: Literal["off", "unknown", "all"] = "off"  # callers say their name first
    email: Email | None = None
    # "user": rings its devices; "virtual": has none (straight to its forwarding and
    # voicemail); "message_only": always voicemail, with its own greeting
    kind: Literal["user", "virtual", "message_only"] = "user"
    recording: Recording = Recording()
    greetings: Greetings = Greetings()
    # what the phone shows for a call that came through a group, a receptionist or a DID:
    # the caller, or the number that was dialled
    caller_id_display: Literal["caller", "dialled"] = "caller"
    conference_host_code: str | None = Field(None, pattern=r"^[0-9]{4,10}$")
    conference_code: str | None = Field(None, pattern=r"^[0-9]{4,10}$")
    # this user's conference; unset: the [conference] defaults
    conference_join_before_host: bool | None = None
    conference_end_with_host: bool | None = None
    codecs: Codecs | None = None  # this user's phones; unset: server.codecs
    # per device: a User-Agent substring -> codecs (e.g. {"VVX" = ["G722", "PCMU"]})
    device_codecs: dict[str, Codecs] = {}
    media_encryption: Encryption | None = None  # SRTP for this user's phones; unset: server's

    @model_validator(mode="after")
    def _flips(self) -> User:
        flips = [d.flip for d in self.devices if d.flip is not None]
        if len(flips) != len(set(flips)):
            raise ValueError("two devices have the same flip number")
        return self

    def device(self, username: str) -> Device | None:
        return next((d for d in self.devices if d.username == username), None)


class Trunk(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    proxy: str = Field(pattern=r"^sips?:")  # where requests go, e.g. sip:sip.provider.net:5060
    username: str | None = None
    password: str | None = None
    registers: bool = Field(False, alias="register")  # REGISTER with the provider
    register_expires: int = Field(600, ge=60, le=3600)
    from_domain: str | None = None
    addresses: list[str] = []  # source IPs whose requests are the trunk's (inbound)
    inbound_extension: Extension | None = None  # where calls from the trunk ring
    codecs: Codecs | None = None  # e.g. ["PCMA", "PCMU"]; unset: server.codecs
    media_encryption: Encryption | None = None  # SRTP with the provider; unset: server's
    # requests from the trunk's addresses must come over TLS with a client certificate,
    # verified against server.tls_client_ca, that names this (its subject or a DNS name)
    tls_client_name: str | None = Field(None, min_length=1, max_length=253)


class Dialplan(Strict):
    emergency: list[str] = ["112", "911", "15", "17", "18"]
    national: str = r"^0[1-9][0-9]{8}$"
    international: str = r"^(00|\+)[1-9][0-9]{6,14}$"

    @field_validator("national", "international")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class Voicemail(Strict):
    max_message_seconds: int = Field(120, ge=5, le=900)
    max_messages: int = Field(100, ge=1, le=10000)
    unsolicited_mwi: bool = True  # NOTIFY registered phones that did not subscribe


class Features(Strict):
    voicemail_access: str = Field("*97", pattern=r"^\*[0-9]{2,3}$")  # own mailbox
    voicemail_any: str = Field("*98", pattern=r"^\*[0-9]{2,3}$")  # ask the mailbox
    transfer_audio: Literal["ringback", "music"] = "ringback"
    conference_bridge: Extension | None = "800"


class Conference(Strict):
    max_legs: int = Field(1000, ge=2, le=5000)
    max_legs_total: int = Field(2000, ge=2, le=10000)
    join_before_host: bool = False
    end_with_host: bool = True
    code_attempts: int = Field(3, ge=1, le=10)


class Server(Strict):
    # [udp:|tcp:|tls:|ws:|wss:]HOST:PORT each (no transport: UDP; wss: and tls: share
    # the TLS certificate; ws: and wss: are SIP over WebSocket, RFC 7118)
    listen: list[ListenEntry] = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
    domain: str = "softswitch.local"
    public_address: str | None = None  # advertised in Via/Contact/SDP (NAT, multihoming)
    rtp_ports: tuple[int, int] = (20000, 30000)
    data_dir: Path = Path("data")
    country: Literal["us", "fr"] = "us"
    language: Literal["en", "fr"] = "en"  # built-in prompts and text-to-speech voice
    # Challenges sent, in order of preference. SHA-256 (RFC 8760) is supported, but the
    # default is MD5 alone: baresip 1.0 and SIPp 3.6 refuse a REGISTER flow outright
    # when any challenge names another algorithm, and so do many desk phones.
    auth_algorithms: list[Literal["MD5", "SHA-256"]] = Field(["MD5"], min_length=1)
    # calls at once, every kind (bridged, voicemail, IVR, conference; a call with all its
    # legs is one); beyond it new INVITEs get 503 with Retry-After
    max_calls: int = Field(500, ge=1, le=10000)
    registration_min_expires: int = Field(60, ge=10, le=3600)
    registration_max_expires: int = Field(3600, ge=60, le=86400)
    keepalive_interval: float = Field(30.0, ge=1.0, le=3600.0)
    sip_t1: float = Field(0.5, ge=0.01, le=5.0)  # RFC 3261 T1 (round-trip estimate), seconds
    # failed-auth throttle (softswitch.authguard), over 60 s: this many wrong passwords
    # refuse that user from that source; this many failures naming no user of ours refuse
    # the source; a source that leaves unanswered_challenge_limit challenges in a row
    # unanswered gets 403 instead of challenges
    failed_auth_limit: int = Field(10, ge=1, le=1000)
    unanswered_challenge_limit: int = Field(100, ge=1, le=100_000)
    # TCP/TLS limits (sip.connections explains the defaults): a connection with no byte
    # from the peer for tcp_idle_timeout s is closed, as is one whose message is not
    # complete tcp_message_timeout s after its first byte (slowloris); beyond
    # tcp_max_per_address connections from one IP new ones are refused; at
    # tcp_max_connections the oldest idle connection makes room for a newcomer.
    tcp_idle_timeout: float = Field(600.0, ge=1.0, le=86400.0)
    tcp_message_timeout: float = Field(10.0, ge=0.5, le=300.0)
    tcp_max_connections: int = Field(2048, ge=1, le=100_000)
    tcp_max_per_address: int = Field(32, ge=1, le=100_000)
    # codecs offered and accepted unless a user, device or trunk says otherwise
    codecs: Codecs = ["G722", "PCMU", "PCMA", "OPUS"]
    # SIP over TLS (tls: entries in listen): PEM files, the certificate file holding the
    # chain sent to peers (the key may be in it too); none: a self-signed certificate made
    # in data_dir/tls for the demo. Reloaded with the configuration (SIGHUP).
    tls_certificate: Path | None = None
    tls_key: Path | None = None
    # CA certificates (PEM) that client certificates are checked against: TLS peers may
    # then present one (phones need not), and a trunk's tls_client_name requires it
    tls_client_ca: Path | None = None
    # SRTP unless a user, device or trunk says otherwise: "optional" takes keys a phone
    # offers over TLS and offers them to phones reached over TLS
    media_encryption: Encryption = "optional"

    @field_validator("rtp_ports")
    @classmethod
    def _ports(cls, value: tuple[int, int]) -> tuple[int, int]:
        start, end = value
        if start % 2 or not 1024 <= start < end <= 65535 or end - start < 4:
            raise ValueError("expected [even start, end] within 1024-65535")
        return value


_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_RANGE = r"^([01][0-9]|2[0-4]):[0-5][0-9]-([01][0-9]|2[0-4]):[0-5][0-9]$"
_DATES = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(\.\.[0-9]{4}-[0-9]{2}-[0-9]{2})?$"


class BusinessHours(Strict):
    """When the office is open: weekly ranges in a time zone, minus closed dates.
    Without this table the office is always open."""

    timezone: str = "UTC"
    monday: list[Annotated[str, Field(pattern=_RANGE)]] = []
    tuesday: list[Annotated[str, Field(pattern=_RANGE)]] = []
    wednesday: list[Annotated[str, Field(pattern=_RANGE)]] = []
    thursday: list[Annotated[str, Field(pattern=_RANGE)]] = []
    friday: list[Annotated[str, Field(pattern=_RANGE)]] = []
    saturday: list[Annotated[str, Field(pattern=_RANGE)]] = []
    sunday: list[Annotated[str, Field(pattern=_RANGE)]] = []
    closed: list[Annotated[str, Field(pattern=_DATES)]] = []  # "2026-12-25", "a..b"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. 'Europe/Paris')") from None
        return value

    @model_validator(mode="after")
    def _ranges(self) -> BusinessHours:
        for day in _DAYS:
            for text in getattr(self, day):
                start, end = text.split("-")
                if start >= end:
                    raise ValueError(f"{day}: {text!r} ends before it starts")
        for text in self.closed:
            first, _, last = text.partition("..")
            if last and last < first:
                raise ValueError(f"closed: {text!r} ends before it starts")
        return self

    def ranges(self, weekday: int) -> list[tuple[str, str]]:
        """(start, end) "HH:MM" ranges of a weekday (0 = Monday)."""
        return [(r[:5], r[6:]) for r in getattr(self, _DAYS[weekday])]


class Config(Strict):
    server: Server = Server()
    features: Features = Features()
    voicemail: Voicemail = Voicemail()
    conference: Conference = Conference()
    dialplan: Dialplan = Dialplan()
    business_hours: BusinessHours | None = None
    hold_music: dict[str, Path] = {}  # slot -> file; "default" may be overridden
    users: list[User] = []
    trunks: list[Trunk] = []
    source: Path | None = None  # the file this came from (set by load)
    # the validated sections of features (e.g. "ring_groups"), by section name
    sections: dict[str, Any] = Field({}, exclude=True)

    @model_validator(mode="after")
    def _unique(self) -> Config:
        seen: set[str] = set()
        usernames: set[str] = set()
        for i, user in enumerate(self.users):
            if user.extension in seen:
                raise ValueError(f"users[{i}].extension {user.extension} is used twice")
            seen.add(user.extension)
            for j, device in enumerate(user.devices):
                if device.username is None:
                    continue
                if device.username in usernames:
                    raise ValueError(
                        f"users[{i}].devices[{j}].username {device.username} is used twice"
                    )
                usernames.add(device.username)
            if user.hold_music != "default" and user.hold_music not in self.hold_music:
                raise ValueError(
                    f"users[{i}].hold_music: no slot {user.hold_music!r} in [hold_music]"
                )
        codes = {self.features.voicemail_access, self.features.voicemail_any}
        if self.features.conference_bridge in seen:
            raise ValueError("features.conference_bridge is also a user's extension")
        if codes & seen:
            raise ValueError("a feature code is also a user's extension")
        if usernames & seen:
            raise ValueError("a device username is also an extension")
        return self

    def user(self, extension: str) -> User | None:
        for user in self.users:
            if user.extension == extension:
                return user
        return None

    def path(self, value: str | Path) -> Path:
        """A file named in the configuration: relative to the file's directory."""
        path = Path(value)
        if path.is_absolute() or self.source is None:
            return path
        return self.source.parent / path

    def section(self, name: str) -> Any:
        """The validated settings of a feature's section (None when absent)."""
        return self.sections.get(name)


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _errors(
    exc: ValidationError, source: str, prefix: tuple[int | str, ...] = (), root: Any = None
) -> str:
    """One line per error; an unknown key gets the closest known one (``root`` is the
    type validated, to find the keys known where the unknown one is)."""
    lines = []
    for error in exc.errors():
        where = _where(prefix + tuple(error["loc"]))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden" and root is not None:
            *parent, key = error["loc"]
            message = "unknown key" + _hint(str(key), known_keys(root, tuple(parent)))
        lines.append(f"{source}: {where}: {message}")
    return "\n".join(lines)


def _hint(name: str, known: Iterable[str]) -> str:
    names = sorted(set(known))
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (known: {', '.join(names)})" if 0 < len(names) <= 12 else ""


def known_keys(root: Any, loc: tuple[int | str, ...]) -> set[str]:
    """The keys the model(s) at ``loc`` under type ``root`` accept (names and aliases)."""
    types = _members(root)
    for part in loc:
        types = [found for tp in types for found in _step(tp, part)]
    keys: set[str] = set()
    for tp in types:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            for name, field in tp.model_fields.items():
                keys.add(field.alias or name)
                if tp.model_config.get("populate_by_name"):
                    keys.add(name)
    return keys - {"source", "sections"} if root is Config and not loc else keys


def _members(tp: Any) -> list[Any]:
    """``tp`` without Annotated/Optional wrappers: the types a value may be."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _members(typing.get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return [m for arg in typing.get_args(tp) for m in _members(arg)]
    return [tp]


def _step(tp: Any, part: int | str) -> list[Any]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(part, int):
        return _members(args[0]) if origin in (list, set, frozenset) and args else []
    if origin is dict and len(args) == 2:
        return _members(args[1])
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for key, field in tp.model_fields.items():
            if part in (key, field.alias):
                return _members(field.annotation)
    tag = getattr(tp, "__name__", None)
    return [tp] if tag and tag in part else []  # a union member's tag ("MenuSettings")


_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")
_PATH = re.compile(r"[A-Za-z_][\w-]*(?:\[[0-9]+\]|\.[\w-]+)*")
_INDEX = re.compile(r"([\w-]+)\[([0-9]+)\]")
_HEADER = re.compile(r"^\s*(\[\[?)([^\[\]]+)\]\]?\s*(?:#.*)?$")
_BARE_KEY = r"(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')"
_KEY = re.compile(rf"^\s*({_BARE_KEY}(?:\s*\.\s*{_BARE_KEY})*)\s*=")


def _ordinal(index: int) -> str:
    if index < len(_ORDINALS):
        return _ORDINALS[index]
    n = index + 1
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _dotted(text: str) -> list[str]:
    return [part.strip().strip("\"'") for part in re.findall(_BARE_KEY, text)]


def key_lines(text: str) -> dict[str, int]:
    """Where each table and key of TOML ``text`` starts (1-based lines), by the path errors
    name (``users[1].forward.no_answer_after``); best effort, for messages only."""
    found: dict[str, int] = {}
    counts: dict[str, int] = {}  # an array of tables (by its path) -> tables so far
    table = ""
    quote: str | None = None  # inside a multi-line string opened by this
    for number, line in enumerate(text.splitlines(), 1):
        if quote is not None:
            if line.count(quote) % 2:
                quote = None
            continue
        header = _HEADER.match(line)
        if header:
            names = _dotted(header[2])
            table = ""
            for i, name in enumerate(names):
                table = f"{table}.{name}" if table else name
                if i == len(names) - 1 and header[1] == "[[":
                    counts[table] = counts.get(table, 0) + 1
                if table in counts:  # the latest table of that array
                    table = f"{table}[{counts[table] - 1}]"
            found.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            path = ".".join(_dotted(key[1]))
            found.setdefault(f"{table}.{path}" if table else path, number)
            value = line[key.end() :]
            for mark in ('"""', "'''"):
                if value.count(mark) % 2:
                    quote = mark
    return found


def _line_of(path: str, lines: Mapping[str, int]) -> int | None:
    """The line of ``path``, else of the closest enclosing key or table that is written."""
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[: max(cut, 0)]
    return None


def _indexes(path: str, text: str) -> str:
    """``users[1]`` said as people count: "users[1] is the second [[users]] table"."""
    said = []
    tables = ""
    for part in path.split("."):
        name = part.split("[", 1)[0]
        tables = f"{tables}.{name}" if tables else name
        for key, index in _INDEX.findall(part):
            is_table = re.search(rf"^\s*\[\[\s*{re.escape(tables)}\s*\]\]", text, re.M)
            noun = f"[[{tables}]] table" if is_table else f"{key} entry"
            said.append(f"{key}[{index}] is the {_ordinal(int(index))} {noun}")
    return "; ".join(said)


def human_errors(message: str, source: str, text: str) -> str:
    """A ConfigError's lines for a person: each keeps ``source: key: message`` and adds
    where that is, counted from 1, with its line in the TOML ``text``
    (``office.toml: users[1].pin: ... (users[1] is the second [[users]] table, line 14)``).
    ``str(exc)`` stays as it is: the console and the API parse it."""
    lines = key_lines(text)
    out = []
    for line in message.splitlines():
        if not line.startswith(source + ": "):
            out.append(line)
            continue
        rest = line[len(source) + 2 :]
        key = rest.split(": ", 1)[0]
        path = key if _PATH.fullmatch(key) else ""
        if not path and "[" in rest:  # "(top level): users[1].extension 101 is used twice"
            found = _PATH.search(rest[len(key) :])
            path = found[0] if found and "[" in found[0] else ""
        said = [_indexes(path, text)] if "[" in path else []
        number = _line_of(path, lines) if path else None
        said += [f"line {number}"] if number else []
        out.append(line + (f" ({', '.join(said)})" if said else ""))
    return "\n".join(out)


CORE_SECTIONS = frozenset(
    name for name in Config.model_fields if name not in ("source", "sections")
)


def parse(text: str, source: str = "<config>", sections: Mapping[str, Any] | None = None) -> Config:
    """Parse and validate TOML ``text``; ``source`` names it in errors.

    ``sections`` maps the table names that features own to the type validating them
    (default: the built-in features'); any other unknown table is an error."""
    if sections is None:
        from .features import builtin_sections

        sections = builtin_sections()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    owned: dict[str, Any] = {}
    problems: list[str] = []
    for name in [k for k in data if k not in CORE_SECTIONS]:
        value = data.pop(name)
        kind = sections.get(name)
        if kind is None:
            known = sorted(CORE_SECTIONS | set(sections))
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{source}: {name}: unknown section{hint}")
            continue
        try:
            owned[name] = TypeAdapter(kind).validate_python(value)
        except ValidationError as exc:
            problems.append(_errors(exc, source, (name,), kind))
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems.insert(0, _errors(exc, source, root=Config))
    if problems:
        raise ConfigError("\n".join(problems))
    return config.model_copy(update={"sections": owned})


def load(path: str | Path) -> Config:
    """Load ``path``; relative file names in it are relative to its directory."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read ({exc.strerror})") from None
    config = parse(text, str(p))
    config = _resolve_paths(config, p.parent)
    check_audio(config, str(p))
    return config.model_copy(update={"source": p})


def _resolve_paths(config: Config, base: Path) -> Config:
    def fix(path: Path) -> Path:
        return path if path.is_absolute() else base / path

    users = [
        u.model_copy(
            update={
                **{
                    key: fix(getattr(u, key))
                    for key in ("greeting", "name_recording")
                    if getattr(u, key) is not None
                },
                "greetings": u.greetings.model_copy(
                    update={
                        key: fix(getattr(u.greetings, key))
                        for key in ("business_hours", "after_hours", "temporary")
                        if getattr(u.greetings, key) is not None
                    }
                ),
            }
        )
        for u in config.users
    ]
    server = config.server.model_copy(
        update={
            "data_dir": fix(config.server.data_dir),
            **{
                key: fix(getattr(config.server, key))
                for key in ("tls_certificate", "tls_key", "tls_client_ca")
                if getattr(config.server, key) is not None
            },
        }
    )
    music = {slot: fix(p) for slot, p in config.hold_music.items()}
    return config.model_copy(update={"users": users, "server": server, "hold_music": music})


resolve_paths = _resolve_paths  # file names relative to the configuration's directory


def check_audio(config: Config, source: str) -> None:
    """Every audio file named in ``config`` must load (names file and key if not)."""
    files = [(f"hold_music.{slot}", p) for slot, p in config.hold_music.items()]
    files += [
        (f"users[{i}].{key}", path)
        for i, u in enumerate(config.users)
        for key in ("greeting", "name_recording")
        if (path := getattr(u, key)) is not None
    ]
    files += [
        (f"users[{i}].greetings.{key}", path)
        for i, u in enumerate(config.users)
        for key in ("business_hours", "after_hours", "temporary")
        if (path := getattr(u.greetings, key)) is not None
    ]
    for key, path in files:
        try:
            load_audio(path)
        except AudioFileError as exc:
            raise ConfigError(f"{source}: {key}: {exc}") from None


DEMO = """\
# The embedded demo office: `softswitch run` with no --config uses this.
[server]
listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060", "tls:127.0.0.1:5061", "ws:127.0.0.1:5066"]
domain = "demo.softswitch"
data_dir = "data"

[features]
voicemail_access = "*97"
conference_bridge = "800"

[[users]]
extension = "100"
name = "Alice Martin"
password = "alice100"
pin = "1100"
permission = "international"
conference_host_code = "1001"
conference_code = "2001"

[[users]]
extension = "101"
name = "Bob Durand"
password = "bob101"
pin = "1101"

[[users]]
extension = "102"
name = "Carol Petit"
password = "carol102"
pin = "1102"
[users.forward]
no_answer_after = 15
"""


def demo() -> Config:
    return parse(DEMO, "<embedded demo>")
