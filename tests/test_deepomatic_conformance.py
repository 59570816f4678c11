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
