"""The MQTT sink against a real broker (Debian's mosquitto) that the tests start, kill and restart: one
JSON record per message, in order, nothing lost while the broker is down (the disk spool)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiomqtt
import orjson
import pytest
from aiohttp.test_utils import TestClient

from streamd.settings import Settings
from tests.conftest import wait_until
from tests.factories.models import ModelFiles
from tests.factories.mosquitto import Mosquitto
from tests.test_streams import create_stream, read_jsonl, setup_chain, wait_state


class Subscriber:
    """Subscribes to streamd/# at QoS 1 and keeps reconnecting while the broker is away."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.subscribed.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port) as client:
                    await client.subscribe("streamd/#", qos=1)
                    self.subscribed.set()
                    async for message in client.messages:
                        self.messages.append((str(message.topic), orjson.loads(message.payload)))
            except aiomqtt.MqttError:
                self.subscribed.clear()
                await asyncio.sleep(0.05)

    @property
    def frames(self) -> list[int]:
        return [record["frame_index"] for _topic, record in self.messages]


async def test_every_record_is_published_in_order_on_the_streams_topic(
    app_client: TestClient, media_settings: Settings, tf1_model: ModelFiles, broker: Mosquitto
) -> None:
    await setup_chain(app_client, tf1_model)
    sink = {"type": "mqtt", "url": broker.url, "username": "cam", "password": "hunter2"}
    async with Subscriber(broker.port) as subscriber:
        stream = await create_stream(app_client, media_settings, name="door/1", sinks=[sink])
        await wait_state(app_client, stream["id"], "finished")
        await wait_until(lambda: _true(len(subscriber.messages) == 30), 10)

        async def counted() -> dict[str, Any] | None:
            current = await (await app_client.get(f"/v0.7/streams/{stream['id']}")).json()
            return current if current["sinks"][0]["delivered"] == 30 else None

        status = await wait_until(counted, 10)
    assert subscriber.frames == list(range(30))
    assert {topic for topic, _ in subscriber.messages} == {"streamd/door_1/results"}  # '/' would add a level
    assert status["sinks"][0]["delivered"] == 30 and status["sinks"][0]["dropped"] == {}
    assert status["sinks_config"][0]["password"] == "***"


async def _true(value: bool) -> bool:
    return value


@pytest.mark.parametrize(
    ("sink", "fragment"),
    [
        ({"type": "mqtt", "url": "mqtt://127.0.0.1:1883", "topic": "a/{camera}"}, "can be filled in"),
        ({"type": "mqtt", "url": "mqtt://127.0.0.1:1883", "topic": "a/#"}, "no wildcards"),
        ({"type": "mqtt", "url": "tcp://127.0.0.1:1883"}, "url"),
        ({"type": "mqtt", "url": "mqtt://169.254.169.254:1883"}, "not allowed by the egress rules"),
    ],
)
async def test_bad_mqtt_sinks_get_a_clear_400(
    app_client: TestClient,
    media_settings: Settings,
    tf1_model: ModelFiles,
    sink: dict[str, Any],
    fragment: str,
) -> None:
    await setup_chain(app_client, tf1_model)
    body = {"name": "cam", "source": {"uri": "colours.mp4"}, "chain": "whole", "sinks": [sink]}
    response = await app_client.post("/v0.7/streams", json=body)
    error = await response.json()
    assert response.status == 400 and fragment in error["error"], error


async def test_a_broker_killed_and_restarted_loses_nothing_and_keeps_the_order(
    app_client: TestClient, media_settings: Settings, tf1_model: ModelFiles, broker: Mosquitto
) -> None:
    await setup_chain(app_client, tf1_model)
    source = {"uri": "long.mp4", "options": {"loop": True, "realtime": True}}
    sinks = [{"type": "jsonl", "path": "truth.jsonl"}, {"type": "mqtt", "url": broker.url}]
    async with Subscriber(broker.port) as subscriber:
        stream = await create_stream(app_client, media_settings, source=source, fps=10, sinks=sinks)
        sid = stream["id"]

        async def status() -> dict[str, Any]:
            return await (await app_client.get(f"/v0.7/streams/{sid}")).json()

        await wait_until(lambda: _true(len(subscriber.messages) >= 10), 30)
        await asyncio.to_thread(broker.kill)

        async def spooling() -> bool:
            mqtt = (await status())["sinks"][1]
            return mqtt["spooled"] >= 10 and mqtt["error_active"]

        await wait_until(spooling, 30)
        assert (await status())["degraded"] is True
        await asyncio.to_thread(broker.start)
        await asyncio.wait_for(subscriber.subscribed.wait(), 10)
        await wait_until(lambda: _delivered_again(status), 60)
        assert (await app_client.post(f"/v0.7/streams/{sid}/pause")).status == 200
        settled = await wait_until(lambda: _settled(status), 60)
        await wait_until(lambda: _true(len(subscriber.messages) == settled["sinks"][1]["delivered"]), 10)
    truth = [
        r["frame_index"]
        for r in await read_jsonl(media_settings.storage.data_dir / "results" / "truth.jsonl")
    ]
    assert subscriber.frames == truth  # every record, in order, no copies
    assert settled["sinks"][1]["dropped"] == {} and settled["sinks"][1]["retried"] >= 1


async def _delivered_again(status: Any) -> bool:
    mqtt = (await status())["sinks"][1]
    return not mqtt["error_active"] and mqtt["delivered"] > mqtt["spooled"]


_last: list[int] = []


async def _settled(status: Any) -> dict[str, Any] | None:
    """Both sinks have every record emitted, and nothing new came for a poll (pausing lets the frames in
    the chain through)."""
    current = await status()
    jsonl, mqtt = current["sinks"]
    quiet = _last[-1:] == [jsonl["emitted"]]
    _last.append(jsonl["emitted"])
    await asyncio.sleep(0.3)
    done = jsonl["delivered"] == jsonl["emitted"] == mqtt["delivered"] == mqtt["emitted"]
    return current if done and quiet else None
