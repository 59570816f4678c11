"""The pretrained models with their real weights, through the real app: the MTCNN detector against the
`mtcnn` package itself, the emotion classifier against fer's Keras model, and the demo video's stream."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from streamd.app import build_app
from streamd.demo import FACES_CHAIN
from streamd.demo_video import placements
from streamd.models import catalogue, emotions
from streamd.models.registration import install
from streamd.settings import Settings
from tests.conftest import make_settings
from tests.factories.daemon import free_port
from tests.factories.pretrained import Pretrained, box_of, iou
from tests.test_streams import read_jsonl, wait_state

pytest.importorskip("mtcnn", reason="the models extra is not installed (bash scripts/setup installs it)")


@pytest.fixture
def faces_settings(tmp_path: Path, pretrained: Pretrained) -> Settings:
    settings = make_settings(tmp_path / "data")
    settings.media_roots[0].mkdir(parents=True)
    shutil.copy(pretrained.video, settings.media_roots[0] / "faces.mp4")
    return settings


@pytest.fixture
async def faces_client(
    aiohttp_client: Callable[..., Any], faces_settings: Settings, pretrained: Pretrained
) -> TestClient:
    client = await aiohttp_client(build_app(faces_settings))
    for built in pretrained.built.values():
        assert "installed (network" in await install(client, built)
    # Installing again registers nothing (checked here: a test of its own would deploy both again).
    for built in pretrained.built.values():
        assert (await install(client, built)).startswith(f"{built.model.name}: already installed")
    networks = await (await client.get("/v0.7/networks")).json()
    specs = await (await client.get("/v0.7/recognition/specs")).json()
    assert (networks["count"], [s["name"] for s in specs["results"]]) == (2, ["faces", "emotions"])
    assert (await client.put("/v0.7/chains/demo", json=FACES_CHAIN)).status == 201
    return client


def data_uri(rgb: np.ndarray) -> str:
    ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    assert ok
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode()


async def run_service(client: TestClient, service: str, image: np.ndarray, **output: Any) -> list[Any]:
    call = {"service": service, "data": [data_uri(image)], "parameters": {"output": output}}
    response = await client.put("/chain/once", json={"chain": {"calls": [call]}})
    body = await response.json()
    assert response.status == 200, body
    [prediction] = body["body"]["predictions"]
    return prediction["classes"]


async def test_face_detector_finds_the_astronaut_where_the_mtcnn_package_does_and_nothing_on_blank(
    faces_client: TestClient, pretrained: Pretrained
) -> None:
    [face] = await run_service(faces_client, "faces", pretrained.astronaut, bbox=True)
    assert face["cat"] == "face" and face["prob"] > 0.9
    assert iou(box_of(face), pretrained.face) >= 0.5
    assert await run_service(faces_client, "faces", np.full((480, 640, 3), 128, np.uint8), bbox=True) == []


async def test_emotion_probabilities_through_streamd_equal_the_keras_model_on_the_same_crop(
    faces_client: TestClient, pretrained: Pretrained
) -> None:
    classes = await run_service(
        faces_client, "emotions", np.repeat(pretrained.crop[:, :, None], 3, axis=2), best=7
    )
    through_streamd = {item["cat"]: item["prob"] for item in classes}
    assert list(through_streamd) == [emotions.LABELS[i] for i in np.argsort(-pretrained.keras_probabilities)]
    for index, label in enumerate(emotions.LABELS):
        assert through_streamd[label] == pytest.approx(float(pretrained.keras_probabilities[index]), abs=1e-4)


async def test_a_stream_over_the_demo_video_nests_emotions_under_each_face_in_frame_pixels(
    faces_client: TestClient, faces_settings: Settings, pretrained: Pretrained
) -> None:
    body = {
        "name": "faces",
        "source": {"uri": str(faces_settings.media_roots[0] / "faces.mp4")},
        "chain": "demo",
        "fps": 2,
        "sinks": [{"type": "jsonl", "path": "faces.jsonl"}],
    }
    response = await faces_client.post("/v0.7/streams", json=body)
    assert response.status == 201, await response.json()
    await wait_state(faces_client, (await response.json())["id"], "finished", timeout_s=120)
    records = await read_jsonl(faces_settings.storage.data_dir / "results" / "faces.jsonl")
    # 8 s at 30 fps capped at 2 fps: every fifteenth frame; 0-2 s one face, 2-4 s three, 4-6 s none.
    assert [r["frame_index"] for r in records] == list(range(0, 240, 15))
    assert [len(r["predictions"][0]["classes"]) for r in records] == [1] * 4 + [3] * 4 + [0] * 4 + [1] * 4
    for record in records:
        expected = [place.map_box(pretrained.face) for place in placements(record["frame_index"])]
        for face in record["predictions"][0]["classes"]:
            assert max(iou(box_of(face), box) for box in expected) >= 0.5, (record["frame_index"], face)
            [emotion] = face["emotions"]["classes"]
            assert emotion["cat"] in emotions.LABELS and 0 < emotion["prob"] <= 1


def test_a_model_is_built_once_per_package_version(tmp_path: Path, pretrained: Pretrained) -> None:
    version = "1.0"
    builds: list[str] = []

    def build(directory: Path, _cache: Path) -> None:
        builds.append(version)
        shutil.copytree(pretrained.built["emotions"].directory, directory)

    model = replace(catalogue.CATALOGUE["emotions"], version=lambda: version, build=build)
    first = catalogue.ensure_built(model, tmp_path, lambda _line: None)
    again = catalogue.ensure_built(model, tmp_path, lambda _line: None)
    assert builds == ["1.0"] and again == first and first.outputs == pretrained.built["emotions"].outputs
    version = "1.1"
    newer = catalogue.ensure_built(model, tmp_path, lambda _line: None)
    assert builds == ["1.0", "1.1"] and newer.version == "1.1"
    assert sorted(p.name for p in (tmp_path / "models" / "emotions").iterdir()) == ["1.1"]


def test_models_command_lists_the_catalogue_and_says_when_the_daemon_is_not_there(
    tmp_path: Path, pretrained: Pretrained, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamd.cli import main

    shutil.copytree(pretrained.built["faces"].directory.parents[2], tmp_path / "models")  # built already
    assert main(["models", "list", "--data-dir", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert "faces     detection" in listing and "emotions  classification" in listing
    assert "FER2013 research data set" in listing and f"built: {pretrained.built['faces'].version}" in listing
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["models", "install", "all", "--url", url, "--data-dir", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert "streamd: building" not in error
    assert f"cannot reach the daemon at {url}" in error and "start it with streamd serve" in error
