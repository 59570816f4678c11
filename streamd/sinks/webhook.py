"""Webhook sink: POSTs result records (one object, or arrays of `batch_size`) to a URL, in order.

Delivery, memory queue, spool and their bounds are `SpoolingSink`'s. A connection error, a
timeout, a 5xx, 408 or 429 is a failure (retried from the spool); any other 4xx, or a redirect (never
followed: a 307 would re-POST the records elsewhere), means the receiver refuses the records:
dropped, counted as `rejected`. Connections go only to addresses the egress rules allow.
"""

from __future__ import annotations

import logging
import time

import aiohttp

from streamd.egress import EgressPolicy, EgressResolver
from streamd.entities import Delivery
from streamd.sinks.spool import RecordSpool
from streamd.sinks.spooling import SpoolingSink
from streamd.video.source import redact

logger = logging.getLogger(__name__)

RETRYABLE = frozenset({408, 429})


class WebhookSink(SpoolingSink):
    """Records POSTed to an HTTP receiver, alone or in arrays; 5xx, 408, 429 and failures are retried."""

    kind = "webhook"

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str],
        timeout_s: float,
        batch_size: int,
        queue_max: int,
        spool: RecordSpool,
        display_url: str,
        egress: EgressPolicy | None = None,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            queue_max=queue_max,
            spool=spool,
            display_url=display_url,
        )
        self.url = url
        self._headers = {"Content-Type": "application/json", **headers}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._egress = egress

    async def _open_transport(self) -> None:
        # Connections go only to addresses the egress rules allow (names resolved, then filtered).
        resolver = EgressResolver(self._egress) if self._egress is not None else None
        self._session = aiohttp.ClientSession(
            timeout=self._timeout, connector=aiohttp.TCPConnector(resolver=resolver)
        )

    async def _close_transport(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _send(self, batch: list[bytes]) -> Delivery:
        assert self._session is not None
        if self._egress is not None and not self._egress.allows_url(self.url):
            # aiohttp connects to an IP literal without asking the resolver: checked here. The records
            # stay queued (then spooled) until the rules allow the address.
            self.stats.error.set(f"{self.display_url} is not allowed by the egress rules")
            return Delivery.FAILED
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
            return Delivery.FAILED

    def _outcome(self, status: int, count: int) -> Delivery:
        if status < 300:
            return Delivery.DELIVERED
        message = f"HTTP {status} from {self.display_url}"
        if status >= 500 or status in RETRYABLE:
            self.stats.error.set(message)
            return Delivery.FAILED
        if 300 <= status < 400:
            message += " (a redirect: not followed; point the sink at the final URL)"
        self.stats.error.set(message + " (records rejected)")
        logger.warning("webhook %s rejected %d record(s): HTTP %d", self.display_url, count, status)
        return Delivery.REJECTED
