"""Registering built models through the daemon's REST API, as a user would; idempotent.

Coroutines on the caller's event loop (the CLI's or the demo's): only HTTP, no TensorFlow, no files.
The network, spec and version bytes are built beforehand (`catalogue.ensure_built`, in a thread).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable
from typing import Any, Protocol

import aiohttp
import orjson

from streamd.models.catalogue import BuiltModel


class Http(Protocol):
    """What registration needs of an HTTP client bound to the daemon's address: an
    `aiohttp.ClientSession(base_url)`, or aiohttp's test client."""

    def get(self, path: str, /) -> Awaitable[aiohttp.ClientResponse]: ...
    def post(
        self, path: str, /, *, json: Any = ..., data: Any = ...
    ) -> Awaitable[aiohttp.ClientResponse]: ...
    def put(self, path: str, /, *, json: Any = ...) -> Awaitable[aiohttp.ClientResponse]: ...
    def patch(self, path: str, /, *, json: Any = ...) -> Awaitable[aiohttp.ClientResponse]: ...


class ApiError(RuntimeError):
    """The daemon refused a call; the message holds the route, the status and the daemon's reason."""


async def ok(response: aiohttp.ClientResponse) -> dict[str, Any]:
    body: dict[str, Any] = await response.json()  # every answer of the daemon is an object
    if response.status >= 400:
        raise ApiError(f"{response.method} {response.url.path}: {response.status} {body.get('error')}")
    return body


async def register_network(
    http: Http,
    name: str,
    preprocessing: dict[str, Any],
    files: dict[str, bytes],
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """POST a network and wait for its deployment task; raises with the task's reason if it fails."""
    form = aiohttp.FormData()
    form.add_field("name", name)
    form.add_field("framework", "tensorflow-1.x")
    form.add_field("preprocessing", orjson.dumps(preprocessing).decode())
    if metadata:
        form.add_field("metadata", orjson.dumps(metadata).decode())
    for part, content in files.items():
        # A file object: aiohttp warns that raw bytes this large are copied on the loop.
        form.add_field(part, io.BytesIO(content), filename=part)
    network = await ok(await http.post("/v0.7/networks", data=form))
    # The task runs in the daemon, which may be another process: polling its API is the only way.
    task_url = f"/v0.7/tasks/{network['task_id']}"
    while (task := await ok(await http.get(task_url)))["status"] == "pending":  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    if task["status"] != "success":
        raise ApiError(f"network {name!r} failed to deploy: {task['error']}")
    return network


async def find_spec(http: Http, name: str) -> dict[str, Any] | None:
    url: str | None = "/v0.7/recognition/specs?limit=100"
    while url is not None:
        page = await ok(await http.get(url))
        specs: list[dict[str, Any]] = page["results"]
        for spec in specs:
            if spec["name"] == name:
                return spec
        url = page["next"]
    return None


def network_name(built: BuiltModel) -> str:
    return f"{built.model.title} ({built.model.package} {built.version})"


def post_processing(built: BuiltModel) -> dict[str, Any]:
    thresholds = [0.8 if built.model.kind == "detection" else 0.0] * len(built.model.labels)
    if built.model.kind == "classification":
        [tensor] = built.outputs.values()
        return {"classification": {"output_tensor": tensor, "thresholds": thresholds}}
    layout = {f"{key}_tensor": built.outputs[f"detection_{key}"] for key in ("boxes", "scores", "classes")}
    return {
        "detection": {
            "thresholds": thresholds,
            "nms_threshold": 0.3,
            "discard_threshold": 0.5,
            "direct_output": layout,
        }
    }


async def install(http: Http, built: BuiltModel) -> str:
    """Network, spec (named after the model) and version; nothing when this build is registered
    already. Returns what was done, for a person."""
    model = built.model
    spec = await find_spec(http, model.name)
    if spec is not None and spec["current_version_id"] is not None:
        version = await ok(await http.get(f"/v0.7/recognition/versions/{spec['current_version_id']}"))
        network = await ok(await http.get(f"/v0.7/networks/{version['network_id']}"))
        if network["name"] == network_name(built):
            return f"{model.name}: already installed (network {network['id']}, spec {spec['id']})"
    preprocessing = {"inputs": [{"tensor_name": built.input_tensor, "image": model.image}]}
    network = await register_network(
        http,
        network_name(built),
        preprocessing,
        await asyncio.to_thread(built.files),  # reads the SavedModel: off the loop
        {"streamd": {"max_batch_size": model.max_batch_size}},
    )
    if spec is None:
        roi = "BBOX" if model.kind == "detection" else "NONE"
        labels = [{"id": i + (model.kind == "detection"), "name": n} for i, n in enumerate(model.labels)]
        outputs = [{"labels": {"roi": roi, "exclusive": model.kind != "detection", "labels": labels}}]
        body = {"name": model.name, "description": f"{model.title}; {model.licence}", "outputs": outputs}
        spec = await ok(await http.post("/v0.7/recognition/specs", json=body))
    body = {"spec_id": spec["id"], "network_id": network["id"], "post_processings": [post_processing(built)]}
    version = await ok(await http.post("/v0.7/recognition/versions", json=body))
    await ok(
        await http.patch(f"/v0.7/recognition/specs/{spec['id']}", json={"current_version_id": version["id"]})
    )
    return f"{model.name}: installed (network {network['id']}, spec {spec['id']}, version {version['id']})"


async def register_classifier(
    http: Http,
    *,
    network_name: str,
    files: dict[str, bytes],
    preprocessing: dict[str, Any],
    spec_name: str,
    labels: list[str],
    output_tensor: str,
    threshold: float,
) -> dict[str, Any]:
    """A network (waiting for its deployment), a recognition spec with `labels` and a classification
    version of it, as a user would. Returns the network."""
    network = await register_network(http, network_name, preprocessing, files)
    outputs = [{"labels": {"labels": [{"id": i, "name": n} for i, n in enumerate(labels)]}}]
    spec = await ok(await http.post("/v0.7/recognition/specs", json={"name": spec_name, "outputs": outputs}))
    post = {"classification": {"output_tensor": output_tensor, "thresholds": [threshold] * len(labels)}}
    body = {"spec_id": spec["id"], "network_id": network["id"], "post_processings": [post]}
    await ok(await http.post("/v0.7/recognition/versions", json=body))
    return network
