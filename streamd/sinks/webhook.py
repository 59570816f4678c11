"""Webhook sink: POSTs result records (one object, or arrays of `batch_size`) to a URL, in order.

While the receiver answers, records wait in a small memory queue (`streams.webhook_queue_records`:
what a `kill -9` can lose while the receiver is up, with the batch being POSTed). The first failed POST
(connection error, timeout, 5xx, 408, 429) moves the queue to a disk spool (JSONL + a read offset);
from then on every record is written to the spool as it comes, whatever the backoff, and delivered from
there, in order, once the receiver is back. A spool over `spool_max_bytes` loses records (`spool_full`);
a disk that refuses writes keeps them in memory up to the same bound, then loses them (`disk_full`),
shown in `last_error`, logged, and healed by the next write that succeeds. A 4xx other than 408/429
(or a redirect) means the receiver refuses the records: dropped, counted as `rejected`.

Two tasks on the loop, both supervised (a crash is logged and the task restarted): delivery, and the
spool writer; spool files are read and written in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import aiohttp

from streamd.egress import EgressPolicy, EgressResolver
from streamd.health import supervise
from streamd.sinks.jsonl import SinkStats
from streamd.sinks.spool import Spool
from streamd.video.source import redact

logger = logging.getLogger(__name__)

RETRYABLE = frozenset({408, 429})
BACKOFF_INITIAL_S = 0.2
BACKOFF_MAX_S = 10.0
DISK_RETRY_S = 1.0


class WebhookSink:
    kind = "webhook"

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str],
        timeout_s: float,
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
        self._batch_size = batch_size
        self._queue_max = queue_max
        self._memory: list[bytes] = []  # older than anything spilled or spooled
        self._spill: list[bytes] = []  # bound for the spool, in emission order
        self._spool = Spool(spool_dir, spool_max_bytes)
        self._spool_lock = asyncio.Lock()  # one writer of the spool at a time keeps the order
        self._disk_failing = False
        self._wake = asyncio.Event()  # delivery: something to send
        self._spill_wake = asyncio.Event()  # writer: something to spool
        self._closing = False
        self._session: aiohttp.ClientSession | None = None
        self._egress = egress
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await asyncio.to_thread(self._spool.open)
        # Connections go only to addresses the egress rules allow (names resolved, then filtered).
        resolver = EgressResolver(self._egress) if self._egress is not None else None
        self._session = aiohttp.ClientSession(
            timeout=self._timeout, connector=aiohttp.TCPConnector(resolver=resolver)
        )
        name = f"webhook-sink-{self.display_url}"
        self._tasks = [
            supervise(self._deliver_forever, f"{name}-deliver", self._crashed),
            supervise(self._write_spill_forever, f"{name}-spool", self._crashed),
        ]
        if self._spool.pending:
            self._wake.set()

    @property
    def spool_bytes(self) -> int:
        return self._spool.pending_bytes

    def emit(self, record: bytes) -> None:
        self.stats.count("emitted")
        # Once anything is spilled or spooled, newer records queue behind it on disk: order is kept.
        if self._spool.pending or self._spill or len(self._memory) >= self._queue_max:
            if self._disk_failing and len(self._spill) >= self._queue_max:
                self.stats.drop("disk_full")  # the spool cannot take them and memory is bounded
                self.stats.settle(1)
                return
            self._spill.append(record)
            self._spill_wake.set()
        else:
            self._memory.append(record)
        self._wake.set()

    def _crashed(self, exc: BaseException) -> None:
        self.stats.error.set(f"delivery crashed ({type(exc).__name__}: {exc}); restarted")

    # -- to the spool ----------------------------------------------------------------------------------
    async def _spool_records(self, *, with_memory: bool) -> bool:
        """Write the spill (after the memory queue, when asked) to the spool; False if the disk refused
        it, in which case the records stay where they were, in order."""
        async with self._spool_lock:
            if not with_memory and self._memory:
                return True  # the memory queue goes first: the delivery task moves both together
            records = (self._memory if with_memory else []) + self._spill
            if not records:
                return True
            taken_memory, taken_spill = (len(self._memory) if with_memory else 0), len(self._spill)
            try:
                accepted = await asyncio.to_thread(self._spool.append, records)
            except OSError as exc:
                self._disk_failing = True
                if self.stats.error.set(f"cannot write the spool: {exc}"):
                    logger.warning(
                        "webhook %s: cannot write its spool (%s); records wait in memory",
                        self.display_url,
                        exc,
                    )
                return False
            del self._memory[:taken_memory]
            del self._spill[:taken_spill]
        if self._disk_failing:
            self._disk_failing = False
            logger.info("webhook %s: its spool takes records again", self.display_url)
        self.stats.count("spooled", accepted)
        if accepted < len(records):
            self.stats.drop("spool_full", len(records) - accepted)
        self.stats.settle(len(records))
        self._wake.set()
        return True

    async def _write_spill_forever(self) -> None:
        """Spilled records reach the disk as they come, not when delivery next looks (it may be in a
        backoff sleep or a POST): a `kill -9` then loses none of them."""
        while True:
            await self._spill_wake.wait()
            self._spill_wake.clear()
            while self._spill and not await self._spool_records(with_memory=False):
                await asyncio.sleep(DISK_RETRY_S)

    # -- delivery ---------------------------------------------------------------------------------------
    async def _deliver_forever(self) -> None:
        failures = 0
        while True:
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
                if not from_spool:
                    await self._spool_records(with_memory=True)  # durable from the first failure on
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
        if self._memory:
            return self._memory[: self._batch_size], False
        if self._spool.pending:
            return await asyncio.to_thread(self._spool.peek, self._batch_size), True
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
                return self._outcome(response.status, len(batch))
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Refused, timed out or unreachable read alike outside: the log has which.
            logger.info("webhook %s: %s: %s", self.display_url, type(exc).__name__, redact(str(exc)))
            self.stats.error.set(f"connection failed posting to {self.display_url}")
            return "failed"

    def _outcome(self, status: int, count: int) -> str:
        if status < 300:
            return "delivered"
        message = f"HTTP {status} from {self.display_url}"
        if status >= 500 or status in RETRYABLE:
            self.stats.error.set(message)
            return "failed"
        if 300 <= status < 400:
            message += " (a redirect: not followed; point the sink at the final URL)"
        self.stats.error.set(message + " (records rejected)")
        logger.warning("webhook %s rejected %d record(s): HTTP %d", self.display_url, count, status)
        return "rejected"

    async def drain(self) -> None:
        """Nothing to wait for: delivery may take as long as the receiver is down; status counts it."""

    async def close(self) -> None:
        """Deliver what the receiver takes now, spool the rest, stop. Never raises: what a failing disk
        cannot take is counted as lost and logged."""
        self._closing = True
        self._wake.set()
        deliver, writer = self._tasks or (None, None)
        if deliver is not None:
            await asyncio.gather(deliver, return_exceptions=True)
        if writer is not None:
            async with self._spool_lock:  # never cut the writer off in the middle of an append
                writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        if (self._memory or self._spill) and not await self._spool_records(with_memory=True):
            lost = len(self._memory) + len(self._spill)
            self.stats.drop("disk_full", lost)
            self.stats.settle(lost)
            logger.error(
                "webhook %s: %d record(s) lost at close: the spool cannot be written", self.display_url, lost
            )
            self._memory.clear()
            self._spill.clear()
        if self._session is not None:
            await self._session.close()
        try:
            await asyncio.to_thread(self._spool.close)
        except OSError as exc:
            logger.error("webhook %s: cannot save its spool's read offset: %s", self.display_url, exc)
