"""The route table: every endpoint once, registered with and without a trailing slash, and the
OpenAPI document generated from the same table so the two cannot drift apart."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from streamd.api import chains, cluster, inference, networks, ops, recognition, services, streams, tasks, ui
from streamd.api.http import json_response
from streamd.api.middleware import OPEN_PATHS
from streamd.api.openapi import Operation, build_document

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    """One row of the route table: the handler, and what /openapi.json says of it."""

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())


# fmt: off
_TABLE: tuple[tuple[str, str, Handler, str, str], ...] = (
    # method, path, handler, summary, tag
    ("GET", "/", ui.index, "An HTML page of the streams (state, fps, latest snapshot).", "operations"),
    ("GET", "/healthz", ops.healthz, "Liveness: the event loop answers.", "operations"),
    ("GET", "/readyz", ops.readyz, "Readiness: store open, start-up recovery done.", "operations"),
    ("GET", "/info", ops.info, "Version, TensorFlow version and resource counts.", "operations"),
    ("GET", "/openapi.json", openapi, "This document.", "operations"),
    ("GET", "/metrics", ops.metrics, "Prometheus metrics (text format).", "operations"),
    ("GET", "/v0.7/networks", networks.list_networks, "List networks (offset/limit pages).", "networks"),
    ("POST", "/v0.7/networks", networks.create_network,
     "Register a TensorFlow SavedModel (multipart fields and files); starts its deployment.", "networks"),
    ("GET", "/v0.7/networks/public", networks.list_public_networks, "List public networks.", "networks"),
    ("GET", "/v0.7/networks/public/{slug}", networks.get_public_network, "Retrieve a public network.",
     "networks"),
    ("POST", "/v0.7/networks/public/{slug}/inference", inference.public_network_inference,
     "Raw inference on a public network → task with {tensors}.", "inference"),
    ("GET", "/v0.7/networks/{network_id}", networks.get_network, "Retrieve a network.", "networks"),
    ("PATCH", "/v0.7/networks/{network_id}", networks.patch_network,
     "Change name, description or metadata.", "networks"),
    ("DELETE", "/v0.7/networks/{network_id}", networks.delete_network,
     "Delete a network, its versions and its files.", "networks"),
    ("POST", "/v0.7/networks/{network_id}/inference", inference.network_inference,
     "Raw inference: any tensors of the graph for one input → task with {tensors}.", "inference"),
    ("GET", "/v0.7/recognition/specs", recognition.list_specs, "List recognition specs (no outputs).",
     "recognition"),
    ("POST", "/v0.7/recognition/specs", recognition.create_spec, "Create a recognition spec.", "recognition"),
    ("GET", "/v0.7/recognition/specs/{spec_id}", recognition.get_spec, "Retrieve a spec.", "recognition"),
    ("PATCH", "/v0.7/recognition/specs/{spec_id}", recognition.patch_spec,
     "Change name, description, metadata or current_version_id.", "recognition"),
    ("DELETE", "/v0.7/recognition/specs/{spec_id}", recognition.delete_spec,
     "Delete a spec and its versions.", "recognition"),
    ("GET", "/v0.7/recognition/specs/{spec_id}/versions", recognition.list_spec_versions,
     "List a spec's versions.", "recognition"),
    ("POST", "/v0.7/recognition/specs/{spec_id}/inference", recognition.spec_inference,
     "Recognition with the spec's current version → task with {outputs}.", "inference"),
    ("GET", "/v0.7/recognition/public", recognition.list_public_specs,
     "List public recognition specs (no outputs).", "recognition"),
    ("GET", "/v0.7/recognition/public/{slug}", recognition.get_public_spec, "Retrieve a public spec.",
     "recognition"),
    ("POST", "/v0.7/recognition/public/{slug}/inference", recognition.public_spec_inference,
     "Recognition with a public spec → task with {outputs}.", "inference"),
    ("GET", "/v0.7/recognition/versions", recognition.list_versions, "List versions.", "recognition"),
    ("POST", "/v0.7/recognition/versions", recognition.create_version,
     "Create a version: spec + network + one post-processing per output.", "recognition"),
    ("GET", "/v0.7/recognition/versions/{version_id}", recognition.get_version, "Retrieve a version.",
     "recognition"),
    ("DELETE", "/v0.7/recognition/versions/{version_id}", recognition.delete_version, "Delete a version.",
     "recognition"),
    ("POST", "/v0.7/recognition/versions/{version_id}/inference", recognition.version_inference,
     "Recognition with this version → task with {outputs}.", "inference"),
    ("POST", "/chain/{name}", chains.run_chain, "DeepDetect /chain: run a chain once on its data.", "chains"),
    ("PUT", "/chain/{name}", chains.run_chain, "Same as POST /chain/{name}.", "chains"),
    ("GET", "/services/{name}", services.get_service,
     "DeepDetect: a service (a recognition spec) and its labels.", "chains"),
    ("GET", "/v0.7/chains", chains.list_chains, "List stored chains.", "chains"),
    ("PUT", "/v0.7/chains/{name}", chains.put_chain, "Validate and store a chain.", "chains"),
    ("GET", "/v0.7/chains/{name}", chains.get_chain, "Retrieve a stored chain.", "chains"),
    ("DELETE", "/v0.7/chains/{name}", chains.delete_chain, "Delete a stored chain.", "chains"),
    ("POST", "/v0.7/chains/{name}/run", chains.run_stored_chain, "Run a stored chain on {data}.", "chains"),
    ("POST", "/v0.7/streams", streams.create_stream, "Attach a chain to a camera or video file.", "streams"),
    ("GET", "/v0.7/streams", streams.list_streams, "List streams with state and counters.", "streams"),
    ("GET", "/v0.7/streams/{stream_id}", streams.get_stream, "A stream's state, counters, fps, latency.",
     "streams"),
    ("DELETE", "/v0.7/streams/{stream_id}", streams.delete_stream, "Stop, flush sinks, forget.", "streams"),
    ("GET", "/v0.7/cluster", cluster.cluster_status, "Cluster mode: nodes, streams, load, heartbeats.",
     "streams"),
    ("GET", "/v0.7/streams/{stream_id}/snapshot.jpg", streams.stream_snapshot,
     "The latest processed frame with its results drawn (JPEG).", "streams"),
    ("POST", "/v0.7/streams/{stream_id}/pause", streams.pause_stream, "Pause processing.", "streams"),
    ("POST", "/v0.7/streams/{stream_id}/resume", streams.resume_stream, "Resume processing.", "streams"),
    ("GET", "/v0.7/tasks", tasks.list_tasks, "List tasks, optionally only task_ids=1&task_ids=2.", "tasks"),
    ("GET", "/v0.7/tasks/{task_id}", tasks.get_task, "Retrieve a task (pending, success or error).", "tasks"),
)
# fmt: on
ROUTES: tuple[Route, ...] = tuple(Route(*row) for row in _TABLE)


def setup_routes(app: web.Application) -> None:
    """Register every route, with a trailing-slash twin and HEAD wherever GET."""
    for route in ROUTES:
        paths = [route.path]
        if not route.path.endswith((".json", ".jpg")) and route.path != "/":
            paths.append(route.path + "/")
        for path in paths:
            app.router.add_route(route.method, path, route.handler)
            if route.method == "GET":
                # HEAD wherever GET: aiohttp drops the body and keeps the headers (RFC 9110 9.3.2).
                app.router.add_route("HEAD", path, route.handler)


@functools.cache  # the table is fixed: build it once, not on the loop for every request
def openapi_document() -> dict[str, Any]:
    """The /openapi.json document, built once from the route table."""
    return build_document(ROUTES, OPEN_PATHS, {openapi: Operation("application/json")})
