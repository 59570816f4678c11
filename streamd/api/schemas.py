"""What the API answers, as pydantic models for /openapi.json. Handlers build these bodies as dicts
(records' `to_api()`); tests/test_openapi.py validates real answers against the document, and the fuzz
test checks every answer it gets, so the two cannot drift apart unnoticed. Pure module."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Answer):
    """Every error: a message for a person and a stable code for a program."""

    error: str = Field(description="What was wrong and what to do.")
    code: str = Field(description="Stable machine-readable code, e.g. invalid_field, network_not_found.")
    status: dict[str, Any] | None = Field(None, description="DeepDetect's envelope, on /chain routes only.")
    head: dict[str, Any] | None = Field(None, description="DeepDetect's envelope, on /chain routes only.")


class Health(_Answer):
    status: Literal["ok", "ready"]


class Info(_Answer):
    name: str
    version: str
    python_version: str
    tensorflow_version: str | None
    api_version: str
    auth: str
    counts: dict[str, int]
    head: InfoHead


class DDService(_Answer):
    """A DeepDetect service: a recognition spec."""

    name: str
    description: str
    mllib: Literal["tensorflow"]
    mltype: Literal["classification", "detection"]
    type: Literal["supervised"]
    predict: bool
    training: bool


class InfoHead(_Answer):
    method: Literal["/info"]
    version: str
    services: list[DDService]


class DDServiceDetail(DDService):
    labels: list[str]
    jobs: list[Any]
    repository: str


class ServiceResult(_Answer):
    """DeepDetect's answer to GET /services/{name}."""

    status: dict[str, Any]
    head: dict[str, Any]
    body: DDServiceDetail


class Network(_Answer):
    id: int
    name: str
    description: str
    metadata: dict[str, Any]
    framework: str
    preprocessing: dict[str, Any] = Field(description="Every field explicit, defaults applied.")
    postprocessings: list[Any]
    task_id: int = Field(description="The deployment task.")
    create_date: str
    update_date: str


class PublicNetwork(Network):
    # A public network is keyed by its slug and never deployed: the answer changes these two fields'
    # types on purpose (Deepomatic's shape), which breaks substitutability only for the type checker.
    id: str = Field(description="The slug.")  # type: ignore[assignment]
    task_id: None = None  # type: ignore[assignment]


class Task(_Answer):
    id: int
    status: Literal["pending", "success", "error"]
    error: str | None
    data: Any = Field(description="{tensors} or {outputs} for inference, the deployment report, or null.")
    subtasks: None
    date_created: str
    date_updated: str


class TaskRef(_Answer):
    task_id: int


class Spec(_Answer):
    id: int
    name: str
    description: str
    metadata: dict[str, Any]
    current_version_id: int | None
    create_date: str
    update_date: str
    outputs: list[dict[str, Any]] | None = Field(None, description="Absent from lists.")


class PublicSpec(_Answer):
    """A public recognition spec: no current_version_id (its version is the operator's)."""

    id: str = Field(description="The slug (the public network's).")
    name: str
    description: str
    metadata: dict[str, Any]
    create_date: str
    update_date: str
    outputs: list[dict[str, Any]] | None = Field(None, description="Absent from lists.")


class Version(_Answer):
    id: int
    spec_id: int
    spec_name: str
    network_id: int
    network_name: str
    post_processings: list[dict[str, Any]]
    create_date: str
    update_date: str


class Chain(_Answer):
    name: str
    chain: dict[str, Any]
    create_date: str
    update_date: str


class ChainResult(_Answer):
    """DeepDetect's answer to /chain."""

    status: dict[str, Any]
    head: dict[str, Any]
    body: dict[str, Any]


class ClusterNode(_Answer):
    node: str
    address: str
    alive: bool
    heartbeat_age_s: float
    uptime_s: float
    max_streams: int
    load: float | None
    streams: list[int]


class Cluster(_Answer):
    """Cluster mode: this node's name, the lease ttl, every node and the streams no node runs (with one
    SQLite daemon: `cluster` false, no nodes)."""

    cluster: bool
    node: str | None
    lease_ttl_s: float | None
    nodes: list[ClusterNode]
    unassigned: list[int]


class Stream(BaseModel):
    """A stream's definition (credentials redacted) and its live status."""

    model_config = ConfigDict(extra="allow")  # the status fields: state, counters, fps, latency, ...
    id: int
    name: str
    source: dict[str, Any]
    chain: str
    fps: float | None
    drop_policy: str | None
    sinks_config: list[dict[str, Any]]
    state: str


def page_of(model: type[BaseModel]) -> type[BaseModel]:
    """DRF's LimitOffset page of `model` (a named model: OpenAPI component names cannot hold brackets)."""
    return create_model(
        f"{model.__name__}Page",
        __base__=_Answer,
        count=(int, ...),
        next=(str | None, Field(description="Absolute URL of the next page.")),
        previous=(str | None, ...),
        results=(list[model], ...),  # type: ignore[valid-type]  # a model built at run time, by design
    )


NetworkPage = page_of(Network)
PublicNetworkPage = page_of(PublicNetwork)
TaskPage = page_of(Task)
SpecPage = page_of(Spec)
PublicSpecPage = page_of(PublicSpec)
VersionPage = page_of(Version)
ChainPage = page_of(Chain)
StreamPage = page_of(Stream)
