"""Voicemail: messages on disk with metadata in SQLite, deposit, retrieval, MWI.

A restart loses nothing: recordings are WAV files under the data directory and every
message is a row in ``voicemail.sqlite``. Message-waiting indication (RFC 3842) goes to
phones that SUBSCRIBE to message-summary, and, unsolicited, to registered phones that
did not.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sip
from ivr.digits import collect_digits, flush
from media.audio import Recorder
from media.tones import tone

from ..private_files import private_dir, private_file

if TYPE_CHECKING:
    from ..media_engine import MediaLeg

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    mailbox TEXT NOT NULL,
    caller TEXT NOT NULL,
    created REAL NOT NULL,
    seconds REAL NOT NULL,
    path TEXT NOT NULL,
    heard INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_mailbox ON messages (mailbox, created);
"""


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    mailbox: str
    caller: str
    created: float
    seconds: float
    path: Path
    heard: bool


class VoicemailStore:
    def __init__(self, data_dir: Path) -> None:
        self.root = private_dir(data_dir / "voicemail")
        # created 0600 before SQLite opens it: its journal files take the database's mode
        self.db = sqlite3.connect(str(private_file(data_dir / "voicemail.sqlite")))
        self.db.executescript(SCHEMA)
        self.db.commit()

    def close(self) -> None:
        self.db.close()

    def new_path(self, mailbox: str) -> Path:
        """A new message's file, created empty and private (the recorder then fills it)."""
        folder = private_dir(self.root / mailbox)
        return private_file(
            folder / f"{int(time.time())}-{secrets.token_hex(4)}.wav", exclusive=True
        )

    def add(self, mailbox: str, caller: str, path: Path, seconds: float) -> Message:
        message = Message(secrets.token_hex(8), mailbox, caller, time.time(), seconds, path, False)
        self.db.execute(
            "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, 0)",
            (message.id, mailbox, caller, message.created, seconds, str(path)),
        )
        self.db.commit()
        return message

    def messages(self, mailbox: str) -> list[Message]:
        """New messages first, oldest first within each group."""
        rows = self.db.execute(
            "SELECT id, mailbox, caller, created, seconds, path, heard FROM messages "
            "WHERE mailbox = ? ORDER BY heard, created",
            (mailbox,),
        ).fetchall()
        return [Message(r[0], r[1], r[2], r[3], r[4], Path(r[5]), bool(r[6])) for r in rows]

    def counts(self, mailbox: str) -> tuple[int, int]:
        new = old = 0
        for m in self.messages(mailbox):
            if m.heard:
                old += 1
            else:
                new += 1
        return new, old

    def mark_heard(self, message_id: str) -> None:
        self.db.execute("UPDATE messages SET heard = 1 WHERE id = ?", (message_id,))
        self.db.commit()

    def delete(self, message_id: str) -> None:
        row = self.db.execute("SELECT path FROM messages WHERE id = ?", (message_id,)).fetchone()
        self.db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
        self.db.commit()
        if row is not None:
            Path(row[0]).unlink(missing_ok=True)


def summary_body(account: str, new: int, old: int) -> bytes:
    """An application/simple-message-summary body (RFC 3842 §5.2)."""
    waiting = "yes" if new else "no"
    return (
        f"Messages-Waiting: {waiting}\r\nMessage-Account: {account}\r\n"
        f"Voice-Message: {new}/{old} (0/0)\r\n"
    ).encode()


async def deposit(
    leg: MediaLeg,
    call: sip.Call,
    store: VoicemailStore,
    mailbox: str,
    caller: str,
    *,
    greeting: Path | None,
    max_seconds: int,
    max_messages: int,
) -> Message | None:
    """Greeting, beep, record until hang-up, '#' or the limit. The caller is answered."""
    if len(store.messages(mailbox)) >= max_messages:
        await leg.play_prompt("vm-full")
        await leg.play_prompt("goodbye")
        return None
    if greeting is not None:
        await leg.play_file(greeting)
    else:
        await leg.play_prompt("vm-greeting")
    await leg.play_samples(tone("beep", leg.engine.country, leg.rate)[0])
    flush(leg)
    path = store.new_path(mailbox)
    recorder = Recorder(path, leg.rate)
    leg.taps.append(recorder.write)
    leg.source = None
    hash_key = asyncio.ensure_future(_wait_digit(leg, "#"))
    ended = asyncio.ensure_future(call.ended.wait())
    try:
        await asyncio.wait(
            {hash_key, ended}, timeout=max_seconds, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        hash_key.cancel()
        ended.cancel()
        leg.taps.remove(recorder.write)
        recorder.close()
    seconds = recorder.frames * leg.frame_samples / leg.rate
    if seconds < 1.0:
        path.unlink(missing_ok=True)
        return None
    message = store.add(mailbox, caller, path, seconds)
    log.info("event=voicemail_left mailbox=%s caller=%s seconds=%.1f", mailbox, caller, seconds)
    if not call.ended.is_set():
        await leg.play_prompt("goodbye")
    return message


async def _wait_digit(leg: MediaLeg, wanted: str) -> None:
    while await leg.dtmf.get() != wanted:
        pass


async def say_number(leg: MediaLeg, n: int) -> None:
    await leg.play_prompt(f"num-{min(n, 20)}")


async def retrieve(
    leg: MediaLeg,
    store: VoicemailStore,
    mailbox: str | None,
    pin_of: dict[str, str],
    on_change: asyncio.Event | None = None,
) -> None:
    """Mailbox login (PIN, three tries), then each message with its menu."""
    for _ in range(3):
        box = mailbox
        if box is None:
            await leg.play_prompt("vm-enter-mailbox")
            box = await collect_digits(leg, max_digits=8)
        await leg.play_prompt("vm-enter-pin")
        pin = await collect_digits(leg, max_digits=12)
        if box in pin_of and secrets.compare_digest(pin, pin_of[box]):
            break
        await leg.play_prompt("vm-incorrect")
    else:
        await leg.play_prompt("goodbye")
        return
    messages = store.messages(box)
    new = sum(1 for m in messages if not m.heard)
    if not messages:
        await leg.play_prompt("vm-no-messages")
    else:
        await leg.play_prompt("vm-you-have")
        await say_number(leg, new)
        await leg.play_prompt("vm-new-message" if new == 1 else "vm-new-messages")
    for message in messages:
        while True:
            await leg.play_file(message.path)
            store.mark_heard(message.id)
            if on_change is not None:
                on_change.set()
            await leg.play_prompt("vm-message-menu")
            choice = await collect_digits(leg, max_digits=1, terminator=None, first_timeout=8)
            if choice == "1":
                continue
            if choice == "7":
                store.delete(message.id)
                await leg.play_prompt("vm-deleted")
            else:
                await leg.play_prompt("vm-saved")
            break
    if messages:
        await leg.play_prompt("vm-no-more")
    await leg.play_prompt("goodbye")
