"""Storage does not grow without bound: finished tasks are pruned after a retention, and the text a
client may store (names, descriptions, metadata, label names) has length limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from streamd.app import build_app
from streamd.settings import Settings
from tests.conftest import make_settings, wait_until
from tests.factories.models import ModelFiles
from tests.test_inference import data_uri, deploy, png, run_task


@pytest.fixture
def short_retention(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data", storage={"task_retention_s": 0.5})


async def test_finished_tasks_are_pruned_after_the_retention_but_a_networks_task_stays(
    aiohttp_client: Any, short_retention: Settings, tf1_model: ModelFiles
) -> None:
    client = await aiohttp_client(build_app(short_retention))
    network = await deploy(client, tf1_model)
    body = {"inputs": [{"image": {"source": data_uri(png((255, 0, 0)))}}], "output_tensors": ["prob"]}
    task = await run_task(client, f"/v0.7/networks/{network['id']}/inference", json=body)
    assert task["status"] == "success"

    async def pruned() -> bool:
        return (await client.get(f"/v0.7/tasks/{task['id']}")).status == 404

    await wait_until(pruned, 10)
    deployment = await (await client.get(f"/v0.7/tasks/{network['task_id']}")).json()
    assert deployment["status"] == "success"  # the network row still names it
    assert (await (await client.get("/v0.7/tasks")).json())["count"] == 1


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("/v0.7/recognition/specs", {"description": "d" * 10_001}, "description"),
        ("/v0.7/recognition/specs", {"metadata": {"blob": "x" * 70_000}}, "metadata is 70011 bytes as JSON"),
        ("/v0.7/recognition/specs", {"label": "l" * 256}, "name"),
    ],
)
async def test_recognition_specs_have_bounded_text(
    client: TestClient, path: str, body: dict[str, Any], fragment: str
) -> None:
    label = body.pop("label", "cat")
    spec = {"name": "s", "outputs": [{"labels": {"labels": [{"id": 1, "name": label}]}}], **body}
    response = await client.post(path, json=spec)
    error = await response.json()
    assert response.status == 400, error
    assert fragment in error["error"]
    assert (await (await client.get(path)).json())["count"] == 0


async def test_network_metadata_is_bounded_on_patch(client: TestClient, tf1_model: ModelFiles) -> None:
    network = await deploy(client, tf1_model)
    response = await client.patch(
        f"/v0.7/networks/{network['id']}", json={"metadata": {"notes": ["n" * 1000] * 70}}
    )
    error = await response.json()
    assert response.status == 400 and "at most 65536 are stored" in error["error"], error
    stored = await (await client.get(f"/v0.7/networks/{network['id']}")).json()
    assert stored["metadata"] == {}
