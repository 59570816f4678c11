"""The route table: every endpoint once, registered with and without a trailing slash, and the
OpenAPI document generated from the same table so the two cannot drift apart."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from streamd import __version__
from streamd.api import networks, ops, tasks
from streamd.api.http import json_response
from streamd.api.middleware import OPEN_PATHS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())


ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", ops.healthz, "Liveness: the event loop answers.", "operations"),
    Route(
        "GET",
        "/readyz",
        ops.readyz,
        "Readiness: the store is open and start-up recovery is done.",
        "operations",
    ),
    Route("GET", "/info", ops.info, "Version, TensorFlow version and resource counts.", "operations"),
    Route("GET", "/openapi.json", openapi, "This document.", "operations"),
    Route("GET", "/v0.7/networks", networks.list_networks, "List networks (offset/limit pages).", "networks"),
    Route(
        "POST",
        "/v0.7/networks",
        networks.create_network,
        "Register a TensorFlow SavedModel (multipart: fields and files); starts its deployment task.",
        "networks",
    ),
    Route(
        "GET",
        "/v0.7/networks/public",
        networks.list_public_networks,
        "List operator-installed public networks.",
        "networks",
    ),
    Route(
        "GET",
        "/v0.7/networks/public/{slug}",
        networks.get_public_network,
        "Retrieve a public network by slug.",
        "networks",
    ),
    Route("GET", "/v0.7/networks/{network_id}", networks.get_network, "Retrieve a network.", "networks"),
    Route(
        "PATCH",
        "/v0.7/networks/{network_id}",
        networks.patch_network,
        "Change name, description or metadata.",
        "networks",
    ),
    Route(
        "DELETE",
        "/v0.7/networks/{network_id}",
        networks.delete_network,
        "Delete a network and its files.",
        "networks",
    ),
    Route(
        "GET", "/v0.7/tasks", tasks.list_tasks, "List tasks, optionally only task_ids=1&task_ids=2.", "tasks"
    ),
    Route(
        "GET",
        "/v0.7/tasks/{task_id}",
        tasks.get_task,
        "Retrieve a task (pending, success or error).",
        "tasks",
    ),
)


def setup_routes(app: web.Application) -> None:
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
        if not route.path.endswith(".json"):
            app.router.add_route(route.method, route.path + "/", route.handler)


_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")


def openapi_document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "tags": [route.tag],
            "operationId": route.handler.__name__,
            "responses": {
                "2XX": {"description": "Success (JSON)."},
                "4XX": {"description": 'Client error: {"error": message, "code": stable code}.'},
            },
        }
        params = _PARAM.findall(route.path)
        if params:
            operation["parameters"] = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in params
            ]
        if route.path in OPEN_PATHS:
            operation["security"] = []
        paths.setdefault(_PARAM.sub(r"{\1}", route.path), {})[route.method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "streamd",
            "version": __version__,
            "description": "Streaming video inference daemon; Deepomatic API v0.7 compatible.",
        },
        "components": {
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-KEY"}}
        },
        "security": [{"ApiKey": []}],
        "paths": paths,
    }
