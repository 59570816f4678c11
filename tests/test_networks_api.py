"""The networks resource over HTTP, through the real app, SQLite file and TensorFlow SavedModels."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestClient

from streamd.settings import Settings
from tests.conftest import ON_BOTH_DATABASES, create_network, network_form, wait_task
from tests.factories.models import ModelFiles

pytestmark = ON_BOTH_DATABASES

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


async def stored_files(settings: Settings) -> list[str]:
    """Files under <data_dir>/networks, relative to it (read in a thread: not on the loop)."""

    def scan() -> list[str]:
        root = settings.storage.data_dir / "networks"
        return (
            sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []
        )

    return await asyncio.to_thread(scan)


async def staged_entries(settings: Settings) -> list[Path]:
    def scan() -> list[Path]:
        tmp = settings.storage.data_dir / "tmp"
        return list(tmp.iterdir()) if tmp.exists() else []

    return await asyncio.to_thread(scan)


async def test_create_returns_network_object_and_deploys(
    client: TestClient, settings: Settings, tf1_model: ModelFiles
) -> None:
    form = network_form(
        tf1_model,
        fields={"description": "three classes", "metadata": orjson.dumps({"author": "me", "n": 1}).decode()},
    )
    network = await create_network(client, form)

    assert isinstance(network["id"], int)
    assert network["name"] == "tiny classifier"
    assert network["description"] == "three classes"
    assert network["metadata"] == {"author": "me", "n": 1}
    assert network["framework"] == "tensorflow-1.x"
    assert network["postprocessings"] == []
    assert network["preprocessing"] == {
        "inputs": [
            {
                "tensor_name": "input:0",
                "image": {
                    "dimension_order": "NHWC",
                    "target_size": "8x8",
                    "resize_type": "SQUASH",
                    "color_channels": "BGR",
                    "pixel_scaling": 255.0,
                    "mean_file": None,
                    "data_type": "FLOAT32",
                },
            }
        ],
        "batched_output": True,
    }
    assert ISO_Z.match(network["create_date"]) and ISO_Z.match(network["update_date"])

    task = await wait_task(client, network["task_id"])
    assert task["status"] == "success", task
    assert task["error"] is None
    assert task["data"]["network_id"] == network["id"]
    assert task["data"]["inputs"] == [{"tensor_name": "input:0", "shape": [None, 8, 8, 3]}]
    assert ISO_Z.match(task["date_created"]) and ISO_Z.match(task["date_updated"])
    assert await stored_files(settings) == [
        f"{network['id']}/saved_model.pb",
        f"{network['id']}/variables/variables.data-00000-of-00001",
        f"{network['id']}/variables/variables.index",
    ]
    assert await staged_entries(settings) == []


@pytest.fixture(params=["tf2_model", "pbtxt_model"])
def other_model(request: pytest.FixtureRequest) -> ModelFiles:
    return request.getfixturevalue(request.param)


async def test_tf2_exports_and_pbtxt_graphs_deploy(client: TestClient, other_model: ModelFiles) -> None:
    model = other_model
    network = await create_network(client, network_form(model))
    task = await wait_task(client, network["task_id"])
    assert task["status"] == "success", task
    assert task["data"]["inputs"][0]["tensor_name"] == model.input_tensor
    assert task["data"]["inputs"][0]["shape"] == [None, 8, 8, 3]


async def test_official_client_flattened_fields_are_rebuilt_and_coerced(
    client: TestClient, tf1_model: ModelFiles
) -> None:
    """The exact keys and text values the deepomatic-api client sends for a nested preprocessing."""
    fields = {
        "preprocessing.inputs[0]tensor_name": "input",
        "preprocessing.inputs[0]image.dimension_order": "NHWC",
        "preprocessing.inputs[0]image.target_size": "8x8",
        "preprocessing.inputs[0]image.resize_type": "CROP",
        "preprocessing.inputs[0]image.color_channels": "L",
        "preprocessing.inputs[0]image.pixel_scaling": "2.0",
        "preprocessing.inputs[0]image.data_type": "FLOAT32",
        "preprocessing.batched_output": "True",
        "metadata.project.stage": "2",
        "metadata.project.ok": "True",
        "metadata.tags[0]": "a",
        "metadata.tags[1]": "b",
    }
    form = network_form(None, fields=fields, files=tf1_model.contents)
    network = await create_network(client, form)
    image = network["preprocessing"]["inputs"][0]["image"]
    assert network["preprocessing"]["inputs"][0]["tensor_name"] == "input"
    assert image["pixel_scaling"] == 2.0
    assert image["color_channels"] == "L"  # echoed as sent, applied as GRAY
    assert image["resize_type"] == "CROP"
    assert network["preprocessing"]["batched_output"] is True
    assert network["metadata"] == {"project": {"stage": 2, "ok": True}, "tags": ["a", "b"]}
    # GRAY makes the input 1 channel; the graph takes 3, so the deployment must say so.
    task = await wait_task(client, network["task_id"])
    assert task["status"] == "error"
    assert "has shape (?, 8, 8, 3) but the preprocessing produces (?, 8, 8, 1)" in task["error"]


async def test_list_is_paginated_with_absolute_next_links(client: TestClient, tf1_model: ModelFiles) -> None:
    ids = [(await create_network(client, network_form(tf1_model, name=f"n{i}")))["id"] for i in range(3)]
    response = await client.get("/v0.7/networks/?offset=0&limit=2&public=0")
    page = await response.json()
    assert response.status == 200
    assert page["count"] == 3
    assert [n["id"] for n in page["results"]] == ids[:2]
    assert page["previous"] is None
    assert page["next"].startswith("http://") and "offset=2" in page["next"] and "limit=2" in page["next"]

    response = await client.get(page["next"].split(str(client.make_url("")), 1)[1] or page["next"])
    second = await response.json()
    assert [n["id"] for n in second["results"]] == ids[2:]
    assert second["next"] is None
    assert "offset=0" in second["previous"]


async def test_retrieve_patch_and_delete(
    client: TestClient, settings: Settings, tf1_model: ModelFiles
) -> None:
    network = await create_network(client, network_form(tf1_model))
    await wait_task(client, network["task_id"])
    url = f"/v0.7/networks/{network['id']}"

    for path in (url, url + "/"):
        response = await client.get(path)
        assert response.status == 200
        assert (await response.json())["id"] == network["id"]

    response = await client.patch(url + "/", json={"name": "renamed", "metadata": {"k": [1, 2]}})
    patched = await response.json()
    assert response.status == 200
    assert (patched["name"], patched["description"], patched["metadata"]) == ("renamed", "", {"k": [1, 2]})
    assert patched["update_date"] > network["update_date"]
    assert patched["create_date"] == network["create_date"]

    response = await client.delete(url)
    assert response.status == 204
    assert response.content_type == "application/json"
    response = await client.get(url)
    assert response.status == 404
    assert (await response.json())["code"] == "network_not_found"
    assert await stored_files(settings) == []


@pytest.mark.parametrize("field", ["preprocessing", "framework", "task_id", "postprocessings"])
async def test_patch_of_immutable_field_names_it(
    client: TestClient, tf1_model: ModelFiles, field: str
) -> None:
    network = await create_network(client, network_form(tf1_model))
    response = await client.patch(f"/v0.7/networks/{network['id']}", json={field: "x"})
    body = await response.json()
    assert response.status == 400
    assert body["code"] == "immutable_field"
    assert repr(field) in body["error"]


async def test_patch_rejects_unknown_fields_and_bad_types(client: TestClient, tf1_model: ModelFiles) -> None:
    network = await create_network(client, network_form(tf1_model))
    url = f"/v0.7/networks/{network['id']}"
    response = await client.patch(url, json={"colour": "red"})
    assert response.status == 400
    assert "colour: unknown field" in (await response.json())["error"]
    response = await client.patch(url, json={"metadata": "not an object"})
    assert response.status == 400
    assert (await response.json())["error"].startswith("invalid network update: metadata")


async def test_delete_while_deploying_ends_task_in_error(client: TestClient, tf1_model: ModelFiles) -> None:
    network = await create_network(client, network_form(tf1_model))
    response = await client.delete(f"/v0.7/networks/{network['id']}")
    assert response.status == 204
    task = await wait_task(client, network["task_id"])
    assert task["status"] == "error"
    assert task["data"] is None
    assert task["error"] == f"network {network['id']} was deleted before its deployment finished"


async def test_tasks_batch_endpoint_filters_by_ids(client: TestClient, tf1_model: ModelFiles) -> None:
    first = await create_network(client, network_form(tf1_model))
    second = await create_network(client, network_form(tf1_model))
    await wait_task(client, first["task_id"])
    await wait_task(client, second["task_id"])
    response = await client.get(f"/v0.7/tasks/?task_ids={second['task_id']}&offset=0&limit=100")
    page = await response.json()
    assert page["count"] == 1
    assert [t["id"] for t in page["results"]] == [second["task_id"]]
    assert page["results"][0]["status"] == "success"
    response = await client.get(f"/v0.7/tasks?task_ids={first['task_id']},{second['task_id']}&limit=1")
    page = await response.json()
    assert page["count"] == 2 and len(page["results"]) == 1
    assert f"task_ids={first['task_id']}" in page["next"]
    response = await client.get("/v0.7/tasks?task_ids=abc")
    assert response.status == 400 and (await response.json())["code"] == "invalid_query"
