"""Voicemail: messages on disk with metadata in SQLite, deposit, retrieval, MWI.

A restart loses nothing: recordings are WAV files under the data directory and every
message is a row in ``voicemail.sqlite``. Message-waiting indication (RFC 3842) goes to
phones that SUBSCRIBE to message-summary, and, unsolicited, to registered phones that
did not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sqlite3
import time
import zoneinfo
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import soundfile

import sip
from ivr.digits import collect_digits, flush
from media.audio import Recorder
from media.resample import resample
from media.tones import tone

from ..config import User
from ..feature import (
    BaseFeature,
    CallListener,
    Dial,
    Done,
    Failed,
    Handler,
    Kind,
    Outcome,
    SubscribeHandler,
)
from ..private_files import private_dir, private_file

if TYPE_CHECKING:
    from ..media_engine import MediaLeg
    from ..registrar import Binding
    from ..services import Services

log = logging.getLogger(__name__)
Samples = npt.NDArray[np.int16]

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
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(messages)")}
        if "emailed" not in columns:  # a mailbox from before voicemail to e-mail
            self.db.execute("ALTER TABLE messages ADD COLUMN emailed INTEGER NOT NULL DEFAULT 0")
        self.db.commit()

    def close(self) -> None:
        self.db.close()

    def message(self, message_id: str) -> Message | None:
        row = self.db.execute(
            "SELECT id, mailbox, caller, created, seconds, path, heard FROM messages WHERE id = ?",
            (message_id,),
        ).fetchone()
        return (
            Message(row[0], row[1], row[2], row[3], row[4], Path(row[5]), bool(row[6]))
            if row
            else None
        )

    def not_emailed(self, mailbox: str) -> list[str]:
        """Messages of ``mailbox`` whose e-mail was not accepted yet (oldest first)."""
        rows = self.db.execute(
            "SELECT id FROM messages WHERE mailbox = ? AND emailed = 0 ORDER BY created",
            (mailbox,),
        ).fetchall()
        return [r[0] for r in rows]

    def mark_emailed(self, message_id: str) -> None:
        self.db.execute("UPDATE messages SET emailed = 1 WHERE id = ?", (message_id,))
        self.db.commit()

    def new_path(self, mailbox: str) -> Path:
        """A new message's file, created empty and private (the recorder then fills it)."""
        folder = private_dir(self.root / mailbox)
        return private_file(
            folder / f"{int(time.time())}-{secrets.token_hex(4)}.wav", exclusive=True
        )

    def add(self, mailbox: str, caller: str, path: Path, seconds: float) -> Message:
        message = Message(secrets.token_hex(8), mailbox, caller, time.time(), seconds, path, False)
        self.db.execute(
            "INSERT INTO messages (id, mailbox, caller, created, seconds, path, heard) "
            "VALUES (?, ?, ?, ?, ?, ?, 0)",
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
    leg.add_tap(recorder.write)
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
        leg.remove_tap(recorder.write)
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


async def record_until_hash(leg: MediaLeg, call: sip.Call, max_seconds: float) -> Samples:
    """After a beep: what the phone says until '#', hang-up or ``max_seconds``."""
    await leg.play_samples(tone("beep", leg.engine.country, leg.rate)[0])
    flush(leg)
    frames: list[Samples] = []
    leg.add_tap(frames.append)
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
        leg.remove_tap(frames.append)
    return np.concatenate(frames) if frames else np.zeros(0, np.int16)


GREETING_KINDS = {"1": "standard", "2": "business_hours", "3": "after_hours", "4": "temporary"}
# (message, target mailbox, spoken introduction, its rate) -> forwarded?
Forward = Callable[[Message, str, Samples, int], Awaitable[bool]]
SaveGreeting = Callable[[str, str, Samples, int], None]  # (mailbox, kind, audio, rate)


async def retrieve(
    leg: MediaLeg,
    call: sip.Call,
    store: VoicemailStore,
    mailbox: str | None,
    pin_of: dict[str, str],
    *,
    forward: Forward | None = None,
    save_greeting: SaveGreeting | None = None,
) -> None:
    """Mailbox login (PIN, three tries), then each message with its menu (1 again,
    7 delete, 8 forward to another mailbox, 9 keep), then the greetings menu."""
    for _ in range(3):
        box = mailbox
        if box is None:
            await leg.play_prompt("vm-enter-mailbox")
            box = await collect_digits(leg, max_digits=8)
        await leg.play_prompt("vm-enter-pin")
        pin = await collect_digits(leg, max_digits=12)
        if box in pin_of and secrets.compare_digest(pin, pin_of[box]):
            log.info("event=voicemail_login mailbox=%s", box)
            break
        log.info("event=voicemail_login_failed mailbox=%s", box)
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
            await leg.play_prompt("vm-message-menu")
            choice = await collect_digits(leg, max_digits=1, terminator=None, first_timeout=8)
            log.info("event=voicemail_choice mailbox=%s choice=%s", box, choice or "-")
            if choice == "1":
                continue
            if choice == "8" and forward is not None:
                await leg.play_prompt("vm-forward-to")
                target = await collect_digits(leg, max_digits=8)
                if target == box or target not in pin_of:
                    await leg.play_prompt("ivr-invalid-extension")
                    continue
                await leg.play_prompt("vm-record-intro")
                intro = await record_until_hash(leg, call, 15)
                if await forward(message, target, intro, leg.rate):
                    await leg.play_prompt("vm-forwarded")
                continue
            if choice == "7":
                store.delete(message.id)
                await leg.play_prompt("vm-deleted")
            else:
                await leg.play_prompt("vm-saved")
            break
    if messages:
        await leg.play_prompt("vm-no-more")
    if save_greeting is not None:
        await leg.play_prompt("vm-greetings-menu")
        kind = GREETING_KINDS.get(
            await collect_digits(leg, max_digits=1, terminator=None, first_timeout=4)
        )
        if kind is not None:
            await leg.play_prompt("vm-record-greeting")
            recorded = await record_until_hash(leg, call, 60)
            if len(recorded) >= leg.rate:  # at least a second
                save_greeting(box, kind, recorded, leg.rate)
                await leg.play_prompt("vm-greeting-saved")
    await leg.play_prompt("goodbye")


UNSOLICITED_MWI_DELAY = 3.0
# answers to an unsolicited NOTIFY that mean "not this": no dialog, no such event
# package, the method refused (RFC 6665 §4.1.3, RFC 3261 §21.4.6)
MWI_REFUSALS = frozenset({405, 481, 489, 501})
MAX_REFUSED_MWI = 10_000


class Voicemail(BaseFeature, CallListener):
    """Mailboxes as a feature: ``voicemail:NNN`` destinations, ``*97`` / ``*98`` access,
    the message-summary event package, and unsolicited MWI to phones that register."""

    name = "voicemail"
    state = ("store", "subscriptions", "refused_mwi")

    def __post_init__(self) -> None:
        self.store: VoicemailStore | None = None
        self.subscriptions: dict[str, list[sip.ServerSubscription]] = {}
        # (mailbox, contact) that refused an unsolicited NOTIFY (481...): not told again
        # until the mailbox's phones subscribe, nor logged at every registration refresh
        self.refused_mwi: set[tuple[str, str]] = set()

    def numbers(self) -> Mapping[str, Handler]:
        codes = self.config.features
        return {codes.voicemail_access: self.access_own, codes.voicemail_any: self.access_any}

    def destination_kinds(self) -> Mapping[str, Kind]:
        return {"voicemail": Kind(self.leave, self.check)}

    def event_packages(self) -> Mapping[str, SubscribeHandler]:
        return {"message-summary": self.subscribe}

    def listeners(self) -> Iterable[CallListener]:
        return (self,)

    def check(self, mailbox: str, user: User | None) -> str | None:
        if not mailbox:
            if user is None:
                return "'voicemail' needs a mailbox here: write voicemail:<extension>"
            mailbox = user.extension
        owner = self.config.user(mailbox)
        if owner is None:
            return f"'voicemail:{mailbox}': no extension {mailbox}"
        if not owner.voicemail:
            return f"'voicemail:{mailbox}': extension {mailbox} has no voicemail"
        return None

    async def start(self, svc: Services) -> None:
        await super().start(svc)
        private_dir(svc.data_dir, own=False)
        self.store = VoicemailStore(svc.data_dir)
        svc.counters.setdefault("voicemails", 0)

    async def stop(self) -> None:
        for subs in self.subscriptions.values():
            for sub in list(subs):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(sub.close(), 2)
        if self.store is not None:
            self.store.close()
            self.store = None  # a notification still on its way finds nothing to count

    # -- leaving and reading messages -------------------------------------------------------

    async def leave(self, dial: Dial) -> Outcome:
        svc = self.services
        mailbox = dial.target or (dial.on_behalf.extension if dial.on_behalf else "")
        user = svc.user(mailbox)
        if user is None or not user.voicemail or self.store is None:
            return Failed(404, "refused", "Not Found (no such mailbox)")
        caller = dial.party
        if not await svc.answer(caller):
            return Done()
        caller.leg.listen_dtmf = True  # '#' ends the message
        who = caller.user.extension if caller.user else (caller.call.invite.from_.uri.user or "")
        settings = self.config.voicemail
        message = await deposit(
            caller.leg,
            caller.call,
            self.store,
            user.extension,
            who,
            greeting=self.greeting_for(user),
            max_seconds=settings.max_message_seconds,
            max_messages=settings.max_messages,
        )
        if message is not None:
            svc.counters["voicemails"] += 1
            svc.spawn(self.notify(user.extension))
            svc.emit("voicemail_left", user.extension, message.id)
        return Done()

    # -- greetings and forwarded messages -----------------------------------------------

    def greetings_dir(self, mailbox: str) -> Path:
        # from the configuration alone: the web process (not started) saves greetings too
        return Path(self.config.server.data_dir) / "greetings" / mailbox

    def greeting_for(self, user: User) -> Path | None:
        """Temporary (until its date), else business-hours or after-hours, else standard:
        each recorded by phone, or from the configuration; None: the built-in one."""
        svc = self.services
        mine = self.greetings_dir(user.extension)
        g = user.greetings

        def pick(kind: str, configured: Path | None) -> Path | None:
            recorded = mine / f"{kind}.wav"
            return recorded if recorded.exists() else configured

        zone = svc.config.business_hours.timezone if svc.config.business_hours else "UTC"
        today = svc.wallclock().astimezone(zoneinfo.ZoneInfo(zone)).date()
        temporary = pick("temporary", g.temporary)
        if temporary is not None and (g.temporary_until is None or today <= g.temporary_until):
            return temporary
        state = "business_hours" if svc.office_open() else "after_hours"
        by_state = pick(state, getattr(g, state))
        return by_state or pick("standard", user.greeting)

    def save_greeting(self, mailbox: str, kind: str, samples: Samples, rate: int) -> None:
        folder = private_dir(self.greetings_dir(mailbox))
        path = private_file(folder / f"{kind}.wav")
        soundfile.write(path, samples, rate, subtype="PCM_16")
        log.info("event=greeting_recorded mailbox=%s kind=%s", mailbox, kind)

    async def forward(self, message: Message, target: str, intro: Samples, rate: int) -> bool:
        """A copy of ``message`` in ``target``'s mailbox, after the spoken introduction."""
        assert self.store is not None
        if self.config.user(target) is None:
            return False
        original, file_rate = soundfile.read(message.path, dtype="int16")
        audio = np.concatenate([resample(intro, rate, file_rate), original])
        path = private_file(self.store.new_path(target))
        soundfile.write(path, audio, file_rate, subtype="PCM_16")
        seconds = len(audio) / file_rate
        copy = self.store.add(target, f"{message.caller} via {message.mailbox}", path, seconds)
        log.info("event=voicemail_forwarded from=%s to=%s id=%s", message.mailbox, target, copy.id)
        self.services.spawn(self.notify(target))
        self.services.emit("voicemail_left", target, copy.id)
        return True

    async def access_own(self, dial: Dial) -> Outcome:
        if dial.caller is None:
            return Failed(403, "refused", "Forbidden (voicemail access needs a local user)")
        return await self._access(dial, dial.caller.extension)

    async def access_any(self, dial: Dial) -> Outcome:
        return await self._access(dial, None)

    async def _access(self, dial: Dial, mailbox: str | None) -> Outcome:
        svc = self.services
        caller = dial.party
        if not await svc.answer(caller) or self.store is None:
            return Done()
        caller.leg.listen_dtmf = True
        pins = {u.extension: u.pin for u in svc.config.users if u.voicemail}
        session = asyncio.ensure_future(
            retrieve(
                caller.leg,
                caller.call,
                self.store,
                mailbox,
                pins,
                forward=self.forward,
                save_greeting=self.save_greeting,
            )
        )
        gone = asyncio.ensure_future(caller.call.ended.wait())
        await asyncio.wait({session, gone}, return_when=asyncio.FIRST_COMPLETED)
        if session.done() and not session.cancelled() and session.exception() is not None:
            log.error("event=voicemail_menu_failed", exc_info=session.exception())
        session.cancel()
        gone.cancel()
        for box in {mailbox} if mailbox else set(pins):
            if box is not None:
                svc.spawn(self.notify(box))
        return Done()

    # -- message-waiting indication (RFC 3842) ----------------------------------------------

    def summary(self, mailbox: str) -> bytes:
        assert self.store is not None
        new, old = self.store.counts(mailbox)
        account = f"sip:{self.config.features.voicemail_access}@{self.services.domain}"
        return summary_body(account, new, old)

    def subscribe(self, incoming: sip.IncomingRequest, user: str) -> None:
        svc = self.services
        owner = svc.devices.identity(user)
        mailbox = owner[0].extension if owner else user
        sub = sip.ServerSubscription.accept(incoming, expires=3600)
        subs = self.subscriptions.setdefault(mailbox, [])
        subs.append(sub)
        self.refused_mwi = {r for r in self.refused_mwi if r[0] != mailbox}
        sub.on_end = lambda s: subs.remove(s) if s in subs else None
        svc.spawn(self._notify_sub(sub, mailbox))

    async def _notify_sub(self, sub: sip.ServerSubscription, mailbox: str) -> None:
        await sub.notify(self.summary(mailbox), "application/simple-message-summary")

    def registered(self, binding: Binding) -> None:
        owner = self.services.devices.owner_of(binding.aor)
        if owner is not None and owner.voicemail and self.store is not None:
            self.services.spawn(self._unsolicited_later(owner.extension, binding))

    async def _unsolicited_later(self, mailbox: str, binding: Binding) -> None:
        """A phone that subscribes does so right after registering; an unsolicited NOTIFY
        crossing its SUBSCRIBE confuses some (baresip 1.0 floods SUBSCRIBEs). So wait a
        moment and tell only phones that did not subscribe."""
        await asyncio.sleep(UNSOLICITED_MWI_DELAY)
        if not self.subscriptions.get(mailbox):
            await self.notify(mailbox, only=[binding])

    async def notify(self, mailbox: str, *, only: list[Binding] | None = None) -> None:
        """Tell the mailbox owner's phones how many messages wait."""
        if self.store is None:
            return
        svc = self.services
        subs = self.subscriptions.get(mailbox, [])
        for sub in list(subs):
            await self._notify_sub(sub, mailbox)
        if subs or not self.config.voicemail.unsolicited_mwi:
            return
        user = svc.user(mailbox)
        if only is None:
            bindings = [b for b, _ in svc.devices.bindings(user)] if user else []
        else:
            bindings = only
        for binding in bindings:
            contact = str(binding.contact)
            if (mailbox, contact) in self.refused_mwi:
                continue
            response = await svc.ua.request(
                "NOTIFY",
                binding.contact,
                destination=binding.source,
                to=f"<{svc.aor(mailbox)}>",
                headers=[("Event", "message-summary"), ("Subscription-State", "active")],
                body=self.summary(mailbox),
                content_type="application/simple-message-summary",
            )
            refused = response.status in MWI_REFUSALS
            if refused and len(self.refused_mwi) < MAX_REFUSED_MWI:
                self.refused_mwi.add((mailbox, contact))
            log.info(
                "event=mwi_notify mailbox=%s contact=%s status=%d%s",
                mailbox,
                binding.contact,
                response.status,
                " unsolicited=off_until_subscribe" if refused else "",
            )
