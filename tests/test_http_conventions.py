"""HTTP conventions: 405 names the allowed methods in `Allow`, HEAD answers wherever GET does, and the
auth-exempt paths stay exempt with a trailing slash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from streamd.api.routes import ROUTES
from streamd.app import build_app
from streamd.settings import Settings
from tests.conftest import make_settings
from tests.test_network_errors import assert_error


async def test_405_carries_an_allow_header(client: TestClient) -> None:
    response = await client.put("/v0.7/networks/1")
    await assert_error(response, 405, "method_not_allowed", "PUT is not allowed on /v0.7/networks/1")
    assert response.headers["Allow"] == "DELETE, GET, HEAD, PATCH"
    response = await client.delete("/v0.7/networks/")
    await assert_error(response, 405, "method_not_allowed", "allowed: GET, HEAD, POST")
    assert response.headers["Allow"] == "GET, HEAD, POST"
    response = await client.get("/v0.7/streams/1/pause")
    assert response.status == 405
    assert response.headers["Allow"] == "POST"


async def test_head_answers_wherever_get_does(client: TestClient) -> None:
    for route in ROUTES:
        if route.method != "GET" or "{" in route.path:
            continue
        got = await client.get(route.path)
        head = await client.head(route.path)
        assert head.status == got.status == 200, route.path
        assert head.headers["Content-Type"] == got.headers["Content-Type"], route.path
        assert await head.read() == b"", route.path
    response = await client.head("/v0.7/networks/99")
    assert response.status == 404
    response = await client.head("/v0.7/streams/1/pause")
    assert response.status == 405
    assert response.headers["Allow"] == "POST"


@pytest.fixture
def keyed_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data", auth={"api_keys": ["k1"]})


@pytest.mark.parametrize("path", ["/healthz", "/healthz/", "/readyz", "/readyz/", "/metrics", "/metrics/"])
async def test_probe_paths_need_no_key_with_or_without_trailing_slash(
    aiohttp_client: Any, keyed_settings: Settings, path: str
) -> None:
    client = await aiohttp_client(build_app(keyed_settings))
    assert (await client.get(path)).status == 200
    assert (await client.head(path)).status == 200


@pytest.mark.parametrize("path", ["/info", "/info/", "/v0.7/networks/", "/healthz/x", "/", "/metricsx"])
async def test_other_paths_still_need_the_key(
    aiohttp_client: Any, keyed_settings: Settings, path: str
) -> None:
    client = await aiohttp_client(build_app(keyed_settings))
    await assert_error(await client.get(path), 401, "unauthorized", "X-API-KEY")
