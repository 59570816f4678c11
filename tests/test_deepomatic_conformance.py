"""Deepomatic v0.7 conformance through the real app: what the official client and the seed page's own
examples send, and what they read back (public specs, public network inference, optional thresholds,
JSON bodies whatever their declared type, echoed colour channels, validation messages)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from streamd.api.context import SERVICES
from streamd.app import build_app
from streamd.settings import Settings
from tests.conftest import create_network, make_settings, network_form, preprocessing_for, wait_task
from tests.factories.models import ModelFiles
from tests.factories.public import COLOUR_LABELS, colour_manifest, install_public
from tests.test_inference import data_uri, png, softmax


async def error_body(response: Any, status: int) -> dict[str, Any]:
    body = await response.json()
    assert response.status == status, body
    return body


async def test_nested_validation_errors_name_only_the_offending_fields(client: TestClient) -> None:
    response = await client.post(
        "/v0.7/recognition/specs", json={"name": "s", "outputs": [{"labels": {"labels": [{"id": 1}]}}]}
    )
    body = await error_body(response, 400)
    assert body == {
        "error": "invalid recognition spec: outputs[0].labels.labels[0].name: Field required",
        "code": "invalid_field",
    }
    # A sequence that is really too short keeps its message.
    response = await client.post("/v0.7/recognition/specs", json={"name": "s", "outputs": []})
    body = await error_body(response, 400)
    assert (
        body["error"]
        == "invalid recognition spec: outputs: Tuple should have at least 1 item after validation, not 0"
    )


async def test_color_channels_l_is_echoed_as_sent(client: TestClient, tf1_model: ModelFiles) -> None:
    preprocessing = preprocessing_for(tf1_model, color_channels="L")
    network = await create_network(client, network_form(tf1_model, preprocessing=preprocessing))
    assert network["preprocessing"]["inputs"][0]["image"]["color_channels"] == "L"
    fetched = await (await client.get(f"/v0.7/networks/{network['id']}")).json()
    assert fetched["preprocessing"]["inputs"][0]["image"]["color_channels"] == "L"
    # ...and applied as GRAY: one channel, which this 3-channel graph refuses.
    task = await wait_task(client, network["task_id"])
    assert task["status"] == "error"
    assert "has shape (?, 8, 8, 3) but the preprocessing produces (?, 8, 8, 1)" in task["error"]


async def test_seed_page_patch_example_is_accepted_whatever_its_declared_type(
    client: TestClient, tf1_model: ModelFiles
) -> None:
    network = await create_network(client, network_form(tf1_model))
    path = f"/v0.7/networks/{network['id']}"
    # curl -X PATCH -d '{"name": ...}' sends application/x-www-form-urlencoded
    for content_type in ("application/x-www-form-urlencoded", "text/plain"):
        response = await client.patch(
            path, data=b'{"name": "renamed"}', headers={"Content-Type": content_type}
        )
        body = await response.json()
        assert response.status == 200, body
        assert body["name"] == "renamed"
    for content_type, data in (
        ("application/x-www-form-urlencoded", b"name=renamed"),  # a real form
        ("text/plain", b'["name"]'),  # JSON, but not an object
        ("multipart/form-data; boundary=x", b"--x--\r\n"),
    ):
        response = await client.patch(path, data=data, headers={"Content-Type": content_type})
        body = await error_body(response, 415)
        assert body == {
            "error": "this endpoint takes a JSON object as its body; got Content-Type "
            f"{content_type.split(';')[0]!r} and a body that is not one. Send JSON with 'Content-Type: "
            "application/json' (curl: -H 'Content-Type: application/json'), or multipart/form-data "
            "(curl -F) where an endpoint takes files",
            "code": "unsupported_media_type",
        }
    # Declared as JSON, invalid JSON stays a 400.
    response = await client.patch(path, data=b"{", headers={"Content-Type": "application/json"})
    assert (await error_body(response, 400))["code"] == "invalid_json"
    await wait_task(client, network["task_id"])


COLOURS_SPEC = {
    "name": "colours",
    "outputs": [
        {
            "labels": {
                "roi": "NONE",
                "labels": [{"id": 1, "name": "blue"}, {"id": 2, "name": "green"}, {"id": 3, "name": "red"}],
            }
        }
    ],
}


async def deploy(client: TestClient, model: ModelFiles) -> dict[str, Any]:
    preprocessing = preprocessing_for(model, pixel_scaling=1.0)  # pooled channels = colour / 255
    network = await create_network(client, network_form(model, preprocessing=preprocessing))
    assert (await wait_task(client, network["task_id"]))["status"] == "success"
    return network


async def run_task(client: TestClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body)
    started = await response.json()
    assert response.status == 200, started
    task = await wait_task(client, started["task_id"])
    assert task["status"] == "success", task
    return task["data"]


async def test_classification_thresholds_default_to_0_025_and_are_returned(
    client: TestClient, tf1_model: ModelFiles
) -> None:
    network = await deploy(client, tf1_model)
    spec = await (await client.post("/v0.7/recognition/specs", json=COLOURS_SPEC)).json()
    response = await client.post(
        "/v0.7/recognition/versions",
        json={
            "spec_id": spec["id"],
            "network_id": network["id"],
            "post_processings": [{"classification": {"output_tensor": "prob"}}],  # as demo.py sends it
        },
    )
    version = await response.json()
    assert response.status == 201, version
    effective = [{"classification": {"output_tensor": "prob", "thresholds": [0.025, 0.025, 0.025]}}]
    assert version["post_processings"] == effective
    fetched = await (await client.get(f"/v0.7/recognition/versions/{version['id']}")).json()
    assert fetched["post_processings"] == effective

    colour = (255, 64, 0)  # BGR: logits (4, 5 * 64 / 255, 0)
    body = {"inputs": [{"image": {"source": data_uri(png(colour))}}], "show_discarded": True}
    data = await run_task(client, f"/v0.7/recognition/versions/{version['id']}/inference", body)
    labels = data["outputs"][0]["labels"]
    probs = softmax(np.array([4.0, 5.0 * 64 / 255, 0.0]))  # 0.924, 0.059, 0.017
    assert [(p["label_name"], p["threshold"]) for p in labels["predicted"]] == [
        ("blue", 0.025),
        ("green", 0.025),
    ]
    assert [p["score"] for p in labels["predicted"]] == pytest.approx(probs[:2], rel=1e-5)
    assert [(p["label_name"], p["threshold"]) for p in labels["discarded"]] == [("red", 0.025)]
    assert labels["discarded"][0]["score"] == pytest.approx(probs[2], rel=1e-5)


@pytest.fixture
def public_dir(tmp_path: Path, tf1_model: ModelFiles) -> Path:
    public = tmp_path / "public"
    install_public(public, "colours", tf1_model, colour_manifest(thresholds=[0.5, 0.5, 0.01]))
    install_public(public, "colours-default", tf1_model, colour_manifest())
    install_public(public, "raw-only", tf1_model, colour_manifest(recognition=False))
    broken = colour_manifest(thresholds=[0.5])  # one threshold for three labels
    install_public(public, "wrong-thresholds", tf1_model, broken)
    return public


@pytest.fixture
def public_settings(tmp_path: Path, public_dir: Path) -> Settings:
    return make_settings(tmp_path / "data", networks={"public_dir": str(public_dir)})


@pytest.fixture
async def public_client(aiohttp_client: Any, public_settings: Settings) -> TestClient:
    return await aiohttp_client(build_app(public_settings))


async def test_public_specs_are_listed_retrieved_and_run(public_client: TestClient) -> None:
    client = public_client
    network = await (await client.get("/v0.7/networks/public/colours")).json()
    date = network["create_date"]
    summary = {
        "id": "colours",
        "name": "Colours",
        "description": "blue, green or red",
        "metadata": {},
        "create_date": date,
        "update_date": date,
    }
    # The official client lists with ?public=1 and follows absolute `next` links.
    page = await (await client.get("/v0.7/recognition/public/?public=1&offset=0&limit=1")).json()
    assert page["count"] == 2  # raw-only has no spec, wrong-thresholds was skipped
    assert page["results"] == [summary]
    assert page["next"].endswith("/v0.7/recognition/public/?public=1&offset=1&limit=1")
    page = await (await client.get("/v0.7/recognition/public")).json()
    assert [spec["id"] for spec in page["results"]] == ["colours", "colours-default"]

    spec = await (await client.get("/v0.7/recognition/public/colours/")).json()
    outputs = [{"labels": {"roi": "NONE", "exclusive": False, "labels": COLOUR_LABELS}}]
    assert spec == {**summary, "outputs": outputs}
    for slug in ("raw-only", "nope"):
        response = await client.get(f"/v0.7/recognition/public/{slug}")
        assert (await error_body(response, 404))["code"] == "spec_not_found"

    body = {"inputs": [{"image": {"source": data_uri(png((255, 64, 0)))}}], "show_discarded": True}
    probs = softmax(np.array([4.0, 5.0 * 64 / 255, 0.0]))  # 0.924, 0.059, 0.017
    labels = (await run_task(client, "/v0.7/recognition/public/colours/inference", body))["outputs"][0][
        "labels"
    ]
    assert [(p["label_id"], p["threshold"]) for p in labels["predicted"]] == [(1, 0.5), (3, 0.01)]
    assert [p["score"] for p in labels["predicted"]] == pytest.approx([probs[0], probs[2]], rel=1e-5)
    assert [(p["label_id"], p["threshold"]) for p in labels["discarded"]] == [(2, 0.5)]
    labels = (await run_task(client, "/v0.7/recognition/public/colours-default/inference", body))["outputs"][
        0
    ]["labels"]
    assert [(p["label_id"], p["threshold"]) for p in labels["predicted"]] == [(1, 0.025), (2, 0.025)]

    response = await client.post("/v0.7/recognition/public/colours/inference", json={"inputs": []})
    assert (await error_body(response, 400))["error"].startswith("invalid inference request: inputs: give at")

    # test_create_custom_reco_and_infer: a private spec made from a public spec's outputs.
    response = await client.post("/v0.7/recognition/specs", json={"name": "mine", "outputs": spec["outputs"]})
    created = await response.json()
    assert response.status == 201, created
    assert created["outputs"] == outputs


async def test_public_networks_run_raw_inference(public_client: TestClient) -> None:
    body = {"inputs": [{"image": {"source": data_uri(png((0, 255, 0)))}}], "output_tensors": ["pooled"]}
    data = await run_task(public_client, "/v0.7/networks/public/raw-only/inference", body)
    assert data == {"tensors": [{"name": "pooled", "shape": [3], "data": [0.0, 1.0, 0.0]}]}
    response = await public_client.post("/v0.7/networks/public/nope/inference", json=body)
    assert (await error_body(response, 404))["code"] == "network_not_found"
    # A public network and its public spec share one load.
    await run_task(public_client, "/v0.7/networks/public/colours/inference", body)
    await run_task(
        public_client,
        "/v0.7/recognition/public/colours/inference",
        {"inputs": body["inputs"]},
    )
    assert sorted(map(str, public_client.app[SERVICES].runtime.loaded)) == ["colours", "raw-only"]
