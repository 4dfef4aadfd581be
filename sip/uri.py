"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966) with the comparison rules of §19.1.4.

Components are stored unescaped; ``str()`` escapes what the grammar requires, so
``parse_uri(str(u)) == u`` for any URI and serialisation is stable after one round.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote as _pct_quote
from urllib.parse import unquote as _pct_unquote

from . import grammar
from .errors import ParseError

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_USER_SAFE = grammar.UNRESERVED + grammar.USER_UNRESERVED
_PASSWORD_SAFE = grammar.PASSWORD_CHARS
_PARAM_SAFE = grammar.UNRESERVED + grammar.PARAM_UNRESERVED
_HEADER_SAFE = grammar.UNRESERVED + grammar.HNV_UNRESERVED
_TEL_SAFE = grammar.UNRESERVED + grammar.PARAM_UNRESERVED
_TEL_VISUAL = str.maketrans("", "", "-.()")
# Parameters that make two URIs differ when present in only one of them (§19.1.4).
_STRICT_PARAMS = ("user", "ttl", "method", "maddr", "transport")
# Bounds on what a peer may send: the longest URI of RFC 4475 (longreq) is 1627
# characters with a 423-character user part.
MAX_URI_LENGTH = 2048
MAX_USER_LENGTH = 512


def _unescape(text: str, what: str, source: str) -> str:
    if "%" not in text:
        return text
    if _BAD_ESCAPE.search(text):
        raise ParseError(f"bad %-escape in URI {what}: {source!r}")
    return _pct_unquote(text, encoding="utf-8", errors="surrogateescape")


def _escape(text: str, safe: str) -> str:
    plain = _PLAIN.get(safe)
    if plain is None:  # what quote() leaves alone: its always-safe characters and ``safe``
        plain = _PLAIN[safe] = re.compile(f"[A-Za-z0-9_.~{re.escape(safe)}-]*\\Z")
    if plain.match(text) is not None:  # nearly every URI: nothing to escape
        return text
    return _pct_quote(text, safe=safe, encoding="utf-8", errors="surrogateescape")


_PLAIN: dict[str, re.Pattern[str]] = {}


def _allowed(chars: str) -> re.Pattern[str]:
    return re.compile("[" + re.escape(chars + "%") + "]*\\Z")


_USER_OK = _allowed(_USER_SAFE)
_PASSWORD_OK = _allowed(_PASSWORD_SAFE)
_PARAM_OK = _allowed(_PARAM_SAFE)
_HEADER_OK = _allowed(_HEADER_SAFE)
_TEL_OK = _allowed(_TEL_SAFE)
_URI_BAD_CHAR = re.compile(r'[\x00-\x20<>"\x7f-\U0010ffff]')


def _check_chars(text: str, allowed: re.Pattern[str], what: str, source: str) -> None:
    if allowed.match(text) is None:
        raise ParseError(f"character not allowed in URI {what}: {source!r}")


def parse_host(text: str, source: str) -> str:
    """Validate a host: hostname, IPv4 address or bracketed IPv6 reference."""
    if text.startswith("["):
        if not text.endswith("]") or not _valid_ipv6(text[1:-1]):
            raise ParseError(f"bad IPv6 reference in {source!r}")
        return text
    if grammar.HOSTNAME_RE.match(text) is None:
        raise ParseError(f"bad host {text!r} in {source!r}")
    return text


def _valid_ipv6(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def split_hostport(text: str, source: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` (IPv6 in brackets) and validate both parts."""
    port: int | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ParseError(f"unterminated IPv6 reference in {source!r}")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ParseError(f"junk after IPv6 reference in {source!r}")
            port = _parse_port(rest[1:], source)
    else:
        host, sep, port_text = text.partition(":")
        if sep:
            port = _parse_port(port_text, source)
    return parse_host(host, source), port


def _parse_port(text: str, source: str) -> int:
    if not grammar.DIGITS_RE.match(text) or len(text) > 5 or int(text) > 65535:
        raise ParseError(f"bad port {text!r} in {source!r}")
    return int(text)


@dataclass(eq=False, slots=True)
class URI:
    """A parsed URI. ``host`` keeps brackets for IPv6; ``params`` keys are lower case."""

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    opaque: str | None = None  # the part after "scheme:" of a URI that is not sip/sips/tel

    @property
    def is_sip(self) -> bool:
        return self.scheme in ("sip", "sips")

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def host_bare(self) -> str:
        """The host without IPv6 brackets, as sockets want it."""
        return self.host[1:-1] if self.host.startswith("[") else self.host

    @property
    def aor(self) -> str:
        """Address of record: ``scheme:user@host`` in canonical case, no port or params."""
        if not self.is_sip:
            return str(self)
        user = f"{_escape(self.user, _USER_SAFE)}@" if self.user is not None else ""
        return f"{self.scheme}:{user}{self.host.lower()}"

    def copy(self, **changes: object) -> URI:
        new = URI(
            self.scheme,
            self.user,
            self.password,
            self.host,
            self.port,
            dict(self.params),
            dict(self.headers),
            self.opaque,
        )
        for name, value in changes.items():
            setattr(new, name, value)
        return new

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        out = [self.scheme, ":"]
        if self.scheme == "tel":
            out.append(_escape(self.user or "", _TEL_SAFE))
        else:
            if self.user is not None:
                out.append(_escape(self.user, _USER_SAFE))
                if self.password is not None:
                    out.append(":" + _escape(self.password, _PASSWORD_SAFE))
                out.append("@")
            out.append(self.host)
            if self.port is not None:
                out.append(f":{self.port}")
        for name, value in self.params.items():
            out.append(";" + _escape(name, _PARAM_SAFE))
            if value is not None:
                out.append("=" + _escape(value, _PARAM_SAFE))
        if self.headers:
            out.append(
                "?"
                + "&".join(
                    f"{_escape(k, _HEADER_SAFE)}={_escape(v, _HEADER_SAFE)}"
                    for k, v in self.headers.items()
                )
            )
        return "".join(out)

    def __repr__(self) -> str:
        return f"URI({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        """RFC 3261 §19.1.4 equality (RFC 3966 §4 for tel)."""
        if not isinstance(other, URI):
            return NotImplemented
        if self.scheme != other.scheme:
            return False
        if self.opaque is not None or other.opaque is not None:
            return self.opaque == other.opaque
        if self.scheme == "tel":
            return (self.user or "").translate(_TEL_VISUAL).lower() == (other.user or "").translate(
                _TEL_VISUAL
            ).lower() and _lower_params(self.params) == _lower_params(other.params)
        if (self.user, self.password) != (other.user, other.password):
            return False
        if self.host.lower() != other.host.lower() or self.port != other.port:
            return False
        for name in _STRICT_PARAMS:
            if (name in self.params) != (name in other.params):
                return False
            a, b = self.params.get(name), other.params.get(name)
            if (a or "").lower() != (b or "").lower():
                return False
        for name, value in self.params.items():
            if name in other.params and name not in _STRICT_PARAMS:
                theirs = other.params[name]
                if (value or "").lower() != (theirs or "").lower() or (value is None) != (
                    theirs is None
                ):
                    return False
        return _lower_keys(self.headers) == _lower_keys(other.headers)

    __hash__ = None  # type: ignore[assignment]  # mutable; equality is not structural


def _lower_params(params: dict[str, str | None]) -> dict[str, str | None]:
    return {k: v.lower() if v is not None else None for k, v in params.items()}


def _lower_keys(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _parse_params(text: str, source: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    if not text:
        return params
    for item in text.split(";"):
        name, sep, value = item.partition("=")
        if not name:
            raise ParseError(f"empty URI parameter in {source!r}")
        _check_chars(name, _PARAM_OK, "parameter", source)
        key = _unescape(name, "parameter", source).lower()
        if sep:
            _check_chars(value, _PARAM_OK, "parameter", source)
            params[key] = _unescape(value, "parameter", source)
        else:
            params[key] = None
    return params


def _parse_headers(text: str, source: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in text.split("&"):
        name, sep, value = item.partition("=")
        if not name or not sep:
            raise ParseError(f"bad URI header {item!r} in {source!r}")
        _check_chars(name, _HEADER_OK, "header", source)
        _check_chars(value, _HEADER_OK, "header", source)
        headers[_unescape(name, "header", source)] = _unescape(value, "header", source)
    return headers


# The everyday shape (sip:user@host:port;params, nothing escaped, no IPv6, no headers),
# parsed by one regex; anything else takes the general path below.
_COMMON = re.compile(
    r"(sips?):(?:([A-Za-z0-9\-_.!~*'()&=+$,;?/]++)@)?(" + grammar.HOST_NAME + r")"
    r"(?::([0-9]{1,5}+))?((?:;[A-Za-z0-9\-_.!~*'()\[\]/:&+$]++(?:=[A-Za-z0-9\-_.!~*'()\[\]/:&+$]++)?)*+)\Z"
)


def split_params(text: str) -> dict[str, str | None]:
    """``;a=b;c`` with nothing quoted or escaped (as the fast-path regexes match it):
    names lower-cased, values as written, ``None`` for a name without a value."""
    params: dict[str, str | None] = {}
    if text:
        for item in text[1:].split(";"):
            name, sep, value = item.partition("=")
            params[name.lower()] = value if sep else None
    return params


def uri_length_error(text: str) -> str | None:
    """Why ``text`` is too long for a URI (total, or its user part), or None."""
    if len(text) > MAX_URI_LENGTH:
        return f"URI of {len(text)} characters exceeds {MAX_URI_LENGTH}"
    scheme, _, rest = text.partition(":")
    if "@" in rest:
        user = rest.partition("@")[0]
    elif scheme.lower() == "tel":
        user = rest.partition(";")[0]
    else:
        return None
    if len(user) > MAX_USER_LENGTH:
        return f"URI user part of {len(user)} characters exceeds {MAX_USER_LENGTH}"
    return None


def parse_uri(text: str) -> URI:
    """Parse a URI. Raises :class:`ParseError` with the reason and the offending text."""
    if len(text) > MAX_USER_LENGTH:
        too_long = uri_length_error(text)
        if too_long is not None:
            raise ParseError(too_long)
    m = _COMMON.match(text)
    if m is not None:
        scheme, user, host, port_text, param_text = m.groups()
        port = int(port_text) if port_text else None
        if port is None or port <= 65535:
            return URI(scheme, user, None, host, port, split_params(param_text))
    scheme, sep, rest = text.partition(":")
    if not sep or grammar.SCHEME_RE.match(scheme) is None:
        raise ParseError(f"URI without a scheme: {text!r}")
    scheme = scheme.lower()
    if not rest:
        raise ParseError(f"empty URI after scheme: {text!r}")
    bad = _URI_BAD_CHAR.search(rest)
    if bad is not None:
        raise ParseError(f"character {bad.group()!r} not allowed in URI {text!r}")
    if scheme == "tel":
        number, _, params = rest.partition(";")
        if not number:
            raise ParseError(f"tel URI without a number: {text!r}")
        _check_chars(number, _TEL_OK, "number", text)
        return URI(
            scheme,
            user=_unescape(number, "number", text),
            params=_parse_params(params, text),
        )
    if scheme not in ("sip", "sips"):
        return URI(scheme, opaque=rest)

    user = password = None
    userinfo, at, hostpart = rest.partition("@")
    if not at:
        hostpart, userinfo = rest, ""
    elif not userinfo:
        raise ParseError(f"empty user part in URI {text!r}")
    else:
        user_text, colon, password_text = userinfo.partition(":")
        _check_chars(user_text, _USER_OK, "user", text)
        user = _unescape(user_text, "user", text)
        if colon:
            _check_chars(password_text, _PASSWORD_OK, "password", text)
            password = _unescape(password_text, "password", text)
    hostport, qmark, header_text = hostpart.partition("?")
    hostport, _, param_text = hostport.partition(";")
    if not hostport:
        raise ParseError(f"URI without a host: {text!r}")
    host, port = split_hostport(hostport, text)
    return URI(
        scheme,
        user,
        password,
        host,
        port,
        _parse_params(param_text, text),
        _parse_headers(header_text, text) if qmark else {},
    )
