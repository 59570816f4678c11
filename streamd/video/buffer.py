"""FrameBuffer: the hand-off from a decoder thread to the event loop, with a named drop policy.

`drop_oldest` (live sources) never blocks the decoder: when the buffer is full the oldest frame goes,
counted as `buffer_full`. `wait` (files) blocks the decoder while the buffer is full, so nothing is
lost. Memory is bounded by `capacity` either way. `put` runs on the decoder thread, `get` on the loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from enum import StrEnum

from streamd.entities import DropReason, Frame


class DropPolicy(StrEnum):
    DROP_OLDEST = "drop_oldest"
    WAIT = "wait"


class FrameBuffer:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        capacity: int,
        policy: DropPolicy,
        on_drop: Callable[[DropReason], None],
    ) -> None:
        self._loop = loop
        self._capacity = capacity
        self._policy = policy
        self._on_drop = on_drop
        self._frames: deque[Frame] = deque()
        self._ready = asyncio.Event()
        self._slots = threading.Semaphore(capacity)
        self._closed = threading.Event()

    def put(self, frame: Frame) -> bool:
        """Decoder thread. False once the buffer is closed (the decoder should stop)."""
        if self._policy == DropPolicy.WAIT:
            while not self._slots.acquire(timeout=0.2):
                if self._closed.is_set():
                    return False
        if self._closed.is_set():
            return False
        try:
            self._loop.call_soon_threadsafe(self._deliver, frame)
        except RuntimeError:  # the loop is closed: shutting down
            return False
        return True

    def _deliver(self, frame: Frame) -> None:
        if self._closed.is_set():
            return
        self._frames.append(frame)
        if self._policy == DropPolicy.DROP_OLDEST and len(self._frames) > self._capacity:
            self._frames.popleft()
            self._on_drop(DropReason.BUFFER_FULL)
        self._ready.set()

    async def get(self) -> Frame | None:
        """Loop. The next frame, or None once closed."""
        while not self._frames:
            if self._closed.is_set():
                return None
            self._ready.clear()
            await self._ready.wait()
        frame = self._frames.popleft()
        if self._policy == DropPolicy.WAIT:
            self._slots.release()
        return frame

    async def get_many(self, limit: int) -> list[Frame]:
        """Loop. At least one frame (waiting for it), plus those already buffered, up to `limit`;
        [] once closed."""
        first = await self.get()
        if first is None:
            return []
        frames = [first]
        while self._frames and len(frames) < limit:
            frames.append(self._frames.popleft())
            if self._policy == DropPolicy.WAIT:
                self._slots.release()
        return frames

    def __len__(self) -> int:
        return len(self._frames)

    def close(self) -> None:
        self._closed.set()
        self._ready.set()
