"""Stream request bodies: what a user posts to /v0.7/streams (and what is stored to resume it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from streamd.analytics.motion import MotionConfig
from streamd.analytics.zones import SceneConfig


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


class MqttSinkBody(_Strict):
    type: Literal["mqtt"]
    url: str = Field(pattern=r"^mqtts?://[^/?#]+/?$", description="mqtt://host:1883 or mqtts://host:8883")
    topic: str = Field(
        "streamd/{stream_name}/results",
        min_length=1,
        max_length=512,
        description="Topic of every record; {stream_name} and {stream_id} are filled in.",
    )
    qos: Literal[0, 1, 2] = 1
    username: str | None = Field(None, max_length=255)
    password: str | None = Field(None, max_length=1024)
    tls: bool = False
    timeout_s: float = Field(10.0, gt=0, le=300)
    events_only: bool = Field(
        False,
        description="Publish only frames with events (line crossings), as the record without its "
        "predictions; other frames publish nothing.",
    )

    @field_validator("topic")
    @classmethod
    def _publishable(cls, topic: str) -> str:
        try:
            filled = topic.format(stream_name="name", stream_id=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"only {{stream_name}} and {{stream_id}} can be filled in ({exc})") from None
        if "+" in filled or "#" in filled:
            raise ValueError("a topic to publish to has no wildcards (+ or #)")
        return topic

    def topic_for(self, stream_id: int, stream_name: str) -> str:
        # A name's own slashes and wildcards would change the topic's levels: replaced.
        safe = "".join("_" if char in "/+#" else char for char in stream_name)
        return self.topic.format(stream_name=safe, stream_id=stream_id)


class StreamBody(_Strict):
    name: str = Field(min_length=1, max_length=255)
    source: SourceBody
    chain: str | dict[str, Any]
    sinks: list[JsonlSinkBody | WebhookSinkBody | MqttSinkBody] = Field(min_length=1)
    fps: float | None = Field(None, gt=0, le=240)
    drop_policy: Literal["drop_oldest", "wait"] | None = None
    motion: MotionConfig | None = Field(
        None, description="Skip inference on frames where nothing moved (docs/analytics.md)."
    )
    scene: SceneConfig | None = Field(
        None, description="Named zones and lines: occupancy and line crossings of tracked detections."
    )
