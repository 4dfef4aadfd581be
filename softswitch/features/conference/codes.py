"""Conference access codes: each user owns a conference with a host and a participant code.

Codes come from the configuration; missing ones are generated once and kept in the data
directory (``conference-codes.json``) so that they survive restarts.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...config import User
from ...private_files import private_dir, write_private_text


@dataclass(frozen=True, slots=True)
class Access:
    owner: str  # the extension whose conference this is
    host: bool


def known_codes(users: list[User], data_dir: Path) -> dict[str, tuple[str | None, str | None]]:
    """Each user's (host, participant) codes as a running bridge would use them: from the
    configuration, else as generated and kept in the data directory (None: not generated
    yet). Reads only; :class:`Codes` generates and writes."""
    path = data_dir / "conference-codes.json"
    stored: Any = {}
    with contextlib.suppress(OSError, ValueError):  # none yet, or unreadable: unknown
        stored = json.loads(path.read_text())
    out: dict[str, tuple[str | None, str | None]] = {}
    for user in users:
        kept = stored.get(user.extension) if isinstance(stored, dict) else None
        if not isinstance(kept, dict):
            kept = {}
        out[user.extension] = (
            user.conference_host_code or kept.get("host"),
            user.conference_code or kept.get("participant"),
        )
    return out


class Codes:
    def __init__(self, users: list[User], data_dir: Path) -> None:
        self.path = data_dir / "conference-codes.json"
        stored: dict[str, dict[str, str]] = {}
        if self.path.exists():
            stored = json.loads(self.path.read_text())
        self.by_code: dict[str, Access] = {}
        self.of_user: dict[str, tuple[str, str]] = {}
        changed = False
        for user in users:
            kept = stored.get(user.extension, {})
            host = user.conference_host_code or kept.get("host") or self._new()
            guest = user.conference_code or kept.get("participant") or self._new()
            if kept != {"host": host, "participant": guest}:
                changed = True
            for code, is_host in ((host, True), (guest, False)):
                if code in self.by_code:
                    raise ValueError(f"conference code {code} is used twice")
                self.by_code[code] = Access(user.extension, is_host)
            self.of_user[user.extension] = (host, guest)
        if changed:
            private_dir(data_dir, own=False)
            write_private_text(
                self.path,
                json.dumps(
                    {ext: {"host": h, "participant": p} for ext, (h, p) in self.of_user.items()},
                    indent=2,
                ),
            )

    def _new(self) -> str:
        while True:
            code = f"{secrets.randbelow(10**6):06d}"
            if code not in self.by_code:
                return code

    def lookup(self, code: str) -> Access | None:
        return self.by_code.get(code)
