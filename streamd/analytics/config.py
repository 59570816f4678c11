"""Tracking options, kept apart from the tracker itself: chain validation reads them without importing
the tracking library (supervision and scipy take over a second to import)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrackConfig(BaseModel):
    """How a service's detections are tracked across a stream's frames (ByteTrack's knobs, renamed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["bytetrack"] = Field("bytetrack", description="Tracking algorithm; only ByteTrack for now.")
    activation_threshold: float = Field(
        0.7, ge=0, le=1, description="Smallest detection score that can start a new track."
    )
    high_score_threshold: float = Field(
        0.6,
        ge=0,
        le=1,
        description="Detections at or above it are matched first; lower ones only extend existing tracks.",
    )
    min_iou: float = Field(
        0.1, ge=0, le=1, description="Smallest IoU between a track's predicted box and a detection to match."
    )
    min_consecutive_frames: int = Field(
        2,
        ge=1,
        description="Frames in a row a new track must be seen, its first included, before it gets an id "
        "(until then: null). ByteTrack confirms a track on a match, so 1 and 2 both give the id on the "
        "track's second frame.",
    )
    lost_track_s: float = Field(
        1.0, ge=0, description="How long a track survives without a matching detection (occlusion)."
    )
    frame_rate: float = Field(
        30.0,
        gt=0,
        description="The stream's nominal frames per second: the Kalman step, and lost_track_s in frames "
        "when updates carry no timestamp.",
    )
    class_aware: bool = Field(
        True, description="Track each class separately, so a track never changes class when boxes cross."
    )
