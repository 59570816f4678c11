"""SpoolingSink: the delivery machinery a network sink shares (webhook, MQTT), whatever carries records.

While the receiver answers, records wait in a small memory queue (`streams.webhook_queue_records`:
what a `kill -9` can lose while the receiver is up, with the batch being sent). The first failed send
moves the queue to a spool (`RecordSpool`: a JSONL file with a read offset, or in cluster mode rows in
PostgreSQL); from then on every record is written to the spool as it comes, whatever the backoff, and
delivered from there, in order, once the receiver is back. A spool over `spool_max_bytes` loses records
(`spool_full`); a spool that refuses writes (a full disk, the database unreachable) keeps them in
memory up to the same bound, then loses them (`disk_full`), shown in `last_error`, logged, and healed
by the next write that succeeds. A receiver that refuses records (`rejected`) loses them, counted. In
cluster mode a spool that fences this node out (another node claimed the stream) ends delivery here:
what is queued is dropped (`lease_lost`) and the new owner carries on from the spool and checkpoint.

Two tasks on the loop, both supervised (a crash is logged and the task restarted): delivery, and the
spool writer; the spool's I/O runs off the loop (worker threads, or the spool database's thread).
Subclasses say how a batch is sent (`_send` → a `Delivery`) and open and close their transport.
"""

from __future__ import annotations

import asyncio
import logging

from streamd.entities import Delivery, SinkCount, SinkDrop, SinkStatus
from streamd.errors import UnavailableError
from streamd.health import supervise
from streamd.sinks.spool import RecordSpool, SpoolWriteError
from streamd.sinks.stats import SinkStats
from streamd.store.spools import SpoolFencedError

logger = logging.getLogger(__name__)

BACKOFF_INITIAL_S = 0.2
BACKOFF_MAX_S = 10.0
DISK_RETRY_S = 1.0


class SpoolingSink:
    """A network sink's delivery: memory queue, disk spool, backoff and drops; subclasses say how to send."""

    kind = "spooling"
    events_only = False  # an MQTT sink may publish events only (streams/checkpoints.py)

    def __init__(self, *, batch_size: int, queue_max: int, spool: RecordSpool, display_url: str) -> None:
        self.display_url = display_url
        self.stats = SinkStats()
        self._batch_size = batch_size
        self._queue_max = queue_max
        self._memory: list[bytes] = []  # older than anything spilled or spooled
        self._spill: list[bytes] = []  # bound for the spool, in emission order
        self._spool = spool
        self._spool_lock = asyncio.Lock()  # one writer of the spool at a time keeps the order
        self._disk_failing = False
        self._fenced = False  # cluster mode: another node took the stream; nothing more is sent from here
        self._wake = asyncio.Event()  # delivery: something to send
        self._spill_wake = asyncio.Event()  # writer: something to spool
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []

    async def _open_transport(self) -> None:
        """Set up what `_send` uses (no I/O that can fail for long: a receiver may be down)."""

    async def _close_transport(self) -> None:
        """Release what `_open_transport` set up."""

    async def _send(self, batch: list[bytes]) -> Delivery:
        raise NotImplementedError

    async def start(self) -> None:
        try:
            await self._spool.open()
        except SpoolWriteError as exc:
            raise UnavailableError(
                f"{self.kind} sink {self.display_url}: its spool cannot be opened now ({exc}); retry"
            ) from exc
        await self._open_transport()
        name = f"{self.kind}-sink-{self.display_url}"
        self._tasks = [
            supervise(self._deliver_forever, f"{name}-deliver", self._crashed),
            supervise(self._write_spill_forever, f"{name}-spool", self._crashed),
        ]
        if self._spool.pending:
            self._wake.set()

    @property
    def spool_bytes(self) -> int:
        return self._spool.pending_bytes

    @property
    def idle(self) -> bool:
        """Nothing left to deliver: no record in memory, on its way to the spool, or spooled (a fenced
        sink delivers nothing more, so it is idle too)."""
        return self._fenced or not (self._memory or self._spill or self._spool.pending)

    def status(self) -> SinkStatus:
        return self.stats.snapshot(self.kind, self.spool_bytes)

    def emit(self, record: bytes) -> None:
        """Queue a record in memory, or behind what is already on its way to the spool; never blocks."""
        self.stats.count(SinkCount.EMITTED)
        if self._fenced:
            self._lose(1)
            return
        # Once anything is spilled or spooled, newer records queue behind it on disk: order is kept.
        if self._spool.pending or self._spill or len(self._memory) >= self._queue_max:
            if self._disk_failing and len(self._spill) >= self._queue_max:
                self.stats.drop(SinkDrop.DISK_FULL)  # the spool cannot take them and memory is bounded
                self.stats.settle(1)
                return
            self._spill.append(record)
            self._spill_wake.set()
        else:
            self._memory.append(record)
        self._wake.set()

    def _crashed(self, exc: BaseException) -> None:
        self.stats.error.set(f"delivery crashed ({type(exc).__name__}: {exc}); restarted")

    def _stopped(self) -> bool:
        """Fenced (a call, not the attribute: it changes across awaits, which type narrowing ignores)."""
        return self._fenced

    def _lose(self, count: int) -> None:
        """Drop `count` records this node may no longer spool or send (another node owns the stream)."""
        self.stats.drop(SinkDrop.LEASE_LOST, count)
        self.stats.settle(count)

    def _fence(self, exc: SpoolFencedError) -> None:
        """Stop for good: the stream's new owner delivers the spool and replays from the checkpoint."""
        if not self._fenced:
            self._fenced = True
            self.stats.error.set(f"stopped delivering: {exc}")
            logger.warning("%s sink %s: stops delivering: %s", self.kind, self.display_url, exc)
        lost = len(self._memory) + len(self._spill)
        if lost:
            self._lose(lost)
            self._memory.clear()
            self._spill.clear()
        self._wake.set()

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
                accepted = await self._spool.append(records)
            except SpoolFencedError as exc:
                self._fence(exc)
                return True  # nothing to retry: the records are counted as lost to this node
            except SpoolWriteError as exc:
                self._disk_failing = True
                if self.stats.error.set(f"cannot write the spool: {exc}"):
                    logger.warning(
                        "%s sink %s: cannot write its spool (%s); records wait in memory",
                        self.kind,
                        self.display_url,
                        exc,
                    )
                return False
            del self._memory[:taken_memory]
            del self._spill[:taken_spill]
        if self._disk_failing:
            self._disk_failing = False
            logger.info("%s sink %s: its spool takes records again", self.kind, self.display_url)
        self.stats.count(SinkCount.SPOOLED, accepted)
        if accepted < len(records):
            self.stats.drop(SinkDrop.SPOOL_FULL, len(records) - accepted)
        self.stats.settle(len(records))
        self._wake.set()
        return True

    async def _write_spill_forever(self) -> None:
        """Spilled records reach the disk as they come, not when delivery next looks (it may be in a
        backoff sleep or a POST): a `kill -9` then loses none of them."""
        while True:
            await self._spill_wake.wait()
            self._spill_wake.clear()
            # Waiting for disk space, which no event announces: retry on a timer.
            while self._spill and not await self._spool_records(with_memory=False):  # noqa: ASYNC110
                await asyncio.sleep(DISK_RETRY_S)

    # -- delivery ---------------------------------------------------------------------------------------
    async def _deliver_forever(self) -> None:
        try:
            await self._deliver()
        except SpoolFencedError as exc:
            self._fence(exc)

    async def _deliver(self) -> None:
        failures = 0
        while not self._fenced:
            try:
                batch, from_spool = await self._next_batch()
            except SpoolWriteError as exc:
                self._spool_unreadable(exc)
                if self._closing:
                    return  # what is left stays in the spool for the next start
                await asyncio.sleep(DISK_RETRY_S)
                continue
            if batch is None:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            outcome = await self._send(batch)
            if self._stopped():
                return  # fenced meanwhile: what this batch held is already counted as lost here
            if outcome is Delivery.FAILED:
                failures += 1
                self.stats.count(SinkCount.RETRIED)
                if not from_spool:
                    await self._spool_records(with_memory=True)  # durable from the first failure on
                if self._closing:
                    return  # what is left stays in the spool for the next start
                await asyncio.sleep(min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2 ** min(failures - 1, 10)))
                continue
            failures = 0
            if outcome is Delivery.REJECTED:
                self.stats.drop(SinkDrop.REJECTED, len(batch))
            else:
                self.stats.count(SinkCount.DELIVERED, len(batch))
            if from_spool:
                await self._consume(len(batch))
            else:
                del self._memory[: len(batch)]
                self.stats.settle(len(batch))

    async def _consume(self, count: int) -> None:
        """Forget a delivered batch; retried until the spool takes it, since giving up would send the
        batch again. Cut short only by a close: then the next start sends it again (duplicates)."""
        while True:
            try:
                await self._spool.consume(count)
                return
            except SpoolWriteError as exc:
                self._spool_unreadable(exc)
                if self._closing:
                    logger.warning(
                        "%s sink %s: %d delivered record(s) stay in its spool and will be sent again",
                        self.kind,
                        self.display_url,
                        count,
                    )
                    return
                await asyncio.sleep(DISK_RETRY_S)

    def _spool_unreadable(self, exc: SpoolWriteError) -> None:
        if self.stats.error.set(f"cannot read its spool: {exc}"):
            logger.warning(
                "%s sink %s: cannot read its spool (%s); retrying", self.kind, self.display_url, exc
            )

    async def _next_batch(self) -> tuple[list[bytes] | None, bool]:
        if self._memory:
            return self._memory[: self._batch_size], False
        if self._spool.pending:
            return await self._spool.peek(self._batch_size), True
        return None, False

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
            self.stats.drop(SinkDrop.DISK_FULL, lost)
            self.stats.settle(lost)
            logger.error(
                "%s sink %s: %d record(s) lost at close: the spool cannot be written",
                self.kind,
                self.display_url,
                lost,
            )
            self._memory.clear()
            self._spill.clear()
        await self._close_transport()
        try:
            await self._spool.close()
        except SpoolWriteError as exc:
            logger.error("%s sink %s: closing its spool: %s", self.kind, self.display_url, exc)
