"""The OpenAPI document: valid OpenAPI 3.1, and generated from the models the handlers validate with,
so request bodies, query parameters and responses are described, and real answers match it."""

from __future__ import annotations

import asyncio
from typing import Any

import jsonschema
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from streamd.api.http import MAX_PAGE_SIZE
from streamd.api.routes import ROUTES
from tests.conftest import create_network, network_form, wait_task
from tests.factories.models import ModelFiles


async def document_of(client: TestClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status == 200
    return await response.json()


async def test_document_is_valid_openapi_with_unique_operation_ids(client: TestClient) -> None:
    document = await document_of(client)
    # Raises OpenAPIValidationError naming the offending path; in a thread: it reads its meta-schemas.
    await asyncio.to_thread(validate, document)
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)) == len(ROUTES)
    assert {"run_chain_post", "run_chain_put"} <= set(ids)


async def test_request_bodies_come_from_the_handlers_models(client: TestClient) -> None:
    paths = (await document_of(client))["paths"]
    assert paths["/v0.7/networks/{network_id}"]["patch"]["requestBody"]["content"] == {
        "application/json": {"schema": {"$ref": "#/components/schemas/NetworkPatch"}}
    }
    for path, model in (
        ("/v0.7/streams", "StreamBody"),
        ("/v0.7/recognition/specs", "RecognitionSpecCreate"),
        ("/v0.7/recognition/versions", "RecognitionVersionCreate"),
        ("/v0.7/chains/{name}/run", "ChainRunBody"),
    ):
        body = paths[path]["post"]["requestBody"]
        assert body["required"] is True
        assert body["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{model}"}
    assert paths["/chain/{name}"]["put"]["requestBody"] == paths["/chain/{name}"]["post"]["requestBody"]
    upload = paths["/v0.7/networks"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert upload["schema"]["required"] == ["name", "framework", "preprocessing"]
    assert upload["schema"]["properties"]["preprocessing"] == {"$ref": "#/components/schemas/Preprocessing"}
    assert upload["schema"]["additionalProperties"] == {
        "type": "string",
        "format": "binary",
        "description": upload["schema"]["additionalProperties"]["description"],
    }
    assert upload["encoding"]["preprocessing"] == {"contentType": "application/json"}
    inference = paths["/v0.7/networks/{network_id}/inference"]["post"]["requestBody"]["content"]
    assert inference["application/json"]["schema"] == {"$ref": "#/components/schemas/InferenceBody"}
    assert "multipart/form-data" in inference


async def test_query_parameters_are_declared_with_their_bounds(client: TestClient) -> None:
    paths = (await document_of(client))["paths"]
    params = {p["name"]: p for p in paths["/v0.7/networks"]["get"]["parameters"]}
    assert params["limit"]["in"] == "query"
    assert params["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_PAGE_SIZE,
        "default": 100,
    }
    assert params["offset"]["schema"]["minimum"] == 0
    tasks = {p["name"]: p for p in paths["/v0.7/tasks"]["get"]["parameters"]}
    assert tasks["task_ids"]["schema"] == {"type": "array", "items": {"type": "integer", "minimum": 1}}
    page = {p["name"]: p for p in paths["/"]["get"]["parameters"]}
    assert page["refresh"]["schema"] == {"type": "integer", "minimum": 0, "maximum": 3600, "default": 2}
    patch = paths["/v0.7/networks/{network_id}"]["patch"]["parameters"]
    assert patch == [{"name": "network_id", "in": "path", "required": True, "schema": {"type": "integer"}}]


async def test_every_operation_describes_its_answers(client: TestClient) -> None:
    document = await document_of(client)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert responses["4XX"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"
            }, (method, path)
            success = [status for status in responses if status.startswith("2")]
            assert len(success) == 1, (method, path)
            if success != ["204"]:
                assert responses[success[0]]["content"], (method, path)


def check(document: dict[str, Any], method: str, path: str, status: int, body: Any) -> None:
    """Validate a real answer against the schema the document gives for it."""
    responses = document["paths"][path][method]["responses"]
    schema = responses[str(status)]["content"]["application/json"]["schema"]
    jsonschema.validate(body, {**schema, "components": document["components"]})


async def test_real_answers_match_the_document(client: TestClient, tf1_model: ModelFiles) -> None:
    document = await document_of(client)
    network = await create_network(client, network_form(tf1_model))
    check(document, "post", "/v0.7/networks", 201, network)
    task = await wait_task(client, network["task_id"])
    check(document, "get", "/v0.7/tasks/{task_id}", 200, task)
    for method, path, url in (
        ("get", "/v0.7/networks", "/v0.7/networks"),
        ("get", "/v0.7/networks/{network_id}", f"/v0.7/networks/{network['id']}"),
        ("get", "/v0.7/tasks", "/v0.7/tasks"),
        ("get", "/v0.7/streams", "/v0.7/streams"),
        ("get", "/v0.7/chains", "/v0.7/chains"),
        ("get", "/info", "/info"),
        ("get", "/healthz", "/healthz"),
    ):
        response = await client.get(url)
        check(document, method, path, response.status, await response.json())
    response = await client.get("/v0.7/networks/abc")
    error = await response.json()
    jsonschema.validate(
        error, {"$ref": "#/components/schemas/ErrorBody", "components": document["components"]}
    )
