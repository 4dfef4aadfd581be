"""Archiving recordings to an SFTP server (asyncssh), on a schedule.

Every ``interval_seconds`` (hourly by default) the recordings not archived yet are copied
to ``remote_dir``: written under a temporary name, renamed, then read back and compared by
size and SHA-256 before the row is marked archived. A server that is down or refuses is
retried with backoff; nothing local is deleted here, and retention deletes only what is
archived, so a file leaves this machine only once its copy is confirmed. The server's host
key must be in ``known_hosts``: recordings never go to a server we cannot identify.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, cast

import asyncssh

if TYPE_CHECKING:
    from .recording import Archive, RecordingStore

log = logging.getLogger("softswitch")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


class Archiver:
    def __init__(self, settings: Archive, store: RecordingStore) -> None:
        self.settings = settings
        self.store = store
        self.archived = 0
        self.wake = asyncio.Event()  # archive now (tests, a new recording at shutdown)

    async def run(self) -> None:
        """Archive, then wait for the next round (or a wake-up); retry with backoff."""
        delay = self.settings.retry_first
        while True:
            try:
                await self.archive_pending()
                delay = self.settings.retry_first
                wait = self.settings.interval_seconds
            except (OSError, asyncssh.Error, ValueError) as exc:
                log.warning(
                    "event=archive_failed host=%s retry_in=%.0fs error=%s",
                    self.settings.host,
                    delay,
                    exc,
                )
                wait, delay = delay, min(delay * 2, self.settings.retry_max)
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), wait)

    async def archive_pending(self) -> int:
        pending = [
            (rec_id, path)
            for rec_id, path in self.store.rows("archived IS NULL AND bytes > 0")
            if path.exists()
        ]
        if not pending:
            return 0
        s = self.settings
        async with (
            asyncssh.connect(
                s.host,
                port=s.port,
                username=s.username,
                password=s.password,
                client_keys=[str(s.key_file)] if s.key_file else None,
                known_hosts=str(s.known_hosts),
            ) as conn,
            conn.start_sftp_client() as sftp,
        ):
            if not await sftp.exists(s.remote_dir):
                await sftp.makedirs(s.remote_dir)
            for rec_id, path in pending:
                local = await asyncio.to_thread(sha256_of, path)
                remote = f"{s.remote_dir}/{path.name}"
                await sftp.put(str(path), remote + ".part")
                await sftp.posix_rename(remote + ".part", remote)
                async with sftp.open(remote, "rb") as f:
                    copy = cast(bytes, await f.read())  # binary mode: bytes (typed str)
                if len(copy) != path.stat().st_size or hashlib.sha256(copy).hexdigest() != local:
                    raise ValueError(f"{remote}: the copy differs from {path.name}")
                self.store.archived(rec_id, local, remote)
                self.archived += 1
                log.info("event=recording_archived id=%s remote=%s", rec_id, remote)
        return len(pending)
