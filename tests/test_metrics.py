"""Prometheus metrics after a known workload: exact counts for a 30-frame file capped at 5 fps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from streamd.app import build_app
from streamd.settings import Settings
from tests.conftest import make_settings
from tests.factories.models import ModelFiles
from tests.test_streams import create_stream, setup_chain, wait_state


async def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_metrics_count_a_known_workload_exactly(
    app_client: TestClient, media_settings: Settings, tf1_model: ModelFiles
) -> None:
    await setup_chain(app_client, tf1_model)
    stream = await create_stream(app_client, media_settings, fps=5)
    await wait_state(app_client, stream["id"], "finished")
    sid = str(stream["id"])
    m = await scrape(app_client)

    assert value(m, "streamd_stream_frames_decoded_total", stream=sid) == 30
    assert value(m, "streamd_stream_frames_processed_total", stream=sid) == 5
    assert value(m, "streamd_stream_frames_dropped_total", stream=sid, reason="fps_cap") == 25
    assert value(m, "streamd_stream_latency_seconds_count", stream=sid) == 5
    assert value(m, "streamd_stream_state", stream=sid, state="finished") == 1
    assert value(m, "streamd_stream_state", stream=sid, state="running") == 0
    assert value(m, "streamd_stream_fps", stream=sid, direction="out") == 0.5  # 5 frames in the 10 s window
    assert value(m, "streamd_stream_fps", stream=sid, direction="in") == 3.0  # all 30 decoded, capped or not
    assert value(m, "streamd_sink_records_total", stream=sid, sink="0", outcome="delivered") == 5
    assert (
        1 <= value(m, "streamd_sink_delivery_seconds_count", stream=sid, sink="0") <= 5
    )  # whole-line batches

    network = "1"
    assert value(m, "streamd_inference_items_total", network=network) == 5
    batches = value(m, "streamd_inference_batches_total", network=network)
    assert value(m, "streamd_inference_batch_size_count", network=network) == batches
    assert value(m, "streamd_inference_batch_size_sum", network=network) == 5
    assert value(m, "streamd_inference_queue_wait_seconds_count", network=network) == 5
    assert value(m, "streamd_inference_run_duration_seconds_count", network=network) == batches
    assert value(m, "streamd_inference_errors_total", network=network) == 0
    assert value(m, "streamd_inference_item_errors_total", network=network) == 0
    assert value(m, "streamd_network_deployments_total", outcome="success") == 1
    # A stream hands the chain every buffered frame at once: one call may cover several frames.
    assert 1 <= value(m, "streamd_chain_call_duration_seconds_count", service="colours") <= 5
    assert value(m, "streamd_chain_detections_per_image_count", service="colours") == 5
    assert value(m, "streamd_chain_detections_per_image_sum", service="colours") == 5  # one class per frame

    assert value(m, "streamd_http_requests_total", route="/v0.7/streams", method="POST", status="201") == 1
    assert value(m, "streamd_http_requests_total", route="/v0.7/networks", method="POST", status="201") == 1
    assert ("process_resident_memory_bytes", ()) in m


@pytest.fixture
def keyed(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data", auth={"api_keys": ["k"]})


async def test_metrics_need_no_key(aiohttp_client: Any, keyed: Settings) -> None:
    client = await aiohttp_client(build_app(keyed))
    assert (await client.get("/metrics")).status == 200
    assert (await client.get("/v0.7/streams")).status == 401
