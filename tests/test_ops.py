"""Operational endpoints and the OpenAPI document."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from streamd import __version__
from streamd.api.routes import ROUTES


async def test_health_readiness_and_info(client: TestClient) -> None:
    for path in ("/healthz", "/healthz/", "/readyz"):
        response = await client.get(path)
        assert response.status == 200
        assert response.content_type == "application/json"
    response = await client.get("/info")
    info = await response.json()
    assert info["version"] == __version__
    assert info["tensorflow_version"].startswith("2.")
    assert info["counts"] == {"networks": 0, "public_networks": 0, "pending_tasks": 0}
    assert response.headers["X-Request-ID"]


async def test_openapi_describes_every_route(client: TestClient) -> None:
    document = await (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    described = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert described == {(route.method, route.path) for route in ROUTES}
    assert document["paths"]["/v0.7/networks/{network_id}"]["patch"]["parameters"][0]["name"] == "network_id"
    assert document["paths"]["/healthz"]["get"]["security"] == []


async def test_every_route_answers_with_and_without_trailing_slash(client: TestClient) -> None:
    for route in ROUTES:
        if route.method != "GET" or "{" in route.path or route.path.endswith(".json") or route.path == "/":
            continue
        plain = await client.get(route.path)
        slashed = await client.get(route.path + "/")
        assert plain.status == slashed.status == 200, route.path
