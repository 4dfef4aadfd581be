"""HTTP digest authentication for SIP (RFC 7616 with RFC 8760 algorithms; RFC 2617 compatible).

Server side: :class:`DigestServer` issues stateless nonces (an HMAC over the issue time),
verifies responses in constant time, reports expired nonces as ``stale`` and refuses
replayed nonce-counts. Client side: :class:`DigestClient` answers a 401/407 challenge.
Time is always passed in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum

from .errors import ParseError

ALGORITHMS: dict[str, str] = {"MD5": "md5", "SHA-256": "sha256"}
if "sha512_256" in hashlib.algorithms_available:  # RFC 8760's third algorithm, when OpenSSL has it
    ALGORITHMS["SHA-512-256"] = "sha512_256"

_PARAM = re.compile(
    r"[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*=[ \t]*"
    r"(\"(?:[^\"\\]|\\.)*\"|[^ \t,\"]+)[ \t]*(,|\Z)"
)
_QUOTED_VALUES = frozenset(
    ("realm", "nonce", "opaque", "domain", "username", "uri", "response", "cnonce", "qop_options")
)
MAX_HEADER = 4096


def _hash(algorithm: str, text: str) -> str:
    return hashlib.new(ALGORITHMS[algorithm], text.encode("utf-8")).hexdigest()


def _base_algorithm(algorithm: str) -> tuple[str, bool]:
    """``("SHA-256", True)`` for ``SHA-256-sess``; raises for unknown algorithms."""
    upper = algorithm.upper()
    sess = upper.endswith("-SESS")
    base = upper[:-5] if sess else upper
    if base not in ALGORITHMS:
        raise ParseError(f"unsupported digest algorithm {algorithm!r}")
    return base, sess


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """Split ``Digest k=v, k="v"`` into the scheme and its parameters (names lower-cased)."""
    if len(value) > MAX_HEADER:
        raise ParseError("authentication header too long")
    scheme, _, rest = value.strip().partition(" ")
    if not scheme:
        raise ParseError("empty authentication header")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None:
            raise ParseError(f"bad authentication parameter near {rest[pos : pos + 40]!r}")
        raw = m.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[m.group(1).lower()] = raw
        pos = m.end()
    return scheme, params


@dataclass(slots=True)
class Challenge:
    """A ``WWW-Authenticate`` / ``Proxy-Authenticate`` digest challenge."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ("auth",)
    opaque: str | None = None
    stale: bool = False

    def __str__(self) -> str:
        parts = [f"realm={_quote(self.realm)}", f"nonce={_quote(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        parts.append(f"algorithm={self.algorithm}")
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop))}")
        if self.stale:
            parts.append("stale=TRUE")
        return "Digest " + ", ".join(parts)


def parse_challenge(value: str) -> Challenge:
    scheme, params = parse_auth_params(value)
    if scheme.lower() != "digest":
        raise ParseError(f"unsupported authentication scheme {scheme!r}")
    if "realm" not in params or "nonce" not in params:
        raise ParseError("digest challenge without realm or nonce")
    algorithm = params.get("algorithm", "MD5")
    _base_algorithm(algorithm)
    qop = tuple(q.strip() for q in params["qop"].split(",") if q.strip()) if "qop" in params else ()
    return Challenge(
        params["realm"],
        params["nonce"],
        algorithm,
        qop,
        params.get("opaque"),
        params.get("stale", "").lower() == "true",
    )


@dataclass(slots=True)
class Credentials:
    """An ``Authorization`` / ``Proxy-Authorization`` digest response."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    algorithm_given: bool = field(default=True, repr=False)

    def __str__(self) -> str:
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"uri={_quote(self.uri)}",
            f"response={_quote(self.response)}",
        ]
        if self.algorithm_given:
            parts.append(f"algorithm={self.algorithm}")
        if self.qop is not None:
            parts += [f"qop={self.qop}", f"nc={self.nc}", f"cnonce={_quote(self.cnonce or '')}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        return "Digest " + ", ".join(parts)


def parse_credentials(value: str) -> Credentials:
    scheme, params = parse_auth_params(value)
    if scheme.lower() != "digest":
        raise ParseError(f"unsupported authentication scheme {scheme!r}")
    for key in ("username", "realm", "nonce", "uri", "response"):
        if key not in params:
            raise ParseError(f"digest credentials without {key}")
    qop = params.get("qop")
    if qop is not None and ("nc" not in params or "cnonce" not in params):
        raise ParseError("digest credentials with qop but without nc or cnonce")
    nc = params.get("nc")
    if nc is not None and re.fullmatch(r"[0-9a-fA-F]{8}", nc) is None:
        raise ParseError(f"bad digest nonce-count {nc!r}")
    return Credentials(
        params["username"],
        params["realm"],
        params["nonce"],
        params["uri"],
        params["response"],
        params.get("algorithm", "MD5"),
        qop,
        nc,
        params.get("cnonce"),
        params.get("opaque"),
        "algorithm" in params,
    )


def compute_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password), what a server may store instead of the password."""
    base, _ = _base_algorithm(algorithm)
    return _hash(base, f"{username}:{realm}:{password}")


def compute_response(
    *,
    algorithm: str,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    base, sess = _base_algorithm(algorithm)
    if sess:
        ha1 = _hash(base, f"{ha1}:{nonce}:{cnonce or ''}")
    if qop == "auth-int":
        body_hash = hashlib.new(ALGORITHMS[base], body).hexdigest()
        ha2 = _hash(base, f"{method}:{uri}:{body_hash}")
    else:
        ha2 = _hash(base, f"{method}:{uri}")
    if qop in ("auth", "auth-int"):
        return _hash(base, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _hash(base, f"{ha1}:{nonce}:{ha2}")  # RFC 2069/2617 without qop


class DigestClient:
    """Answers challenges for one identity, counting nonce uses (``nc``)."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password
        self._nc: dict[str, int] = {}

    def answer(self, challenge: Challenge, method: str, uri: str, body: bytes = b"") -> Credentials:
        qop: str | None = None
        if challenge.qop:
            if "auth" in challenge.qop:
                qop = "auth"
            elif "auth-int" in challenge.qop:
                qop = "auth-int"
            else:
                raise ParseError(f"no supported qop in {challenge.qop!r}")
        count = self._nc.get(challenge.nonce, 0) + 1
        if len(self._nc) > 64:
            self._nc.clear()
        self._nc[challenge.nonce] = count
        nc = f"{count:08x}" if qop else None
        cnonce = secrets.token_hex(8) if qop else None
        ha1 = compute_ha1(challenge.algorithm, self.username, challenge.realm, self.password)
        response = compute_response(
            algorithm=challenge.algorithm,
            ha1=ha1,
            nonce=challenge.nonce,
            method=method,
            uri=uri,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            body=body,
        )
        return Credentials(
            self.username,
            challenge.realm,
            challenge.nonce,
            uri,
            response,
            challenge.algorithm,
            qop,
            nc,
            cnonce,
            challenge.opaque,
        )


class AuthResult(Enum):
    OK = "ok"
    STALE = "stale"  # right password, expired nonce: challenge again with stale=TRUE
    FAILED = "failed"  # wrong password, unknown user, replay, forged nonce


class DigestServer:
    """Challenges and verifies digest credentials for one realm.

    Nonces are ``base64(issued_ms || random || hmac)``; they need no server state until
    used. Used nonces remember their highest nonce-count (bounded LRU) so a replayed
    request is refused.
    """

    def __init__(
        self,
        realm: str,
        *,
        nonce_ttl: float = 300.0,
        algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
        key: bytes | None = None,
        max_tracked_nonces: int = 10000,
    ) -> None:
        for algorithm in algorithms:
            _base_algorithm(algorithm)
        self.realm = realm
        self.nonce_ttl = nonce_ttl
        self.algorithms = algorithms
        self._key = key or secrets.token_bytes(32)
        self._opaque = secrets.token_hex(8)
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._max_tracked = max_tracked_nonces

    def make_nonce(self, now: float) -> str:
        issued = int(now * 1000).to_bytes(8, "big") + secrets.token_bytes(8)
        mac = hmac.new(self._key, issued, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(issued + mac).decode("ascii").rstrip("=")

    def _nonce_age(self, nonce: str, now: float) -> float | None:
        """Seconds since ``nonce`` was issued, or ``None`` if we did not issue it."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except ValueError:
            return None
        if len(raw) != 32:
            return None
        mac = hmac.new(self._key, raw[:16], hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(mac, raw[16:]):
            return None
        issued_ms = int.from_bytes(raw[:8], "big")
        return now - issued_ms / 1000.0

    def challenges(self, now: float, *, stale: bool = False) -> list[Challenge]:
        """One challenge per algorithm, the preferred first (RFC 8760 §2.4)."""
        nonce = self.make_nonce(now)
        return [
            Challenge(self.realm, nonce, algorithm, ("auth",), self._opaque, stale)
            for algorithm in self.algorithms
        ]

    def verify(
        self,
        credentials: Credentials,
        *,
        method: str,
        password: str | None,
        now: float,
        body: bytes = b"",
    ) -> AuthResult:
        """Check ``credentials`` for ``method``; ``password`` is None for an unknown user.

        An unknown user is processed like a wrong password (same work, same answer) so
        that user names cannot be probed.
        """
        try:
            _base_algorithm(credentials.algorithm)
        except ParseError:
            return AuthResult.FAILED
        if credentials.algorithm.upper() not in (a.upper() for a in self.algorithms):
            return AuthResult.FAILED
        ha1 = compute_ha1(
            credentials.algorithm,
            credentials.username,
            self.realm,
            password if password is not None else secrets.token_hex(16),
        )
        expected = compute_response(
            algorithm=credentials.algorithm,
            ha1=ha1,
            nonce=credentials.nonce,
            method=method,
            uri=credentials.uri,
            qop=credentials.qop,
            nc=credentials.nc,
            cnonce=credentials.cnonce,
            body=body,
        )
        matches = hmac.compare_digest(expected.encode(), credentials.response.lower().encode())
        age = self._nonce_age(credentials.nonce, now)
        if (
            not matches
            or password is None
            or credentials.realm != self.realm
            or age is None
            or credentials.qop not in (None, "auth", "auth-int")
        ):
            return AuthResult.FAILED
        if age > self.nonce_ttl or age < -5.0:
            return AuthResult.STALE
        if credentials.qop is not None:
            count = int(credentials.nc or "0", 16)
            last = self._counts.get(credentials.nonce, 0)
            if count <= last:
                return AuthResult.FAILED  # replayed or reordered nonce-count
            self._counts[credentials.nonce] = count
            self._counts.move_to_end(credentials.nonce)
            while len(self._counts) > self._max_tracked:
                self._counts.popitem(last=False)
        return AuthResult.OK
