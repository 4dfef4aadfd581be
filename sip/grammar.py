"""RFC 3261 §25 grammar pieces as character sets and compiled regexes."""

from __future__ import annotations

import re
import string

ALPHANUM = string.ascii_letters + string.digits
MARK = "-_.!~*'()"
UNRESERVED = ALPHANUM + MARK
# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CHARS = ALPHANUM + "-.!%*_+`'~"
# word adds the separators that may appear in Call-ID.
WORD_CHARS = TOKEN_CHARS + '()<>:\\"/[]?{}'
USER_UNRESERVED = "&=+$,;?/"
PASSWORD_CHARS = UNRESERVED + "&=+$,"
PARAM_UNRESERVED = "[]/:&+$"
HNV_UNRESERVED = "[]/?:+$"

TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
TOKEN_FULL = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
WORD_FULL = re.compile(r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+\Z")
CALL_ID_FULL = re.compile(
    r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+(@[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+)?\Z"
)
# Header names are tokens; a name is followed by optional whitespace and a colon.
HEADER_LINE = re.compile(r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*:[ \t]*(.*)\Z", re.S)
SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*\Z")
# hostname: labels of alphanumerics and hyphens (underscore tolerated: seen in the wild),
# hyphens only inside a label; possessive, so a near miss fails at once instead of
# backtracking through every split of a label
_LABEL = r"[A-Za-z0-9_]++(?:-++[A-Za-z0-9_]++)*+"
HOST_NAME = _LABEL + r"(?:\." + _LABEL + r")*+"
HOSTNAME_RE = re.compile(HOST_NAME + r"\.?\Z")
IPV4_RE = re.compile(r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}\Z")
DIGITS_RE = re.compile(r"[0-9]+\Z")
# LWS = [*WSP CRLF] 1*WSP; folded lines are unfolded before header values are parsed.
LWS_RE = re.compile(r"[ \t]+")


def is_token(text: str) -> bool:
    return TOKEN_FULL.match(text) is not None


_QUOTE_ESCAPES = {ord("\\"): "\\\\", ord('"'): '\\"', ord("\r"): " ", ord("\n"): " "}
_QUOTE_ESCAPES.update(
    {c: "\\" + chr(c) for c in (*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F)}
)


def quote(text: str) -> str:
    """Quote ``text`` as a quoted-string.

    Backslash, double quote and control characters become quoted-pairs; CR and LF cannot
    be represented in a quoted-string (RFC 3261 §25.1) and become spaces.
    """
    return '"' + text.translate(_QUOTE_ESCAPES) + '"'


def quote_if_needed(text: str) -> str:
    return text if TOKEN_FULL.match(text) else quote(text)
