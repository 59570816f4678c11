"""What a person looks at: snapshots with the results drawn, and the HTML page in a real browser."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from streamd.settings import Settings
from tests.factories.models import ModelFiles, build_tf1_detector
from tests.factories.videos import NAMES
from tests.test_chains import deploy_service
from tests.test_streams import create_stream, read_jsonl, setup_chain, wait_state

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def frame_detector(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    return build_tf1_detector(tmp_path_factory.mktemp("models") / "frame-detector", height=96, width=160)


async def detect_and_classify(client: TestClient, detector: ModelFiles, classifier: ModelFiles) -> None:
    await setup_chain(client, classifier)  # the "colours" service and the "whole" chain
    detection = {
        "detection": {
            "thresholds": [0.5, 0.5],
            "nms_threshold": 0.45,
            "direct_output": {
                "boxes_tensor": "detection_boxes",
                "scores_tensor": "detection_scores",
                "classes_tensor": "detection_classes",
            },
        }
    }
    await deploy_service(
        client, detector, "things", ["person", "car"], detection, boxes=True, image={"target_size": "160x96"}
    )
    chain = {
        "calls": [
            {"service": "things"},
            {"id": "crop", "action": {"type": "crop"}},
            {"parent_id": "crop", "service": "colours"},
        ]
    }
    assert (await client.put("/v0.7/chains/people", json=chain)).status == 201


async def test_snapshot_draws_the_latest_results(
    app_client: TestClient, media_settings: Settings, tf1_model: ModelFiles, frame_detector: ModelFiles
) -> None:
    await detect_and_classify(app_client, frame_detector, tf1_model)
    stream = await create_stream(app_client, media_settings, chain="people", fps=5)
    await wait_state(app_client, stream["id"], "finished")
    response = await app_client.get(f"/v0.7/streams/{stream['id']}/snapshot.jpg")
    assert response.status == 200 and response.content_type == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(await response.read(), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (96, 160, 3)
    # The last processed frame is frame 24: blue (24 % 3 == 0). The detector's box 0 there scores 1.0:
    # x 16..80, y 9.6..48 in this 160x96 frame; its top edge is drawn, its inside is not.
    blue = np.array([255, 0, 0])
    assert np.abs(image[30, 48].astype(int) - blue).max() < 40
    edge = image[9:12, 30:70].astype(int)
    assert np.abs(edge - blue).max(axis=2).mean() > 60
    # The crops come from the decoded yuv420p frames converted whole: each box's colour is its frame's.
    records = await read_jsonl(media_settings.storage.data_dir / "results" / "cam.jsonl")
    assert [r["frame_index"] for r in records] == [0, 6, 12, 18, 24]
    for record in records:
        [prediction] = record["predictions"]
        assert prediction["classes"], record
        for found in prediction["classes"]:
            assert found["cat"] in ("person", "car") and "bbox" in found
            assert [c["cat"] for c in found["colours"]["classes"]] == [NAMES[record["frame_index"] % 3]]


async def test_snapshot_before_any_frame_is_a_clear_404(
    app_client: TestClient, media_settings: Settings, tf1_model: ModelFiles
) -> None:
    from tests.factories.daemon import free_port

    await setup_chain(app_client, tf1_model)
    stream = await create_stream(
        app_client, media_settings, source={"uri": f"rtsp://127.0.0.1:{free_port()}/x"}
    )
    response = await app_client.get(f"/v0.7/streams/{stream['id']}/snapshot.jpg")
    body = await response.json()
    assert response.status == 404 and body["code"] == "no_snapshot"
    assert (await app_client.delete(f"/v0.7/streams/{stream['id']}")).status == 204


def chromium(url: str, *args: str, user_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={user_dir}",
            "--window-size=1100,700",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )


async def test_html_page_in_a_real_browser(
    app_client: TestClient, media_settings: Settings, tf1_model: ModelFiles, tmp_path: Path
) -> None:
    await setup_chain(app_client, tf1_model)
    stream = await create_stream(app_client, media_settings, name="front-door", fps=5)
    await wait_state(app_client, stream["id"], "finished")
    url = str(app_client.make_url("/?refresh=0"))  # a refreshing page never finishes loading
    dom = await asyncio.to_thread(chromium, url, "--dump-dom", user_dir=tmp_path / "profile1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<td>front-door</td>" in dom.stdout
    assert '<td class="state finished">finished</td>' in dom.stdout
    assert f'src="/v0.7/streams/{stream["id"]}/snapshot.jpg"' in dom.stdout
    shot = tmp_path / "page.png"
    result = await asyncio.to_thread(chromium, url, f"--screenshot={shot}", user_dir=tmp_path / "profile2")
    assert result.returncode == 0, result.stderr[-2000:]
    page = await asyncio.to_thread(cv2.imread, str(shot))
    assert page.shape[:2] == (700, 1100)
    # The snapshot (a blue frame, 160x96 shown at that size) is rendered in the page.
    blue = np.all(np.abs(page.astype(int) - [255, 0, 0]) < 40, axis=2)
    assert blue.sum() > 0.8 * 160 * 96
    await asyncio.to_thread(shot.replace, Path("/tmp/streamd-ui.png"))  # kept for a person to look at


async def test_html_page_lists_no_streams_plainly(app_client: TestClient) -> None:
    response = await app_client.get("/")
    assert response.status == 200 and response.content_type == "text/html"
    text = await response.text()
    assert "No streams: POST /v0.7/streams to add one." in text
    assert '<meta http-equiv="refresh" content="2">' in text


def test_label_collection_includes_nested_results() -> None:
    from streamd.chains.results import Box, Classes, Detection
    from streamd.streams.snapshot import collect

    face = Detection("face", 0.7, Box(1.5, 2.5, 2.5, 3.5))
    person = Detection(
        "person",
        0.9,
        Box(1, 2, 3, 4),
        (("colours", Classes((Detection("blue", 0.8),))), ("faces", Classes((face,)))),
    )
    classes = (person,)
    boxes, texts = collect(classes)
    assert boxes == [((1, 2, 3, 4), "person 0.90: blue"), ((1.5, 2.5, 2.5, 3.5), "face 0.70")]
    assert texts == []


@pytest.fixture
def keyed_settings(tmp_path: Path) -> Settings:
    from tests.conftest import make_settings

    return make_settings(tmp_path / "data", auth={"api_keys": ["page-key"]})


async def test_the_page_takes_its_key_in_the_query_and_only_the_page(
    aiohttp_client: Any, keyed_settings: Settings
) -> None:
    from streamd.app import build_app

    client = await aiohttp_client(build_app(keyed_settings))
    assert (await client.get("/")).status == 401
    assert (await client.get("/?api_key=page-key")).status == 200
    assert (await client.get("/v0.7/streams?api_key=page-key")).status == 401
