"""Call history (CDR): one SQLite row per call, or per conversation of a transferred call.

A call is followed from its first INVITE (the caller's party) through the call events:
where the dialplan sent it (``routed``: the number dialled, then each forward, a group's
exhaustion), when the caller was answered (by a phone, or by voicemail, the bridge, a
menu), whom it was bridged to (a group's member, a pickup), what the dialplan's outcome
was, and when it ended. The row says when (start, answer, end), who called (extension or
number, and name), what was dialled, the final destination, the disposition
(``answered``, ``busy``, ``no answer``, ``voicemail``, ``failed``), the answered seconds,
and the chain of destinations (``600 > 101``, ``101 > voicemail:101``). A transfer (blind
or attended) ends the row of the conversation it breaks and starts one for the
conversation it makes, with the same call_id and the transferor in its chain
(``101 > 102``), as Asterisk does: each row's seconds are those two parties'. Rows older
than ``[cdr] retention_days`` are deleted (at start, then every hour). CSV export and
filters serve the web console and its API.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import itertools
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

import sip

from ..batch_writer import BatchWriter
from ..feature import BaseFeature, CallListener, Dial, Failed, Outcome
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
    "queue",
    "queue_wait",
    "queue_outcome",
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


# columns added since the first schema, with their SQL types: added to every history
# (a new one as well as one written before they existed), so each is defined here only
ADDED = (
    ("queue", "TEXT NOT NULL DEFAULT ''"),
    ("queue_wait", "REAL"),
    ("queue_outcome", "TEXT NOT NULL DEFAULT ''"),
)


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
    queue: str = ""  # the call queue it waited in, if any
    queue_wait: float | None = None  # seconds in that queue
    queue_outcome: str = ""  # answered, abandoned, timeout, overflow, message

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
            "queue": self.queue,
            "queue_wait": round(self.queue_wait, 1) if self.queue_wait is not None else "",
            "queue_outcome": self.queue_outcome,
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
    """The call history file. The daemon writes it from a thread of its own (see
    :class:`CallHistory`) and reads it on the loop (a query is one indexed SELECT), so the
    connection is shared under a lock; the console opens its own."""

    def __init__(self, data_dir: Path) -> None:
        self.db = sqlite3.connect(
            str(private_file(data_dir / "cdr.sqlite")), check_same_thread=False
        )
        self._lock = threading.Lock()
        # with a write-ahead log and synchronous=NORMAL a commit is an append, not a
        # journal file created, synced and deleted; a crash keeps the file consistent and
        # loses at most the last rows since a checkpoint
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA journal_size_limit=1048576")
        self.db.executescript(SCHEMA)
        have = {row[1] for row in self.db.execute("PRAGMA table_info(calls)")}
        for column, kind in ADDED:
            if column not in have:
                self.db.execute(f"ALTER TABLE calls ADD COLUMN {column} {kind}")
        self.db.commit()

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def add(self, record: CallRecord) -> int:
        return self.add_many([record])[0]

    def add_many(self, records: Iterable[CallRecord]) -> list[int]:
        """Insert the rows in one transaction; their ids, in order."""
        ids: list[int] = []
        with self._lock, self.db:
            for r in records:
                cursor = self.db.execute(
                    'INSERT INTO calls (call_id, start, answer, "end", caller, caller_name,'
                    " dialled, destination, disposition, duration, chain, queue, queue_wait,"
                    " queue_outcome) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        r.call_id,
                        r.start,
                        r.answer,
                        r.end,
                        r.caller,
                        r.caller_name,
                        r.dialled,
                        r.destination,
                        r.disposition,
                        r.duration,
                        r.chain,
                        r.queue,
                        r.queue_wait,
                        r.queue_outcome,
                    ),
                )
                ids.append(int(cursor.lastrowid or 0))
        return ids

    def query(self, where: Filter) -> list[CallRecord]:
        clauses, args = _where(where)
        sql = (
            f"SELECT {', '.join(_quoted(c) for c in COLUMNS)} FROM calls"
            + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
            + " ORDER BY start DESC, id DESC LIMIT ? OFFSET ?"
        )
        limit = max(1, min(where.limit, MAX_ROWS))
        with self._lock:
            rows = self.db.execute(sql, [*args, limit, max(0, where.offset)]).fetchall()
        return [CallRecord(*row) for row in rows]

    def purge(self, before: float) -> int:
        with self._lock, self.db:
            cursor = self.db.execute("DELETE FROM calls WHERE start < ?", (before,))
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
    """A row in progress: one conversation (or attempt) of a call."""

    call_id: str
    start: float
    caller: str
    caller_name: str
    dialled: str
    answer: float | None = None
    bridged_to: str | None = None
    peer: Party | None = None  # whom the row's party talks to now
    back_to: Party | None = None  # a transfer attempt: the transferor it returns to on failure
    chain: list[str] = field(default_factory=list)
    last_kind: str = ""
    outcome: Outcome | None = None
    queue: str = ""
    queue_wait: float | None = None
    queue_outcome: str = ""

    def step(self, where: str) -> None:
        if len(self.chain) < MAX_CHAIN:
            self.chain.append(where)

    def reached(self, who: str) -> None:
        """``who`` answered: a group's member or a pickup is a step of its own; the
        number dialled or forwarded to (``102``, ``tel:0612``) is not repeated."""
        if not (self.chain and _same(self.chain[-1], who)):
            self.step(who)


def _who(party: Party) -> str:
    """A party as the history names it: its user's extension, else its label (a number)."""
    return party.user.extension if party.user is not None else party.label


def _same(step: str, who: str) -> bool:
    """Is a chain step (``102``, ``tel:0612``) the party ``who`` (``102``, ``trunk:0612``)?"""
    return step.rpartition(":")[2] == who.rpartition(":")[2]


def disposition(call: _Open) -> str:
    if call.bridged_to is not None:
        return "answered"
    if call.queue_outcome == "abandoned":
        return "no answer"  # the queue answered only to hold it: the caller gave up
    if call.answer is not None:
        # something took the call (voicemail, the bridge, *97, a menu): whatever the
        # dialplan reports later, the caller was answered and its seconds count
        return "voicemail" if call.last_kind == "voicemail" else "answered"
    outcome = call.outcome
    if isinstance(outcome, Failed):
        if outcome.cause == "busy":
            return "busy"
        if outcome.cause in ("noanswer", "unreachable", "cancelled"):
            return "no answer"
        return "failed"
    return "no answer"  # the caller hung up before anything answered


_row_keys = itertools.count()  # the writer's keys: every row its own


def _write(store: CdrStore, batch: dict[int, CallRecord]) -> None:
    """The writer thread's work: a batch of rows in one transaction, each logged."""
    try:
        ids = store.add_many(batch.values())
    except sqlite3.Error as exc:
        for record in batch.values():
            log.error("event=cdr_write_failed call_id=%s error=%s", record.call_id, exc)
        return
    for row, record in zip(ids, batch.values(), strict=True):
        log.info(
            "event=cdr id=%d caller=%s dialled=%s disposition=%s",
            row,
            record.caller,
            record.dialled,
            record.disposition.replace(" ", "_"),
        )


class CallHistory(BaseFeature, CallListener):
    name = "cdr"
    section = "cdr"
    config_model = CdrSettings
    state = ("store", "writer", "calls", "peers")

    def __post_init__(self) -> None:
        self.store: CdrStore | None = None
        # rows are written by a thread of their own, a batch per transaction: a call's end
        # costs the loop a queued row, not a commit
        self.writer: BatchWriter[int, CallRecord] | None = None
        self.calls: dict[Party, _Open] = {}  # open rows, by the party whose row it is
        self.peers: dict[Party, Party] = {}  # whom each bridged party talks to (last bridge)

    @property
    def options(self) -> CdrSettings:
        settings: CdrSettings | None = self.settings()
        return settings or CdrSettings()

    def listeners(self) -> Iterable[CallListener]:
        return (self,)

    async def start(self, svc: Services) -> None:
        await super().start(svc)
        svc.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        store = self.store = CdrStore(svc.data_dir)
        self.writer = BatchWriter("cdr", functools.partial(_write, store))
        svc.spawn(self._retention())

    async def stop(self) -> None:
        if self.writer is not None and self.store is not None:
            await self.writer.close(self.store.close)
        elif self.store is not None:
            self.store.close()
        self.store = self.writer = None

    async def _retention(self) -> None:
        while True:
            store, writer = self.store, self.writer
            if store is not None and writer is not None:
                days = self.options.retention_days
                before = time.time() - days * 86400
                gone = await writer.run(functools.partial(store.purge, before))
                if gone:
                    log.info("event=cdr_purged rows=%d retention_days=%d", gone, days)
            await asyncio.sleep(3600)

    def query(self, where: Filter) -> Sequence[CallRecord]:
        return self.store.query(where) if self.store is not None else []

    # -- call events --------------------------------------------------------------------
    #
    # A row is one conversation, as Asterisk's CDRs since version 12: a transfer ends the
    # row of the conversation it breaks and starts one for the conversation it makes (the
    # same call_id links them), so each row's seconds are those two parties' own and the
    # rows of a call add up. The row of a call routed through groups, menus and forwards
    # says where it went (``chain``) and who answered it.

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
        party = dial.party
        call = self.calls.get(party)
        talked_to = self.peers.get(party)
        if talked_to is not None and (call is None or call.bridged_to is not None):
            # a party that was talking is sent on: a blind transfer by ``talked_to``
            del self.peers[party]
            call = self._transferred(party, talked_to, dial.target, time.time())
            call.back_to = talked_to
        if call is None:
            return
        target = dial.target
        if kind == "voicemail" and not target and dial.on_behalf is not None:
            target = dial.on_behalf.extension  # "voicemail": the forwarding user's own box
        call.step(target if kind == "number" else f"{kind}:{target}")
        call.last_kind = kind

    def answered(self, party: Party) -> None:
        call = self.calls.get(party)
        if call is not None and call.answer is None:
            call.answer = time.time()

    def bridged(self, a: Party, b: Party) -> None:
        now = time.time()
        before = {a: self.peers.get(a), b: self.peers.get(b)}
        self.peers[a], self.peers[b] = b, a
        closed: dict[Party, _Open] = {}
        for one, other in ((a, b), (b, a)):
            old = before[one]
            if (
                old is not None
                and old is not other
                and old in self.calls
                and _who(old) == _who(other)
            ):
                self.calls[other] = self.calls.pop(old)  # the same user on another device (flip)
            call = self.calls.get(one)
            if call is None:
                continue
            who = _who(other)
            if call.bridged_to is None and call.back_to is other:
                # a transfer that failed, back to the transferor: the attempt is a row
                closed[one] = call
                self._close(one, now)
            elif call.bridged_to is None:  # its first conversation: the callee, a member...
                call.bridged_to, call.peer = who, other
                call.answer = call.answer if call.answer is not None else now
                call.reached(who)
            elif old is other or _same(call.bridged_to, who):
                call.peer = other  # the same conversation (a resumed call, a flip)
            else:
                closed[one] = call  # talking to someone else: an attended transfer
                self._close(one, now)
        if any((c := self.calls.get(p)) is not None and c.peer is q for p, q in ((a, b), (b, a))):
            return
        # no row covers this conversation: a transfer joined the two, a row starts now
        owner, other = (b, a) if b in closed and a not in closed else (a, b)
        call = self._transferred(owner, before[owner], _who(other), now, closed.get(owner))
        call.answer, call.bridged_to, call.peer = now, _who(other), other
        call.reached(_who(other))

    def queued(
        self, party: Party, queue: str, outcome: str, waited: float, agent: str | None
    ) -> None:
        call = self.calls.get(party)
        if call is not None:
            call.queue, call.queue_wait, call.queue_outcome = queue, waited, outcome

    def finished(self, party: Party, outcome: Outcome) -> None:
        call = self.calls.get(party)
        if call is not None:
            call.outcome = outcome

    def ended(self, party: Party) -> None:
        self.peers.pop(party, None)
        self._close(party, time.time())

    # -- rows -------------------------------------------------------------------------------

    def _transferred(
        self, party: Party, via: Party | None, dialled: str, now: float, closed: _Open | None = None
    ) -> _Open:
        """The row of ``party``'s new conversation from ``now``, after a transfer by
        ``via``: its caller (and the link, call_id) are those of its previous row, else
        its own."""
        previous = self.calls.get(party)
        if previous is not None:
            self._close(party, now)
        previous = previous or closed
        if previous is not None:
            call_id, caller, name = previous.call_id, previous.caller, previous.caller_name
        else:
            link = self.calls.get(via) if via is not None else None
            call_id = link.call_id if link is not None else party.call.call_id
            caller, name = _who(party), party.user.name if party.user else ""
        call = _Open(call_id=call_id, start=now, caller=caller, caller_name=name, dialled=dialled)
        if via is not None:
            call.step(_who(via))  # through whom it came: the transferor
        self.calls[party] = call
        return call

    def _close(self, party: Party, end: float) -> None:
        call = self.calls.pop(party, None)
        if call is None:
            return
        writer = self.writer
        if writer is None:
            return
        result = disposition(call)
        talked = call.answer is not None and result != "no answer"
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
            disposition=result,
            duration=end - call.answer if talked and call.answer is not None else 0.0,
            chain=" > ".join(call.chain),
            queue=call.queue,
            queue_wait=call.queue_wait,
            queue_outcome=call.queue_outcome,
        )
        writer.queue(next(_row_keys), record)
