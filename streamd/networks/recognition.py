"""Recognition specifications and versions (Deepomatic v0.7): what a network's outputs mean.

A spec lists outputs (labels, roi NONE|BBOX); a version binds a spec to a network with one
post-processing per output (classification, or detection with `direct_output`). Pure pydantic models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from streamd.networks.fields import Description, Metadata, Name

# Deepomatic documents no default; its docs' example and its public ImageNet spec use 0.025 per label,
# and its client's own test (no thresholds, 2 of 3 predictions kept on a 1000-class softmax) needs a
# low one. See docs/design.md.
DEFAULT_CLASSIFICATION_THRESHOLD = 0.025

SUPPORTED_POST_PROCESSINGS = (
    "classification {output_tensor, thresholds (optional)} or detection {thresholds, "
    "nms_threshold, discard_threshold, direct_output {boxes_tensor, scores_tensor, classes_tensor}}"
)
_UNSUPPORTED_LAYOUTS = (
    "anchored_output",
    "yolo_output",
    "yolov3_output",
    "standard_output",
    "faster_rcnn_tensors",
    "instance_segmentation_output",
    "normalize_wrt_tensor",
)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Label(_Strict):
    id: int
    name: Name


class LabelsOutput(_Strict):
    roi: Literal["NONE", "BBOX"] = "NONE"
    exclusive: bool = False
    labels: tuple[Label, ...] = Field(min_length=1)

    @field_validator("labels")
    @classmethod
    def _unique_ids(cls, labels: tuple[Label, ...]) -> tuple[Label, ...]:
        ids = [label.id for label in labels]
        if len(set(ids)) != len(ids):
            raise ValueError(f"label ids must be unique, got {ids}")
        return labels


class SpecOutput(_Strict):
    labels: LabelsOutput


class RecognitionSpecCreate(_Strict):
    name: Name
    description: Description = ""
    metadata: Metadata = Field(default_factory=dict)
    outputs: tuple[SpecOutput, ...] = Field(min_length=1)


class RecognitionSpecPatch(_Strict):
    name: Name | None = None
    description: Description | None = None
    metadata: Metadata | None = None
    current_version_id: int | None = None


class Classification(_Strict):
    output_tensor: str = Field(min_length=1)
    # None: DEFAULT_CLASSIFICATION_THRESHOLD for every label, filled in by `with_default_thresholds`.
    thresholds: tuple[float, ...] | None = Field(None, min_length=1)


class DirectOutput(_Strict):
    boxes_tensor: str = Field(min_length=1)
    scores_tensor: str = Field(min_length=1)
    classes_tensor: str = Field(min_length=1)


class Detection(_Strict):
    thresholds: tuple[float, ...] = Field(min_length=1)
    nms_threshold: float = Field(0.45, ge=0.0, le=1.0)
    discard_threshold: float = Field(0.0, ge=0.0, le=1.0)
    direct_output: DirectOutput

    @model_validator(mode="before")
    @classmethod
    def _layout_supported(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in _UNSUPPORTED_LAYOUTS:
                if key in data:
                    raise ValueError(
                        f"detection layout {key!r} is not supported; use direct_output "
                        "{boxes_tensor, scores_tensor, classes_tensor} (TF Object Detection API outputs)"
                    )
        return data


class PostProcessing(_Strict):
    classification: Classification | None = None
    detection: Detection | None = None

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, data: Any) -> Any:
        if isinstance(data, dict):
            kinds = [key for key in data if key in ("classification", "detection")]
            others = [key for key in data if key not in ("classification", "detection")]
            if others or len(kinds) != 1:
                raise ValueError(
                    f"a post-processing has exactly one key; got {sorted(data)}. Supported: "
                    + SUPPORTED_POST_PROCESSINGS
                )
        return data

    @property
    def thresholds(self) -> tuple[float, ...] | None:
        chosen = self.classification or self.detection
        assert chosen is not None
        return chosen.thresholds

    def with_default_thresholds(self, labels: int) -> PostProcessing:
        """The same post-processing with its effective thresholds written out."""
        if self.classification is None or self.classification.thresholds is not None:
            return self
        thresholds = (DEFAULT_CLASSIFICATION_THRESHOLD,) * labels
        return self.model_copy(
            update={"classification": self.classification.model_copy(update={"thresholds": thresholds})}
        )

    def tensors(self) -> tuple[str, ...]:
        if self.classification is not None:
            return (self.classification.output_tensor,)
        assert self.detection is not None
        out = self.detection.direct_output
        return (out.boxes_tensor, out.scores_tensor, out.classes_tensor)


class RecognitionVersionCreate(_Strict):
    spec_id: int
    network_id: int
    post_processings: tuple[PostProcessing, ...] = Field(min_length=1)

    def check_against(self, outputs: tuple[SpecOutput, ...]) -> None:
        """Post-processings pair with the spec's outputs i-th to i-th; raises ValueError otherwise."""
        check_pairing(self.post_processings, outputs, f"spec {self.spec_id}")

    def with_default_thresholds(self, outputs: tuple[SpecOutput, ...]) -> RecognitionVersionCreate:
        """Thresholds left out are written out, so the stored and returned version shows what applies."""
        return self.model_copy(update={"post_processings": effective_posts(self.post_processings, outputs)})


def effective_posts(
    posts: tuple[PostProcessing, ...], outputs: tuple[SpecOutput, ...]
) -> tuple[PostProcessing, ...]:
    """The post-processings with default thresholds written out (paired with `outputs` already)."""
    return tuple(
        post.with_default_thresholds(len(output.labels.labels))
        for post, output in zip(posts, outputs, strict=True)
    )


def check_pairing(posts: tuple[PostProcessing, ...], outputs: tuple[SpecOutput, ...], spec: str) -> None:
    """One post-processing per output of `spec`, in order, with one threshold per label when given."""
    if len(posts) != len(outputs):
        raise ValueError(
            f"post_processings has {len(posts)} item(s) but {spec} has {len(outputs)} output(s); give one "
            "post-processing per output, in order"
        )
    for index, (post, output) in enumerate(zip(posts, outputs, strict=True)):
        labels = output.labels
        if post.thresholds is not None and len(post.thresholds) != len(labels.labels):
            raise ValueError(
                f"post_processings[{index}] has {len(post.thresholds)} threshold(s) but output {index} "
                f"of the spec has {len(labels.labels)} label(s); give one threshold per label"
            )
        if post.detection is not None and labels.roi != "BBOX":
            raise ValueError(f"post_processings[{index}] is a detection but output {index} has roi NONE")
        if post.classification is not None and labels.roi == "BBOX":
            raise ValueError(f"post_processings[{index}] is a classification but output {index} has roi BBOX")


class InferenceOptions(_Strict):
    show_discarded: bool = False
    max_predictions: int = Field(100, ge=1, le=10_000)
