"""Call recording: on demand (the in-call code, ``*9``) or always, per user, archived.

A user's ``recording.mode`` says whether it may record: "on_demand" starts and stops with
the code during a bridged call; "always" records every bridged call it takes part in;
"off" (the default) gets a refusal tone for the code. Both parties are recorded, one
channel each (``[recording] channels = "stereo"``) or mixed, at 8 kHz. With
``announce = true`` both parties hear "this call is being recorded" when it starts. Each
recording is a WAV file under ``DATA/recordings/`` with a row in ``recordings.sqlite``
(parties, start, duration, who started it, archived or not). Files older than
``retention_days`` are deleted (once archived, when archiving is on); past
``max_megabytes`` no new recording starts and the log says so. Archiving is
:mod:`softswitch.features.archive`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile
from pydantic import Field

from ivr import Prompt
from media.resample import StreamResampler
from media.tones import tone

from ..calls import Party, refresh_media
from ..feature import BaseFeature, CallListener, InCallHandler
from ..model import Strict
from ..private_files import private_dir, private_file
from ..services import Services
from .archive import Archiver

log = logging.getLogger("softswitch")
RATE = 8000
SCHEMA = """
CREATE TABLE IF NOT EXISTS recordings (
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    parties TEXT NOT NULL,
    started REAL NOT NULL,
    seconds REAL NOT NULL DEFAULT 0,
    started_by TEXT NOT NULL,
    bytes INTEGER NOT NULL DEFAULT 0,
    archived REAL,
    sha256 TEXT,
    remote TEXT
);
"""


class Archive(Strict):
    """Where recordings are copied (SFTP), and how often."""

    host: str = Field(min_length=1)
    port: int = Field(22, ge=1, le=65535)
    username: str = Field(min_length=1)
    password: str | None = None
    key_file: Path | None = None  # a private key, instead of the password
    known_hosts: Path  # the server's host key: never connect to an unknown server
    remote_dir: str = "recordings"
    interval_seconds: float = Field(3600.0, ge=1.0, le=86400.0)
    retry_first: float = Field(30.0, ge=0.1, le=3600.0)
    retry_max: float = Field(3600.0, ge=1.0, le=86400.0)


class RecordingOffice(Strict):
    code: str = Field("*9", pattern=r"^\*[0-9]{1,3}$")
    channels: Literal["stereo", "mixed"] = "stereo"
    retention_days: int = Field(90, ge=1, le=3650)
    max_megabytes: int = Field(1000, ge=1, le=1_000_000)
    archive: Archive | None = None


class RecordingStore:
    """Recordings' metadata in SQLite, beside their WAV files."""

    def __init__(self, data_dir: Path) -> None:
        self.root = private_dir(data_dir / "recordings")
        self.db = sqlite3.connect(str(private_file(data_dir / "recordings.sqlite")))
        self.db.executescript(SCHEMA)
        self.db.commit()

    def close(self) -> None:
        self.db.close()

    def add(self, rec_id: str, path: Path, parties: str, started_by: str) -> None:
        self.db.execute(
            "INSERT INTO recordings (id, path, parties, started, started_by) VALUES (?,?,?,?,?)",
            (rec_id, str(path), parties, time.time(), started_by),
        )
        self.db.commit()

    def finish(self, rec_id: str, seconds: float, size: int) -> None:
        self.db.execute(
            "UPDATE recordings SET seconds = ?, bytes = ? WHERE id = ?", (seconds, size, rec_id)
        )
        self.db.commit()

    def total_bytes(self) -> int:
        return int(self.db.execute("SELECT COALESCE(SUM(bytes), 0) FROM recordings").fetchone()[0])

    def rows(self, where: str = "1", args: tuple[object, ...] = ()) -> list[tuple[str, Path]]:
        found = self.db.execute(f"SELECT id, path FROM recordings WHERE {where}", args)
        return [(r[0], Path(r[1])) for r in found.fetchall()]

    def archived(self, rec_id: str, sha256: str, remote: str) -> None:
        self.db.execute(
            "UPDATE recordings SET archived = ?, sha256 = ?, remote = ? WHERE id = ?",
            (time.time(), sha256, remote, rec_id),
        )
        self.db.commit()

    def delete(self, rec_id: str, path: Path) -> None:
        path.unlink(missing_ok=True)
        self.db.execute("DELETE FROM recordings WHERE id = ?", (rec_id,))
        self.db.commit()


@dataclass(eq=False)
class Session:
    """One call being recorded: both parties' frames, tick by tick, into one WAV."""

    rec_id: str
    a: Party
    b: Party
    file: soundfile.SoundFile
    stereo: bool
    frames: int = 0

    def __post_init__(self) -> None:
        self._rs = {
            id(p): StreamResampler(p.leg.rate, RATE) for p in (self.a, self.b) if p.leg.rate != RATE
        }

    def _frame(self, party: Party) -> np.ndarray:
        frame = party.leg.frame_in
        resampler = self._rs.get(id(party))
        return resampler.process(frame) if resampler is not None else frame

    def tick(self, _: int) -> None:
        a, b = self._frame(self.a), self._frame(self.b)
        n = min(len(a), len(b))
        if self.stereo:
            self.file.write(np.stack([a[:n], b[:n]], axis=1))
        else:
            mixed = np.clip(a[:n].astype(np.int32) + b[:n], -32768, 32767).astype(np.int16)
            self.file.write(mixed)
        self.frames += n


class CallRecording(BaseFeature, CallListener):
    name = "recording"
    state = ("store", "archiver", "sessions")
    section = "recording"
    config_model = RecordingOffice

    def __post_init__(self) -> None:
        self.office: RecordingOffice = self.settings() or RecordingOffice()
        self.store: RecordingStore | None = None
        self.archiver: Archiver | None = None
        self.sessions: dict[Party, tuple[Session, Callable[[], None]]] = {}

    def in_call_codes(self) -> Mapping[str, InCallHandler]:
        if not any(u.recording.mode == "on_demand" for u in self.config.users):
            return {}
        return {self.office.code: self.pressed}

    def listeners(self) -> Iterable[CallListener]:
        return (self,) if self.config.users else ()

    async def start(self, svc: Services) -> None:
        await super().start(svc)
        self.store = RecordingStore(svc.data_dir)
        svc.counters.setdefault("recordings", 0)
        svc.spawn(self._retention())
        if self.office.archive is not None:
            self.archiver = Archiver(self.office.archive, self.store)
            svc.spawn(self.archiver.run())

    async def stop(self) -> None:
        for party in list(self.sessions):
            self.finish(party)
        if self.store is not None:
            self.store.close()

    # -- starting and stopping -------------------------------------------------------

    def pressed(self, party: Party, code: str) -> bool:
        """The code, from a user in a bridged call: start, or stop, the recording."""
        peer = party.peer
        if peer is None:
            return False
        user = party.user
        if user is None or user.recording.mode == "off":
            log.info("event=recording_refused party=%s reason=not_permitted", party.label)
            self._refusal(party)
            return True
        session = self._session_of(party)
        if session is not None:
            self.finish(session.a)
        else:
            self.begin(party, peer, started_by=user.extension)
        return True

    def bridged(self, a: Party, b: Party) -> None:
        for party in (a, b):
            if party.user is not None and party.user.recording.mode == "always":
                if self._session_of(a) is None:
                    self.begin(a, b, started_by=f"always:{party.user.extension}")
                return

    def ended(self, party: Party) -> None:
        session = self._session_of(party)
        if session is not None:
            self.finish(session.a)

    def _session_of(self, party: Party) -> Session | None:
        for session, _ in self.sessions.values():
            if party in (session.a, session.b):
                return session
        return None

    def begin(self, a: Party, b: Party, *, started_by: str) -> None:
        svc = self.services
        assert self.store is not None
        limit = self.office.max_megabytes * 1_000_000
        used = self.store.total_bytes()
        if used >= limit:
            log.warning(
                "event=recording_refused reason=disk_limit used_bytes=%d limit_bytes=%d",
                used,
                limit,
            )
            self._refusal(a)
            return
        rec_id = secrets.token_hex(8)
        path = self.store.root / f"call-{time.strftime('%Y%m%d-%H%M%S')}-{rec_id}.wav"
        private_file(path)
        stereo = self.office.channels == "stereo"
        file = soundfile.SoundFile(
            str(path), "w", samplerate=RATE, channels=2 if stereo else 1, subtype="PCM_16"
        )
        session = Session(rec_id, a, b, file, stereo)
        unsubscribe = svc.clock.subscribe(session.tick, priority=60)  # after the legs' pass
        self.sessions[a] = (session, unsubscribe)
        self.store.add(rec_id, path, f"{a.label},{b.label}", started_by)
        svc.counters["recordings"] += 1
        log.info(
            "event=recording_started id=%s parties=%s,%s by=%s",
            rec_id,
            a.label,
            b.label,
            started_by,
        )
        if any(p.user is not None and p.user.recording.announce for p in (a, b)):
            svc.spawn(self._announce(a, b))

    def finish(self, a: Party) -> None:
        entry = self.sessions.pop(a, None)
        if entry is None or self.store is None:
            return
        session, unsubscribe = entry
        unsubscribe()
        session.file.close()
        seconds = session.frames / RATE
        size = Path(session.file.name).stat().st_size
        self.store.finish(session.rec_id, seconds, size)
        log.info("event=recording_stopped id=%s seconds=%.1f", session.rec_id, seconds)

    async def _announce(self, a: Party, b: Party) -> None:
        """Both parties hear the notice, then each other again."""
        prompt = Prompt("builtin", "rec-started")
        sources = [p.leg.play(self.services.prompts.samples(prompt, p.leg.rate)) for p in (a, b)]
        await asyncio.gather(*(s.done.wait() for s in sources))
        if a.peer is b:
            refresh_media(a)

    def _refusal(self, party: Party) -> None:
        samples = tone("congestion", self.services.engine.country, party.leg.rate)[0]
        party.leg.play(samples[: party.leg.rate])  # a second of it, to this phone only
        self.services.spawn(self._back_to_peer(party, 1.2))

    async def _back_to_peer(self, party: Party, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if party.peer is not None:
            refresh_media(party)

    # -- retention -------------------------------------------------------------------

    async def _retention(self) -> None:
        while True:
            self.expire(time.time())
            await asyncio.sleep(3600)

    def expire(self, now: float) -> int:
        """Delete recordings older than the retention (archived ones only, when archiving
        is on); returns how many went."""
        assert self.store is not None
        cutoff = now - self.office.retention_days * 86400
        where = "started < ?" + (" AND archived IS NOT NULL" if self.office.archive else "")
        old = self.store.rows(where, (cutoff,))
        for rec_id, path in old:
            self.store.delete(rec_id, path)
        if old:
            log.info("event=recordings_expired count=%d", len(old))
        return len(old)
