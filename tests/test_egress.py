"""Egress rules: streams reach cameras and receivers on private networks, but not link-local addresses
(the cloud metadata service), "this host" or the daemon itself; webhooks never follow redirects."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from streamd.app import build_app
from streamd.egress import EgressPolicy, EgressResolver
from streamd.settings import EgressConfig, ServerConfig, Settings
from tests.conftest import make_settings, wait_until
from tests.factories.models import ModelFiles
from tests.factories.videos import encode_h264
from tests.test_streams import Receiver, create_stream, setup_chain


def stream_body(source: str = "colours.mp4", sink: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": "cam",
        "source": {"uri": source},
        "chain": "whole",
        "sinks": [sink or {"type": "jsonl", "path": "cam.jsonl"}],
    }


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (stream_body("rtsp://169.254.169.254/latest/meta-data"), "source: 169.254.169.254 (169.254.169.254)"),
        (stream_body("http://[fe80::1]:8554/cam"), "source: fe80::1 (fe80::1)"),
        (stream_body("tcp://0.0.0.0:22"), "source: 0.0.0.0"),
        (stream_body(sink={"type": "webhook", "url": "http://169.254.169.254/hook"}), "sinks[0]: 169.254"),
        (stream_body("rtsp://localhost:8080/x"), "source: localhost (127.0.0.1)"),  # the daemon itself
    ],
)
async def test_streams_may_not_reach_denied_addresses(
    app_client: TestClient,
    media_settings: Settings,
    tf1_model: ModelFiles,
    body: dict[str, Any],
    fragment: str,
) -> None:
    await setup_chain(app_client, tf1_model)
    response = await app_client.post("/v0.7/streams", json=body)
    error = await response.json()
    assert (response.status, error["code"]) == (400, "egress_denied"), error
    assert fragment in error["error"] and "is not allowed by the egress rules" in error["error"]
    assert (await (await app_client.get("/v0.7/streams")).json())["count"] == 0


def test_allow_ranges_make_exceptions_and_the_own_address_is_denied_only_on_its_port() -> None:
    server = ServerConfig(host="0.0.0.0", port=8080)
    default = EgressPolicy(EgressConfig(), server)
    ip = ipaddress.ip_address
    assert default.allows(ip("10.0.0.7"), 554) and default.allows(ip("192.168.1.20"), 80)
    assert default.allows(ip("127.0.0.1"), 9000)
    assert not default.allows(ip("127.0.0.1"), 8080) and not default.allows(ip("169.254.169.254"), 80)
    custom = EgressPolicy(
        EgressConfig(deny_cidrs=("10.0.0.0/8",), allow_cidrs=("10.1.2.0/24",), allow_self=True), server
    )
    assert custom.allows(ip("10.1.2.3"), 554) and not custom.allows(ip("10.9.9.9"), 554)
    assert custom.allows(ip("127.0.0.1"), 8080) and custom.allows(ip("169.254.169.254"), 80)


async def test_the_webhook_resolver_connects_only_to_allowed_addresses() -> None:
    policy = EgressPolicy(EgressConfig(deny_cidrs=("127.0.0.0/8", "::1/128")), ServerConfig())
    resolver = EgressResolver(policy)
    try:
        with pytest.raises(OSError, match="localhost is not allowed by the egress rules"):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()


@pytest.fixture
def self_allowed(tmp_path: Path) -> Settings:
    media = tmp_path / "media"
    encode_h264(media / "colours.mp4", frames=30, fps=30)
    return make_settings(
        tmp_path / "data", storage={"media_roots": [str(media)]}, egress={"allow_self": True}
    )


async def test_allow_self_lets_a_stream_reach_the_daemons_own_port(
    aiohttp_client: Any, self_allowed: Settings, tf1_model: ModelFiles
) -> None:
    client = await aiohttp_client(build_app(self_allowed))
    await setup_chain(client, tf1_model)
    response = await client.post("/v0.7/streams", json=stream_body("rtsp://localhost:8080/x"))
    assert response.status == 201, await response.json()


async def test_webhooks_do_not_follow_redirects_and_say_so(
    app_client: TestClient, aiohttp_server: Any, media_settings: Settings, tf1_model: ModelFiles
) -> None:
    elsewhere = Receiver()
    stolen = await elsewhere.serve(aiohttp_server, "/stolen")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(stolen)

    app = web.Application()
    app.router.add_post("/hook", redirect)
    server = await aiohttp_server(app)
    await setup_chain(app_client, tf1_model)
    stream = await create_stream(
        app_client, media_settings, sinks=[{"type": "webhook", "url": str(server.make_url("/hook"))}]
    )

    async def settled() -> dict[str, Any] | None:
        status = await (await app_client.get(f"/v0.7/streams/{stream['id']}")).json()
        return status if status["sinks"][0]["dropped"].get("rejected") == 30 else None

    status = await wait_until(settled, 30)
    assert elsewhere.records == []
    assert (
        "HTTP 307" in status["sinks"][0]["last_error"]
        and "redirect: not followed" in status["sinks"][0]["last_error"]
    )


async def test_a_webhook_that_cannot_connect_says_only_connection_failed(
    app_client: TestClient, media_settings: Settings, tf1_model: ModelFiles
) -> None:
    from tests.factories.daemon import free_port

    await setup_chain(app_client, tf1_model)
    url = f"http://127.0.0.1:{free_port()}/hook"
    stream = await create_stream(app_client, media_settings, sinks=[{"type": "webhook", "url": url}])

    async def failing() -> dict[str, Any] | None:
        status = await (await app_client.get(f"/v0.7/streams/{stream['id']}")).json()
        return status if status["sinks"][0]["last_error"] else None

    status = await wait_until(failing, 30)
    assert status["sinks"][0]["last_error"] == f"connection failed posting to {url}"
