"""DatabaseSpool: a network sink's spool as rows of PostgreSQL's `sink_spool` (cluster mode), so that the
node that takes a stream over delivers, in order and before its own records, what the previous owner had
spooled, even when that node died for good.

Runs on the loop; the SQL (`store/spools.py`) runs on the spool database's own thread (`streamd-spool`),
never queued behind registry writes or lease renewals. Every statement is fenced by the epoch of the
lease the stream was started under: once another node claimed the stream, this node can neither add nor
delete a record (`SpoolFencedError`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa

from streamd.errors import StreamdError
from streamd.sinks.spool import SpoolWriteError
from streamd.store import spools
from streamd.store.db import Database
from streamd.store.spools import SpoolKey

T = TypeVar("T")


class DatabaseSpool:
    """One sink's records in `sink_spool`, bounded by `max_bytes` as the disk spool is (`RecordSpool`)."""

    def __init__(self, db: Database, key: SpoolKey, epoch: int, max_bytes: int) -> None:
        self._db = db
        self._key = key
        self._epoch = epoch
        self._max_bytes = max_bytes
        self._count = 0
        self._bytes = 0
        self._peeked: list[tuple[int, int]] = []  # (seq, bytes) of what the last peek returned

    @property
    def pending(self) -> int:
        return self._count

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    async def open(self) -> None:
        """Count what is left, whoever wrote it (this stream's previous owner, or this node before)."""
        self._count, self._bytes = await self._run(functools.partial(spools.size, key=self._key))

    async def append(self, records: list[bytes]) -> int:
        accepted, size = [], self._bytes
        for record in records:
            if size + len(record) > self._max_bytes:
                break
            accepted.append(record)
            size += len(record)
        if not accepted:
            return 0
        call = functools.partial(spools.append, key=self._key, epoch=self._epoch, records=accepted)
        await self._run(call)
        self._count += len(accepted)
        self._bytes = size
        return len(accepted)

    async def peek(self, count: int) -> list[bytes]:
        call = functools.partial(spools.peek, key=self._key, epoch=self._epoch, count=count)
        rows = await self._run(call)
        self._peeked = [(seq, len(record)) for seq, record in rows]
        return [record for _, record in rows]

    async def consume(self, count: int) -> None:
        if count <= 0:
            return
        done, self._peeked = self._peeked[:count], self._peeked[count:]
        call = functools.partial(spools.consume, key=self._key, epoch=self._epoch, through_seq=done[-1][0])
        try:
            await self._run(call)
        except SpoolWriteError:
            self._peeked = done + self._peeked  # nothing was forgotten: the next consume retries it
            raise
        self._count -= len(done)
        self._bytes -= sum(size for _, size in done)

    async def _run(self, call: Callable[[sa.Connection], T]) -> T:
        try:
            return await self._db.run(call)
        except (sa.exc.SQLAlchemyError, StreamdError) as exc:
            # Unreachable, timed out or full (InsufficientStorageError): nothing changed; retried.
            raise SpoolWriteError(f"{type(exc).__name__}: {' '.join(str(exc).split())}") from exc

    async def close(self) -> None:
        """Nothing to persist: every append and consume committed as it happened."""
