"""Stream analytics end to end: real H.264 scenes, a real TF detector of coloured squares, the daemon's
API, JSONL records, status and metrics (tests/factories/squares.py knows every frame's content)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from streamd.api.context import SERVICES
from streamd.app import build_app
from streamd.settings import Settings
from tests.conftest import (
    create_network,
    make_settings,
    network_form,
    preprocessing_for,
    wait_task,
    wait_until,
)
from tests.factories.models import ModelFiles
from tests.factories.mosquitto import Mosquitto
from tests.factories.squares import (
    BLUE_CROSSES_AT,
    CROSSING_FRAMES,
    HEIGHT,
    LINE_X,
    MOTION_SCENE_FRAMES,
    RED_CROSSES_AT,
    WIDTH,
    blue_x,
    build_square_detector,
    encode_crossing,
    encode_motion,
    red_x,
)
from tests.test_chains import post_json
from tests.test_mqtt import Subscriber
from tests.test_streams import read_jsonl, wait_state

SCENE = {
    "zones": [
        {"name": "left", "points": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]], "normalized": True},
        {"name": "right", "points": [[160, 0], [320, 0], [320, 192], [160, 192]]},
    ],
    "lines": [{"name": "middle", "points": [[LINE_X, 0], [LINE_X, HEIGHT]]}],  # drawn top → bottom
}
TRACKED = {"calls": [{"service": "squares", "parameters": {"output": {"track": {}}}}]}
# The motion gate opens on the first frame (it becomes the background), two held frames after it, the
# moving square's frames 20..29 and two held frames after them.
GATE_OPEN = [0, 1, 2, *range(20, 32)]


@pytest.fixture(scope="session")
def square_detector(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    return build_square_detector(tmp_path_factory.mktemp("models") / "squares")


@pytest.fixture
def scene_settings(tmp_path: Path) -> Settings:
    media = tmp_path / "media"
    encode_crossing(media / "crossing.mp4")
    encode_motion(media / "motion.mp4")
    return make_settings(tmp_path / "data", storage={"media_roots": [str(media)]})


@pytest.fixture
async def scene_client(aiohttp_client: Any, scene_settings: Settings) -> TestClient:
    return await aiohttp_client(build_app(scene_settings))


async def deploy_squares(client: TestClient, model: ModelFiles) -> int:
    """The detector as service `squares` (red and blue, boxes), on the frame's own size and pixels."""
    preprocessing = preprocessing_for(model, target_size=f"{WIDTH}x{HEIGHT}")
    network = await create_network(client, network_form(model, preprocessing=preprocessing, name="squares"))
    assert (await wait_task(client, network["task_id"]))["status"] == "success"
    labels = [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]
    spec = await post_json(
        client,
        "/v0.7/recognition/specs",
        {"name": "squares", "outputs": [{"labels": {"roi": "BBOX", "labels": labels}}]},
    )
    detection = {
        "thresholds": [0.5, 0.5],
        "direct_output": {
            "boxes_tensor": "detection_boxes",
            "scores_tensor": "detection_scores",
            "classes_tensor": "detection_classes",
        },
    }
    version = {
        "spec_id": spec["id"],
        "network_id": network["id"],
        "post_processings": [{"detection": detection}],
    }
    await post_json(client, "/v0.7/recognition/versions", version)
    return int(network["id"])


async def run_stream(
    client: TestClient, settings: Settings, video: str, **fields: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    body = {
        "name": video,
        "source": {"uri": str(settings.media_roots[0] / f"{video}.mp4")},
        "sinks": [{"type": "jsonl", "path": f"{video}.jsonl"}],
        **fields,
    }
    stream = await post_json(client, "/v0.7/streams", body)
    status = await wait_state(client, stream["id"], "finished")
    return status, await read_jsonl(settings.storage.data_dir / "results" / f"{video}.jsonl")


async def _done(messages: list[Any], count: int) -> bool | None:
    return True if len(messages) >= count else None


def side(anchor_x: float) -> str:
    return "left" if anchor_x <= LINE_X else "right"


async def test_tracked_squares_keep_their_ids_cross_the_line_once_and_fill_zones(
    scene_client: TestClient, scene_settings: Settings, square_detector: ModelFiles, broker: Mosquitto
) -> None:
    await deploy_squares(scene_client, square_detector)
    sinks = [
        {"type": "jsonl", "path": "crossing.jsonl"},
        {"type": "mqtt", "url": f"mqtt://127.0.0.1:{broker.port}", "events_only": True},
    ]
    async with Subscriber(broker.port) as subscriber:
        status, records = await run_stream(
            scene_client, scene_settings, "crossing", chain=TRACKED, scene=SCENE, sinks=sinks
        )
        await wait_until(lambda: _done(subscriber.messages, 2), 10)
    status = await (await scene_client.get(f"/v0.7/streams/{status['id']}")).json()
    assert [r["frame_index"] for r in records] == list(range(CROSSING_FRAMES))
    ids: dict[str, set[int]] = {"red": set(), "blue": set()}
    crossings = []
    for index, record in enumerate(records):
        classes = record["predictions"][0]["classes"]
        assert sorted(c["cat"] for c in classes) == ["blue", "red"]
        for detection in classes:
            left = red_x(index) if detection["cat"] == "red" else blue_x(index)
            assert detection["bbox"]["xmin"] == pytest.approx(left, abs=1.5)
            assert detection["zones"] == [side(left + 16)]  # the box's bottom centre
            if index == 0:
                assert "track_id" not in detection  # ByteTrack confirms a track on its second frame
            else:
                ids[detection["cat"]].add(detection["track_id"])
        crossings += [(index, event) for event in record["events"]]
    assert len(ids["red"]) == len(ids["blue"]) == 1 and ids["red"] != ids["blue"]
    [red], [blue] = ids["red"], ids["blue"]
    line = {"type": "line_crossed", "line": "middle"}
    assert crossings == [
        (RED_CROSSES_AT, {**line, "track_id": red, "class": "red", "direction": "out"}),
        (BLUE_CROSSES_AT, {**line, "track_id": blue, "class": "blue", "direction": "in"}),
    ]
    analytics = status["analytics"]
    assert analytics["lines"] == {"middle": {"red": {"in": 0, "out": 1}, "blue": {"in": 1, "out": 0}}}
    # The last frame: red has gone right, blue left; a class seen in a zone before reads 0.
    assert analytics["zones"] == {"left": {"red": 0, "blue": 1}, "right": {"red": 1, "blue": 0}}
    assert status["scene"]["lines"][0]["name"] == "middle"
    # The events-only MQTT sink published the two frames with a crossing, as records without predictions.
    published = [message for _, message in subscriber.messages]
    assert [m["frame_index"] for m in published] == [RED_CROSSES_AT, BLUE_CROSSES_AT]
    assert [m["events"] for m in published] == [[event] for _, event in crossings]
    assert all("predictions" not in m for m in published)
    assert status["sinks"][1]["delivered"] == 2
    metrics = await (await scene_client.get("/metrics")).text()
    stream = f'stream="{status["id"]}"'
    assert (
        f'streamd_line_crossings_total{{class="red",direction="out",line="middle",{stream}}} 1.0' in metrics
    )
    assert f'streamd_zone_occupancy{{class="blue",{stream},zone="left"}} 1.0' in metrics


async def test_the_motion_gate_runs_inference_only_around_motion(
    scene_client: TestClient, scene_settings: Settings, square_detector: ModelFiles
) -> None:
    network_id = await deploy_squares(scene_client, square_detector)
    chain = {"calls": [{"service": "squares"}]}
    status, records = await run_stream(scene_client, scene_settings, "motion", chain=chain, motion={})
    assert [r["frame_index"] for r in records] == list(range(MOTION_SCENE_FRAMES))
    assert [r["frame_index"] for r in records if r["motion"]] == GATE_OPEN
    assert all(r["predictions"] == [] for r in records if not r["motion"])
    assert all(len(r["predictions"]) == 1 for r in records if r["motion"])
    skipped = MOTION_SCENE_FRAMES - len(GATE_OPEN)
    assert status["frames"]["processed"] == len(GATE_OPEN)
    assert status["frames"]["dropped"] == {"no_motion": skipped}
    batcher = scene_client.app[SERVICES].runtime.loaded[network_id].batcher
    assert batcher.stats.items == len(GATE_OPEN)  # inference ran on those frames only

    quiet = {"emit_still": False, "hold_frames": 0}
    body = {"chain": chain, "motion": quiet, "sinks": [{"type": "jsonl", "path": "quiet.jsonl"}]}
    status, _ = await run_stream(scene_client, scene_settings, "motion", **body)
    records = await read_jsonl(scene_settings.storage.data_dir / "results" / "quiet.jsonl")
    assert [r["frame_index"] for r in records] == [0, *range(20, 30)]


async def test_analytics_options_that_cannot_work_are_refused(
    scene_client: TestClient, scene_settings: Settings, square_detector: ModelFiles, tf1_model: ModelFiles
) -> None:
    await deploy_squares(scene_client, square_detector)
    base = {
        "name": "bad",
        "source": {"uri": str(scene_settings.media_roots[0] / "crossing.mp4")},
        "sinks": [{"type": "jsonl", "path": "bad.jsonl"}],
    }
    untracked = {"calls": [{"service": "squares"}]}
    cases = [
        ({"chain": untracked, "scene": {"lines": SCENE["lines"]}}, "scene.lines count tracks"),
        ({"chain": TRACKED, "scene": {"zones": [{"name": "z", "points": [[0, 0], [1, 1]]}]}}, "points"),
        ({"chain": TRACKED, "motion": {"threshold": 0}}, "motion.threshold"),
        ({"chain": TRACKED, "motion": {"sensitivity": 3}}, "motion.sensitivity: unknown field"),
        (
            {
                "chain": {
                    "calls": [{"service": "squares", "parameters": {"output": {"track": {"type": "sort"}}}}]
                }
            },
            "output.track.type",
        ),
    ]
    for fields, fragment in cases:
        response = await scene_client.post("/v0.7/streams", json={**base, **fields})
        body = await response.json()
        assert response.status == 400, (fields, body)
        assert fragment in body["error"], (fields, body)
    await asyncio.sleep(0)
