"""Multipart bodies: the named parts of any form, and the streaming reader for network uploads (form
fields into memory, files onto disk).

File parts are written chunk by chunk into a staging directory by a worker thread, so the loop
never blocks on disk and memory stays flat whatever the model size. The whole upload is bounded by
`server.upload_max_bytes`; the fields together by `server.json_max_bytes`.
"""

from __future__ import annotations

import asyncio
import binascii
from collections.abc import AsyncIterator, Callable, Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import BadHttpMessage

from streamd.api.body import read_step, refuse_large_body
from streamd.api.context import services
from streamd.errors import InvalidRequestError, PayloadTooLargeError, UnsupportedMediaTypeError
from streamd.logs import printable
from streamd.networks.files import stored_path

CHUNK_BYTES = 1024 * 1024


async def form_parts(request: web.Request) -> AsyncIterator[BodyPartReader]:
    """The parts of a multipart/form-data body, each with a name (else a 400)."""
    try:
        reader = await request.multipart()
    except ValueError as exc:  # no or an invalid boundary parameter
        raise InvalidRequestError(
            f"the multipart body cannot be read: {exc}; let your client set the Content-Type (curl -F does)",
            code="invalid_multipart",
        ) from None
    while (part := await read_step(request, _next_part(reader))) is not None:
        if not isinstance(part, BodyPartReader):
            raise InvalidRequestError("nested multipart bodies are not supported", code="invalid_multipart")
        if not part.name:
            raise InvalidRequestError("every multipart part needs a name", code="invalid_multipart")
        yield part


async def read_text_field(request: web.Request, part: BodyPartReader, name: str) -> tuple[str, int]:
    """A text part decoded by its charset (utf-8 unless given), and its size in bytes; a part that does
    not decode is the client's mistake, so a 400 naming the field."""
    data = await read_field_bytes(request, part, name)
    charset = part.get_charset(default="utf-8")
    try:
        return data.decode(charset), len(data)
    except LookupError:  # also codecs that are not text encodings ('base64', 'rot13')
        message = f"form field {name!r} has unknown charset {charset!r}"
    except (UnicodeError, ValueError) as exc:
        message = f"form field {name!r} is not valid {charset} text ({exc})"
    raise InvalidRequestError(f"{message}; send text fields as utf-8", code="invalid_encoding")


async def read_field_bytes(request: web.Request, part: BodyPartReader, name: str) -> bytes:
    """A whole part (at most server.json_max_bytes), its Content-Transfer-Encoding undone. Read chunk by
    chunk so that the read timeout applies to each wait, not to the whole field."""
    max_bytes = services(request).settings.server.json_max_bytes
    data = bytearray()
    while chunk := await read_step(request, part.read_chunk(CHUNK_BYTES)):
        data += chunk
        if len(data) > max_bytes:
            raise PayloadTooLargeError(
                f"form field {name!r} is larger than server.json_max_bytes={max_bytes}"
            )
    try:
        return bytes(part.decode(data))
    # aiohttp raises RuntimeError for an unknown transfer encoding, binascii.Error for bad base64.
    except (RuntimeError, binascii.Error) as exc:
        raise InvalidRequestError(
            f"form field {name!r} cannot be decoded: {exc}; send it without Content-Transfer-Encoding",
            code="invalid_encoding",
        ) from None


async def _next_part(reader: MultipartReader) -> Any:
    try:
        return await reader.next()
    # aiohttp's words for a body that breaks the multipart syntax, or a part header that breaks HTTP's.
    except (ValueError, BadHttpMessage) as exc:
        reason = exc.message if isinstance(exc, BadHttpMessage) else str(exc)
        raise InvalidRequestError(
            f"the multipart body is malformed: {printable(str(reason))[:200]}", code="invalid_multipart"
        ) from None


def reject_repeated_field(name: str, seen: Container[str]) -> None:
    """A field given twice is a 400 (the form has one value per name)."""
    if name in seen:
        raise InvalidRequestError(f"form field {name!r} is given twice", code="invalid_field")


@dataclass(slots=True)
class Upload:
    """A multipart upload read to the staging directory: its text fields and the files written."""

    fields: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    total_bytes: int = 0


async def read_upload(
    request: web.Request,
    staging_dir: Path,
    is_field: Callable[[str], bool],
    max_bytes: int,
    max_field_bytes: int,
) -> Upload:
    """Read a multipart/form-data request; files go to `staging_dir` at their stored paths."""
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaTypeError(
            "this endpoint takes multipart/form-data (fields and files, curl -F), "
            f"got {request.content_type!r}"
        )
    refuse_large_body(request, max_bytes, "server.upload_max_bytes")
    upload = Upload()
    field_bytes = 0
    async for part in form_parts(request):
        name = part.name
        assert name is not None  # form_parts checked it
        if part.filename is None or is_field(name):
            reject_repeated_field(name, upload.fields)
            upload.fields[name], size = await read_text_field(request, part, name)
            field_bytes += size
            if field_bytes > max_field_bytes:
                raise PayloadTooLargeError(
                    f"form fields exceed server.json_max_bytes={max_field_bytes}; keep files in file parts"
                )
            continue
        if name in upload.files:
            raise InvalidRequestError(
                f"file {name!r} is uploaded twice; send each file once", code="invalid_file"
            )
        target = staging_dir / stored_path(name)
        upload.total_bytes = await _save(request, part, target, upload.total_bytes, max_bytes)
        upload.files.append(name)
    return upload


async def _save(request: web.Request, part: BodyPartReader, target: Path, total: int, max_bytes: int) -> int:
    loop = asyncio.get_running_loop()
    fh: BinaryIO = await loop.run_in_executor(None, _open, target)
    try:
        buffer = bytearray()
        while chunk := await read_step(request, part.read_chunk(CHUNK_BYTES)):
            total += len(chunk)
            if total > max_bytes:
                raise _too_large(max_bytes)
            buffer += chunk
            if len(buffer) >= CHUNK_BYTES:
                await loop.run_in_executor(None, fh.write, bytes(buffer))
                buffer.clear()
        if buffer:
            await loop.run_in_executor(None, fh.write, bytes(buffer))
    finally:
        await loop.run_in_executor(None, fh.close)
    return total


def _open(target: Path) -> BinaryIO:
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.open("xb")


def _too_large(max_bytes: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the upload is larger than server.upload_max_bytes={max_bytes} bytes; "
        "raise that setting to register bigger models"
    )
