"""Inference endpoints end to end through the real app: raw tensors, recognition specs and versions,
classification and detection with known weights, batching across callers, and failures."""

from __future__ import annotations

import asyncio
import base64
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from streamd.api.context import SERVICES
from streamd.app import build_app
from streamd.inference.executor import InferenceItem
from streamd.settings import Settings
from tests.conftest import (
    create_network,
    make_settings,
    metric_sample,
    network_form,
    preprocessing_for,
    wait_task,
)
from tests.factories.models import ModelFiles, build_tf1_detector, build_tf1_fragile, classifier_weights


@pytest.fixture(scope="session")
def detector_model(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    return build_tf1_detector(tmp_path_factory.mktemp("models") / "detector")


@pytest.fixture(scope="session")
def fragile_model(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    return build_tf1_fragile(tmp_path_factory.mktemp("models") / "fragile")


def png(bgr: tuple[int, int, int], width: int = 16, height: int = 8) -> bytes:
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[:] = bgr
    ok, encoded = cv2.imencode(".png", frame)
    assert ok
    return encoded.tobytes()


def data_uri(image: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(image).decode()


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()


def expected_prob(pooled: list[float]) -> np.ndarray:
    return softmax(np.array(pooled) @ classifier_weights(3))


async def deploy(client: TestClient, model: ModelFiles, **fields: Any) -> dict[str, Any]:
    network = await create_network(client, network_form(model, **fields))
    task = await wait_task(client, network["task_id"])
    assert task["status"] == "success", task
    return network


def unit_scaled(model: ModelFiles) -> dict[str, Any]:
    """pixel_scaling 1: pixels in [0, 1], so the pooled channels are the colour / 255."""
    return preprocessing_for(model, pixel_scaling=1.0)


async def run_task(client: TestClient, path: str, **request: Any) -> dict[str, Any]:
    response = await client.post(path, **request)
    body = await response.json()
    assert response.status == 200, body
    assert set(body) == {"task_id"}
    return await wait_task(client, body["task_id"])


async def test_raw_inference_returns_any_tensor_of_the_graph(
    client: TestClient, tf1_model: ModelFiles
) -> None:
    network = await deploy(client, tf1_model, preprocessing=unit_scaled(tf1_model))
    body = {
        "inputs": [{"image": {"source": data_uri(png((255, 0, 0)))}}],
        "output_tensors": ["prob", "pooled:0"],
    }
    task = await run_task(client, f"/v0.7/networks/{network['id']}/inference", json=body)
    assert task["status"] == "success", task
    tensors = {t["name"]: t for t in task["data"]["tensors"]}
    assert tensors["prob"]["shape"] == [3]
    np.testing.assert_allclose(tensors["prob"]["data"], expected_prob([1.0, 0.0, 0.0]), rtol=1e-5)
    assert tensors["pooled:0"] == {"name": "pooled:0", "shape": [3], "data": [1.0, 0.0, 0.0]}


async def test_raw_inference_accepts_the_official_clients_multipart_form(
    client: TestClient, tf1_model: ModelFiles
) -> None:
    network = await deploy(client, tf1_model, preprocessing=unit_scaled(tf1_model))
    form = FormData()
    form.add_field("inputs[0]image.source", png((0, 255, 0)), filename="inputs[0]image.source")
    form.add_field("inputs[0]image.crop_uniform_background", "False", content_type="application/json")
    form.add_field("output_tensors[0]", "prob")
    task = await run_task(client, f"/v0.7/networks/{network['id']}/inference", data=form)
    np.testing.assert_allclose(task["data"]["tensors"][0]["data"], expected_prob([0.0, 1.0, 0.0]), rtol=1e-5)
    twice = FormData()
    twice.add_field("inputs[0]image.source", png((0, 255, 0)), filename="inputs[0]image.source")
    twice.add_field("output_tensors[0]", "prob")
    twice.add_field("output_tensors[0]", "pooled")
    response = await client.post(f"/v0.7/networks/{network['id']}/inference", data=twice)
    assert "form field 'output_tensors[0]' is given twice" in await error_of(response, 400, "invalid_field")


async def test_bbox_inputs_crop_before_inference(client: TestClient, tf1_model: ModelFiles) -> None:
    network = await deploy(client, tf1_model, preprocessing=unit_scaled(tf1_model))
    frame = np.zeros((8, 16, 3), dtype=np.uint8)
    frame[:, :8] = (255, 0, 0)
    frame[:, 8:] = (0, 0, 255)
    image = cv2.imencode(".png", frame)[1].tobytes()
    bbox = {"xmin": 0.5, "ymin": 0.0, "xmax": 1.0, "ymax": 1.0}
    body = {"inputs": [{"image": {"source": data_uri(image), "bbox": bbox}}], "output_tensors": ["pooled"]}
    task = await run_task(client, f"/v0.7/networks/{network['id']}/inference", json=body)
    assert task["data"]["tensors"][0]["data"] == [0.0, 0.0, 1.0]


CLASSES_SPEC = {
    "name": "colours",
    "outputs": [
        {
            "labels": {
                "roi": "NONE",
                "exclusive": True,
                "labels": [
                    {"id": 10, "name": "blue"},
                    {"id": 20, "name": "green"},
                    {"id": 30, "name": "red"},
                ],
            }
        }
    ],
}


async def create_json(client: TestClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body)
    created = await response.json()
    assert response.status == 201, created
    return created


async def test_classification_spec_and_version_inference(client: TestClient, tf1_model: ModelFiles) -> None:
    network = await deploy(client, tf1_model, preprocessing=unit_scaled(tf1_model))
    spec = await create_json(client, "/v0.7/recognition/specs", CLASSES_SPEC)
    assert spec["current_version_id"] is None
    version = await create_json(
        client,
        "/v0.7/recognition/versions",
        {
            "spec_id": spec["id"],
            "network_id": network["id"],
            "post_processings": [
                {"classification": {"output_tensor": "prob", "thresholds": [0.5, 0.5, 0.01]}}
            ],
        },
    )
    assert (version["spec_name"], version["network_name"]) == ("colours", "tiny classifier")
    spec = await (await client.get(f"/v0.7/recognition/specs/{spec['id']}")).json()
    assert spec["current_version_id"] == version["id"]

    image = {"inputs": [{"image": {"source": data_uri(png((255, 0, 0)))}}]}
    probs = expected_prob([1.0, 0.0, 0.0])
    task = await run_task(
        client,
        f"/v0.7/recognition/specs/{spec['id']}/inference",
        json={**image, "show_discarded": True, "max_predictions": 2},
    )
    labels = task["data"]["outputs"][0]["labels"]
    assert [(p["label_id"], p["label_name"], p["threshold"]) for p in labels["predicted"]] == [
        (10, "blue", 0.5),
        (30, "red", 0.01),
    ]
    assert labels["predicted"][0]["score"] == pytest.approx(probs[0], rel=1e-5)
    assert labels["discarded"] == []  # max_predictions=2 is used up by the predicted ones
    assert "roi" not in labels["predicted"][0]

    task = await run_task(
        client,
        f"/v0.7/recognition/versions/{version['id']}/inference",
        json={**image, "show_discarded": True},
    )
    labels = task["data"]["outputs"][0]["labels"]
    assert [p["label_id"] for p in labels["predicted"]] == [10, 30]
    assert [(d["label_id"], d["score"]) for d in labels["discarded"]] == [
        (20, pytest.approx(probs[1], rel=1e-5))
    ]
    task = await run_task(client, f"/v0.7/recognition/versions/{version['id']}/inference", json=image)
    assert task["data"]["outputs"][0]["labels"]["discarded"] == []


async def test_detection_version_returns_rois_after_nms(
    client: TestClient, detector_model: ModelFiles
) -> None:
    network = await deploy(client, detector_model, preprocessing=unit_scaled(detector_model))
    spec = await create_json(
        client,
        "/v0.7/recognition/specs",
        {
            "name": "things",
            "outputs": [
                {"labels": {"roi": "BBOX", "labels": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}]}}
            ],
        },
    )
    version = await create_json(
        client,
        "/v0.7/recognition/versions",
        {
            "spec_id": spec["id"],
            "network_id": network["id"],
            "post_processings": [
                {
                    "detection": {
                        "thresholds": [0.6, 0.6],
                        "nms_threshold": 0.45,
                        "direct_output": {
                            "boxes_tensor": "detection_boxes",
                            "scores_tensor": "detection_scores",
                            "classes_tensor": "detection_classes",
                        },
                    }
                }
            ],
        },
    )
    body = {"inputs": [{"image": {"source": data_uri(png((255, 128, 0)))}}], "show_discarded": True}
    task = await run_task(client, f"/v0.7/recognition/versions/{version['id']}/inference", json=body)
    labels = task["data"]["outputs"][0]["labels"]
    # Scores: box 0 = 1.0 (person), box 1 = 128/255 (car), box 2 = 0.9 (person, suppressed by box 0).
    assert len(labels["predicted"]) == 1
    person = labels["predicted"][0]
    assert (person["label_name"], person["score"], person["roi"]["region_id"]) == ("person", 1.0, 1)
    assert person["roi"]["bbox"] == pytest.approx({"xmin": 0.1, "ymin": 0.1, "xmax": 0.5, "ymax": 0.5})
    [car] = labels["discarded"]
    assert (car["label_name"], car["score"]) == ("car", pytest.approx(128 / 255, rel=1e-5))
    assert car["roi"]["bbox"] == pytest.approx({"xmin": 0.5, "ymin": 0.5, "xmax": 0.9, "ymax": 0.9})


async def test_callers_share_batches(client: TestClient, tf1_model: ModelFiles) -> None:
    network = await deploy(
        client,
        tf1_model,
        preprocessing=unit_scaled(tf1_model),
        fields={"metadata": '{"streamd": {"max_batch_size": 8, "max_wait_s": 1.0}}'},
    )
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)] * 2

    async def infer(colour: tuple[int, int, int]) -> dict[str, Any]:
        body = {"inputs": [{"image": {"source": data_uri(png(colour))}}], "output_tensors": ["pooled"]}
        return await run_task(client, f"/v0.7/networks/{network['id']}/inference", json=body)

    tasks = await asyncio.gather(*(infer(colour) for colour in colours))
    for colour, task in zip(colours, tasks, strict=True):
        assert task["data"]["tensors"][0]["data"] == [c / 255 for c in colour]
    stats = client.app[SERVICES].runtime.loaded[network["id"]].batcher.stats
    assert stats.batch_sizes == {8: 1}


async def test_two_batches_of_a_network_run_at_once(client: TestClient, tf1_model: ModelFiles) -> None:
    network = await deploy(
        client,
        tf1_model,
        fields={"metadata": '{"streamd": {"max_batch_size": 1, "max_inflight_batches": 2}}'},
    )
    loaded = client.app[SERVICES].runtime.loaded[network["id"]]
    # Each batch's post-processing waits for the other one: run one after the other, they would time out.
    meeting = threading.Barrier(2, timeout=10)

    def finish(tensors: dict[str, np.ndarray], _transforms: list[Any]) -> tuple[str, list[float]]:
        meeting.wait()
        return threading.current_thread().name, next(iter(tensors.values())).tolist()

    [fetch] = loaded.executor.check_fetches(["pooled"])
    frames = [np.full((8, 8, 3), value, np.uint8) for value in (51, 102)]
    outputs = await asyncio.gather(
        *(loaded.batcher.submit(InferenceItem((frame,), (fetch,), finish)) for frame in frames)
    )
    (thread_a, pooled_a), (thread_b, pooled_b) = (output.finished for output in outputs)
    assert thread_a != thread_b
    assert (pooled_a, pooled_b) == ([51.0] * 3, [102.0] * 3)
    assert loaded.batcher.stats.batch_sizes == {1: 2}


async def test_patching_tuning_retunes_the_loaded_batcher(client: TestClient, tf1_model: ModelFiles) -> None:
    network = await deploy(client, tf1_model)
    batcher = client.app[SERVICES].runtime.loaded[network["id"]].batcher
    # Run by TensorFlow Lite: batches of at most LITE_BATCH_SIZE, not inference.max_batch_size (32).
    assert (batcher.policy.max_batch_size, batcher.policy.max_wait_s) == (4, 0.005)
    response = await client.patch(
        f"/v0.7/networks/{network['id']}",
        json={"metadata": {"streamd": {"max_batch_size": 12, "max_wait_s": 0.02}}},
    )
    assert response.status == 200
    assert (batcher.policy.max_batch_size, batcher.policy.max_wait_s) == (12, 0.02)
    response = await client.patch(
        f"/v0.7/networks/{network['id']}", json={"metadata": {"streamd": {"max_batch_size": 0}}}
    )
    assert response.status == 400
    assert (
        "metadata.streamd.max_batch_size" in (await response.json())["error"]
        or "max_batch_size" in (await response.json())["error"]
    )


async def test_a_failing_session_run_fails_its_task_only(
    client: TestClient, fragile_model: ModelFiles, tf1_model: ModelFiles
) -> None:
    fragile = await deploy(client, fragile_model)
    healthy = await deploy(client, tf1_model)

    def request(colour: tuple[int, int, int]) -> dict[str, Any]:
        return {"inputs": [{"image": {"source": data_uri(png(colour))}}], "output_tensors": ["prob"]}

    failed = await run_task(client, f"/v0.7/networks/{fragile['id']}/inference", json=request((0, 0, 0)))
    assert failed["status"] == "error"
    assert failed["error"].startswith(f"network-{fragile['id']}: session.run failed at node 'CheckNumerics'")
    assert "black image : Tensor had Inf values" in failed["error"]
    again = await run_task(client, f"/v0.7/networks/{fragile['id']}/inference", json=request((9, 9, 9)))
    assert again["status"] == "success"
    other = await run_task(client, f"/v0.7/networks/{healthy['id']}/inference", json=request((0, 0, 0)))
    assert other["status"] == "success"
    fragile_id, healthy_id = str(fragile["id"]), str(healthy["id"])
    assert await metric_sample(client, "streamd_inference_errors_total", network=fragile_id) == 1
    assert await metric_sample(client, "streamd_inference_item_errors_total", network=fragile_id) == 1
    assert await metric_sample(client, "streamd_inference_item_errors_total", network=healthy_id) == 0


async def error_of(response: Any, status: int, code: str) -> str:
    body = await response.json()
    assert response.status == status, body
    assert body["code"] == code, body
    return body["error"]


async def test_bad_inference_requests_get_clear_4xx(client: TestClient, tf1_model: ModelFiles) -> None:
    network = await deploy(client, tf1_model)
    url = f"/v0.7/networks/{network['id']}/inference"
    good = {"source": data_uri(png((1, 2, 3)))}
    assert "give at least one input" in await error_of(
        await client.post(url, json={"inputs": [], "output_tensors": ["prob"]}), 400, "invalid_field"
    )
    assert "output_tensors is required" in await error_of(
        await client.post(url, json={"inputs": [{"image": good}]}), 400, "invalid_field"
    )
    assert "tensor 'nope' is not in the graph" in await error_of(
        await client.post(url, json={"inputs": [{"image": good}], "output_tensors": ["nope"]}),
        400,
        "unknown_tensor",
    )
    bad_image = {"source": "data:image/png;base64," + base64.b64encode(b"not an image").decode()}
    assert "could not be decoded as an image" in await error_of(
        await client.post(url, json={"inputs": [{"image": bad_image}], "output_tensors": ["prob"]}),
        400,
        "invalid_source",
    )
    assert "not valid base64" in await error_of(
        await client.post(
            url,
            json={"inputs": [{"image": {"source": "data:image/png;base64,@@"}}], "output_tensors": ["prob"]},
        ),
        400,
        "invalid_source",
    )
    assert "URL sources are disabled" in await error_of(
        await client.post(
            url,
            json={"inputs": [{"image": {"source": "http://127.0.0.1:1/x.png"}}], "output_tensors": ["prob"]},
        ),
        400,
        "invalid_source",
    )
    assert "is outside the media roots" in await error_of(
        await client.post(
            url, json={"inputs": [{"image": {"source": "/etc/hostname"}}], "output_tensors": ["prob"]}
        ),
        400,
        "invalid_source",
    )
    assert "polygon inputs are not supported" in await error_of(
        await client.post(
            url,
            json={"inputs": [{"image": {**good, "polygon": [{"x": 0, "y": 0}]}}], "output_tensors": ["prob"]},
        ),
        400,
        "invalid_field",
    )
    assert "network 999 does not exist" in await error_of(
        await client.post("/v0.7/networks/999/inference", json={"inputs": [{"image": good}]}),
        404,
        "network_not_found",
    )


@pytest.fixture
def media_settings(tmp_path: Path) -> Settings:
    media = tmp_path / "media"
    media.mkdir()
    (media / "red.png").write_bytes(png((0, 0, 255)))
    (tmp_path / "outside.png").write_bytes(png((0, 0, 255)))
    (media / "escape.png").symlink_to(tmp_path / "outside.png")
    return make_settings(tmp_path / "data", storage={"media_roots": [str(media)]})


async def test_local_sources_are_read_only_inside_media_roots(
    aiohttp_client: Any, media_settings: Settings, tf1_model: ModelFiles
) -> None:
    client = await aiohttp_client(build_app(media_settings))
    network = await deploy(client, tf1_model, preprocessing=unit_scaled(tf1_model))
    media = media_settings.storage.media_roots[0]
    url = f"/v0.7/networks/{network['id']}/inference"
    for source in (str(media / "red.png"), f"file://{media}/red.png"):
        task = await run_task(
            client, url, json={"inputs": [{"image": {"source": source}}], "output_tensors": ["pooled"]}
        )
        assert task["data"]["tensors"][0]["data"] == [0.0, 0.0, 1.0]
    for source in (str(media / "escape.png"), str(media / ".." / "outside.png")):
        response = await client.post(
            url, json={"inputs": [{"image": {"source": source}}], "output_tensors": ["pooled"]}
        )
        assert "is outside the media roots" in await error_of(response, 400, "invalid_source")


async def test_bad_versions_are_rejected_with_what_is_supported(
    client: TestClient, tf1_model: ModelFiles
) -> None:
    network = await deploy(client, tf1_model)
    spec = await create_json(client, "/v0.7/recognition/specs", CLASSES_SPEC)

    async def version(post: dict[str, Any], spec_id: int = spec["id"]) -> Any:
        return await client.post(
            "/v0.7/recognition/versions",
            json={"spec_id": spec_id, "network_id": network["id"], "post_processings": [post]},
        )

    message = await error_of(
        await version({"detection": {"thresholds": [0.5] * 3, "yolo_output": {}}}), 400, "invalid_field"
    )
    assert "detection layout 'yolo_output' is not supported; use direct_output" in message
    message = await error_of(await version({"segmentation": {}}), 400, "invalid_field")
    assert "Supported: classification {output_tensor, thresholds (optional)} or detection" in message
    message = await error_of(
        await version({"classification": {"output_tensor": "prob", "thresholds": [0.5]}}),
        400,
        "invalid_field",
    )
    assert "has 1 threshold(s) but output 0 of the spec has 3 label(s)" in message
    message = await error_of(
        await version({"classification": {"output_tensor": "logitz", "thresholds": [0.5] * 3}}),
        400,
        "unknown_tensor",
    )
    assert "'logitz' is not in the graph" in message
    message = await error_of(
        await version({"classification": {"output_tensor": "prob", "thresholds": [0.5] * 3}}, spec_id=999),
        400,
        "invalid_field",
    )
    assert "recognition spec 999 does not exist" in message


async def test_deleting_a_network_removes_its_versions_and_the_spec_says_so(
    client: TestClient, tf1_model: ModelFiles
) -> None:
    network = await deploy(client, tf1_model)
    spec = await create_json(client, "/v0.7/recognition/specs", CLASSES_SPEC)
    version = await create_json(
        client,
        "/v0.7/recognition/versions",
        {
            "spec_id": spec["id"],
            "network_id": network["id"],
            "post_processings": [{"classification": {"output_tensor": "prob", "thresholds": [0.5] * 3}}],
        },
    )
    assert (await client.delete(f"/v0.7/networks/{network['id']}")).status == 204
    assert (await client.get(f"/v0.7/recognition/versions/{version['id']}")).status == 404
    spec = await (await client.get(f"/v0.7/recognition/specs/{spec['id']}")).json()
    assert spec["current_version_id"] is None
    versions = await (await client.get(f"/v0.7/recognition/specs/{spec['id']}/versions")).json()
    assert versions["count"] == 0
    response = await client.post(
        f"/v0.7/recognition/specs/{spec['id']}/inference",
        json={"inputs": [{"image": {"source": data_uri(png((1, 1, 1)))}}]},
    )
    assert "has no current version" in await error_of(response, 409, "no_current_version")
    assert client.app[SERVICES].runtime.loaded.get(network["id"]) is None


async def test_spec_crud_hides_outputs_in_lists_and_keeps_them_immutable(client: TestClient) -> None:
    spec = await create_json(client, "/v0.7/recognition/specs", CLASSES_SPEC)
    listed = await (await client.get("/v0.7/recognition/specs/")).json()
    assert listed["count"] == 1 and "outputs" not in listed["results"][0]
    response = await client.patch(f"/v0.7/recognition/specs/{spec['id']}/", json={"outputs": []})
    assert "cannot be changed" in await error_of(response, 400, "immutable_field")
    response = await client.patch(f"/v0.7/recognition/specs/{spec['id']}", json={"current_version_id": 5})
    assert "is not a version of spec" in await error_of(response, 400, "invalid_field")
    response = await client.patch(f"/v0.7/recognition/specs/{spec['id']}", json={"name": "hues"})
    assert (await response.json())["name"] == "hues"
    assert (await client.delete(f"/v0.7/recognition/specs/{spec['id']}")).status == 204
    assert (await client.get(f"/v0.7/recognition/specs/{spec['id']}")).status == 404


async def test_networks_without_batched_output_run_one_image_at_a_time(
    client: TestClient, tf1_model: ModelFiles
) -> None:
    preprocessing = {**unit_scaled(tf1_model), "batched_output": False}
    network = await deploy(
        client,
        tf1_model,
        preprocessing=preprocessing,
        fields={"metadata": '{"streamd": {"max_batch_size": 8, "max_wait_s": 0.5}}'},
    )
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    tasks = await asyncio.gather(
        *(
            run_task(
                client,
                f"/v0.7/networks/{network['id']}/inference",
                json={"inputs": [{"image": {"source": data_uri(png(c))}}], "output_tensors": ["pooled"]},
            )
            for c in colours
        )
    )
    # Without a batch dimension the output keeps the network's own leading dimension of 1.
    assert [t["data"]["tensors"][0] for t in tasks] == [
        {"name": "pooled", "shape": [1, 3], "data": [c / 255 for c in colour]} for colour in colours
    ]
    assert client.app[SERVICES].runtime.loaded[network["id"]].batcher.stats.batch_sizes == {1: 3}


@pytest.fixture
def url_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data", inference={"allow_url_sources": True, "url_max_bytes": 4096})


async def test_url_sources_are_fetched_when_enabled_within_limits(
    aiohttp_client: Any, aiohttp_server: Any, url_settings: Settings, tf1_model: ModelFiles
) -> None:
    from aiohttp import web

    images = {
        "/green.png": png((0, 255, 0)),
        "/big.png": png((0, 255, 0), width=512, height=512) + bytes(8192),
    }

    async def serve(request: web.Request) -> web.Response:
        if request.path not in images:
            return web.Response(status=404)
        return web.Response(body=images[request.path], content_type="image/png")

    app = web.Application()
    app.router.add_get("/{name}", serve)
    server = await aiohttp_server(app)
    client = await aiohttp_client(build_app(url_settings))
    network = await deploy(client, tf1_model, preprocessing=unit_scaled(tf1_model))
    url = f"/v0.7/networks/{network['id']}/inference"

    def body(path: str) -> dict[str, Any]:
        return {"inputs": [{"image": {"source": str(server.make_url(path))}}], "output_tensors": ["pooled"]}

    task = await run_task(client, url, json=body("/green.png"))
    assert task["data"]["tensors"][0]["data"] == [0.0, 1.0, 0.0]
    assert "answered HTTP 404" in await error_of(
        await client.post(url, json=body("/missing.png")), 400, "invalid_source"
    )
    assert "larger than inference.url_max_bytes=4096" in await error_of(
        await client.post(url, json=body("/big.png")), 413, "payload_too_large"
    )


async def test_networks_load_lazily_after_a_restart(
    aiohttp_client: Any, settings: Settings, tf1_model: ModelFiles
) -> None:
    first = await aiohttp_client(build_app(settings))
    network = await deploy(first, tf1_model, preprocessing=unit_scaled(tf1_model))
    await first.close()

    second = await aiohttp_client(build_app(settings))
    assert second.app[SERVICES].runtime.loaded == {}
    task = await run_task(
        second,
        f"/v0.7/networks/{network['id']}/inference",
        json={"inputs": [{"image": {"source": data_uri(png((0, 0, 255)))}}], "output_tensors": ["pooled"]},
    )
    assert task["data"]["tensors"][0]["data"] == [0.0, 0.0, 1.0]
    assert list(second.app[SERVICES].runtime.loaded) == [network["id"]]
