"""LastError: a stream's or a sink's latest failure, when it happened and whether it still holds; and
`supervise`, which keeps a background task from dying silently.

A status page must not show a healed stream as broken, and an operator still wants to see what went
wrong an hour ago: the message is kept, dated, and marked inactive once work succeeds again. Loop only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from streamd.entities import ErrorStatus
from streamd.store.db import utc_now_iso

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class LastError:
    message: str | None = None
    at: str | None = None  # ISO 8601 UTC, as the API writes dates
    active: bool = False

    def set(self, message: str) -> bool:
        """Record the failure; True when it starts a failing spell (log it then, not at every retry)."""
        started = not self.active
        self.message, self.at, self.active = message, utc_now_iso(), True
        return started

    def recovered(self) -> None:
        """Work succeeded after the error: keep it for the record, but it no longer describes the present."""
        self.active = False

    def snapshot(self) -> ErrorStatus:
        return ErrorStatus(self.message, self.at, self.active)


def supervise(
    run: Callable[[], Awaitable[None]],
    name: str,
    on_crash: Callable[[BaseException], None],
    restart_s: float = 1.0,
) -> asyncio.Task[None]:
    """Run `run()` in a task that never dies silently: a crash is logged at once with its traceback,
    reported through `on_crash` (status), and the work restarted after `restart_s`."""

    async def supervised() -> None:
        while True:
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # supervision boundary: log, show, restart
                logger.exception("%s crashed; restarting in %.1f s", name, restart_s)
                on_crash(exc)
                await asyncio.sleep(restart_s)

    return asyncio.create_task(supervised(), name=name)
