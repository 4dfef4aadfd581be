"""Where registrations live between restarts: a small store interface, in memory or SQLite.

The registrar (:mod:`softswitch.registrar`) stays a pure table; it tells a
:class:`BindingStore` what changed (a binding added or refreshed, one removed) and reads
the stored ones back at start. Expiry is stored as wall-clock time (the event loop's clock
starts again at each run), so a binding reloaded after a restart keeps its remaining
lifetime. A cluster can put bindings elsewhere (Redis, a shared database) by implementing
the same four methods.

:class:`SqliteBindingStore` keeps one row per binding in ``registrations.sqlite`` under the
data directory, created 0600 before SQLite opens it (its journal takes the same mode).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .private_files import private_dir, private_file


@dataclass(frozen=True, slots=True)
class StoredBinding:
    """A binding as stored: ``expires_at`` is wall-clock time (seconds since the epoch)."""

    aor: str
    contact: str
    transport: str  # where the REGISTER came from: requests go there (NAT)
    host: str
    port: int
    expires_at: float
    call_id: str
    cseq: int
    user_agent: str = ""
    q: float = 1.0
    instance: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.aor, self.instance or self.contact


class BindingStore(Protocol):
    def load(self) -> list[StoredBinding]:
        """Every stored binding (expired ones included: the registrar drops them)."""
        ...

    def put(self, binding: StoredBinding) -> None:
        """Add or replace the binding with the same AOR and device (instance or contact)."""
        ...

    def delete(self, aor: str, device: str) -> None: ...

    def close(self) -> None: ...


class MemoryBindingStore:
    """Bindings kept in this process only (tests, or a registrar that need not survive)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], StoredBinding] = {}
        self.writes = 0

    def load(self) -> list[StoredBinding]:
        return list(self.rows.values())

    def put(self, binding: StoredBinding) -> None:
        self.rows[binding.key] = binding
        self.writes += 1

    def delete(self, aor: str, device: str) -> None:
        self.rows.pop((aor, device), None)
        self.writes += 1

    def close(self) -> None:
        pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS bindings (
    aor TEXT NOT NULL,
    device TEXT NOT NULL,
    contact TEXT NOT NULL,
    transport TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    call_id TEXT NOT NULL,
    cseq INTEGER NOT NULL,
    user_agent TEXT NOT NULL DEFAULT '',
    q REAL NOT NULL DEFAULT 1.0,
    instance TEXT,
    PRIMARY KEY (aor, device)
);
"""


class SqliteBindingStore:
    """Bindings in a SQLite file; opened on first use, each change committed at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self.writes = 0

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            private_dir(self.path.parent, own=False)
            # created 0600 before SQLite opens it: its journal files take the same mode
            self._db = sqlite3.connect(str(private_file(self.path)))
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # the write-ahead log is truncated back to this after each checkpoint: a
            # long-running daemon's files stay the size of its bindings
            self._db.execute("PRAGMA journal_size_limit=262144")
            self._db.executescript(_SCHEMA)
            self._db.commit()
        return self._db

    def load(self) -> list[StoredBinding]:
        rows = self.db.execute(
            "SELECT aor, contact, transport, host, port, expires_at, call_id, cseq, "
            "user_agent, q, instance FROM bindings"
        ).fetchall()
        return [StoredBinding(*row) for row in rows]

    def put(self, binding: StoredBinding) -> None:
        b = binding
        values = (b.aor, b.key[1], b.contact, b.transport, b.host, b.port, b.expires_at)
        self.db.execute(
            "INSERT OR REPLACE INTO bindings (aor, device, contact, transport, host, port, "
            "expires_at, call_id, cseq, user_agent, q, instance) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*values, b.call_id, b.cseq, b.user_agent, b.q, b.instance),
        )
        self.db.commit()
        self.writes += 1

    def delete(self, aor: str, device: str) -> None:
        self.db.execute("DELETE FROM bindings WHERE aor = ? AND device = ?", (aor, device))
        self.db.commit()
        self.writes += 1

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
