"""What the API takes to define a stream: source, options, sinks (pydantic, at the edge). Used on the
loop by the manager and the API layer; stored as given, so a restart relaunches the same stream."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SourceOptions(_Strict):
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    timeout_s: float | None = Field(
        None, gt=0, le=600, description="stall timeout; default streams.stall_timeout_s"
    )
    loop: bool = False
    realtime: bool = False
    max_reconnects: int | None = Field(None, ge=0)


class SourceBody(_Strict):
    uri: str = Field(min_length=1)
    options: SourceOptions = Field(default_factory=SourceOptions)


class JsonlSinkBody(_Strict):
    type: Literal["jsonl"]
    path: str = Field(min_length=1)
    rotate_bytes: int = Field(100 * 1024**2, ge=1024)


class WebhookSinkBody(_Strict):
    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(5.0, gt=0, le=300)
    # Accepted for compatibility, no longer used: the first failed POST spools at once (durability).
    max_retries: int = Field(3, ge=0, le=100)
    batch_size: int = Field(1, ge=1, le=1000)


class StreamBody(_Strict):
    name: str = Field(min_length=1, max_length=255)
    source: SourceBody
    chain: str | dict[str, Any]
    sinks: list[JsonlSinkBody | WebhookSinkBody] = Field(min_length=1)
    fps: float | None = Field(None, gt=0, le=240)
    drop_policy: Literal["drop_oldest", "wait"] | None = None
