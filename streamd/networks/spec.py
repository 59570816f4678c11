"""The network description a user registers: preprocessing schema (Deepomatic v0.7) and creation fields.

Pure pydantic models, validated at the API edge. Defaults we fix where the protobuf defaults would be
useless (pixel_scaling 0.0, resize NETWORK) are documented in docs/design.md.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from streamd.limits import MAX_BATCH_SIZE, MAX_INFLIGHT_BATCHES, MAX_OP_THREADS, MAX_WAIT_S
from streamd.networks.fields import Description, Metadata, Name

SUPPORTED_FRAMEWORKS = ("tensorflow-1.x",)
MEAN_FILE_SUFFIXES = (".npy", ".binaryproto", ".proto.bin")

DimensionOrder = Literal["NCHW", "NCWH", "NHWC", "NWHC"]
ResizeType = Literal["SQUASH", "CROP", "FILL", "NETWORK"]
ColorChannels = Literal["RGB", "BGR", "GRAY", "L"]  # L: PIL's name for GRAY, kept as sent
ChannelOrder = Literal["RGB", "BGR", "GRAY"]
DataType = Literal["FLOAT32", "UINT8"]

_TARGET_SIZE = re.compile(r"^(?:(\d+)x(\d+)|(\d+))$")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ImagePreprocessing(_Strict):
    dimension_order: DimensionOrder = Field("NHWC", description="Layout of the batch fed to the tensor.")
    target_size: str = Field(description="`WxH` (exact size) or `N` (largest side for NETWORK, else NxN).")
    resize_type: ResizeType = Field("SQUASH", description="How the frame is brought to target_size.")
    color_channels: ColorChannels = Field(
        "BGR", description="Channel order fed to the network; L is an alias of GRAY, echoed as sent."
    )
    pixel_scaling: float = Field(
        255.0, gt=0, description="Pixels are scaled to [0, pixel_scaling] before the mean is subtracted."
    )
    mean_file: str | None = Field(None, description="Name of an uploaded .npy or Caffe BlobProto mean file.")
    data_type: DataType = Field("FLOAT32", description="Element type of the input tensor.")

    @field_validator("target_size")
    @classmethod
    def _target_size_format(cls, value: str) -> str:
        match = _TARGET_SIZE.match(value.strip())
        if match is None or any(group is not None and int(group) == 0 for group in match.groups()):
            raise ValueError(f"target_size must be 'WxH' or 'N' with positive integers, got {value!r}")
        return value.strip()

    @field_validator("mean_file")
    @classmethod
    def _mean_file_name(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.endswith(MEAN_FILE_SUFFIXES):
            raise ValueError(f"mean_file {value!r} must end with one of {', '.join(MEAN_FILE_SUFFIXES)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ImagePreprocessing:
        if self.data_type == "UINT8" and (self.mean_file is not None or self.pixel_scaling != 255.0):
            raise ValueError(
                "data_type UINT8 feeds raw pixels: remove mean_file and pixel_scaling (or use FLOAT32)"
            )
        if self.resize_type == "NETWORK" and "x" in self.target_size:
            raise ValueError(
                f"resize_type NETWORK takes target_size 'N' (the largest side), got {self.target_size!r}"
            )
        return self

    @property
    def channel_order(self) -> ChannelOrder:
        """What the preprocessing applies: `L` is GRAY."""
        return "GRAY" if self.color_channels == "L" else self.color_channels

    @property
    def channels(self) -> int:
        return 1 if self.channel_order == "GRAY" else 3

    @property
    def size_wh(self) -> tuple[int, int] | None:
        """Fixed (width, height) of the network input, or None when it varies per frame (NETWORK)."""
        if self.resize_type == "NETWORK":
            return None
        if "x" in self.target_size:
            width, height = self.target_size.split("x")
            return int(width), int(height)
        side = int(self.target_size)
        return side, side

    def input_shape(self) -> tuple[int | None, ...]:
        """Shape of one image in the input layout (no batch dimension); None where it varies."""
        size = self.size_wh
        width, height = size if size is not None else (None, None)
        dims = {"C": self.channels, "H": height, "W": width}
        return tuple(dims[axis] for axis in self.dimension_order[1:])


class InputPreprocessing(_Strict):
    tensor_name: str = Field(min_length=1, description="Graph tensor this input feeds (`name` or `name:0`).")
    image: ImagePreprocessing = Field(description="Image preprocessing; the only supported input type.")

    @model_validator(mode="before")
    @classmethod
    def _only_images(cls, data: Any) -> Any:
        if isinstance(data, dict) and "constant" in data:
            raise ValueError("constant inputs are not supported; every input must be an 'image'")
        return data


class Preprocessing(_Strict):
    inputs: tuple[InputPreprocessing, ...] = Field(min_length=1, description="One entry per input tensor.")
    batched_output: bool = Field(
        True, description="False: the network takes one image at a time (outputs have no batch dimension)."
    )

    @model_validator(mode="after")
    def _unique_tensors(self) -> Preprocessing:
        names = [graph_tensor_name(item.tensor_name) for item in self.inputs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"inputs feed the same tensor more than once: {', '.join(duplicates)}")
        return self

    def mean_files(self) -> set[str]:
        return {item.image.mean_file for item in self.inputs if item.image.mean_file is not None}


TUNING_KEY = "streamd"


class NetworkTuning(_Strict):
    """Per-network overrides of the [inference] settings, given as `metadata.streamd`."""

    max_batch_size: int | None = Field(None, ge=1, le=MAX_BATCH_SIZE)
    max_wait_s: float | None = Field(None, ge=0.0, le=MAX_WAIT_S)
    max_inflight_batches: int | None = Field(None, ge=1, le=MAX_INFLIGHT_BATCHES)
    intra_op_threads: int | None = Field(None, ge=0, le=MAX_OP_THREADS)
    inter_op_threads: int | None = Field(None, ge=0, le=MAX_OP_THREADS)

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any] | None) -> NetworkTuning:
        return cls.model_validate((metadata or {}).get(TUNING_KEY) or {})


def _check_tuning(metadata: dict[str, Any] | None) -> None:
    if metadata and TUNING_KEY in metadata and not isinstance(metadata[TUNING_KEY], dict):
        raise ValueError(f"metadata.{TUNING_KEY} must be an object of inference settings")
    NetworkTuning.from_metadata(metadata)


class NetworkSpec(_Strict):
    """What a create request carries besides files."""

    name: Name
    description: Description = ""
    metadata: Metadata = Field(default_factory=dict)
    framework: str
    preprocessing: Preprocessing
    postprocessings: tuple[dict[str, Any], ...] = ()

    @field_validator("metadata")
    @classmethod
    def _valid_tuning(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        _check_tuning(metadata)
        return metadata

    @field_validator("framework")
    @classmethod
    def _supported_framework(cls, value: str) -> str:
        if value not in SUPPORTED_FRAMEWORKS:
            raise ValueError(
                f"framework {value!r} is not supported; use one of: {', '.join(SUPPORTED_FRAMEWORKS)}"
            )
        return value


class NetworkPatch(_Strict):
    name: Name | None = None
    description: Description | None = None
    metadata: Metadata | None = None

    @field_validator("metadata")
    @classmethod
    def _valid_tuning(cls, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
        _check_tuning(metadata)
        return metadata


def graph_tensor_name(name: str) -> str:
    """`input` → `input:0`: users may name the op or the tensor."""
    return name if ":" in name else f"{name}:0"
