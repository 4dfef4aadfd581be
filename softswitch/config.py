"""The PBX configuration: one TOML file, validated at load with pydantic.

Every error names the file, the key path and what was expected, e.g.
``office.toml: users[1].forward.no_answer_after: Input should be less than or equal to 60``.
Audio files (hold music, greetings) are checked too: present, readable audio, ≤ 5 MB.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from media.audio import AudioFileError, load_audio
from media.codecs import CODECS

Permission = Literal["internal", "emergency", "national", "international"]
PERMISSION_RANK = {"internal": 0, "emergency": 1, "national": 2, "international": 3}
Extension = Annotated[str, Field(pattern=r"^[0-9]{2,8}$")]
Target = Annotated[str, Field(pattern=r"^(voicemail|ext:[0-9]{2,8}|tel:\+?[0-9]{3,20}|hangup)$")]


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


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names file, key and expectation."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Forward(Strict):
    """Where a call goes when the user is busy, does not answer, or has no device."""

    busy: Target | None = "voicemail"
    no_answer: Target | None = "voicemail"
    no_answer_after: int = Field(20, ge=10, le=60)
    unreachable: Target | None = "voicemail"


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
    conference_host_code: str | None = Field(None, pattern=r"^[0-9]{4,10}$")
    conference_code: str | None = Field(None, pattern=r"^[0-9]{4,10}$")
    # this user's conference; unset: the [conference] defaults
    conference_join_before_host: bool | None = None
    conference_end_with_host: bool | None = None
    codecs: Codecs | None = None  # this user's phones; unset: server.codecs
    # per device: a User-Agent substring -> codecs (e.g. {"VVX" = ["G722", "PCMU"]})
    device_codecs: dict[str, Codecs] = {}


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
    listen: list[str] = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
    domain: str = "softswitch.local"
    public_address: str | None = None  # advertised in Via/Contact/SDP (NAT, multihoming)
    rtp_ports: tuple[int, int] = (20000, 30000)
    data_dir: Path = Path("data")
    country: Literal["us", "fr"] = "us"
    # Challenges sent, in order of preference. SHA-256 (RFC 8760) is supported, but the
    # default is MD5 alone: baresip 1.0 and SIPp 3.6 refuse a REGISTER flow outright
    # when any challenge names another algorithm, and so do many desk phones.
    auth_algorithms: list[Literal["MD5", "SHA-256"]] = Field(["MD5"], min_length=1)
    max_calls: int = Field(500, ge=1, le=10000)
    registration_min_expires: int = Field(60, ge=10, le=3600)
    registration_max_expires: int = Field(3600, ge=60, le=86400)
    keepalive_interval: float = Field(30.0, ge=1.0, le=3600.0)
    sip_t1: float = Field(0.5, ge=0.01, le=5.0)  # RFC 3261 T1 (round-trip estimate), seconds
    failed_auth_limit: int = Field(10, ge=1, le=1000)
    # codecs offered and accepted unless a user, device or trunk says otherwise
    codecs: Codecs = ["G722", "PCMU", "PCMA", "OPUS"]

    @field_validator("rtp_ports")
    @classmethod
    def _ports(cls, value: tuple[int, int]) -> tuple[int, int]:
        start, end = value
        if start % 2 or not 1024 <= start < end <= 65535 or end - start < 4:
            raise ValueError("expected [even start, end] within 1024-65535")
        return value


class Config(Strict):
    server: Server = Server()
    features: Features = Features()
    voicemail: Voicemail = Voicemail()
    conference: Conference = Conference()
    dialplan: Dialplan = Dialplan()
    hold_music: dict[str, Path] = {}  # slot -> file; "default" may be overridden
    users: list[User] = []
    trunks: list[Trunk] = []
    source: Path | None = None  # the file this came from (set by load)

    @model_validator(mode="after")
    def _unique(self) -> Config:
        seen: set[str] = set()
        for i, user in enumerate(self.users):
            if user.extension in seen:
                raise ValueError(f"users[{i}].extension {user.extension} is used twice")
            seen.add(user.extension)
            if user.hold_music != "default" and user.hold_music not in self.hold_music:
                raise ValueError(
                    f"users[{i}].hold_music: no slot {user.hold_music!r} in [hold_music]"
                )
        codes = {self.features.voicemail_access, self.features.voicemail_any}
        if self.features.conference_bridge in seen:
            raise ValueError("features.conference_bridge is also a user's extension")
        if codes & seen:
            raise ValueError("a feature code is also a user's extension")
        return self

    def user(self, extension: str) -> User | None:
        for user in self.users:
            if user.extension == extension:
                return user
        return None


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse(text: str, source: str = "<config>") -> Config:
    """Parse and validate TOML ``text``; ``source`` names it in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = _where(tuple(error["loc"]))
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"{source}: {where}: {message}")
        raise ConfigError("\n".join(lines)) from None


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
        u.model_copy(update={"greeting": fix(u.greeting)}) if u.greeting else u
        for u in config.users
    ]
    server = config.server.model_copy(update={"data_dir": fix(config.server.data_dir)})
    music = {slot: fix(p) for slot, p in config.hold_music.items()}
    return config.model_copy(update={"users": users, "server": server, "hold_music": music})


def check_audio(config: Config, source: str) -> None:
    """Every audio file named in ``config`` must load (names file and key if not)."""
    files = [(f"hold_music.{slot}", p) for slot, p in config.hold_music.items()]
    files += [
        (f"users[{i}].greeting", u.greeting)
        for i, u in enumerate(config.users)
        if u.greeting is not None
    ]
    for key, path in files:
        try:
            load_audio(path)
        except AudioFileError as exc:
            raise ConfigError(f"{source}: {key}: {exc}") from None


DEMO = """\
# The embedded demo office: `softswitch run` with no --config uses this.
[server]
listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
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
