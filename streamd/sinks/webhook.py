"""Webhook sink: POSTs result records (one object, or arrays of `batch_size`) to a URL, in order.

Failures (connection errors, timeouts, 5xx, 408, 429) are retried with exponential backoff. Records wait
in a bounded memory queue; once it is full, or the head has failed `max_retries` times, records go to a
disk spool (JSONL + a read offset) and are delivered from there, still in order, when the receiver is
back. Only a spool over `spool_max_bytes` loses records, counted as `spool_full`. A 4xx other than
408/429 means the receiver refuses the record: it is dropped and counted as `rejected`. Delivery runs
in one task on the loop; spool files are read and written in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import aiohttp

from streamd.egress import EgressPolicy, EgressResolver
from streamd.sinks.jsonl import SinkStats
from streamd.video.source import redact

logger = logging.getLogger(__name__)

RETRYABLE = frozenset({408, 429})
BACKOFF_INITIAL_S = 0.2
BACKOFF_MAX_S = 10.0


class WebhookSink:
    kind = "webhook"

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str],
        timeout_s: float,
        max_retries: int,
        batch_size: int,
        queue_max: int,
        spool_dir: Path,
        spool_max_bytes: int,
        display_url: str,
        egress: EgressPolicy | None = None,
    ) -> None:
        self.url = url
        self.display_url = display_url
        self.stats = SinkStats()
        self._headers = {"Content-Type": "application/json", **headers}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_retries = max_retries
        self._batch_size = batch_size
        self._queue_max = queue_max
        self._memory: list[bytes] = []
        self._spill: list[bytes] = []  # bound for the spool, written by the delivery task (not on the loop)
        self._spool = Spool(spool_dir, spool_max_bytes)
        self._wake = asyncio.Event()
        self._closing = False
        self._session: aiohttp.ClientSession | None = None
        self._egress = egress
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self._spool.open)
        # Connections go only to addresses the egress rules allow (names resolved, then filtered).
        resolver = EgressResolver(self._egress) if self._egress is not None else None
        self._session = aiohttp.ClientSession(
            timeout=self._timeout, connector=aiohttp.TCPConnector(resolver=resolver)
        )
        self._task = asyncio.create_task(self._deliver_forever(), name=f"webhook-sink-{self.display_url}")
        if self._spool.pending:
            self._wake.set()

    @property
    def spool_bytes(self) -> int:
        return self._spool.pending_bytes

    def emit(self, record: bytes) -> None:
        self.stats.count("emitted")
        # Once anything is spooled, newer records queue behind it on disk: order is kept.
        if self._spool.pending or self._spill or len(self._memory) >= self._queue_max:
            self._spill.append(record)
        else:
            self._memory.append(record)
        self._wake.set()

    async def _flush_spill(self) -> None:
        """Memory first, then the spill: the spool holds records in emission order."""
        records, self._memory, self._spill = self._memory + self._spill, [], []
        accepted = await asyncio.to_thread(self._spool.append, records)
        # Counted here, on the loop, which owns the stats.
        self.stats.count("spooled", accepted)
        if accepted < len(records):
            self.stats.drop("spool_full", len(records) - accepted)
        self.stats.settle(len(records))

    async def _deliver_forever(self) -> None:
        failures = 0
        while True:
            if self._spill:
                await self._flush_spill()
            batch, from_spool = await self._next_batch()
            if batch is None:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            outcome = await self._post(batch)
            if outcome == "failed":
                failures += 1
                self.stats.count("retried")
                if not from_spool and (failures > self._max_retries or self._closing):
                    await self._flush_spill()  # the receiver stays down: free the memory, keep order on disk
                if self._closing:
                    return  # what is left stays in the spool for the next start
                await asyncio.sleep(min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2 ** min(failures - 1, 10)))
                continue
            failures = 0
            if outcome == "rejected":
                self.stats.drop("rejected", len(batch))
            else:
                self.stats.count("delivered", len(batch))
            if from_spool:
                await asyncio.to_thread(self._spool.consume, len(batch))
            else:
                del self._memory[: len(batch)]
                self.stats.settle(len(batch))

    async def _next_batch(self) -> tuple[list[bytes] | None, bool]:
        if self._spool.pending:
            return await asyncio.to_thread(self._spool.peek, self._batch_size), True
        if self._memory:
            return self._memory[: self._batch_size], False
        return None, False

    async def _post(self, batch: list[bytes]) -> str:
        assert self._session is not None
        if self._egress is not None and not self._egress.allows_url(self.url):
            # aiohttp connects to an IP literal without asking the resolver: checked here. The records
            # stay queued (then spooled) until the rules allow the address.
            self.stats.error.set(f"{self.display_url} is not allowed by the egress rules")
            return "failed"
        body = batch[0] if self._batch_size == 1 else b"[" + b",".join(batch) + b"]"
        started = time.monotonic()
        try:
            # Never follow a redirect: a 307 would re-POST the records wherever the receiver points.
            async with self._session.post(
                self.url, data=body, headers=self._headers, allow_redirects=False
            ) as response:
                await response.read()
                self.stats.delivery(time.monotonic() - started)
                if response.status < 300:
                    return "delivered"
                message = f"HTTP {response.status} from {self.display_url}"
                if response.status >= 500 or response.status in RETRYABLE:
                    self.stats.error.set(message)
                    return "failed"
                if 300 <= response.status < 400:
                    message += " (a redirect: not followed; point the sink at the final URL)"
                self.stats.error.set(message + " (records rejected)")
                logger.warning(
                    "webhook %s rejected %d record(s): HTTP %d", self.display_url, len(batch), response.status
                )
                return "rejected"
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Refused, timed out or unreachable read alike outside: the log has which.
            logger.info("webhook %s: %s: %s", self.display_url, type(exc).__name__, redact(str(exc)))
            self.stats.error.set(f"connection failed posting to {self.display_url}")
            return "failed"

    async def close(self) -> None:
        """Try to deliver what is queued (up to max_retries), spool the rest, stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._memory or self._spill:
            await self._flush_spill()
        if self._session is not None:
            await self._session.close()
        await asyncio.to_thread(self._spool.close)


class Spool:
    """Append-only JSONL file plus a persisted read offset; blocking methods, called from worker threads."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self._data = directory / "spool.jsonl"
        self._offset_file = directory / "spool.offset"
        self._max_bytes = max_bytes
        self._offset = 0
        self._size = 0
        self._count = 0

    @property
    def pending(self) -> int:
        return self._count

    @property
    def pending_bytes(self) -> int:
        return self._size - self._offset

    def open(self) -> None:
        self._data.parent.mkdir(parents=True, exist_ok=True)
        if self._data.exists():
            self._size = self._data.stat().st_size
            self._offset = int(self._offset_file.read_text() or 0) if self._offset_file.exists() else 0
            with self._data.open("rb") as handle:
                handle.seek(self._offset)
                self._count = sum(1 for line in handle if line.endswith(b"\n"))

    def append(self, records: list[bytes]) -> int:
        accepted = []
        for record in records:
            if self._size - self._offset + len(record) + 1 > self._max_bytes:
                break
            accepted.append(record + b"\n")
            self._size += len(record) + 1
        if accepted:
            with self._data.open("ab") as handle:
                handle.write(b"".join(accepted))
            self._count += len(accepted)
        return len(accepted)

    def peek(self, count: int) -> list[bytes]:
        with self._data.open("rb") as handle:
            handle.seek(self._offset)
            return [handle.readline().rstrip(b"\n") for _ in range(min(count, self._count))]

    def consume(self, count: int) -> None:
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
        if self._count:
            self._offset_file.write_text(str(self._offset))
