"""A network sink's spool: the `RecordSpool` contract, and the disk one (an append-only JSONL file plus a
persisted read offset) used outside cluster mode; cluster mode's is in `sinks/db_spool.py`.

`Spool`'s methods are blocking, called from worker threads (`DiskSpool` runs them there for the loop); a
lock orders the delivery task's reads and consumes with the spool writer's appends, which run in
different threads. Records are appended whole or not at all (`sinks.files`), and a torn tail left by a
crash is cut off when the spool is opened, so nothing is ever appended after half a record.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Protocol

from streamd.sinks.files import append_whole, last_newline_end, open_append

logger = logging.getLogger(__name__)


class SpoolWriteError(Exception):
    """The spool cannot be used now (a full disk, a read error, the database unreachable): nothing was
    added or removed; keep the records and retry."""


class RecordSpool(Protocol):
    """Where a network sink's records wait while its receiver is down: in order, appended whole, read
    from the oldest, forgotten once delivered. Coroutines, called on the loop; one appender at a time."""

    @property
    def pending(self) -> int:
        """Records spooled and not yet consumed."""

    @property
    def pending_bytes(self) -> int:
        """Their size in bytes."""

    async def open(self) -> None:
        """Load what an earlier run (or, in cluster mode, the stream's previous owner) left."""

    async def append(self, records: list[bytes]) -> int:
        """Append what fits under the spool's bound, whole; returns how many. SpoolWriteError: none now
        (retry later); SpoolFencedError (cluster mode): none, ever, from this node."""

    async def peek(self, count: int) -> list[bytes]:
        """Up to `count` of the oldest records, left in place (SpoolWriteError: cannot be read now)."""

    async def consume(self, count: int) -> None:
        """Forget the `count` oldest records (those the last `peek` returned first); SpoolWriteError:
        nothing was forgotten (retry)."""

    async def close(self) -> None:
        """Persist what the next `open` needs (SpoolWriteError if that fails)."""


class Spool:
    """The on-disk queue of one network sink: records in order, appended whole, read from an offset."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self._data = directory / "spool.jsonl"
        self._offset_file = directory / "spool.offset"
        self._max_bytes = max_bytes
        self._offset = 0
        self._size = 0
        self._count = 0
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Records spooled and not yet consumed."""
        return self._count

    @property
    def pending_bytes(self) -> int:
        return self._size - self._offset

    def open(self) -> None:
        """Create the directory, cut a torn last record and load the read offset (blocking)."""
        self._data.parent.mkdir(parents=True, exist_ok=True)
        if not self._data.exists():
            return
        with open_append(self._data) as handle:
            size = handle.seek(0, 2)
            whole = last_newline_end(handle, size)
            if whole < size:
                logger.warning("%s: cutting a torn last record (%d bytes)", self._data, size - whole)
                handle.truncate(whole)
        self._size = whole
        offset = int(self._offset_file.read_text() or 0) if self._offset_file.exists() else 0
        self._offset = min(offset, whole)
        with self._data.open("rb") as handle:
            handle.seek(self._offset)
            self._count = sum(1 for line in handle if line.endswith(b"\n"))

    def append(self, records: list[bytes]) -> int:
        """Append what fits under max_bytes, whole; returns how many. OSError (full disk): none."""
        with self._lock:
            accepted, size = [], self._size - self._offset
            for record in records:
                if size + len(record) + 1 > self._max_bytes:
                    break
                accepted.append(record + b"\n")
                size += len(record) + 1
            if accepted:
                data = b"".join(accepted)
                with open_append(self._data) as handle:
                    append_whole(handle, data)
                self._size += len(data)
                self._count += len(accepted)
            return len(accepted)

    def peek(self, count: int) -> list[bytes]:
        """Up to `count` of the oldest records, left in place (blocking)."""
        with self._lock, self._data.open("rb") as handle:
            handle.seek(self._offset)
            return [handle.readline().rstrip(b"\n") for _ in range(min(count, self._count))]

    def consume(self, count: int) -> None:
        """Forget the `count` oldest records (delivered or refused) and persist the offset (blocking)."""
        with self._lock:
            with self._data.open("rb") as handle:
                handle.seek(self._offset)
                for _ in range(count):
                    self._offset += len(handle.readline())
            self._count -= count
            if self._count == 0:  # drained: start the files afresh
                self._data.unlink(missing_ok=True)
                self._offset_file.unlink(missing_ok=True)
                self._offset = self._size = 0
            else:
                self._offset_file.write_text(str(self._offset))

    def close(self) -> None:
        """Persist the read offset of what is left (blocking)."""
        with self._lock:
            if self._count:
                self._offset_file.write_text(str(self._offset))


class DiskSpool:
    """`Spool` for the loop: its blocking file I/O runs in worker threads (`RecordSpool`)."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self._spool = Spool(directory, max_bytes)

    @property
    def pending(self) -> int:
        return self._spool.pending

    @property
    def pending_bytes(self) -> int:
        return self._spool.pending_bytes

    async def open(self) -> None:
        try:
            await asyncio.to_thread(self._spool.open)
        except OSError as exc:
            raise SpoolWriteError(f"cannot open: {exc}") from exc

    async def append(self, records: list[bytes]) -> int:
        try:
            return await asyncio.to_thread(self._spool.append, records)
        except OSError as exc:
            raise SpoolWriteError(str(exc)) from exc

    async def peek(self, count: int) -> list[bytes]:
        try:
            return await asyncio.to_thread(self._spool.peek, count)
        except OSError as exc:
            raise SpoolWriteError(f"cannot read: {exc}") from exc

    async def consume(self, count: int) -> None:
        await asyncio.to_thread(self._spool.consume, count)

    async def close(self) -> None:
        try:
            await asyncio.to_thread(self._spool.close)
        except OSError as exc:
            raise SpoolWriteError(f"cannot save its read offset: {exc}") from exc
