"""LastError: a stream's or a sink's latest failure, when it happened and whether it still holds.

A status page must not show a healed stream as broken, and an operator still wants to see what went
wrong an hour ago: the message is kept, dated, and marked inactive once work succeeds again. Loop only.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamd.store.db import utc_now_iso


@dataclass(slots=True)
class LastError:
    message: str | None = None
    at: str | None = None  # ISO 8601 UTC, as the API writes dates
    active: bool = False

    def set(self, message: str) -> None:
        self.message, self.at, self.active = message, utc_now_iso(), True

    def recovered(self) -> None:
        """Work succeeded after the error: keep it for the record, but it no longer describes the present."""
        self.active = False

    def to_api(self) -> dict[str, object]:
        return {"last_error": self.message, "last_error_at": self.at, "error_active": self.active}
