"""Inference requests as Deepomatic tasks: the request returns a task id at once, the work runs on the
loop (awaiting the batcher), and the task ends `success` with the data or `error` with the reason.

Inputs are not persisted, so a task still pending when the daemon stops cannot resume: it is ended in
`error` at shutdown, or at the next start after a crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from streamd.errors import StreamdError
from streamd.store.tasks import TaskRepository

logger = logging.getLogger(__name__)

INFERENCE_TASK = "inference"
INTERRUPTED = "the daemon stopped before this inference finished; submit it again"


class InferenceJobs:
    def __init__(self, tasks: TaskRepository) -> None:
        self._tasks = tasks
        self._running: dict[int, asyncio.Task[None]] = {}

    async def start(self, work: Callable[[], Awaitable[Any]]) -> int:
        task_id = await self._tasks.create(INFERENCE_TASK)
        job = asyncio.create_task(self._run(task_id, work), name=f"inference-task-{task_id}")
        self._running[task_id] = job
        job.add_done_callback(lambda _job: self._running.pop(task_id, None))
        return task_id

    async def _run(self, task_id: int, work: Callable[[], Awaitable[Any]]) -> None:
        try:
            data = await work()
        except asyncio.CancelledError:
            await asyncio.shield(self._tasks.finish(task_id, "error", error=INTERRUPTED))
            raise
        except StreamdError as exc:
            await self._tasks.finish(task_id, "error", error=exc.message)
        except Exception as exc:  # supervision boundary: the task says what broke, the daemon goes on
            logger.exception("inference task %d failed", task_id)
            await self._tasks.finish(task_id, "error", error=f"inference failed: {type(exc).__name__}: {exc}")
        else:
            await self._tasks.finish(task_id, "success", data=data)

    async def prune_forever(self, retention_s: float) -> None:
        """Delete finished tasks older than `retention_s`, checking a few times per retention period
        (at most every 10 minutes), so the tasks table does not grow with every inference ever made."""
        interval_s = min(max(retention_s / 4, 0.05), 600.0)
        while True:
            cutoff = datetime.now(UTC) - timedelta(seconds=retention_s)
            pruned = await self._tasks.prune(cutoff.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
            if pruned:
                logger.info("pruned %d finished task(s) older than %.0f s", pruned, retention_s)
            await asyncio.sleep(interval_s)

    async def recover(self) -> int:
        """End the inference tasks a crash left pending."""
        return await self._tasks.fail_pending(INFERENCE_TASK, INTERRUPTED)

    async def close(self) -> None:
        for job in list(self._running.values()):
            job.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
