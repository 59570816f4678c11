"""MQTT sink: publishes one JSON record per message to a broker (aiomqtt over paho-mqtt), in order.

Delivery, memory queue, spool and their bounds are `SpoolingSink`'s: while the broker is down
records go to the spool and are published in order once it is back. Messages are published one at a
time and, at QoS 1 or 2, each waits for the broker's acknowledgement before the next, so a failure
resends at most the one record in flight (at-least-once). A broken connection is dropped and made
again at the next attempt; the broker's address is checked against the egress rules each time.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import aiomqtt

from streamd.egress import EgressDeniedError, EgressPolicy
from streamd.entities import Delivery
from streamd.sinks.spool import RecordSpool
from streamd.sinks.spooling import SpoolingSink
from streamd.video.source import redact

logger = logging.getLogger(__name__)


class MqttSink(SpoolingSink):
    """Each record published as one MQTT message (aiomqtt), acknowledged before the next."""

    kind = "mqtt"

    def __init__(
        self,
        url: str,
        *,
        topic: str,
        qos: int,
        username: str | None,
        password: str | None,
        tls: bool,
        timeout_s: float,
        queue_max: int,
        spool: RecordSpool,
        egress: EgressPolicy | None = None,
        events_only: bool = False,
    ) -> None:
        self.events_only = events_only
        super().__init__(
            batch_size=1,
            queue_max=queue_max,
            spool=spool,
            display_url=f"{redact(url.rstrip('/'))}/{topic}",
        )
        parts = urlsplit(url)
        self.url = url
        self._tls = tls or parts.scheme == "mqtts"
        self._host = parts.hostname or ""
        self._port = parts.port or (8883 if self._tls else 1883)
        self._topic = topic
        self._qos = qos
        self._username, self._password = username, password
        self._timeout_s = timeout_s
        self._egress = egress
        self._client: aiomqtt.Client | None = None

    async def _connect(self) -> aiomqtt.Client:
        if self._egress is not None:
            await asyncio.to_thread(self._egress.check_url_blocking, self.url)
        client = aiomqtt.Client(
            self._host,
            self._port,
            username=self._username,
            password=self._password,
            tls_params=aiomqtt.TLSParameters() if self._tls else None,
            timeout=self._timeout_s,
        )
        await client.__aenter__()
        return client

    async def _send(self, batch: list[bytes]) -> Delivery:
        try:
            if self._client is None:
                self._client = await self._connect()
            for record in batch:
                await self._client.publish(
                    self._topic, payload=record, qos=self._qos, timeout=self._timeout_s
                )
        except (aiomqtt.MqttError, OSError, EgressDeniedError) as exc:
            # Refused, timed out or unreachable read alike outside: the log has which.
            logger.info("mqtt %s: %s: %s", self.display_url, type(exc).__name__, redact(str(exc)))
            if isinstance(exc, EgressDeniedError):
                self.stats.error.set(f"{self.display_url}: {exc.message}")
            else:
                self.stats.error.set(f"connection failed publishing to {self.display_url}")
            await self._close_transport()
            return Delivery.FAILED
        return Delivery.DELIVERED

    async def _close_transport(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.__aexit__(None, None, None)
            except (aiomqtt.MqttError, OSError) as exc:  # a broken connection fails to close, too
                logger.debug("mqtt %s: closing: %s", self.display_url, exc)
