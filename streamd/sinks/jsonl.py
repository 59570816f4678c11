"""JSONL sink: one result record per line, appended to a file, rotated by size.

Lines are written whole, each batch with one `write` of complete lines, so a crash never leaves half a
record. The sink only ever writes files it created: an existing file is opened only if its last whole
line is a streamd record (a torn tail after it, from a crash, is cut off); anything else is refused
untouched. Writes run in a worker thread, fed by one task on the loop, so inference never waits on the disk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import BinaryIO

import orjson

from streamd.entities import SinkCount, SinkDrop, SinkStatus
from streamd.errors import InvalidRequestError
from streamd.health import supervise
from streamd.sinks.files import append_whole, open_append
from streamd.sinks.stats import SinkStats

logger = logging.getLogger(__name__)

MAX_PENDING = 10_000
_CHUNK_BYTES = 65536
_MAX_LINE_BYTES = 64 * 1024**2  # a record is at most a JSON body (server.json_max_bytes' default)
RECORD_START = b'{"stream_id":'  # how every record the pipeline writes begins


class JsonlSink:
    """Records appended to a JSONL file from a writer thread, whole lines only, rotated by size."""

    kind = "jsonl"
    events_only = False

    def __init__(self, path: Path, rotate_bytes: int, keep_files: int = 5) -> None:
        self.path = path
        self.stats = SinkStats()
        self._rotate_bytes = rotate_bytes
        self._keep = keep_files
        self._pending: list[bytes] = []
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()  # set each time the writer has nothing left
        self._writing = False
        self._closing = False
        self._file: BinaryIO | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._file = await asyncio.to_thread(self._open)
        self._task = supervise(self._writer, f"jsonl-sink-{self.path.name}", self._crashed)

    @property
    def idle(self) -> bool:
        return True  # no spool: `drain` is what waits for the file

    def status(self) -> SinkStatus:
        return self.stats.snapshot(self.kind)

    def _crashed(self, exc: BaseException) -> None:
        self.stats.error.set(f"writer crashed ({type(exc).__name__}: {exc}); restarted")

    def emit(self, record: bytes) -> None:
        """Queue a record for the writer (dropped, counted, past `MAX_PENDING`); never blocks."""
        self.stats.count(SinkCount.EMITTED)
        if len(self._pending) >= MAX_PENDING:
            self.stats.drop(SinkDrop.QUEUE_FULL)
            self.stats.settle(1)
            return
        self._pending.append(record)
        self._wake.set()

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                lines, self._pending = self._pending, []
                self._writing = True
                started = time.monotonic()
                try:
                    await asyncio.to_thread(self._write, b"".join(line + b"\n" for line in lines))
                    self.stats.delivery(time.monotonic() - started)
                    self.stats.count(SinkCount.DELIVERED, len(lines))
                except OSError as exc:  # a full disk loses these lines: counted, visible, logged
                    self.stats.drop(SinkDrop.WRITE_ERROR, len(lines))
                    if self.stats.error.set(f"{type(exc).__name__}: {exc}"):
                        logger.warning(
                            "jsonl sink %s: %s; dropping records until writes succeed", self.path, exc
                        )
                finally:
                    self._writing = False
                    self.stats.settle(len(lines))
            self._drained.set()
            if self._closing:
                return

    async def drain(self) -> None:
        """Return once every record emitted so far is written (or counted as lost)."""
        while self._pending or self._writing:
            self._drained.clear()
            await self._drained.wait()

    def _open(self) -> BinaryIO:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open_append(self.path)
        try:
            size = handle.seek(0, os.SEEK_END)
            keep = records_end(handle, size, self.path)
        except BaseException:
            handle.close()
            raise
        if keep < size:
            logger.warning("%s: cutting a torn last line (%d bytes)", self.path, size - keep)
            handle.truncate(keep)
        return handle

    def _write(self, data: bytes) -> None:
        assert self._file is not None
        append_whole(self._file, data)
        if self._file.tell() >= self._rotate_bytes:
            self._rotate()

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        for index in range(self._keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        oldest = self.path.with_name(f"{self.path.name}.{self._keep + 1}")
        oldest.unlink(missing_ok=True)
        self._file = open_append(self.path)

    async def close(self) -> None:
        """Write everything emitted so far, then close the file."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._file is not None:
            await asyncio.to_thread(self._file.close)


def check_existing(path: Path) -> None:
    """Refuse (400) an existing file that this sink would not append to. Blocking: call in a thread."""
    try:
        with path.open("rb") as handle:
            records_end(handle, handle.seek(0, os.SEEK_END), path)
    except FileNotFoundError:
        return


def records_end(handle: BinaryIO, size: int, path: Path) -> int:
    """Where the last whole streamd record of an existing file ends (what follows is a torn line).

    A file whose last whole line is not a streamd record is somebody else's: refused, never "repaired".
    """
    if size == 0:
        return 0
    last_newline = _rfind_newline(handle, size)
    if last_newline is None:  # no whole line: only a torn first record of ours may be cut
        handle.seek(0)
        if handle.read(len(RECORD_START)) == RECORD_START and size <= _MAX_LINE_BYTES:
            return 0
        raise _not_ours(path, "it holds no JSON line")
    line_start = _rfind_newline(handle, last_newline)
    start = 0 if line_start is None else line_start + 1
    if last_newline - start > _MAX_LINE_BYTES:
        raise _not_ours(path, "its last line is longer than any record")
    handle.seek(start)
    line = handle.read(last_newline - start)
    if not line.startswith(RECORD_START):
        raise _not_ours(path, "its last line is not a streamd record")
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise _not_ours(path, "its last line is not JSON") from None
    if not isinstance(record, dict) or "frame_index" not in record:
        raise _not_ours(path, "its last line is not a streamd record")
    return last_newline + 1


def _rfind_newline(handle: BinaryIO, end: int) -> int | None:
    """Offset of the last b"\\n" before `end`, reading backwards in chunks (bounded by _MAX_LINE_BYTES)."""
    position = end
    while position > 0 and end - position <= _MAX_LINE_BYTES:
        start = max(0, position - _CHUNK_BYTES)
        handle.seek(start)
        found = handle.read(position - start).rfind(b"\n")
        if found >= 0:
            return start + found
        position = start
    return None


def _not_ours(path: Path, why: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"jsonl sink file {path} exists and is not a streamd results file ({why}); streamd only appends "
        "to files it wrote: choose another path",
        code="invalid_sink",
    )
