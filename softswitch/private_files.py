"""The data directory holds the office's private data (voicemail, recordings, conference
codes): what the daemon writes there is readable by its own user only, files 0600 and
directories 0700, whatever the umask. Paths the daemon owns by name are tightened too
when an older version left them wider; the data directory itself, if an administrator
made it, is left as they chose.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path, *, own: bool = True) -> Path:
    """Make ``path`` and its missing parents, 0700. ``own``: ``path`` is the daemon's by
    name (tightened to 0700 if it existed wider)."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=DIR_MODE)
        os.chmod(d, DIR_MODE)  # mkdir's mode went through the umask
    if own and not missing:
        _tighten(path, DIR_MODE)
    return path


def private_file(path: Path, *, exclusive: bool = False) -> Path:
    """Create ``path`` empty, 0600, for a writer that opens it by name (SQLite, a WAV
    recorder: both keep an existing file's mode). An existing file is tightened to 0600,
    or, with ``exclusive``, is an error (FileExistsError)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else 0)
    fd = os.open(path, flags, FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def write_private_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (a crash leaves the old or the new file,
    never half of one), 0600."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _tighten(path: Path, mode: int) -> None:
    if stat.S_IMODE(path.stat().st_mode) & ~mode:
        os.chmod(path, mode)
