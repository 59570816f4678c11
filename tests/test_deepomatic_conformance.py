"""Deepomatic v0.7 conformance through the real app: what the official client and the seed page's own
examples send, and what they read back (public specs, public network inference, optional thresholds,
JSON bodies whatever their declared type, echoed colour channels, validation messages)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import create_network, network_form, preprocessing_for, wait_task
from tests.factories.models import ModelFiles


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
