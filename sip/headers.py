"""Header fields: the case-insensitive container and the typed values SIP needs.

Raw header values are kept as text, so a message serialises back as it arrived; the
typed views (:class:`NameAddr`, :class:`Via`, :class:`CSeq`) are parsed on demand and
cached until the header is changed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from . import grammar
from .errors import ParseError
from .uri import _COMMON as _COMMON_URI
from .uri import MAX_USER_LENGTH, URI, parse_uri, split_hostport, split_params

T = TypeVar("T")

# RFC 3261 §7.3.3 and later RFCs: compact form -> full name.
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

# Names whose canonical spelling is not plain Title-Case.
_SPECIAL_NAMES = {
    name.lower(): name
    for name in (
        "Call-ID",
        "CSeq",
        "WWW-Authenticate",
        "MIME-Version",
        "RAck",
        "RSeq",
        "SIP-ETag",
        "SIP-If-Match",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Alert-Info",
        "Call-Info",
    )
}

# Headers whose value may be a comma-separated list (RFC 3261 §7.3.1). Others, such as
# WWW-Authenticate or Date, contain commas that are not list separators.
LIST_HEADERS = frozenset(
    name.lower()
    for name in (
        "Via",
        "Route",
        "Record-Route",
        "Contact",
        "Path",
        "Service-Route",
        "Allow",
        "Allow-Events",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Content-Encoding",
        "Content-Language",
        "In-Reply-To",
        "Alert-Info",
        "Call-Info",
        "Error-Info",
        "Warning",
        "Reason",
        "P-Asserted-Identity",
    )
)

_canonical_cache: dict[str, str] = {}


def canonical_name(name: str) -> str:
    """Full, canonically spelled header name for ``name`` (compact forms expanded)."""
    cached = _canonical_cache.get(name)
    if cached is not None:
        return cached
    lower = name.lower()
    if len(lower) == 1 and lower in COMPACT_FORMS:
        result = COMPACT_FORMS[lower]
    else:
        result = _SPECIAL_NAMES.get(lower) or "-".join(p.capitalize() for p in name.split("-"))
    if len(_canonical_cache) < 4096:  # names come from peers: bound the cache
        _canonical_cache[name] = result
    return result


class Headers:
    """Ordered header fields with case-insensitive access.

    Each entry is one header line as received (a line may hold a comma list). Typed
    values are parsed once and cached until the named header changes.
    """

    __slots__ = ("_cache", "_items")

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str]] = []
        self._cache: dict[str, object] = {}
        for name, value in items or ():
            self.add(name, value)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _canonical_cache.get(name) or canonical_name(name)
        return any(n == key for n, _ in self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def get(self, name: str, default: str | None = None) -> str | None:
        """Value of the first line of ``name``, or ``default``."""
        key = _canonical_cache.get(name) or canonical_name(name)
        for n, v in self._items:
            if n == key:
                return v
        return default

    def get_lines(self, name: str) -> list[str]:
        """Every line's value for ``name``, in order, unsplit."""
        key = _canonical_cache.get(name) or canonical_name(name)
        return [v for n, v in self._items if n == key]

    def values(self, name: str) -> list[str]:
        """All values of ``name`` across lines, comma lists split for list headers."""
        lines = self.get_lines(name)
        if canonical_name(name).lower() not in LIST_HEADERS:
            return lines
        out: list[str] = []
        for line in lines:
            out.extend(split_commas(line))
        return out

    def add(self, name: str, value: object) -> None:
        name = canonical_name(name)
        self._items.append((name, str(value)))
        self._cache.pop(name, None)

    def prepend(self, name: str, value: object) -> None:
        name = canonical_name(name)
        self._items.insert(0, (name, str(value)))
        self._cache.pop(name, None)

    def set(self, name: str, value: object) -> None:
        """Replace every line of ``name`` with one line, at the place of the first."""
        name = canonical_name(name)
        new: list[tuple[str, str]] = []
        placed = False
        for n, v in self._items:
            if n == name:
                if not placed:
                    new.append((name, str(value)))
                    placed = True
            else:
                new.append((n, v))
        if not placed:
            new.append((name, str(value)))
        self._items = new
        self._cache.pop(name, None)

    def remove(self, name: str) -> None:
        key = _canonical_cache.get(name) or canonical_name(name)
        self._items = [(n, v) for n, v in self._items if n != key]
        self._cache.pop(key, None)

    def remove_first_value(self, name: str) -> None:
        """Drop the first value of a list header (e.g. the top Via)."""
        key = _canonical_cache.get(name) or canonical_name(name)
        for i, (n, v) in enumerate(self._items):
            if n == key:
                rest = split_commas(v)[1:]
                if rest:
                    self._items[i] = (n, ", ".join(rest))
                else:
                    del self._items[i]
                break
        self._cache.pop(key, None)

    def copy(self) -> Headers:
        new = Headers()
        new._items = list(self._items)
        new._cache = dict(self._cache)
        return new

    def typed(self, name: str, parser: Callable[[Headers, str], T]) -> T:
        """``parser(self, name)``, cached until ``name`` changes."""
        key = _canonical_cache.get(name) or canonical_name(name)
        try:
            return self._cache[key]  # type: ignore[return-value]
        except KeyError:
            value = parser(self, name)
            self._cache[key] = value
            return value


# ---------------------------------------------------------------------------------------
# Lexical helpers

_QUOTED = re.compile(r'"((?:[^"\\]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*)"')
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)
_LWS = " \t"
# gen-value = token / host / quoted-string
_QUOTED_TEXT = r"\"(?:[^\"\\]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*\""
_PARAM = re.compile(
    r"[ \t]*;[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)"
    r"(?:[ \t]*=[ \t]*([A-Za-z0-9\-.!%*_+`'~:\[\]]+|" + _QUOTED_TEXT + r"))?"
)
_VIA_PROTO = re.compile(
    r"[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)"
    r"[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+"
)
_VIA_SENT_BY = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_\-.]+)(?:[ \t]*:[ \t]*([0-9]+))?")

# Fast paths: one regex for the everyday shape of a header (no whitespace inside, no
# escapes; quoted parameter values without quoted-pairs); whatever it does not match takes
# the general parser, which accepts a superset and gives the same values for these. The
# quantifiers are possessive: nothing here needs to backtrack, and a near miss fails fast.
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]++"
_FAST_VALUE = r"(?:[A-Za-z0-9\-.!%*_+`'~:\[\]]++|\"[^\"\\\x00-\x1f]*+\")"
_FAST_PARAMS = r"((?:;" + _TOKEN + r"(?:=" + _FAST_VALUE + r")?)*+)"
_FAST_PARAM = re.compile(r";(" + _TOKEN + r")(?:(=)(" + _FAST_VALUE + r"))?")
_VIA_FAST = re.compile(
    r"SIP/2\.0/([A-Za-z]++) ("
    + grammar.HOST_NAME
    + r"\.?)(?::([0-9]{1,5}+))?"
    + _FAST_PARAMS
    + r"\Z"
)
_NAME_ADDR_FAST = re.compile(
    r'(?:"([^"\\\x00-\x1f]*+)" ?|(' + _TOKEN + r') ?)?<(sips?:[^<>"\s]++)>' + _FAST_PARAMS + r"\Z"
)
_CSEQ_FAST = re.compile(r"([0-9]{1,10}+) ([A-Za-z]++)\Z")
# the same with the URI's own everyday shape inline (uri._COMMON): one match, no escapes
_NAME_ADDR_URI_FAST = re.compile(
    r'(?:"([^"\\\x00-\x1f]*+)" ?|('
    + _TOKEN
    + r") ?)?<"
    + _COMMON_URI.pattern.removesuffix("\\Z")
    + ">"
    + _FAST_PARAMS
    + r"\Z"
)


def _fast_params(text: str) -> dict[str, str | None]:
    """``;a=b;c`` as matched by ``_FAST_PARAMS``: names lower-cased, values as written."""
    if '"' not in text:
        return split_params(text)
    params: dict[str, str | None] = {}
    for name, sep, value in _FAST_PARAM.findall(text):  # a quoted value may hold ';' or '='
        params[name.lower()] = value if sep else None
    return params


def unquote(text: str) -> str:
    """Content of a quoted-string (quoted-pairs resolved); other text is returned stripped."""
    text = text.strip(_LWS)
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return _QUOTED_PAIR.sub(r"\1", text[1:-1])
    return text


def split_commas(text: str) -> list[str]:
    """Split a list header on commas outside quotes and angle brackets.

    Empty elements are kept (as "") so that a validator can reject them.
    """
    if "," not in text:
        return [text.strip(_LWS)]
    out: list[str] = []
    start = 0
    in_quote = in_angle = False
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if in_quote:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            out.append(text[start:i].strip(_LWS))
            start = i + 1
        i += 1
    out.append(text[start:].strip(_LWS))
    return out


def parse_params(text: str, pos: int, what: str) -> dict[str, str | None]:
    """Parse ``*( SEMI generic-param )`` from ``pos`` to the end of ``text``.

    Names are lower-cased; values are kept as written (quoted strings keep quotes).
    """
    params: dict[str, str | None] = {}
    n = len(text)
    while pos < n:
        m = _PARAM.match(text, pos)
        if m is None:
            rest = text[pos:].strip(_LWS)
            if not rest:
                break
            raise ParseError(f"bad parameter in {what}: {text!r}")
        params[m.group(1).lower()] = m.group(2)
        pos = m.end()
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def parse_uint(text: str, what: str, limit: int = 2**32 - 1) -> int:
    text = text.strip(_LWS)
    if not grammar.DIGITS_RE.match(text) or len(text) > 12 or int(text) > limit:
        raise ParseError(f"{what} must be an integer 0..{limit}, got {text!r}")
    return int(text)


# ---------------------------------------------------------------------------------------
# name-addr / addr-spec (From, To, Contact, Route, Record-Route, Refer-To, ...)


@dataclass(slots=True)
class NameAddr:
    """``[display] <uri> *(;param)``. ``tag``, ``expires``, ``q`` live in ``params``."""

    uri: URI
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def copy(self) -> NameAddr:
        return NameAddr(self.uri.copy(), self.display, dict(self.params))

    def __str__(self) -> str:
        display = ""
        if self.display is not None:
            display = grammar.quote(self.display) + " "
        return f"{display}<{self.uri}>{format_params(self.params)}"


@dataclass(slots=True)
class Contact(NameAddr):
    """A Contact value; ``star`` is the ``Contact: *`` of a REGISTER removing all bindings."""

    star: bool = False

    @property
    def expires(self) -> int | None:
        value = self.params.get("expires")
        return None if value is None else parse_uint(value, "Contact expires")

    def __str__(self) -> str:
        return "*" if self.star else NameAddr.__str__(self)


def parse_name_addr(text: str, what: str = "address") -> NameAddr:
    """Parse one name-addr or addr-spec with its header parameters."""
    return name_addr(text, what, NameAddr)


N = TypeVar("N", bound=NameAddr)


def name_addr(text: str, what: str, cls: type[N]) -> N:
    """A ``cls`` (NameAddr or a subclass) of one name-addr or addr-spec with parameters."""
    if len(text) <= MAX_USER_LENGTH:  # the everyday shape in one match (same values)
        m = _NAME_ADDR_URI_FAST.match(text)
        if m is not None:
            quoted, token, scheme, user, host, port_text, uri_params, param_text = m.groups()
            port = int(port_text) if port_text else None
            if port is None or port <= 65535:
                uri_params_ = _fast_params(uri_params) if uri_params else {}
                uri = URI(scheme, user, None, host, port, uri_params_, {})
                params = _fast_params(param_text) if param_text else {}
                return cls(uri, quoted if token is None else token, params)
    return cls(*_parse_name_addr_parts(text, what))


def _parse_name_addr_parts(text: str, what: str) -> tuple[URI, str | None, dict[str, str | None]]:
    fast = _NAME_ADDR_FAST.match(text)
    if fast is not None:
        quoted, token, uri_text, param_text = fast.groups()
        return _uri_in(uri_text, what), quoted if token is None else token, _fast_params(param_text)
    s = text.strip(_LWS)
    if not s:
        raise ParseError(f"empty {what}")
    display: str | None = None
    if s[0] == '"':
        m = _QUOTED.match(s)
        if m is None:
            raise ParseError(f"unterminated quoted display name in {what}: {text!r}")
        display = _QUOTED_PAIR.sub(r"\1", m.group(1))
        rest = s[m.end() :].lstrip(_LWS)
        if not rest.startswith("<"):
            raise ParseError(f"display name without <URI> in {what}: {text!r}")
        s = rest
    lt = s.find("<")
    if lt >= 0:
        if lt > 0:
            words = s[:lt].split()
            for word in words:
                if not grammar.is_token(word):
                    raise ParseError(f"display name {s[:lt]!r} must be quoted in {what}")
            display = " ".join(words)
        gt = s.find(">", lt)
        if gt < 0:
            raise ParseError(f"missing '>' in {what}: {text!r}")
        return _uri_in(s[lt + 1 : gt], what), display, parse_params(s, gt + 1, what)
    # addr-spec: the URI cannot carry ';' params, '?' headers or ',' (RFC 3261 §20).
    end = len(s)
    for i, ch in enumerate(s):
        if ch in "; \t":
            end = i
            break
    uri_text = s[:end]
    if "?" in uri_text or "," in uri_text:
        raise ParseError(f"URI with '?' or ',' must be in <> in {what}: {text!r}")
    return _uri_in(uri_text, what), display, parse_params(s, end, what)


def _uri_in(text: str, what: str) -> URI:
    try:
        return parse_uri(text)
    except ParseError as exc:
        raise ParseError(f"{what}: {exc}") from None


def parse_contact(text: str) -> Contact:
    if "*" in text and text.strip(_LWS) == "*":
        return Contact(URI(), star=True)
    contact = name_addr(text, "Contact", Contact)
    params = contact.params
    expires = params.get("expires")
    if expires is not None and not (len(expires) <= 9 and expires.isdigit() and expires.isascii()):
        _ = contact.expires  # raises: not delta-seconds that fit 32 bits
    q = params.get("q")
    if q is not None:
        try:
            qv = float(q)
        except ValueError:
            qv = -1.0
        if not 0.0 <= qv <= 1.0:
            raise ParseError(f"Contact q must be 0..1, got {q!r}")
    return contact


# ---------------------------------------------------------------------------------------
# Via


@dataclass(slots=True)
class Via:
    """One Via value: ``SIP/2.0/<transport> host[:port];params``."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        value = self.params.get("rport")
        return int(value) if value else None

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    def copy(self) -> Via:
        return Via(self.transport, self.host, self.port, dict(self.params), self.protocol)

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.transport} {self.host}{port}{format_params(self.params)}"


def parse_via(text: str) -> Via:
    fast = _VIA_FAST.match(text)
    if fast is not None:
        transport, host, port_text, param_text = fast.groups()
        params = _fast_params(param_text)
        port = int(port_text) if port_text else None
        rport, ttl = params.get("rport"), params.get("ttl")
        if (
            (port is None or port <= 65535)
            and (rport is None or (rport.isdigit() and len(rport) <= 5 and int(rport) <= 65535))
            and (ttl is None or (ttl.isdigit() and len(ttl) <= 3 and int(ttl) <= 255))
        ):
            return Via(transport.upper(), host, port, params, "SIP/2.0")
    m = _VIA_PROTO.match(text)
    if m is None:
        raise ParseError(f"bad Via protocol in {text!r}")
    name, version, transport = m.groups()
    if name.upper() != "SIP":
        raise ParseError(f"Via protocol must be SIP, got {name!r}")
    hm = _VIA_SENT_BY.match(text, m.end())
    if hm is None:
        raise ParseError(f"bad Via sent-by in {text!r}")
    host_text = hm.group(1)
    host, _ = split_hostport(host_text, text)
    port = None
    if hm.group(2) is not None:
        port = parse_uint(hm.group(2), "Via port", 65535)
    params = parse_params(text, hm.end(), "Via")
    rport = params.get("rport")
    if rport is not None:
        parse_uint(rport, "Via rport", 65535)
    ttl = params.get("ttl")
    if ttl is not None:
        parse_uint(ttl, "Via ttl", 255)
    return Via(transport.upper(), host, port, params, f"{name.upper()}/{version}")


# ---------------------------------------------------------------------------------------
# CSeq


class CSeq(NamedTuple):
    """A CSeq value; a named tuple (immutable, and made faster than a frozen dataclass)."""

    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def parse_cseq(text: str) -> CSeq:
    fast = _CSEQ_FAST.match(text)
    if fast is not None:
        seq = int(fast.group(1))
        if seq <= 0xFFFFFFFF:
            return CSeq(seq, fast.group(2))
    parts = text.split()
    if len(parts) != 2 or not grammar.is_token(parts[1]):
        raise ParseError(f"CSeq must be 'number method', got {text!r}")
    return CSeq(parse_uint(parts[0], "CSeq number"), parts[1])
