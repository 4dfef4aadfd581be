"""Call history (CDR): one SQLite row per call, written when the call ends.

A call is followed from its first INVITE (the caller's party) through the call events:
where the dialplan sent it (``routed``: the number dialled, then each forward, a group's
exhaustion, a transfer), when the caller was answered, whom it was bridged to, what the
dialplan's outcome was, and when it ended. The row says when (start, answer, end), who
called (extension or number, and name), what was dialled, the final destination, the
disposition (``answered``, ``busy``, ``no answer``, ``voicemail``, ``failed``), the
answered seconds, and the chain of destinations (``101 > voicemail:101``). Rows older
than ``[cdr] retention_days`` are deleted (at start, then every hour). CSV export and
filters serve the web console and its API.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

import sip

from ..feature import BaseFeature, CallListener, Connected, Dial, Done, Failed, Outcome
from ..model import Strict
from ..private_files import private_file

if TYPE_CHECKING:
    from ..calls import Party
    from ..services import Services

log = logging.getLogger("softswitch")

DISPOSITIONS = ("answered", "busy", "no answer", "voicemail", "failed")
COLUMNS = (
    "id",
    "call_id",
    "start",
    "answer",
    "end",
    "caller",
    "caller_name",
    "dialled",
    "destination",
    "disposition",
    "duration",
    "chain",
)
MAX_CHAIN = 16  # destinations kept per call (a forwarding loop stops at 5 anyway)
MAX_ROWS = 10_000  # what one query returns at most

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL,
    start REAL NOT NULL,
    answer REAL,
    "end" REAL NOT NULL,
    caller TEXT NOT NULL,
    caller_name TEXT NOT NULL,
    dialled TEXT NOT NULL,
    destination TEXT NOT NULL,
    disposition TEXT NOT NULL,
    duration REAL NOT NULL,
    chain TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_start ON calls (start);
"""


class CdrSettings(Strict):
    retention_days: int = Field(365, ge=1, le=3650)


@dataclass(frozen=True, slots=True)
class CallRecord:
    id: int
    call_id: str
    start: float
    answer: float | None
    end: float
    caller: str
    caller_name: str
    dialled: str
    destination: str
    disposition: str
    duration: float
    chain: str

    def row(self) -> dict[str, Any]:
        """As JSON and CSV show it: times in ISO 8601 (UTC)."""
        return {
            "id": self.id,
            "call_id": self.call_id,
            "start": iso(self.start),
            "answer": iso(self.answer) if self.answer is not None else "",
            "end": iso(self.end),
            "caller": self.caller,
            "caller_name": self.caller_name,
            "dialled": self.dialled,
            "destination": self.destination,
            "disposition": self.disposition,
            "duration": round(self.duration, 1),
            "chain": self.chain,
        }


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class Filter:
    """Rows whose start is in [since, until), involving ``number`` (caller, dialled or
    destination, or a step of the chain), with ``disposition``."""

    since: float | None = None
    until: float | None = None
    number: str | None = None
    disposition: str | None = None
    limit: int = 500
    offset: int = 0


class CdrStore:
    def __init__(self, data_dir: Path) -> None:
        self.db = sqlite3.connect(str(private_file(data_dir / "cdr.sqlite")))
        # a row per call, written from the event loop: with a write-ahead log and
        # synchronous=NORMAL a commit is an append, not a journal file created, synced and
        # deleted (several fsyncs that stalled every call in progress); a crash keeps the
        # file consistent and loses at most the last rows since a checkpoint
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA journal_size_limit=1048576")
        self.db.executescript(SCHEMA)
        self.db.commit()

    def close(self) -> None:
        self.db.close()

    def add(self, record: CallRecord) -> int:
        cursor = self.db.execute(
            'INSERT INTO calls (call_id, start, answer, "end", caller, caller_name, dialled,'
            " destination, disposition, duration, chain) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                record.call_id,
                record.start,
                record.answer,
                record.end,
                record.caller,
                record.caller_name,
                record.dialled,
                record.destination,
                record.disposition,
                record.duration,
                record.chain,
            ),
        )
        self.db.commit()
        return int(cursor.lastrowid or 0)

    def query(self, where: Filter) -> list[CallRecord]:
        clauses, args = _where(where)
        sql = (
            f"SELECT {', '.join(_quoted(c) for c in COLUMNS)} FROM calls"
            + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
            + " ORDER BY start DESC, id DESC LIMIT ? OFFSET ?"
        )
        limit = max(1, min(where.limit, MAX_ROWS))
        rows = self.db.execute(sql, [*args, limit, max(0, where.offset)]).fetchall()
        return [CallRecord(*row) for row in rows]

    def purge(self, before: float) -> int:
        cursor = self.db.execute("DELETE FROM calls WHERE start < ?", (before,))
        self.db.commit()
        return cursor.rowcount


def _quoted(column: str) -> str:
    return f'"{column}"'


def _where(f: Filter) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if f.since is not None:
        clauses.append("start >= ?")
        args.append(f.since)
    if f.until is not None:
        clauses.append("start < ?")
        args.append(f.until)
    if f.number:
        clauses.append(
            "(caller = ? OR dialled = ? OR destination = ? OR (' > ' || chain || ' > ') LIKE ?)"
        )
        pattern = "%> " + f.number.replace("%", "").replace("_", "") + " >%"
        args += [f.number, f.number, f.number, pattern]
    if f.disposition:
        clauses.append("disposition = ?")
        args.append(f.disposition)
    return clauses, args


# what makes a spreadsheet read a cell as a formula (OWASP, "CSV injection"; the fullwidth
# forms for some locales): such a cell is exported after a quote, which a spreadsheet shows
# as text. Callers choose their number and name, so they could plant one. A cell that
# starts with a quote gets one too, so that the import removes exactly what was added.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "'", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def _cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def to_csv(records: Iterable[CallRecord]) -> str:
    """The rows as CSV, no cell read as a formula (numbers like +336... as '+336...)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: _cell(v) for k, v in record.row().items()})
    return out.getvalue()


def from_csv(text: str) -> Iterator[dict[str, str]]:
    """The rows of :func:`to_csv`'s output, by column (a round trip: the quote added
    before a cell is removed)."""
    for row in csv.DictReader(io.StringIO(text)):
        yield {k: v[1:] if isinstance(v, str) and v.startswith("'") else v for k, v in row.items()}


@dataclass(eq=False)
class _Open:
    """A call in progress."""

    call_id: str
    start: float
    caller: str
    caller_name: str
    dialled: str
    answer: float | None = None
    bridged_to: str | None = None
    chain: list[str] = field(default_factory=list)
    last_kind: str = ""
    outcome: Outcome | None = None


def disposition(call: _Open) -> str:
    if call.bridged_to is not None:
        return "answered"
    if call.last_kind == "voicemail" and call.answer is not None:
        return "voicemail"
    outcome = call.outcome
    if isinstance(outcome, Failed):
        if outcome.cause == "busy":
            return "busy"
        if outcome.cause in ("noanswer", "unreachable", "cancelled"):
            return "no answer"
        return "failed"
    if isinstance(outcome, Connected | Done) and call.answer is not None:
        return "answered"  # an application took it: a receptionist, the bridge...
    return "no answer"  # the caller hung up before anything answered


class CallHistory(BaseFeature, CallListener):
    name = "cdr"
    section = "cdr"
    config_model = CdrSettings
    state = ("store", "calls")

    def __post_init__(self) -> None:
        self.store: CdrStore | None = None
        self.calls: dict[Party, _Open] = {}

    @property
    def options(self) -> CdrSettings:
        settings: CdrSettings | None = self.settings()
        return settings or CdrSettings()

    def listeners(self) -> Iterable[CallListener]:
        return (self,)

    async def start(self, svc: Services) -> None:
        await super().start(svc)
        svc.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.store = CdrStore(svc.data_dir)
        svc.spawn(self._retention())

    async def stop(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    async def _retention(self) -> None:
        while True:
            if self.store is not None:
                days = self.options.retention_days
                gone = self.store.purge(time.time() - days * 86400)
                if gone:
                    log.info("event=cdr_purged rows=%d retention_days=%d", gone, days)
            await asyncio.sleep(3600)

    def query(self, where: Filter) -> Sequence[CallRecord]:
        return self.store.query(where) if self.store is not None else []

    # -- call events --------------------------------------------------------------------

    def trying(self, party: Party) -> None:
        call = party.call
        if not isinstance(call, sip.IncomingCall) or party in self.calls:
            return
        user = party.user
        remote = call.invite.from_
        self.calls[party] = _Open(
            call_id=call.call_id,
            start=time.time(),
            caller=user.extension if user else (remote.uri.user or "anonymous"),
            caller_name=user.name if user else (remote.display or ""),
            dialled=call.invite.uri.user or "",
        )

    def routed(self, dial: Dial, kind: str) -> None:
        call = self.calls.get(dial.party)
        if call is None:
            return
        target = dial.target
        if kind == "voicemail" and not target and dial.on_behalf is not None:
            target = dial.on_behalf.extension  # "voicemail": the forwarding user's own box
        if len(call.chain) < MAX_CHAIN:
            call.chain.append(target if kind == "number" else f"{kind}:{target}")
        call.last_kind = kind

    def answered(self, party: Party) -> None:
        call = self.calls.get(party)
        if call is not None and call.answer is None:
            call.answer = time.time()

    def bridged(self, a: Party, b: Party) -> None:
        for one, other in ((a, b), (b, a)):
            call = self.calls.get(one)
            if call is not None:
                call.bridged_to = other.user.extension if other.user else other.label
                if call.answer is None:
                    call.answer = time.time()

    def finished(self, party: Party, outcome: Outcome) -> None:
        call = self.calls.get(party)
        if call is not None:
            call.outcome = outcome

    def ended(self, party: Party) -> None:
        call = self.calls.pop(party, None)
        if call is None or self.store is None:
            return
        end = time.time()
        record = CallRecord(
            id=0,
            call_id=call.call_id,
            start=call.start,
            answer=call.answer,
            end=end,
            caller=call.caller,
            caller_name=call.caller_name,
            dialled=call.dialled,
            destination=call.bridged_to or (call.chain[-1] if call.chain else call.dialled),
            disposition=disposition(call),
            duration=end - call.answer if call.answer is not None else 0.0,
            chain=" > ".join(call.chain),
        )
        try:
            row = self.store.add(record)
        except sqlite3.Error as exc:
            log.error("event=cdr_write_failed call_id=%s error=%s", call.call_id, exc)
            return
        log.info(
            "event=cdr id=%d caller=%s dialled=%s disposition=%s",
            row,
            record.caller,
            record.dialled,
            record.disposition.replace(" ", "_"),
        )
