"""SDP (RFC 4566): parse and serialise session descriptions.

Only the structure lives here; RFC 3264 offer/answer is in :mod:`sip.offer_answer`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import ParseError

MAX_SDP_SIZE = 16384
MAX_MEDIA = 16
MAX_LINES = 512
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

_LINE = re.compile(r"([a-z])=(.*)\Z")
_NUM = re.compile(r"[0-9]+\Z")
_RTPMAP = re.compile(r"([0-9]{1,3}) +([^/ ]+)/([0-9]{1,7})(?:/([0-9]{1,2}))?\Z")


def _int(text: str, what: str, limit: int = 2**64 - 1) -> int:
    if _NUM.match(text) is None or int(text) > limit:
        raise ParseError(f"SDP {what} must be a number, got {text!r}")
    return int(text)


@dataclass(slots=True)
class Origin:
    username: str = "-"
    session_id: int = 0
    session_version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "127.0.0.1"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(slots=True)
class Connection:
    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"

    @property
    def is_hold(self) -> bool:
        """The RFC 2543 way of putting a call on hold: ``c=IN IP4 0.0.0.0``."""
        return self.address in ("0.0.0.0", "::")

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(slots=True)
class RtpMap:
    encoding: str
    clock_rate: int
    channels: int = 1

    def __str__(self) -> str:
        channels = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.encoding}/{self.clock_rate}{channels}"


@dataclass(slots=True)
class Media:
    media: str = "audio"
    port: int = 0
    proto: str = "RTP/AVP"
    formats: list[str] = field(default_factory=list)
    port_count: int | None = None
    title: str | None = None
    connection: Connection | None = None
    bandwidths: list[str] = field(default_factory=list)
    key: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    def attribute(self, name: str) -> str | None:
        for n, v in self.attributes:
            if n == name:
                return v if v is not None else ""
        return None

    def attribute_values(self, name: str) -> list[str]:
        return [v or "" for n, v in self.attributes if n == name]

    @property
    def direction(self) -> str | None:
        """The media-level direction attribute, if one is present."""
        for n, _ in self.attributes:
            if n in DIRECTIONS:
                return n
        return None

    def set_direction(self, direction: str) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}")
        self.attributes = [(n, v) for n, v in self.attributes if n not in DIRECTIONS]
        self.attributes.append((direction, None))

    @property
    def rtpmaps(self) -> dict[int, RtpMap]:
        out: dict[int, RtpMap] = {}
        for value in self.attribute_values("rtpmap"):
            # RFC 4566 §5.13: attributes that cannot be understood are ignored.
            m = _RTPMAP.match(value.strip())
            if m is None or int(m.group(1)) > 127:
                continue
            channels = int(m.group(4)) if m.group(4) else 1
            out[int(m.group(1))] = RtpMap(m.group(2), int(m.group(3)), channels)
        return out

    @property
    def fmtps(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for value in self.attribute_values("fmtp"):
            pt_text, _, params = value.partition(" ")
            if _NUM.match(pt_text):
                out[int(pt_text)] = params.strip()
        return out

    @property
    def ptime(self) -> int | None:
        value = self.attribute("ptime")
        if value is None:
            return None
        try:
            ptime = round(float(value))
        except (ValueError, OverflowError):
            return None  # not understood: ignored (RFC 4566 §5.13)
        return ptime if 1 <= ptime <= 1000 else None

    def lines(self) -> list[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count else str(self.port)
        out = [f"m={self.media} {port} {self.proto} {' '.join(self.formats)}"]
        if self.title is not None:
            out.append(f"i={self.title}")
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out.extend(f"b={b}" for b in self.bandwidths)
        if self.key is not None:
            out.append(f"k={self.key}")
        out.extend(f"a={n}" if v is None else f"a={n}:{v}" for n, v in self.attributes)
        return out


@dataclass(slots=True)
class SessionDescription:
    origin: Origin = field(default_factory=Origin)
    name: str = "-"
    connection: Connection | None = None
    media: list[Media] = field(default_factory=list)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    times: list[tuple[int, int]] = field(default_factory=lambda: [(0, 0)])
    info: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    bandwidths: list[str] = field(default_factory=list)
    repeats: list[str] = field(default_factory=list)
    zone: str | None = None
    key: str | None = None
    version: int = 0

    def attribute(self, name: str) -> str | None:
        for n, v in self.attributes:
            if n == name:
                return v if v is not None else ""
        return None

    @property
    def direction(self) -> str | None:
        for n, _ in self.attributes:
            if n in DIRECTIONS:
                return n
        return None

    def media_direction(self, media: Media) -> str:
        """Effective direction of ``media``: its own attribute, else the session's."""
        return media.direction or self.direction or "sendrecv"

    def media_connection(self, media: Media) -> Connection | None:
        return media.connection or self.connection

    def __str__(self) -> str:
        out = [f"v={self.version}", f"o={self.origin}", f"s={self.name}"]
        if self.info is not None:
            out.append(f"i={self.info}")
        if self.uri is not None:
            out.append(f"u={self.uri}")
        out.extend(f"e={e}" for e in self.emails)
        out.extend(f"p={p}" for p in self.phones)
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out.extend(f"b={b}" for b in self.bandwidths)
        out.extend(f"t={start} {stop}" for start, stop in self.times)
        out.extend(f"r={r}" for r in self.repeats)
        if self.zone is not None:
            out.append(f"z={self.zone}")
        if self.key is not None:
            out.append(f"k={self.key}")
        out.extend(f"a={n}" if v is None else f"a={n}:{v}" for n, v in self.attributes)
        for media in self.media:
            out.extend(media.lines())
        return "\r\n".join(out) + "\r\n"

    def __bytes__(self) -> bytes:
        return str(self).encode("utf-8")


def _connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise ParseError(f"bad c= line {value!r}: expected 'IN IP4 address'")
    nettype, addrtype, address = parts
    if addrtype not in ("IP4", "IP6"):
        raise ParseError(f"bad c= address type {addrtype!r}")
    return Connection(address.split("/", 1)[0], addrtype, nettype)


def _attribute(value: str) -> tuple[str, str | None]:
    name, sep, rest = value.partition(":")
    if not name or " " in name:
        raise ParseError(f"bad a= line {value!r}")
    return name, rest if sep else None


def _media(value: str) -> Media:
    parts = value.split()
    if len(parts) < 4:
        raise ParseError(f"bad m= line {value!r}: expected 'media port proto fmt...'")
    media, port_text, proto, *formats = parts
    port_text, slash, count_text = port_text.partition("/")
    port = _int(port_text, "port", 65535)
    count = _int(count_text, "port count", 65535) if slash else None
    return Media(media, port, proto, formats, count)


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body. Raises :class:`ParseError` naming the offending line."""
    if isinstance(data, bytes | bytearray):
        if len(data) > MAX_SDP_SIZE:
            raise ParseError(f"SDP body larger than {MAX_SDP_SIZE} bytes")
        text = bytes(data).decode("utf-8", "replace")
    else:
        text = data
    lines = [line for line in re.split(r"\r?\n", text) if line]
    if len(lines) > MAX_LINES:
        raise ParseError(f"SDP with more than {MAX_LINES} lines")
    if not lines or lines[0].strip() != "v=0":
        raise ParseError("SDP must start with v=0")
    sdp = SessionDescription(times=[])
    seen_origin = seen_name = False
    current: Media | None = None
    for number, line in enumerate(lines[1:], start=2):
        m = _LINE.match(line.rstrip())
        if m is None:
            raise ParseError(f"SDP line {number}: expected 'x=value', got {line[:60]!r}")
        kind, value = m.groups()
        if current is not None:
            if kind == "m":
                if len(sdp.media) >= MAX_MEDIA:
                    raise ParseError(f"SDP with more than {MAX_MEDIA} media")
                current = _media(value)
                sdp.media.append(current)
            elif kind == "i":
                current.title = value
            elif kind == "c":
                current.connection = _connection(value)
            elif kind == "b":
                current.bandwidths.append(value)
            elif kind == "k":
                current.key = value
            elif kind == "a":
                current.attributes.append(_attribute(value))
            else:
                raise ParseError(f"SDP line {number}: {kind}= not allowed in a media section")
            continue
        if kind == "o":
            parts = value.split()
            if len(parts) != 6:
                raise ParseError(f"SDP line {number}: bad o= line {value!r}")
            sdp.origin = Origin(
                parts[0],
                _int(parts[1], "session id"),
                _int(parts[2], "session version"),
                *parts[3:],
            )
            seen_origin = True
        elif kind == "s":
            sdp.name = value
            seen_name = True
        elif kind == "i":
            sdp.info = value
        elif kind == "u":
            sdp.uri = value
        elif kind == "e":
            sdp.emails.append(value)
        elif kind == "p":
            sdp.phones.append(value)
        elif kind == "c":
            sdp.connection = _connection(value)
        elif kind == "b":
            sdp.bandwidths.append(value)
        elif kind == "t":
            parts = value.split()
            if len(parts) != 2:
                raise ParseError(f"SDP line {number}: bad t= line {value!r}")
            sdp.times.append((_int(parts[0], "start time"), _int(parts[1], "stop time")))
        elif kind == "r":
            sdp.repeats.append(value)
        elif kind == "z":
            sdp.zone = value
        elif kind == "k":
            sdp.key = value
        elif kind == "a":
            sdp.attributes.append(_attribute(value))
        elif kind == "m":
            current = _media(value)
            sdp.media.append(current)
        else:
            raise ParseError(f"SDP line {number}: unknown type {kind}=")
    if not seen_origin or not seen_name:
        raise ParseError("SDP without o= or s= line")
    if not sdp.times:
        sdp.times = [(0, 0)]
    return sdp
