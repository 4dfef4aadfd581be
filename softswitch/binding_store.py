"""Where registrations live between restarts: a small store interface, in memory or SQLite.

The registrar (:mod:`softswitch.registrar`) stays a pure table; it tells a
:class:`BindingStore` what changed (a binding added or refreshed, one removed) and is given
the stored ones back at start. Expiry is stored as wall-clock time (the event loop's clock
starts again at each run), so a binding reloaded after a restart keeps its remaining
lifetime.

The interface is asynchronous where it waits and never blocks the loop where it does not:
``put`` and ``delete`` return at once — the change is queued, coalesced with any change to
the same binding still waiting, and written in order by the store's own worker — while
``load``, ``flush`` and ``close`` are awaited. A networked store (Redis, a shared
database) implements the same five methods with its asyncio client.

:class:`SqliteBindingStore` keeps one row per binding in ``registrations.sqlite`` under the
data directory, created 0600 before SQLite opens it (its journal takes the same mode), and
writes on a thread of its own: each batch of queued changes is one transaction, so a
registration storm costs the loop a dict update per REGISTER, not a commit.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .batch_writer import BatchWriter
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
    async def load(self) -> list[StoredBinding]:
        """Every stored binding (expired ones included: the registrar drops them), after
        every change queued so far."""
        ...

    def put(self, binding: StoredBinding) -> None:
        """Queue: add or replace the binding with the same AOR and device (instance or
        contact). Returns at once."""
        ...

    def delete(self, aor: str, device: str) -> None:
        """Queue the removal of a binding. Returns at once."""
        ...

    async def flush(self) -> None:
        """Every change queued so far is stored."""
        ...

    async def close(self) -> None:
        """Flush, then release the store."""
        ...


class MemoryBindingStore:
    """Bindings kept in this process only (tests, or a registrar that need not survive)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], StoredBinding] = {}
        self.writes = 0

    async def load(self) -> list[StoredBinding]:
        return list(self.rows.values())

    def put(self, binding: StoredBinding) -> None:
        self.rows[binding.key] = binding
        self.writes += 1

    def delete(self, aor: str, device: str) -> None:
        self.rows.pop((aor, device), None)
        self.writes += 1

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
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
    """Bindings in a SQLite file, written by a thread of its own (see the module)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None  # used on the writer's thread only
        # changes by binding (None: delete it), coalesced until handed to the thread
        self._writer: BatchWriter[tuple[str, str], StoredBinding | None] = BatchWriter(
            "bindings", self._write
        )

    @property
    def writes(self) -> int:
        """Changes queued since the start."""
        return self._writer.queued

    @property
    def batches(self) -> int:
        """Transactions written since the start."""
        return self._writer.batches

    # -- the loop's side ------------------------------------------------------------------

    def put(self, binding: StoredBinding) -> None:
        self._writer.queue(binding.key, binding)

    def delete(self, aor: str, device: str) -> None:
        self._writer.queue((aor, device), None)

    async def flush(self) -> None:
        await self._writer.flush()

    async def load(self) -> list[StoredBinding]:
        return await self._writer.run(self._load)

    async def close(self) -> None:
        """Flush and release the file (a second call does nothing)."""
        await self._writer.close(self._close)

    # -- the worker's side ----------------------------------------------------------------

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            private_dir(self.path.parent, own=False)
            # created 0600 before SQLite opens it: its journal files take the same mode
            self._db = sqlite3.connect(str(private_file(self.path)))
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # checkpoint every 64 pages and truncate the write-ahead log back to 256 kB:
            # a long-running daemon's files stay the size of its bindings
            self._db.execute("PRAGMA wal_autocheckpoint=64")
            self._db.execute("PRAGMA journal_size_limit=262144")
            self._db.executescript(_SCHEMA)
            self._db.commit()
        return self._db

    def _load(self) -> list[StoredBinding]:
        rows = self.db.execute(
            "SELECT aor, contact, transport, host, port, expires_at, call_id, cseq, "
            "user_agent, q, instance FROM bindings"
        ).fetchall()
        return [StoredBinding(*row) for row in rows]

    def _write(self, batch: dict[tuple[str, str], StoredBinding | None]) -> None:
        db = self.db
        with db:  # one transaction for the batch
            for (aor, device), b in batch.items():
                if b is None:
                    db.execute("DELETE FROM bindings WHERE aor = ? AND device = ?", (aor, device))
                    continue
                values = (b.aor, device, b.contact, b.transport, b.host, b.port, b.expires_at)
                db.execute(
                    "INSERT OR REPLACE INTO bindings (aor, device, contact, transport, host, "
                    "port, expires_at, call_id, cseq, user_agent, q, instance) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*values, b.call_id, b.cseq, b.user_agent, b.q, b.instance),
                )

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
