"""JSONL sink: one result record per line, appended to a file, rotated by size.

Lines are written whole, each batch with one `write` of complete lines, so a crash never leaves half a
record; a torn last line from an older writer is cut off when the file is opened. Writes run in a worker
thread, fed by one task on the loop, so inference never waits on the disk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

logger = logging.getLogger(__name__)

MAX_PENDING = 10_000


@dataclass(slots=True)
class SinkStats:
    emitted: int = 0
    delivered: int = 0
    retried: int = 0
    spooled: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    observe: Callable[[str, int], None] | None = None  # metrics: (outcome, count)
    observe_delivery: Callable[[float], None] | None = None  # metrics: seconds one write or POST took

    def count(self, outcome: str, count: int = 1) -> None:
        """outcome: emitted, delivered, retried or spooled."""
        setattr(self, outcome, getattr(self, outcome) + count)
        if self.observe is not None:
            self.observe(outcome, count)

    def delivery(self, seconds: float) -> None:
        if self.observe_delivery is not None:
            self.observe_delivery(seconds)

    def drop(self, reason: str, count: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count
        if self.observe is not None:
            self.observe(f"dropped_{reason}", count)

    def to_api(self) -> dict[str, object]:
        return {
            "emitted": self.emitted,
            "delivered": self.delivered,
            "retried": self.retried,
            "spooled": self.spooled,
            "dropped": dict(self.dropped),
            "last_error": self.last_error,
        }


class JsonlSink:
    kind = "jsonl"

    def __init__(self, path: Path, rotate_bytes: int, keep_files: int = 5) -> None:
        self.path = path
        self.stats = SinkStats()
        self._rotate_bytes = rotate_bytes
        self._keep = keep_files
        self._pending: list[bytes] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._file: BinaryIO | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._file = await asyncio.to_thread(self._open)
        self._task = asyncio.create_task(self._writer(), name=f"jsonl-sink-{self.path.name}")

    def emit(self, record: bytes) -> None:
        self.stats.count("emitted")
        if len(self._pending) >= MAX_PENDING:
            self.stats.drop("queue_full")
            return
        self._pending.append(record)
        self._wake.set()

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                lines, self._pending = self._pending, []
                started = time.monotonic()
                try:
                    await asyncio.to_thread(self._write, b"".join(line + b"\n" for line in lines))
                    self.stats.delivery(time.monotonic() - started)
                    self.stats.count("delivered", len(lines))
                except OSError as exc:  # a full disk loses these lines: counted, visible, logged
                    self.stats.drop("write_error", len(lines))
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                    logger.warning("jsonl sink %s: %s", self.path, exc)
            if self._closing:
                return

    def _open(self) -> BinaryIO:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+b")
        size = handle.seek(0, os.SEEK_END)
        if size:
            handle.seek(max(0, size - 65536))
            tail = handle.read()
            if not tail.endswith(b"\n"):
                cut = tail.rfind(b"\n")
                keep = size - len(tail) + cut + 1 if cut >= 0 else 0
                logger.warning("%s: cutting a torn last line (%d bytes)", self.path, size - keep)
                handle.truncate(keep)
        return handle

    def _write(self, data: bytes) -> None:
        assert self._file is not None
        self._file.write(data)
        self._file.flush()
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
        self._file = self.path.open("a+b")

    async def close(self) -> None:
        """Write everything emitted so far, then close the file."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._file is not None:
            await asyncio.to_thread(self._file.close)
