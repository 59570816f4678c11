"""A stream's durable position: the newest frame whose record every sink has written, spooled or given
up on. Sinks settle records in the order they were given them; a sink given only some records (an
events-only MQTT sink skips frames without events) has nothing pending for the frames it skipped.
Loop only; the manager's callback writes the position to the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from streamd.entities import Position, Sink

logger = logging.getLogger(__name__)

# Persists a stream's durable position (the manager writes it to the database).
Checkpoint = Callable[[Position], Awaitable[None]]


class Checkpoints:
    def __init__(
        self, stream_id: int, sinks: Sequence[Sink], save: Checkpoint | None, interval_s: float
    ) -> None:
        self._stream_id = stream_id
        self._sinks = sinks
        self._save = save
        self._interval_s = interval_s
        self._emitted = 0
        self._unsettled: deque[tuple[int, Position]] = deque()  # (emission number, frame) not yet durable
        # Per sink, the emission numbers of the records it was given and has not settled yet.
        self._given: list[deque[int]] = [deque() for _ in sinks]
        self._task: asyncio.Task[None] | None = None

    def emitted(self, position: Position, given: Sequence[bool]) -> None:
        """One more record, for the frame at `position`; `given[i]`: whether sink i got it."""
        self._emitted += 1
        if self._save is None:
            return
        self._unsettled.append((self._emitted, position))
        for queue, took in zip(self._given, given, strict=True):
            if took:
                queue.append(self._emitted)

    def durable_position(self) -> Position | None:
        """The newest frame every sink is done with, or None when nothing settled since the last call."""
        durable = self._emitted
        for sink, queue in zip(self._sinks, self._given, strict=True):
            # The sink has settled `settled` records in all; those still in `queue` are the rest.
            pending = sink.stats.emitted - sink.stats.settled
            while len(queue) > pending:
                queue.popleft()
            if queue:
                durable = min(durable, queue[0] - 1)
        position = None
        while self._unsettled and self._unsettled[0][0] <= durable:
            position = self._unsettled.popleft()[1]
        return position

    def start(self) -> None:
        if self._save is not None:
            self._task = asyncio.create_task(self._forever(), name=f"stream-{self._stream_id}-checkpoint")

    async def stop(self) -> None:
        """Stop saving every interval, then save once more (after the sinks' last write: a graceful stop
        replays nothing)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.save()

    async def save(self) -> None:
        position = self.durable_position()
        if position is None or self._save is None:
            return
        try:
            await self._save(position)
        except Exception as exc:  # supervision boundary: a restart then replays a little more, logged
            logger.warning("stream %d: cannot save its checkpoint: %s", self._stream_id, exc)

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.save()
