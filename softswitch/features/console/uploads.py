"""Uploaded audio (hold music, greetings): bounded before it is read, checked by decoding.

A request whose ``Content-Length`` is over the limit is refused before its body is read;
one without it (chunked) is counted as it arrives and cut off at the limit. Multipart
forms are parsed by Starlette with the file spooled to disk past 1 MB, so at most the
limit ever reaches the disk and little reaches memory. The file is then decoded (WAV,
MP3, FLAC, Ogg; at most 5 MB, :data:`media.audio.MAX_AUDIO_FILE`) in a worker thread; only
audio that decodes is kept, under a name of its own (``DATA/audio/<kind>/<sha256>.<ext>``),
so the file in use is never overwritten and a refused upload leaves it in place.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.types import Message, Receive

from media.audio import MAX_AUDIO_FILE, AudioFileError, load_audio

from ...private_files import private_dir
from ...web.server import drain

FORM_OVERHEAD = 64 * 1024  # the multipart framing and the other fields of an upload form
# what is read (and dropped) of a refused body before answering, so that a browser sees the
# answer instead of a reset connection; a longer body has its connection closed
DRAIN_LIMIT = 64 * 1024 * 1024
SUFFIXES = {".wav", ".mp3", ".flac", ".ogg"}
MB = 1024 * 1024


class UploadError(ValueError):
    """An upload refused; the message is for the person who sent it."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def too_large(limit: int) -> UploadError:
    return UploadError(f"the file is larger than {limit / MB:g} MB: nothing was changed", 413)


def bounded_receive(receive: Receive, limit: int) -> Receive:
    """``receive`` that refuses a body longer than ``limit`` bytes."""
    seen = 0

    async def bounded() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_large(limit - FORM_OVERHEAD)
        return message

    return bounded


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise UploadError("bad Content-Length") from None


async def _drain(receive: Receive) -> None:
    """Read what is left of a refused body, keeping none of it (up to DRAIN_LIMIT)."""
    if not await drain(receive, DRAIN_LIMIT):
        raise UploadError("the upload is far too large", 413)


async def read_form(request: Request, limit: int = MAX_AUDIO_FILE) -> FormData:
    """The multipart form of ``request``, its body at most ``limit`` + the framing."""
    total = limit + FORM_OVERHEAD
    declared = _declared_length(request)
    if declared is not None and declared > total:
        await _drain(request.receive)
        raise too_large(limit)
    bounded = Request(request.scope, bounded_receive(request.receive, total))
    try:
        return await bounded.form(max_files=1, max_fields=32, max_part_size=64 * 1024)
    except UploadError as exc:
        if exc.status == 413:
            await _drain(request.receive)
        raise
    except Exception as exc:  # the multipart parser's own refusals
        raise UploadError(f"the form could not be read ({exc})") from None


async def read_body(request: Request, limit: int = MAX_AUDIO_FILE) -> bytes:
    """A raw request body (the API's uploads), at most ``limit`` bytes."""
    declared = _declared_length(request)
    if declared is not None and declared > limit:
        raise too_large(limit + FORM_OVERHEAD)
    chunks: list[bytes] = []
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise too_large(limit + FORM_OVERHEAD)
        chunks.append(chunk)
    return b"".join(chunks)


def _suffix(filename: str | None, data_head: bytes) -> str:
    suffix = Path(filename or "").suffix.lower()
    if suffix in SUFFIXES:
        return suffix
    if data_head.startswith(b"RIFF"):
        return ".wav"
    if data_head.startswith((b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2")):
        return ".mp3"
    if data_head.startswith(b"fLaC"):
        return ".flac"
    if data_head.startswith(b"OggS"):
        return ".ogg"
    return ".bin"


async def save_audio(data: bytes | UploadFile, filename: str | None, folder: Path) -> Path:
    """Keep ``data`` in ``folder`` if it decodes as audio of at most 5 MB; its path.
    Raises UploadError with what is wrong (the previous file stays in use)."""
    private_dir(folder)
    fd, tmp_name = tempfile.mkstemp(prefix=".upload-", dir=folder)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    size = 0
    head = b""
    try:
        with os.fdopen(fd, "wb") as out:
            if isinstance(data, bytes):
                chunks: Any = [data]
            else:
                await data.seek(0)
                chunks = _chunks(data)
            async for chunk in _aiter(chunks):
                size += len(chunk)
                if size > MAX_AUDIO_FILE:
                    raise too_large(MAX_AUDIO_FILE)
                if len(head) < 16:
                    head += chunk[:16]
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise UploadError("the file is empty: nothing was changed")
        suffix = _suffix(filename, head)
        named = tmp.with_name(f".check-{digest.hexdigest()[:16]}{suffix}")
        tmp.rename(named)  # the decoder goes by the name's suffix for some formats
        tmp = named
        try:
            await asyncio.to_thread(load_audio, tmp)
        except AudioFileError as exc:
            reason = str(exc).partition(": ")[2] or str(exc)
            raise UploadError(f"{filename or 'the file'}: {reason}; nothing was changed") from None
        final = folder / f"{digest.hexdigest()[:32]}{suffix}"
        os.chmod(tmp, 0o600)
        tmp.replace(final)
        return final
    finally:
        tmp.unlink(missing_ok=True)


async def _chunks(upload: UploadFile, size: int = 256 * 1024) -> Any:
    while chunk := await upload.read(size):
        yield chunk


async def _aiter(chunks: Any) -> Any:
    if hasattr(chunks, "__aiter__"):
        async for chunk in chunks:
            yield chunk
    else:
        for chunk in chunks:
            yield chunk
