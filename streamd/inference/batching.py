"""Dynamic batching: single items from any caller (streams, chain branches, crops, API requests) are
grouped into batches for one network.

`BatchPolicy` is the decision, a plain object with no clock and no I/O: given what is queued, the
earliest deadline among the waiting items and how many batches are running, it says dispatch N now,
wait until T, or idle. `DynamicBatcher` is the asyncio plumbing on the event loop: one future per item,
a timer armed for the earliest deadline (re-armed when an item with a shorter wait arrives), each batch
handed to a runner (the network's executor), results or the batch's error fanned back out, cancelled
items skipped.

Fairness: every item carries the lane of its caller (`LANE`, a context variable the stream pipelines
set: one lane per stream, live cameras before files; API requests share a lane with the cameras'
priority). A batch is filled round-robin across lanes in priority order, each lane first in, first out,
so a file decoding at full speed or one busy camera cannot fill whole batches while live cameras wait.
A lane may also carry a longer wait (`Lane.max_wait_s`: frames of cameras and of files played in
realtime, which come at their own pace whatever the daemon does).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from streamd.errors import UnavailableError

logger = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

LIVE, FILE = 0, 1  # lane priorities: a lower one is served first in each round


@dataclass(frozen=True, slots=True)
class Lane:
    priority: int
    key: str
    # How long an item of this lane may wait for others, when longer than the network's max_wait_s:
    # frames that come at a camera's pace whatever the daemon does (streams.live_batch_wait_s), for
    # which waiting costs latency only and fills batches (DeepStream's muxer waits too).
    max_wait_s: float = 0.0


API_LANE = Lane(LIVE, "api")
LANE: contextvars.ContextVar[Lane] = contextvars.ContextVar("streamd_batch_lane", default=API_LANE)


def pick_fair(lanes: Sequence[Lane], count: int) -> list[int]:
    """Indexes (into `lanes`, one per queued item, oldest first) of the `count` items a batch takes:
    round-robin across lanes, higher priority first in each round, each lane's items in order."""
    by_lane: dict[Lane, deque[int]] = {}
    for index, lane in enumerate(lanes):
        by_lane.setdefault(lane, deque()).append(index)
    order = sorted(by_lane, key=lambda lane: (lane.priority, by_lane[lane][0]))
    picked: list[int] = []
    while len(picked) < count and order:
        for lane in list(order):
            picked.append(by_lane[lane].popleft())
            if not by_lane[lane]:
                order.remove(lane)
            if len(picked) == count:
                break
    return picked


@dataclass(frozen=True, slots=True)
class Dispatch:
    count: int


@dataclass(frozen=True, slots=True)
class WaitUntil:
    deadline_s: float


@dataclass(frozen=True, slots=True)
class Idle:
    pass


Action = Dispatch | WaitUntil | Idle


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """When to cut a batch.

    A batch is cut when `max_batch_size` items wait, or at the first waiting item's deadline (its
    arrival plus `max_wait_s`, or its lane's longer wait: `deadline`), or as soon as as many items wait
    as the previous batch held (`expected`): callers that come back together (file streams, a chain's
    crops, a closed loop of clients) then pay no timer at all. Not when a live camera's frame waits:
    cameras out of phase arrive one by one, and that shortcut would shrink every batch to the smallest
    one seen, down to one frame (measured: batch-1 inference costs about twice batch 8's per frame).
    At most `max_inflight` batches run at once: while the executor is busy, items keep queueing, so
    batches grow with load instead of piling up in the executor's queue.
    """

    max_batch_size: int
    max_wait_s: float
    max_inflight: int = 1

    def deadline(self, arrival_s: float, lane: Lane) -> float:
        """When an item that arrived at `arrival_s` in `lane` has waited long enough."""
        return arrival_s + max(self.max_wait_s, lane.max_wait_s)

    def next_action(
        self,
        queued: int,
        deadline_s: float | None,
        inflight: int,
        now_s: float,
        expected: int | None = None,
    ) -> Action:
        """`deadline_s`: the earliest deadline of the waiting items; `expected`: the previous batch's
        size, None when the shortcut does not apply."""
        if queued == 0 or deadline_s is None:
            return Idle()
        if inflight >= self.max_inflight:
            return Idle()  # re-asked when a running batch finishes
        if queued >= self.max_batch_size:
            return Dispatch(self.max_batch_size)
        if expected is not None and queued >= expected:
            return Dispatch(queued)
        if now_s >= deadline_s:
            return Dispatch(queued)
        return WaitUntil(deadline_s)


@dataclass(slots=True)
class BatcherStats:
    items: int = 0
    batches: int = 0
    failed_batches: int = 0
    cancelled_items: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)

    @property
    def mean_batch_size(self) -> float:
        return self.items / self.batches if self.batches else 0.0


@dataclass(slots=True)
class _Waiting(Generic[ItemT, ResultT]):
    item: ItemT
    future: asyncio.Future[ResultT]
    arrival_s: float
    lane: Lane = API_LANE


BatchRunner = Callable[[Sequence[ItemT]], Awaitable[Sequence[ResultT | BaseException]]]


class DynamicBatcher(Generic[ItemT, ResultT]):
    """Owns one network's queue; lives on the event loop and never blocks it."""

    def __init__(
        self,
        name: str,
        runner: BatchRunner[ItemT, ResultT],
        policy: BatchPolicy,
        on_batch: Callable[[int, list[float], bool, int], None] | None = None,
    ) -> None:
        """`on_batch(size, queue waits in seconds, batch failed, items failed)` is called after every
        batch (metrics)."""
        self.name = name
        self._on_batch = on_batch
        self.policy = policy
        self.stats = BatcherStats()
        self._runner = runner
        self._queue: deque[_Waiting[ItemT, ResultT]] = deque()
        self._inflight: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # the deadline the timer is armed for (monotonic)
        self._closed = False
        self._last_batch_size: int | None = None
        self._step_scheduled = False

    async def submit(self, item: ItemT) -> ResultT:
        if self._closed:
            raise UnavailableError(f"{self.name} is unloading; retry once it is deployed again")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ResultT] = loop.create_future()
        waiting = _Waiting(item, future, time.monotonic(), LANE.get())
        self._queue.append(waiting)
        if not self._step_scheduled:
            # Decide at the end of this loop iteration, once every item submitted in it is queued: the
            # crops of one frame, gathered together, then leave as one batch.
            self._step_scheduled = True
            loop.call_soon(self._scheduled_step)
        return await waiting.future

    def _scheduled_step(self) -> None:
        self._step_scheduled = False
        if not self._closed:
            self._step()

    def _step(self) -> None:
        self._drop_cancelled()
        # From the policy in force now: a retuned max_wait_s applies to items already queued.
        deadline = min((self.policy.deadline(w.arrival_s, w.lane) for w in self._queue), default=None)
        expected = None if any(w.lane.max_wait_s for w in self._queue) else self._last_batch_size
        action = self.policy.next_action(
            len(self._queue), deadline, len(self._inflight), time.monotonic(), expected
        )
        if isinstance(action, Dispatch):
            self._cancel_timer()
            batch = self._take(min(action.count, len(self._queue)))
            self._last_batch_size = len(batch)
            task = asyncio.get_running_loop().create_task(self._run(batch), name=f"{self.name}-batch")
            self._inflight.add(task)
            task.add_done_callback(self._batch_done)
            if self._queue:
                self._step()
        elif isinstance(action, WaitUntil) and (self._timer is None or action.deadline_s < self._timer_at):
            # An item with a shorter wait (a request) behind a live frame's longer one re-arms it sooner.
            self._cancel_timer()
            self._timer_at = action.deadline_s
            self._timer = asyncio.get_running_loop().call_at(
                self._loop_time(action.deadline_s), self._on_timer
            )

    def _take(self, count: int) -> list[_Waiting[ItemT, ResultT]]:
        if count == len(self._queue):
            batch = list(self._queue)
            self._queue.clear()
            return batch
        picked = pick_fair([waiting.lane for waiting in self._queue], count)
        chosen = set(picked)
        batch = [self._queue[index] for index in sorted(picked)]
        self._queue = deque(waiting for index, waiting in enumerate(self._queue) if index not in chosen)
        return batch

    def _on_timer(self) -> None:
        self._timer = None
        self._step()

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if not self._closed:
            self._step()

    async def _run(self, batch: list[_Waiting[ItemT, ResultT]]) -> None:
        self.stats.batches += 1
        self.stats.items += len(batch)
        self.stats.batch_sizes[len(batch)] = self.stats.batch_sizes.get(len(batch), 0) + 1
        dispatched = time.monotonic()
        failed = False
        try:
            results = await self._runner([waiting.item for waiting in batch])
        except Exception as exc:  # supervision boundary: the error belongs to this batch's callers only
            self.stats.failed_batches += 1
            failed = True
            logger.warning("%s: batch of %d failed: %s", self.name, len(batch), exc)
            results = [exc] * len(batch)
        if self._on_batch is not None:
            waits = [dispatched - waiting.arrival_s for waiting in batch]
            failed_items = sum(isinstance(result, BaseException) for result in results)
            self._on_batch(len(batch), waits, failed, failed_items)
        for waiting, result in zip(batch, results, strict=True):
            if waiting.future.done():
                continue
            if isinstance(result, BaseException):
                waiting.future.set_exception(result)
            else:
                waiting.future.set_result(result)

    def _drop_cancelled(self) -> None:
        if any(waiting.future.cancelled() for waiting in self._queue):
            kept = [waiting for waiting in self._queue if not waiting.future.cancelled()]
            self.stats.cancelled_items += len(self._queue) - len(kept)
            self._queue = deque(kept)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @staticmethod
    def _loop_time(monotonic_s: float) -> float:
        # loop.time() is monotonic too, but not necessarily the same origin.
        return asyncio.get_running_loop().time() + (monotonic_s - time.monotonic())

    async def close(self) -> None:
        """Stop accepting items, fail those still queued, let running batches finish."""
        self._closed = True
        self._cancel_timer()
        while self._queue:
            waiting = self._queue.popleft()
            if not waiting.future.done():
                waiting.future.set_exception(
                    UnavailableError(f"{self.name} was unloaded before this item ran")
                )
        await asyncio.gather(*self._inflight, return_exceptions=True)
