"""Console accounts: administrators, users' portal passwords and API tokens, in SQLite.

Passwords are stored as argon2id hashes (argon2-cffi, its default cost), verified in a
worker thread (a hash costs tens of milliseconds and 64 MiB: at most two at once). A user
who has not chosen a portal password logs in with the phone password of the
configuration (which stays in clear there: SIP digest needs it); choosing one in the
portal stores its hash. API tokens are random (256 bits) and stored as their SHA-256, so
the database does not hold them; each carries a role (``admin``, or ``user`` for one
extension). ``console.sqlite`` is created 0600 in the 0700 data directory.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ...private_files import private_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS admins (name TEXT PRIMARY KEY, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS portal (extension TEXT PRIMARY KEY, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    digest TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    extension TEXT,
    label TEXT NOT NULL,
    created REAL NOT NULL
);
"""
MIN_PASSWORD = 8
MAX_PASSWORD = 128
TOKEN_PREFIX = "sst_"
MAX_TOKENS = 200

_hasher = PasswordHasher()
_hashing = threading.BoundedSemaphore(2)  # hashes at once (each 64 MiB)
# a hash to verify against when the account does not exist: same time as a wrong password
_DUMMY = _hasher.hash(secrets.token_hex(16))


class PasswordError(ValueError):
    """A password that cannot be used (too short, too long)."""


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise PasswordError(f"at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise PasswordError(f"at most {MAX_PASSWORD} characters")


def verify(stored: str | None, password: str) -> bool:
    """In a worker thread: does ``password`` match ``stored`` (None: no account, the
    same work is done and the answer is no)?"""
    with _hashing:
        try:
            return _hasher.verify(stored or _DUMMY, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


@dataclass(frozen=True, slots=True)
class Token:
    role: str  # "admin" or "user"
    extension: str | None
    label: str
    digest: str
    created: float


class Accounts:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.db = sqlite3.connect(
            str(private_file(data_dir / "console.sqlite")), check_same_thread=False
        )
        self._lock = threading.Lock()  # hashes are checked in worker threads
        with self._lock:
            self.db.executescript(SCHEMA)
            self.db.commit()

    def close(self) -> None:
        self.db.close()

    def _one(self, sql: str, *args: object) -> tuple[object, ...] | None:
        with self._lock:
            row = self.db.execute(sql, args).fetchone()
        return tuple(row) if row is not None else None

    def _write(self, sql: str, *args: object) -> int:
        with self._lock:
            cursor = self.db.execute(sql, args)
            self.db.commit()
            return cursor.rowcount

    # -- administrators ------------------------------------------------------------------

    def has_admin(self) -> bool:
        return self._one("SELECT 1 FROM admins LIMIT 1") is not None

    def set_admin(self, name: str, password: str) -> None:
        check_password(password)
        if not 1 <= len(name) <= 32 or not name.replace("-", "").replace("_", "").isalnum():
            raise PasswordError("an administrator's name is 1-32 letters, digits, - or _")
        self._write(
            "INSERT INTO admins (name, hash) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET hash = excluded.hash",
            name,
            _hasher.hash(password),
        )

    async def check_admin(self, name: str, password: str) -> bool:
        row = self._one("SELECT hash FROM admins WHERE name = ?", name)
        return await asyncio.to_thread(verify, str(row[0]) if row else None, password)

    # -- users' portal passwords ---------------------------------------------------------

    def has_portal_password(self, extension: str) -> bool:
        return self._one("SELECT 1 FROM portal WHERE extension = ?", extension) is not None

    def set_portal(self, extension: str, password: str) -> None:
        check_password(password)
        self._write(
            "INSERT INTO portal (extension, hash) VALUES (?, ?) "
            "ON CONFLICT(extension) DO UPDATE SET hash = excluded.hash",
            extension,
            _hasher.hash(password),
        )

    def forget_portal(self, extension: str) -> None:
        """Back to the phone password (an administrator's reset, a deleted user)."""
        self._write("DELETE FROM portal WHERE extension = ?", extension)

    async def check_portal(self, extension: str, password: str, phone_password: str) -> bool:
        row = self._one("SELECT hash FROM portal WHERE extension = ?", extension)
        if row is None:  # not chosen yet: the phone password (compared in constant time)
            await asyncio.to_thread(verify, None, password)  # the time any attempt takes
            return hmac.compare_digest(password.encode(), phone_password.encode())
        return await asyncio.to_thread(verify, str(row[0]), password)

    # -- API tokens ----------------------------------------------------------------------

    def new_token(self, role: str, extension: str | None, label: str) -> str:
        """A new token (shown once: only its digest is kept)."""
        count = self._one("SELECT COUNT(*) FROM tokens")
        if count is not None and int(str(count[0])) >= MAX_TOKENS:
            raise PasswordError(f"at most {MAX_TOKENS} API tokens: revoke some first")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self._write(
            "INSERT INTO tokens (digest, role, extension, label, created) VALUES (?,?,?,?,?)",
            _digest(token),
            role,
            extension,
            label[:64],
            time.time(),
        )
        return token

    def token(self, token: str) -> Token | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
            return None
        row = self._one(
            "SELECT role, extension, label, digest, created FROM tokens WHERE digest = ?",
            _digest(token),
        )
        if row is None:
            return None
        role, extension, label, digest, created = row
        return Token(
            str(role),
            None if extension is None else str(extension),
            str(label),
            str(digest),
            float(str(created)),
        )

    def tokens(self, extension: str | None = None) -> list[Token]:
        with self._lock:
            if extension is None:
                rows = self.db.execute(
                    "SELECT role, extension, label, digest, created FROM tokens ORDER BY created"
                ).fetchall()
            else:
                rows = self.db.execute(
                    "SELECT role, extension, label, digest, created FROM tokens "
                    "WHERE extension = ? AND role = 'user' ORDER BY created",
                    (extension,),
                ).fetchall()
        return [Token(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def revoke(self, digest: str, extension: str | None = None) -> bool:
        """Revoke a token by its digest (``extension``: only that user's)."""
        if extension is None:
            return self._write("DELETE FROM tokens WHERE digest = ?", digest) > 0
        return (
            self._write(
                "DELETE FROM tokens WHERE digest = ? AND extension = ? AND role = 'user'",
                digest,
                extension,
            )
            > 0
        )

    def revoke_user_tokens(self, extension: str) -> int:
        """Revoke every token of the user ``extension``; how many there were."""
        return self._write("DELETE FROM tokens WHERE extension = ? AND role = 'user'", extension)

    def forget_user(self, extension: str) -> None:
        """A deleted user, or one whose phone password was changed or reset: its portal
        password and tokens go (whoever held them must log in with the new password)."""
        self.forget_portal(extension)
        self.revoke_user_tokens(extension)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
