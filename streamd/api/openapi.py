"""/openapi.json (OpenAPI 3.1): every operation of the route table with its request body, query
parameters and answers, generated from the pydantic models the handlers validate with (requests) and
`api.schemas` (answers). Pure: built once per process from the table."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from streamd import __version__
from streamd.api import (
    chains,
    cluster,
    inference,
    networks,
    ops,
    recognition,
    schemas,
    services,
    streams,
    tasks,
    ui,
)
from streamd.api.http import PAGE_PARAMS
from streamd.chains.spec import ChainBody, ChainRunBody
from streamd.inference.bodies import InferenceBody
from streamd.networks.recognition import RecognitionSpecCreate, RecognitionSpecPatch, RecognitionVersionCreate
from streamd.networks.spec import NetworkPatch, NetworkSpec
from streamd.streams.bodies import StreamBody

REF = "#/components/schemas/{model}"
INTEGER_IDS = frozenset({"network_id", "spec_id", "version_id", "stream_id", "task_id"})


class RouteLike(Protocol):
    """A row of the route table, read-only (`routes.Route` is frozen)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def handler(self) -> Callable[..., Any]: ...
    @property
    def summary(self) -> str: ...
    @property
    def tag(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Operation:
    """What the document says of one handler beyond the route table."""

    answer: type[BaseModel] | str | None  # a model (JSON), a media type (HTML, JPEG, text), None: 204
    status: int = 200
    body: type[BaseModel] | None = None
    form: bool = False  # the body is multipart/form-data (fields JSON-encoded), not JSON
    flattened_form: bool = False  # multipart is accepted too, with the official client's flattened keys
    query: tuple[dict[str, Any], ...] = ()
    query_key: bool = False  # ?api_key= may replace the header (browsers cannot send headers for <img>)


_PAGE = tuple(param.openapi() for param in PAGE_PARAMS)
# fmt: off
OPERATIONS: dict[Callable[..., Any], Operation] = {
    ui.index: Operation("text/html", query=(ui.REFRESH.openapi(),), query_key=True),
    ops.healthz: Operation(schemas.Health),
    ops.readyz: Operation(schemas.Health),
    ops.info: Operation(schemas.Info),
    ops.metrics: Operation("text/plain"),
    networks.list_networks: Operation(schemas.NetworkPage, query=_PAGE),
    networks.create_network: Operation(schemas.Network, 201, NetworkSpec, form=True),
    networks.list_public_networks: Operation(schemas.PublicNetworkPage, query=_PAGE),
    networks.get_public_network: Operation(schemas.PublicNetwork),
    networks.get_network: Operation(schemas.Network),
    networks.patch_network: Operation(schemas.Network, body=NetworkPatch),
    networks.delete_network: Operation(None, 204),
    inference.network_inference: Operation(schemas.TaskRef, body=InferenceBody,
                                           flattened_form=True),
    inference.public_network_inference: Operation(schemas.TaskRef, body=InferenceBody,
                                                  flattened_form=True),
    recognition.list_specs: Operation(schemas.SpecPage, query=_PAGE),
    recognition.create_spec: Operation(schemas.Spec, 201, RecognitionSpecCreate),
    recognition.get_spec: Operation(schemas.Spec),
    recognition.patch_spec: Operation(schemas.Spec, body=RecognitionSpecPatch),
    recognition.delete_spec: Operation(None, 204),
    recognition.list_spec_versions: Operation(schemas.VersionPage, query=_PAGE),
    recognition.spec_inference: Operation(schemas.TaskRef, body=InferenceBody, flattened_form=True),
    recognition.list_public_specs: Operation(schemas.PublicSpecPage, query=_PAGE),
    recognition.get_public_spec: Operation(schemas.PublicSpec),
    recognition.public_spec_inference: Operation(schemas.TaskRef, body=InferenceBody,
                                                 flattened_form=True),
    recognition.list_versions: Operation(schemas.VersionPage, query=_PAGE),
    recognition.create_version: Operation(schemas.Version, 201, RecognitionVersionCreate),
    recognition.get_version: Operation(schemas.Version),
    recognition.delete_version: Operation(None, 204),
    recognition.version_inference: Operation(schemas.TaskRef, body=InferenceBody,
                                             flattened_form=True),
    chains.run_chain: Operation(schemas.ChainResult, body=ChainBody),
    chains.list_chains: Operation(schemas.ChainPage, query=_PAGE),
    services.get_service: Operation(schemas.ServiceResult),
    chains.put_chain: Operation(schemas.Chain, body=ChainBody),
    chains.get_chain: Operation(schemas.Chain),
    chains.delete_chain: Operation(None, 204),
    chains.run_stored_chain: Operation(schemas.ChainResult, body=ChainRunBody),
    streams.create_stream: Operation(schemas.Stream, 201, StreamBody),
    streams.list_streams: Operation(schemas.StreamPage, query=_PAGE),
    streams.get_stream: Operation(schemas.Stream),
    streams.delete_stream: Operation(None, 204),
    streams.stream_snapshot: Operation("image/jpeg", query_key=True),
    cluster.cluster_status: Operation(schemas.Cluster),
    streams.pause_stream: Operation(schemas.Stream),
    streams.resume_stream: Operation(schemas.Stream),
    tasks.list_tasks: Operation(schemas.TaskPage, query=(*_PAGE, tasks.TASK_IDS)),
    tasks.get_task: Operation(schemas.Task),
}
# fmt: on


def build_document(
    routes: Sequence[RouteLike],
    open_paths: frozenset[str],
    extra: Mapping[Callable[..., Any], Operation],
) -> dict[str, Any]:
    """`extra` describes handlers defined beside the table (the document's own)."""
    known = {**OPERATIONS, **extra}
    components = _components()
    uses = Counter(route.handler for route in routes)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation = _operation(route, known[route.handler], uses[route.handler] > 1)
        if route.path in open_paths:
            operation["security"] = []
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "streamd",
            "version": __version__,
            "description": "Streaming video inference daemon; Deepomatic API v0.7 compatible.",
        },
        "components": {
            "schemas": components,
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-KEY"},
                "ApiKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"},
            },
        },
        "security": [{"ApiKey": []}],
        "paths": paths,
    }


@functools.cache
def _components() -> dict[str, Any]:
    requests = {op.body for op in OPERATIONS.values() if op.body is not None}
    answers = {op.answer for op in OPERATIONS.values() if isinstance(op.answer, type)} | {schemas.ErrorBody}
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (model, "validation") for model in sorted(requests, key=lambda m: m.__name__)
    ]
    models += [(model, "serialization") for model in sorted(answers, key=lambda m: m.__name__)]
    _, top = models_json_schema(models, ref_template=REF)
    defs: dict[str, Any] = top.get("$defs", {})
    return defs


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _operation(route: RouteLike, spec: Operation, shared: bool) -> dict[str, Any]:
    name = route.handler.__name__
    operation: dict[str, Any] = {
        "summary": route.summary,
        "tags": [route.tag],
        "operationId": f"{name}_{route.method.lower()}" if shared else name,
        "responses": _responses(spec),
    }
    parameters = [_path_param(name) for name in _path_params(route.path)] + list(spec.query)
    if parameters:
        operation["parameters"] = parameters
    if spec.body is not None:
        operation["requestBody"] = _request_body(spec)
    if spec.query_key:
        operation["security"] = [{"ApiKey": []}, {"ApiKeyQuery": []}]
    return operation


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


def _path_param(name: str) -> dict[str, Any]:
    schema = {"type": "integer"} if name in INTEGER_IDS else {"type": "string"}
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _responses(spec: Operation) -> dict[str, Any]:
    error = {
        "description": "Client error.",
        "content": {"application/json": {"schema": _ref(schemas.ErrorBody)}},
    }
    responses: dict[str, Any] = {"4XX": error, "5XX": {**error, "description": "Server error."}}
    if spec.answer is None:
        responses[str(spec.status)] = {"description": "Done; no body."}
    elif isinstance(spec.answer, str):
        responses[str(spec.status)] = {"description": "Success.", "content": {spec.answer: {}}}
    else:
        content = {"application/json": {"schema": _ref(spec.answer)}}
        responses[str(spec.status)] = {"description": spec.answer.__doc__ or "Success.", "content": content}
    return responses


def _request_body(spec: Operation) -> dict[str, Any]:
    assert spec.body is not None
    if spec.form:
        return {"required": True, "content": {"multipart/form-data": _form(spec.body)}}
    content: dict[str, Any] = {"application/json": {"schema": _ref(spec.body)}}
    if spec.flattened_form:
        content["multipart/form-data"] = {
            "schema": {
                "type": "object",
                "description": "The same body as the official client sends it: flattened keys "
                "(inputs[0]image.source) as text fields, images as file parts.",
                "additionalProperties": True,
            }
        }
    return {"required": True, "content": content}


def _form(model: type[BaseModel]) -> dict[str, Any]:
    """Each field of `model` is a form field; structured ones are JSON text (curl -F x='{...}'); any
    other part is a file, named by its file name (saved_model.pb, variables.index, ...)."""
    schema = _components()[model.__name__]
    encoding = {
        name: {"contentType": "application/json"}
        for name, prop in schema["properties"].items()
        if prop.get("type") in ("object", "array") or "$ref" in prop
    }
    form = {
        "type": "object",
        "properties": schema["properties"],
        "required": schema.get("required", []),
        "additionalProperties": {
            "type": "string",
            "format": "binary",
            "description": "Model files, each part named by its file name.",
        },
    }
    return {"schema": form, "encoding": encoding}
