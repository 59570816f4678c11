"""Inference request bodies (Deepomatic v0.7): what a user posts to the inference endpoints of networks
and recognition specs and versions, as JSON or as the official client's flattened multipart form."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class BBox(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    xmin: float
    ymin: float
    xmax: float
    ymax: float


class ImageInput(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    source: str | bytes
    bbox: BBox | None = None
    polygon: list[Any] | None = None
    crop_uniform_background: bool = False

    @field_validator("polygon")
    @classmethod
    def _no_polygons(cls, value: list[Any] | None) -> None:
        if value:
            raise ValueError("polygon inputs are not supported; crop with a bbox instead")
        return None


class InputItem(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    image: ImageInput


class InferenceBody(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    inputs: list[InputItem]
    output_tensors: list[str] = Field(default_factory=list)
    show_discarded: bool = False
    max_predictions: int = Field(100, ge=1, le=10_000)

    @field_validator("inputs")
    @classmethod
    def _some_inputs(cls, value: list[InputItem]) -> list[InputItem]:
        if not value:
            raise ValueError(
                'give at least one input, e.g. {"inputs": [{"image": {"source": "data:image/jpeg;'
                'base64,..."}}]}'
            )
        return value
