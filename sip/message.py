"""SIP requests and responses: ``parse(bytes)`` and ``bytes(message)``.

``parse`` validates the start line and the header fields every SIP element relies on
(Via, From, To, Call-ID, CSeq, Max-Forwards, Content-Length, Contact, ...), so a message
that comes out of it can be handled without further syntax checks. Anything else raises
:class:`ParseError`, never another exception.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final, Generic, TypeVar

from . import grammar
from .errors import ParseError
from .headers import (
    Contact,
    CSeq,
    Headers,
    NameAddr,
    Via,
    canonical_name,
    name_addr,
    parse_contact,
    parse_cseq,
    parse_name_addr,
    parse_uint,
    parse_via,
)
from .uri import MAX_USER_LENGTH, URI, parse_uri, uri_length_error

MAX_MESSAGE_SIZE: Final = 65535
MAX_HEADER_LINES: Final = 256
SIP_VERSION: Final = "SIP/2.0"

REASONS: Final[dict[int, str]] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_FOLD = re.compile(r"\n([ \t])")
_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9])(?: (.*))?\Z", re.S)
_DATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-2][0-9]:[0-5][0-9]:[0-6][0-9] GMT\Z"
)
_WARNING = re.compile(r"[0-9]{3} [^ \t]+ \"(?:[^\"\\]|\\.)*\"\Z")
# Headers that may occur once only (RFC 3261 §20 and RFC 4475 §3.3.8/§3.3.9).
_SINGLETONS = ("Call-ID", "From", "To", "CSeq", "Content-Length", "Max-Forwards", "Expires")
_SINGLETON_SET = frozenset(_SINGLETONS)
_REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")
_CRLF_CHARS = b"\r\n"
_METHODS = frozenset(
    ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "PRACK", "UPDATE")
)
_METHODS |= {"SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH"}
# C0 controls other than HTAB (and LF, the line separator here): allowed in a header
# value only as a quoted-pair inside a quoted string (RFC 3261 §25.1).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f]")
T = TypeVar("T")


# -- typed header parsers (cached by Headers.typed) -----------------------------------------


def _typed_vias(h: Headers, name: str) -> list[Via]:
    values = h.values(name)
    if any(not v for v in values):
        raise ParseError("empty value in Via list")
    return [parse_via(v) for v in values]


def _typed_name_addr(h: Headers, name: str) -> NameAddr:
    value = h.get(name)
    if value is None:
        raise ParseError(f"missing {name} header")
    return parse_name_addr(value, canonical_name(name))


def _typed_cseq(h: Headers, name: str) -> CSeq:
    value = h.get(name)
    if value is None:
        raise ParseError("missing CSeq header")
    return parse_cseq(value)


def _typed_contacts(h: Headers, name: str) -> list[Contact]:
    values = h.values(name)
    if any(not v for v in values):
        raise ParseError("empty value in Contact list")
    contacts = [parse_contact(v) for v in values]
    if len(contacts) > 1 and any(c.star for c in contacts):
        raise ParseError("Contact '*' must stand alone")
    return contacts


def _typed_name_addr_list(h: Headers, name: str) -> list[NameAddr]:
    values = h.values(name)
    if any(not v for v in values):
        raise ParseError(f"empty value in {name} list")
    return [parse_name_addr(v, name) for v in values]


class _Typed(Generic[T]):
    """A message's typed view of a core header: the value ``parse`` left in the headers'
    cache (read often, so looked up first and directly), else ``parser`` through
    :meth:`Headers.typed`, cached the same way."""

    def __init__(self, name: str, parser: Callable[[Headers, str], T]) -> None:
        self.name, self.parser = name, parser

    def __get__(self, message: Message, owner: type | None = None) -> T:
        headers = message.headers
        try:
            return headers._cache[self.name]  # type: ignore[return-value]
        except KeyError:
            return headers.typed(self.name, self.parser)


class Message:
    """Common part of :class:`Request` and :class:`Response`."""

    __slots__ = ("body", "headers")

    def __init__(self, headers: Headers | None = None, body: bytes = b"") -> None:
        self.headers = headers if headers is not None else Headers()
        self.body = body

    # -- typed views of the core headers ------------------------------------------------
    via = _Typed("Via", _typed_vias)
    from_ = _Typed("From", _typed_name_addr)
    to = _Typed("To", _typed_name_addr)

    @property
    def call_id(self) -> str:
        cached = self.headers._cache.get("Call-ID")
        if cached is not None:
            return cached  # type: ignore[return-value]
        value = self.headers.get("Call-ID")
        if value is None:
            raise ParseError("missing Call-ID")
        return value

    cseq = _Typed("CSeq", _typed_cseq)
    contact = _Typed("Contact", _typed_contacts)

    @property
    def route(self) -> list[NameAddr]:
        return self.headers.typed("Route", _typed_name_addr_list)

    @property
    def record_route(self) -> list[NameAddr]:
        return self.headers.typed("Record-Route", _typed_name_addr_list)

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        return None if value is None else parse_uint(value, "Max-Forwards", 255)

    @property
    def expires(self) -> int | None:
        value = self.headers.get("Expires")
        return None if value is None else parse_uint(value, "Expires")

    @property
    def content_type(self) -> str | None:
        """Media type without parameters, lower case (``application/sdp``)."""
        value = self.headers.get("Content-Type")
        if value is None:
            return None
        return value.split(";", 1)[0].strip().lower()

    def _start_line(self) -> str:
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        lines = [self._start_line()]
        length_written = False
        for name, value in self.headers:
            if name == "Content-Length":
                if length_written:
                    continue
                value = str(len(self.body))
                length_written = True
            lines.append(f"{name}: {value}")
        if not length_written:
            lines.append(f"Content-Length: {len(self.body)}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body


class Request(Message):
    __slots__ = ("method", "uri")

    def __init__(
        self,
        method: str,
        uri: URI | str,
        headers: Headers | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = parse_uri(uri) if isinstance(uri, str) else uri

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = REASONS.get(status, "Unknown") if reason is None else reason

    def _start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


# -- parsing --------------------------------------------------------------------------------


def parse(data: bytes | bytearray | memoryview) -> Request | Response:
    """Parse one SIP message from a datagram (or a framed stream message).

    Raises :class:`ParseError` for anything that is not a valid SIP message.

    A head of the everyday shape (CRLF line ends, no folded lines, no other control
    characters: told by counting control bytes) is split into lines at once; any other
    head is unfolded and checked line by line first. Each header line is split at its
    colon and its name looked up in a cache of names already validated; then what every
    SIP element relies on is validated (see ``_validate``) and those typed values kept,
    so reading them later costs nothing. Other headers stay text until asked for.
    """
    if type(data) is not bytes:
        if not isinstance(data, bytearray | memoryview):  # a caller's mistake, said as such
            raise ParseError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
    if len(data) > MAX_MESSAGE_SIZE:
        raise ParseError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}", status=513)
    if data[:1] in _CRLF_START:
        data = data.lstrip(_CRLF_CHARS)  # RFC 3261 §7.5: ignore CRLFs before the start line
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        raw = data[:end]
        lines = raw.decode("utf-8", "surrogateescape").split("\r\n")
        # no control bytes but the CRLFs between lines: then the first CRLFCRLF is
        # where the head ends (no bare LF before it) and every line is whole
        if len(raw) - len(raw.translate(None, _CONTROL_BYTES)) == 2 * len(lines) - 2:
            message = _message(lines, data[end + 4 :])
            if message is not None:
                return message
    found_end = _HEAD_END.search(data)  # the first "\r?\n\r?\n" ends the head
    if found_end is None:
        raise ParseError("no empty line after the header fields")
    head = data[: found_end.start()].decode("utf-8", "surrogateescape")
    head = head.replace("\r\n", "\n")
    if "\n " in head or "\n\t" in head:
        head = _FOLD.sub(r"\1", head)
    if _CONTROL.search(head) is not None:
        _check_controls(head.partition("\n")[2])
    message = _message(head.split("\n"), data[found_end.end() :])
    if message is None:
        raise ParseError("malformed header section")
    return message


def _message(lines: list[str], body: bytes) -> Request | Response | None:
    """The message of a head split into lines; None if a header line is folded."""
    message = _start(lines[0])
    if len(lines) > MAX_HEADER_LINES + 1:
        raise ParseError(f"more than {MAX_HEADER_LINES} header lines")
    items: list[tuple[str, str]] = []
    first: dict[str, str] = {}
    repeated: list[str] = []
    names = _NAMES
    for index in range(1, len(lines)):
        raw, colon, value = lines[index].partition(":")
        name = names.get(raw)
        if name is None:
            if raw[:1] in _LWS_START:
                return None  # a continuation line: unfold first
            if not colon:
                _raise_bad_line(lines)
            name = _header_name(raw, lines)
        value = value.strip(" \t")
        items.append((name, value))
        if name in first:
            repeated.append(name)
        else:
            first[name] = value
    headers = Headers.__new__(Headers)
    headers._items = items
    cache: dict[str, object] = {}
    headers._cache = cache
    message.headers = headers
    _validate(message, cache, first, repeated)
    length_text = first.get("Content-Length")
    if length_text is not None:
        length = _uint(length_text, "Content-Length", MAX_MESSAGE_SIZE)
        if length > len(body):
            raise ParseError(f"Content-Length {length} larger than the {len(body)} body bytes")
        if length < len(body):
            body = body[:length]  # extra octets in a datagram are ignored (RFC 4475 §3.1.1.8)
    message.body = body
    return message


_LWS_START = (" ", "\t")
# C0 controls but HTAB, as bytes: what a plain head holds only as its CRLFs
_CONTROL_BYTES = bytes(c for c in range(32) if c != 9)


def _uint(text: str, what: str, limit: int) -> int:
    """A header's unsigned number: ASCII digits only (``int`` would take any Unicode digit)."""
    if len(text) <= 10 and text.isdigit() and text.isascii():
        value = int(text)
        if value <= limit:
            return value
    return parse_uint(text, what, limit)


_CRLF_START = (b"\r", b"\n")
# header names as written (with any whitespace before the colon) -> canonical name; only
# names that are valid tokens get in, so a hit needs no further check
_NAMES: dict[str, str] = {}


def _header_name(raw: str, lines: list[str]) -> str:
    name = raw.rstrip(" \t")
    if not name or grammar.TOKEN_FULL.match(name) is None:
        _raise_bad_line(lines)
    canonical = canonical_name(name)
    if len(_NAMES) < 4096:  # names come from peers: bound the cache
        _NAMES[raw] = canonical
    return canonical


def _check_controls(fields: str) -> None:
    """Raise for a control character that is not a quoted-pair in a quoted string."""
    for number, line in enumerate(fields.split("\n"), start=2):
        if _CONTROL.search(line) is None:
            continue
        quoted = escaped = False
        for char in line:
            if escaped:
                escaped = False
            elif quoted and char == "\\":
                escaped = True
            elif char == '"':
                quoted = not quoted
            elif _CONTROL.match(char) is not None:
                name = line.split(":", 1)[0][:40]
                raise ParseError(
                    f"line {number}: control character 0x{ord(char):02x} in {name!r} header value"
                )


def _raise_bad_line(lines: list[str]) -> None:
    for number, line in enumerate(lines[1:], start=2):
        if grammar.HEADER_LINE.match(line) is None:
            raise ParseError(f"line {number}: not a header field: {line[:60]!r}")
    raise ParseError("malformed header section")


def _start(line: str) -> Request | Response:
    """The message a start line begins, headers and body still empty."""
    message: Request | Response
    if line.startswith("SIP/"):
        m = _STATUS_LINE.match(line)
        if m is None:
            if not line.startswith("SIP/2.0 "):
                raise ParseError(f"unsupported SIP version in {line[:40]!r}", status=505)
            raise ParseError(f"bad status line {line[:60]!r}: expected 'SIP/2.0 NNN reason'")
        message = Response.__new__(Response)
        message.status = int(m.group(1))
        message.reason = m.group(2) or ""
    else:
        message = Request.__new__(Request)
        message.method, message.uri = _request_line(line)
    return message


def _request_line(line: str) -> tuple[str, URI]:
    parts = line.split(" ")
    if len(parts) != 3:
        raise ParseError(
            f"bad request line {line[:80]!r}: expected 'METHOD URI SIP/2.0' with single spaces"
        )
    method, uri_text, version = parts
    if method not in _METHODS and not grammar.is_token(method):
        raise ParseError(f"bad method {method[:40]!r} in request line")
    if version != SIP_VERSION:
        if version.upper().startswith("SIP/"):
            raise ParseError(f"unsupported SIP version {version[:20]!r}", status=505)
        raise ParseError(f"bad SIP version {version[:20]!r} in request line")
    if len(uri_text) > MAX_USER_LENGTH:
        too_long = uri_length_error(uri_text)
        if too_long is not None:
            raise ParseError(f"Request-URI: {too_long}", status=414)
    uri = parse_uri(uri_text)
    if uri.headers and uri.is_sip:
        raise ParseError(f"Request-URI must not carry headers: {uri_text[:80]!r}")
    return method, uri


def _validate(
    message: Request | Response,
    cache: dict[str, object],
    first: dict[str, str],
    repeated: list[str],
) -> None:
    """Check what the stack relies on; the typed values parsed here stay cached.

    Route and Record-Route are parsed when first read (a ParseError then): only a
    dialog's creation and a request's routing read them, and both answer 400 or fail
    the request on a bad one. Every other header is checked here.
    """
    try:
        via, from_, to = first["Via"], first["From"], first["To"]
        call_id, cseq_text = first["Call-ID"], first["CSeq"]
    except KeyError:
        missing = next(name for name in _REQUIRED if name not in first)
        raise ParseError(f"missing {missing} header") from None
    if repeated:
        for name in repeated:
            if name in _SINGLETON_SET:
                raise ParseError(f"{name} header must occur once")
    if grammar.CALL_ID_FULL.match(call_id) is None:
        raise ParseError(f"bad Call-ID {call_id[:60]!r}")
    cache["Call-ID"] = call_id
    if "," not in via and (not repeated or "Via" not in repeated):
        if not via:
            raise ParseError("empty value in Via list")
        cache["Via"] = [parse_via(via)]
    else:
        cache["Via"] = _typed_vias(message.headers, "Via")
    cache["From"] = name_addr(from_, "From", NameAddr)
    cache["To"] = name_addr(to, "To", NameAddr)
    cseq = cache["CSeq"] = parse_cseq(cseq_text)
    if type(message) is Request and cseq.method != message.method:
        raise ParseError(f"CSeq method {cseq.method!r} differs from {message.method!r}")
    contact = first.get("Contact")
    if contact is not None:
        if "," not in contact and contact != "*" and (not repeated or "Contact" not in repeated):
            if not contact:
                raise ParseError("empty value in Contact list")
            cache["Contact"] = [parse_contact(contact)]
        else:
            cache["Contact"] = _typed_contacts(message.headers, "Contact")
    value = first.get("Max-Forwards")
    if value is not None:
        _uint(value, "Max-Forwards", 255)
    value = first.get("Expires")
    if value is not None:
        _uint(value, "Expires", 2**32 - 1)
    if "Warning" in first:
        for value in message.headers.values("Warning"):
            if _WARNING.match(value) is None:
                raise ParseError(f"bad Warning {value[:60]!r}: expected 'NNN agent \"text\"'")
    retry = first.get("Retry-After")
    if retry is not None:
        parse_uint(retry.split(";", 1)[0].split("(", 1)[0], "Retry-After")
    date = first.get("Date")
    if date is not None and _DATE.match(date) is None:
        raise ParseError(f"bad Date {date[:60]!r}: expected RFC 1123 date in GMT")


# -- building -------------------------------------------------------------------------------

_RESPONSE_COPIED = ("Via", "From", "To", "Call-ID", "CSeq")


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    body: bytes = b"",
) -> Response:
    """A response to ``request`` with Via, From, To, Call-ID, CSeq copied (RFC 3261 §8.2.6).

    ``to_tag`` is added to To when it has none (not for 100 Trying).
    """
    headers = Headers()
    for name in _RESPONSE_COPIED:
        for value in request.headers.get_lines(name):
            headers.add(name, value)
    if to_tag is not None and status > 100 and request.to.tag is None:
        to = request.to.copy()
        to.params["tag"] = to_tag
        headers.set("To", to)
    if status == 100 and "Timestamp" in request.headers:
        headers.add("Timestamp", request.headers.get("Timestamp"))
    return Response(status, reason, headers, body)


_SALVAGED = ("Via", "From", "To", "Call-ID", "CSeq")
_SALVAGE_NEEDED = ("Via", "From", "To")  # without these a response cannot reach the peer


def error_response(data: bytes, error: ParseError) -> Response | None:
    """The response to send for a request ``parse`` refused, if one can be formed.

    RFC 3261 wants a 400 (or the status the error carries) whenever the request is
    recognisable enough to be answered: its start line names a method other than ACK and
    it has the Via, From and To a response needs to reach the peer; Call-ID and CSeq are
    copied when present (their absence may be what is wrong). The reason phrase says
    what was wrong. Returns None for responses and unanswerable garbage (drop those).
    """
    try:
        text = bytes(data[:MAX_MESSAGE_SIZE]).decode("utf-8", "replace")
    except Exception:
        return None
    text = _FOLD.sub(r"\1", text.lstrip("\r\n").replace("\r\n", "\n"))
    head = text.split("\n\n", 1)[0]
    lines = head.split("\n")
    method = lines[0].split(" ", 1)[0]
    if not lines[0] or method.startswith("SIP/") or method == "ACK":
        return None
    found: dict[str, list[str]] = {}
    for line in lines[1 : MAX_HEADER_LINES + 1]:
        m = grammar.HEADER_LINE.match(line)
        if m is not None:
            name = canonical_name(m.group(1))
            if name in _SALVAGED:
                found.setdefault(name, []).append(m.group(2).strip())
    if any(name not in found for name in _SALVAGE_NEEDED):
        return None
    headers = Headers()
    for name in _SALVAGED:
        for value in found.get(name, ()) if name == "Via" else found.get(name, [])[:1]:
            headers.add(name, value)
    reason = REASONS.get(error.status, "Bad Request")
    detail = " ".join(str(error).split())[:100].encode("ascii", "replace").decode()
    return Response(error.status, f"{reason} ({detail})", headers)
