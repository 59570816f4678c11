"""Real DeepDetect `/chain` bodies (tests/deepdetect_bodies.py says where each comes from) sent unchanged
but for service names and image paths, against the real app with real TF models; plus the DeepDetect
behaviours they rely on, with exact values. The scene is the 80x40 frame of test_chains.py."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import orjson
import pytest
from aiohttp.test_utils import TestClient

from streamd.app import build_app
from streamd.settings import Settings
from tests.conftest import make_settings
from tests.deepdetect_bodies import B64, BODIES
from tests.factories.models import ModelFiles, build_tf1_painter, build_tf1_sequence
from tests.test_chains import (  # noqa: F401  (fixtures)
    BOX0,
    BOX1,
    deploy_service,
    scene,
    services,
)

CLASSIFICATION = {"classification": {"output_tensor": "prob", "thresholds": [0.5, 0.5, 0.5]}}


@pytest.fixture(scope="session")
def sequence_model(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    return build_tf1_sequence(tmp_path_factory.mktemp("models") / "sequence")


@pytest.fixture(scope="session")
def painter_model(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    return build_tf1_painter(tmp_path_factory.mktemp("models") / "painter")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The daemon's working directory, with images/ (the media root) beside it, as DeepDetect users
    lay out relative paths."""
    images = tmp_path / "work" / "images"
    images.mkdir(parents=True)
    cv2.imwrite(str(images / "scene.png"), scene())
    cv2.imwrite(str(images / "scene2.png"), scene(blue=False))
    monkeypatch.chdir(tmp_path / "work")
    return images


@pytest.fixture
def dd_settings(tmp_path: Path, workdir: Path) -> Settings:
    return make_settings(tmp_path / "data", storage={"media_roots": [str(workdir)]})


@pytest.fixture
async def client(aiohttp_client: Any, dd_settings: Settings) -> TestClient:
    return await aiohttp_client(build_app(dd_settings))


@pytest.fixture
async def dd_services(
    client: TestClient,
    services: dict[str, int],  # noqa: F811
    tf1_model: ModelFiles,
    sequence_model: ModelFiles,
    painter_model: ModelFiles,
) -> dict[str, int]:
    palette = await deploy_service(client, tf1_model, "palette", ["b", "g", "r"], CLASSIFICATION, boxes=False)
    sequence = {"classification": {"output_tensor": "seq", "thresholds": [0.5] * 4}}
    ocr = await deploy_service(client, sequence_model, "ocr", ["_", "b", "g", "r"], sequence, boxes=False)
    painting = {"classification": {"output_tensor": "painted", "thresholds": [0.5]}}
    painter = await deploy_service(client, painter_model, "painter", ["painted"], painting, boxes=False)
    return {**services, "palette": palette, "ocr": ocr, "painter": painter}


def raw_base64(frame: np.ndarray) -> str:
    return base64.b64encode(cv2.imencode(".png", frame)[1].tobytes()).decode()


async def send(client: TestClient, method: str, body: dict[str, Any], **headers: str) -> tuple[int, Any]:
    """As curl -d sends it: form-urlencoded Content-Type, JSON text."""
    data = orjson.dumps(body)
    headers = {"Content-Type": "application/x-www-form-urlencoded", **headers}
    response = await client.request(method, "/chain/dd", data=data, headers=headers)
    return response.status, await response.json()


@pytest.mark.parametrize(("case", "origin", "method", "body", "status"), BODIES, ids=[b[0] for b in BODIES])
async def test_deepdetect_bodies_run_unchanged(
    client: TestClient, dd_services: dict[str, int], case: str, origin: str, method: str,
    body: dict[str, Any], status: int,
) -> None:  # fmt: skip
    body = orjson.loads(orjson.dumps(body).replace(B64.encode(), raw_base64(scene()).encode()))
    got, answer = await send(client, method, body)
    assert got == status, (origin, answer)
    if status == 200:
        assert answer["status"] == {"code": 200, "msg": "OK"}
        assert answer["body"]["predictions"][0]["classes"], answer
    else:  # the body streamd does not run (similarity search): documented in README (### DeepDetect)
        assert answer["status"]["dd_code"] == 1006
        assert "not supported" in answer["error"]


async def test_relative_paths_resolve_against_the_working_directory_and_keep_their_uri(
    client: TestClient, dd_services: dict[str, int], workdir: Path
) -> None:
    status, answer = await send(client, "PUT", copy.deepcopy(BODIES[0][3]))
    assert status == 200, answer
    [prediction] = answer["body"]["predictions"]
    assert prediction["uri"] == "images/scene.png"
    car, person = prediction["classes"]
    assert car["bbox"] == pytest.approx(BOX1) and person["bbox"] == pytest.approx(BOX0)
    assert [c["cat"] for c in car["colours"]["classes"]] == ["red"]
    outside = {"chain": {"calls": [{"service": "things", "data": ["../../etc/passwd"]}]}}
    status, answer = await send(client, "PUT", outside)
    assert status == 400 and "outside the media roots" in answer["error"]


async def test_raw_base64_runs_and_is_named_by_its_index_and_never_echoed(
    client: TestClient, dd_services: dict[str, int]
) -> None:
    payload = raw_base64(scene())
    body = {"chain": {"calls": [{"service": "things", "data": [payload, payload]}]}}
    status, answer = await send(client, "POST", body)
    assert status == 200, answer
    assert [p["uri"] for p in answer["body"]["predictions"]] == ["0", "1"]
    broken = "QUJD" * 25_000  # 100 KB of base64 that is no image
    status, answer = await send(
        client, "POST", {"chain": {"calls": [{"service": "things", "data": [broken]}]}}
    )
    assert status == 400 and "could not be decoded" in answer["error"]
    assert len(answer["error"]) < 300 and len(orjson.dumps(answer)) < 1000


async def test_a_json_body_is_read_whatever_its_content_type(
    client: TestClient, dd_services: dict[str, int]
) -> None:
    status, _ = await send(
        client, "PUT", {"chain": {"calls": [{"service": "things", "data": ["images/scene.png"]}]}}
    )
    assert status == 200
    # Every JSON route reads a JSON object under any declared type (curl -d's form type included); a
    # body that really is a form stays a 415.
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    response = await client.put("/v0.7/chains/x", data=b'{"calls": []}', headers=form)
    assert response.status == 400 and "calls" in (await response.json())["error"]
    response = await client.put("/v0.7/chains/x", data=b"calls=1", headers=form)
    assert response.status == 415


async def test_info_and_services_list_recognition_specs_as_deepdetect_services(
    client: TestClient, dd_services: dict[str, int]
) -> None:
    info = await (await client.get("/info")).json()
    listed = {s["name"]: s for s in info["head"]["services"]}
    assert info["head"]["method"] == "/info"
    assert listed["things"] == {
        "name": "things", "description": "", "mllib": "tensorflow", "mltype": "detection",
        "type": "supervised", "predict": True, "training": False,
    }  # fmt: skip
    assert listed["colours"]["mltype"] == "classification"
    response = await client.get("/services/colours")
    body = await response.json()
    assert response.status == 200 and body["body"]["labels"] == ["blue", "green", "red"]
    missing = await client.get("/services/ghost")
    assert missing.status == 404 and (await missing.json())["status"]["dd_code"] == 1002


async def test_recompose_pastes_each_generated_crop_back_where_it_was_cut(
    client: TestClient, dd_services: dict[str, int]
) -> None:
    [body] = [b[3] for b in BODIES if b[0] == "ut-trt-recompose"]
    status, answer = await send(client, "POST", body)
    assert status == 200, answer
    [prediction] = answer["body"]["predictions"]
    assert [c["cat"] for c in prediction["classes"]] == ["car", "person"]
    png = base64.b64decode(prediction["recompose"]["images"][0])
    pasted = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    original = scene()
    # fixed 8x8 crops centred on box 1 (x 52..60, y 24..32) and box 0 (x 20..28, y 8..16) come back as
    # their negatives (the float boxes may widen a crop by one pixel at an edge: interiors are checked);
    # away from them the frame is untouched
    outside = np.ones(original.shape[:2], dtype=bool)
    for x0, y0 in ((52, 24), (20, 8)):
        inner = (slice(y0 + 1, y0 + 7), slice(x0 + 1, x0 + 7))
        assert (pasted[inner] == 255 - original[inner]).all()
        outside[y0 - 1 : y0 + 9, x0 - 1 : x0 + 9] = False
    assert (pasted[outside] == original[outside]).all()
    crop = prediction["classes"][0]["painter"]
    assert set(crop) == {"images"}
