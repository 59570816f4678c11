"""SinkStats: what every sink counts (records emitted, delivered, retried, spooled, dropped by reason,
settled for checkpoints) and its latest error, reported to the metrics as it happens."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from streamd.entities import SinkCount, SinkDrop, SinkStatus
from streamd.health import LastError


@dataclass(slots=True)
class SinkStats:
    """A sink's counters and latest error, read by its status and fed to the metrics as they move."""

    emitted: int = 0
    delivered: int = 0
    retried: int = 0
    spooled: int = 0
    settled: int = 0  # records no longer only in memory (written, spooled or dropped): checkpoints
    dropped: dict[str, int] = field(default_factory=dict)
    error: LastError = field(default_factory=LastError)
    observe: Callable[[str, int], None] | None = None  # metrics: (outcome label, count)
    observe_delivery: Callable[[float], None] | None = None  # metrics: seconds one write or POST took

    def count(self, counter: SinkCount, count: int = 1) -> None:
        """Count records that reached `counter` (a delivery also clears the last error)."""
        if counter is SinkCount.EMITTED:
            self.emitted += count
        elif counter is SinkCount.DELIVERED:
            self.delivered += count
            self.error.recovered()
        elif counter is SinkCount.RETRIED:
            self.retried += count
        else:
            self.spooled += count
        if self.observe is not None:
            self.observe(counter.value, count)

    def settle(self, count: int) -> None:
        """`count` more records, in emission order, are written, spooled or given up on: a crash from now
        on cannot lose them, so a stream's checkpoint may move past them."""
        self.settled += count

    def delivery(self, seconds: float) -> None:
        """Observe how long one write or POST took."""
        if self.observe_delivery is not None:
            self.observe_delivery(seconds)

    def drop(self, reason: SinkDrop, count: int = 1) -> None:
        """Count records lost for `reason` (the caller settles them too)."""
        self.dropped[reason.value] = self.dropped.get(reason.value, 0) + count
        if self.observe is not None:
            self.observe(f"dropped_{reason.value}", count)

    def snapshot(self, kind: str, spool_bytes: int | None = None) -> SinkStatus:
        """The frozen `SinkStatus` a stream's status shows."""
        return SinkStatus(
            kind,
            self.emitted,
            self.delivered,
            self.retried,
            self.spooled,
            dict(self.dropped),
            self.error.snapshot(),
            spool_bytes,
        )
