"""Bad input to the networks API: a clear JSON 4xx or a task in error, and nothing left behind."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from streamd.api.context import SERVICES
from streamd.app import build_app
from streamd.settings import Settings
from tests.conftest import (
    create_network,
    make_settings,
    metric_sample,
    network_form,
    preprocessing_for,
    wait_task,
)
from tests.factories.models import ModelFiles
from tests.test_networks_api import staged_entries, stored_files


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=array.dtype == object)
    return buffer.getvalue()


async def assert_error(response: Any, status: int, code: str, *fragments: str) -> dict[str, Any]:
    assert response.content_type == "application/json"
    body = await response.json()
    assert response.status == status, body
    assert set(body) == {"error", "code"}
    assert body["code"] == code, body
    for fragment in fragments:
        assert fragment in body["error"], body["error"]
    return body


async def assert_clean(client: TestClient) -> None:
    """No network row, no network files, no staged upload."""
    settings = client.app[SERVICES].settings
    page = await (await client.get("/v0.7/networks")).json()
    assert page["count"] == 0
    assert await stored_files(settings) == []
    assert await staged_entries(settings) == []


def with_image(model: ModelFiles, **image: Any) -> dict[str, Any]:
    return preprocessing_for(model, **image)


REJECTED_AT_UPLOAD: list[tuple[str, Callable[[ModelFiles], dict[str, Any]], str, tuple[str, ...]]] = [
    (
        "unsupported framework",
        lambda m: {"fields": {}, "framework": "caffe"},
        "invalid_field",
        ("framework 'caffe' is not supported; use one of: tensorflow-1.x",),
    ),
    (
        "unknown dimension order",
        lambda m: {"preprocessing": with_image(m, dimension_order="XYZW")},
        "invalid_field",
        ("preprocessing.inputs[0].image.dimension_order", "'NCHW', 'NCWH', 'NHWC' or 'NWHC'", "'XYZW'"),
    ),
    (
        "bad target size",
        lambda m: {"preprocessing": with_image(m, target_size="8by8")},
        "invalid_field",
        ("target_size must be 'WxH' or 'N'",),
    ),
    (
        "uint8 with mean",
        lambda m: {
            "preprocessing": with_image(m, data_type="UINT8", mean_file="mean.npy"),
            "files": {"mean.npy": npy_bytes(np.ones((1, 1, 3)))},
        },
        "invalid_field",
        ("data_type UINT8 feeds raw pixels",),
    ),
    (
        "unknown preprocessing key",
        lambda m: {"preprocessing": with_image(m, gamma=2)},
        "invalid_field",
        ("preprocessing.inputs[0].image.gamma: unknown field",),
    ),
    (
        "missing name",
        lambda m: {"name": None},
        "invalid_field",
        ("name: Field required",),
    ),
    (
        "path traversal in file name",
        lambda m: {"files": {"../evil.npy": b"x"}},
        "invalid_file",
        ("'../evil.npy' must be a plain file name",),
    ),
    (
        "absolute file name",
        lambda m: {"files": {"/etc/passwd": b"x"}},
        "invalid_file",
        ("etc/passwd' must be a plain file name",),
    ),
    (
        "unknown file",
        lambda m: {"files": {"model.h5": b"x"}},
        "invalid_file",
        ("unexpected file part 'model.h5'",),
    ),
    (
        "unreferenced mean file",
        lambda m: {"files": {"mean.npy": npy_bytes(np.ones(3))}},
        "invalid_file",
        ("mean file mean.npy is not named by any preprocessing input's mean_file",),
    ),
    (
        "referenced mean file missing",
        lambda m: {"preprocessing": with_image(m, mean_file="mean.npy")},
        "invalid_file",
        ("names mean_file mean.npy but no file part with that name was uploaded",),
    ),
    (
        "mean file that is not an array",
        lambda m: {"preprocessing": with_image(m, mean_file="mean.npy"), "files": {"mean.npy": b"garbage"}},
        "invalid_mean_file",
        ("mean file 'mean.npy' is not a numpy array",),
    ),
    (
        "pickled mean file",
        lambda m: {
            "preprocessing": with_image(m, mean_file="mean.npy"),
            "files": {"mean.npy": npy_bytes(np.array([{"a": 1}], dtype=object))},
        },
        "invalid_mean_file",
        ("allow_pickle=False",),
    ),
    (
        "variables without index",
        lambda m: {"drop": "variables.index"},
        "invalid_file",
        ("variables.data-* files need their variables.index",),
    ),
    (
        "no model file",
        lambda m: {"drop": "saved_model.pb"},
        "invalid_file",
        ("no model file: upload saved_model.pb",),
    ),
]


@pytest.mark.parametrize(
    ("case", "make", "code", "fragments"), REJECTED_AT_UPLOAD, ids=[case[0] for case in REJECTED_AT_UPLOAD]
)
async def test_bad_uploads_get_400_and_leave_nothing(
    client: TestClient,
    tf1_model: ModelFiles,
    case: str,
    make: Callable[[ModelFiles], dict[str, Any]],
    code: str,
    fragments: tuple[str, ...],
) -> None:
    spec = make(tf1_model)
    files = {k: v for k, v in tf1_model.contents.items() if k != spec.get("drop")}
    files.update(spec.get("files", {}))
    form = FormData()
    if spec.get("name", "x") is not None:
        form.add_field("name", "bad")
    form.add_field("framework", spec.get("framework", "tensorflow-1.x"))
    form.add_field(
        "preprocessing", orjson.dumps(spec.get("preprocessing", preprocessing_for(tf1_model))).decode()
    )
    for name, content in files.items():
        form.add_field(name, content, filename="upload.bin")
    response = await client.post("/v0.7/networks", data=form)
    await assert_error(response, 400, code, *fragments)
    await assert_clean(client)


async def test_duplicate_file_parts_are_rejected(client: TestClient, tf1_model: ModelFiles) -> None:
    form = network_form(tf1_model)
    form.add_field("variables.index", tf1_model.contents["variables.index"], filename="variables.index")
    response = await client.post("/v0.7/networks", data=form)
    await assert_error(response, 400, "invalid_file", "'variables.index' is uploaded twice")
    await assert_clean(client)


async def test_duplicate_fields_are_rejected(client: TestClient, tf1_model: ModelFiles) -> None:
    form = network_form(tf1_model)
    form.add_field("name", "again")
    response = await client.post("/v0.7/networks", data=form)
    await assert_error(response, 400, "invalid_field", "form field 'name' is given twice")
    await assert_clean(client)


@pytest.fixture
def small_upload_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data", server={"upload_max_bytes": 4096})


@pytest.fixture
def keyed_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data", auth={"api_keys": ["k1", "k2"]})


async def test_upload_over_the_limit_gets_413(
    aiohttp_client: Any, small_upload_settings: Settings, tf1_model: ModelFiles
) -> None:
    client = await aiohttp_client(build_app(small_upload_settings))
    big = {"variables.data-00000-of-00001": bytes(8192)}
    response = await client.post("/v0.7/networks", data=network_form(tf1_model, files=big))
    await assert_error(response, 413, "payload_too_large", "server.upload_max_bytes=4096")

    # Without a Content-Length the limit is enforced while streaming.
    form = network_form(tf1_model, files=big)
    writer = form()

    async def chunks() -> Any:
        data = bytearray()

        class Sink:
            async def write(self, chunk: bytes) -> None:
                data.extend(chunk)

        await writer.write(Sink())
        for start in range(0, len(data), 1000):
            yield bytes(data[start : start + 1000])

    response = await client.post(
        "/v0.7/networks", data=chunks(), headers={"Content-Type": writer.content_type}
    )
    await assert_error(response, 413, "payload_too_large")
    await assert_clean(client)


async def test_bodies_that_are_not_json_objects_get_415(client: TestClient) -> None:
    response = await client.post("/v0.7/networks", data={"name": "x"})
    await assert_error(response, 415, "unsupported_media_type", "multipart/form-data")
    response = await client.patch(
        "/v0.7/networks/1", data="name=x", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    await assert_error(response, 415, "unsupported_media_type", "-H 'Content-Type: application/json'")


async def test_json_create_is_told_to_use_multipart(client: TestClient) -> None:
    response = await client.post("/v0.7/networks", json={"name": "x"})
    await assert_error(response, 415, "unsupported_media_type", "multipart/form-data")


MODEL_FAILURES = [
    ("garbage graph", {"saved_model.pb": b"\x00\x01garbage" * 10}, None, "is not a TensorFlow SavedModel"),
    ("truncated graph", "truncate", None, "is not a TensorFlow SavedModel"),
    ("missing variables", "no-variables", None, "its variables are missing"),
    (
        "unknown tensor",
        None,
        {"tensor_name": "images"},
        "'images' is not a tensor of the graph; its placeholders are: input:0",
    ),
    (
        "mean does not broadcast",
        {"mean.npy": npy_bytes(np.ones((2, 2, 3)))},
        {"mean_file": "mean.npy"},
        "mean_file 'mean.npy' has shape (2, 2, 3) in the input layout, which does not broadcast",
    ),
]


@pytest.mark.parametrize(
    ("case", "files", "image", "message"), MODEL_FAILURES, ids=[c[0] for c in MODEL_FAILURES]
)
async def test_models_that_do_not_load_end_their_task_in_error_and_are_removed(
    client: TestClient, tf1_model: ModelFiles, case: str, files: Any, image: Any, message: str
) -> None:
    contents = dict(tf1_model.contents)
    if files == "truncate":
        contents["saved_model.pb"] = contents["saved_model.pb"][: len(contents["saved_model.pb"]) // 2]
    elif files == "no-variables":
        contents = {"saved_model.pb": contents["saved_model.pb"]}
    elif files:
        contents.update(files)
    preprocessing = preprocessing_for(tf1_model)
    if image and "tensor_name" in image:
        preprocessing["inputs"][0]["tensor_name"] = image.pop("tensor_name")
    preprocessing["inputs"][0]["image"].update(image or {})
    form = network_form(None, preprocessing=preprocessing, files=contents)
    network = await create_network(client, form)

    task = await wait_task(client, network["task_id"])
    assert task["status"] == "error"
    assert task["data"] is None
    assert task["error"].startswith(f"network {network['id']} was not deployed and has been removed: ")
    assert message in task["error"]
    response = await client.get(f"/v0.7/networks/{network['id']}")
    assert response.status == 404
    await assert_clean(client)
    assert await metric_sample(client, "streamd_network_deployments_total", outcome="error") == 1
    assert await metric_sample(client, "streamd_network_deployments_total", outcome="success") is None


async def test_mean_files_that_broadcast_deploy(client: TestClient, tf1_model: ModelFiles) -> None:
    for name, content in (
        ("mean.npy", npy_bytes(np.full((1, 1, 3), 0.5))),
        ("mean.binaryproto", blobproto()),
    ):
        preprocessing = preprocessing_for(tf1_model, mean_file=name)
        network = await create_network(
            client, network_form(tf1_model, preprocessing=preprocessing, files={name: content})
        )
        task = await wait_task(client, network["task_id"])
        assert task["status"] == "success", task


def blobproto() -> bytes:
    from tests.test_meanfile import encode_blobproto

    return encode_blobproto(np.array([[[0.1]], [[0.2]], [[0.3]]], dtype=np.float32))


async def test_unknown_routes_and_methods_answer_json(client: TestClient) -> None:
    await assert_error(await client.get("/v0.7/nothing"), 404, "not_found", "GET /openapi.json lists them")
    await assert_error(await client.put("/v0.7/networks/1", json={}), 405, "method_not_allowed", "allowed:")
    await assert_error(await client.get("/v0.7/networks/abc"), 404, "not_found", "ids are integers")
    await assert_error(
        await client.get("/v0.7/networks/99"), 404, "network_not_found", "network 99 does not exist"
    )
    await assert_error(await client.get("/v0.7/tasks/99/"), 404, "task_not_found")
    await assert_error(await client.get("/v0.7/networks?limit=0"), 400, "invalid_query", "limit='0'")
    await assert_error(
        await client.patch("/v0.7/networks/1", data=b"{", headers={"Content-Type": "application/json"}),
        400,
        "invalid_json",
    )


async def test_api_keys_are_required_when_configured(aiohttp_client: Any, keyed_settings: Settings) -> None:
    client = await aiohttp_client(build_app(keyed_settings))
    await assert_error(await client.get("/v0.7/networks"), 401, "unauthorized", "X-API-KEY")
    await assert_error(await client.get("/v0.7/networks", headers={"X-API-KEY": "nope"}), 401, "unauthorized")
    await assert_error(await client.get("/info"), 401, "unauthorized")
    response = await client.get("/v0.7/networks/", headers={"X-API-KEY": "k2", "X-APP-ID": "ignored"})
    assert response.status == 200
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
