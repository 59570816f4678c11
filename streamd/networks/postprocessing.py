"""Post-processing: raw output tensors of one image → scored label hypotheses, boxes in frame pixels.

Classification reads one score per label; detection reads TF Object Detection API tensors (boxes
normalized `[ymin, xmin, ymax, xmax]` to the network input, scores, class ids matched against the
labels' `id`), maps boxes to frame pixels and applies per-label NMS. Selection (`predicted` vs
`discarded`, `max_predictions`) and the Deepomatic JSON shape are separate steps. Pure numpy; runs on
the executor thread (decode) or the loop (selection and formatting, which are tiny).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamd.errors import StreamdError
from streamd.networks.preprocessing import BoxTransform
from streamd.networks.recognition import Label, LabelsOutput, PostProcessing
from streamd.networks.spec import graph_tensor_name


class PostProcessingError(StreamdError):
    """The network's outputs do not fit the version's post-processing (shapes, label counts)."""

    http_status = 400
    code = "postprocessing_failed"


@dataclass(frozen=True, slots=True)
class Hypothesis:
    label_id: int
    label_name: str
    score: float
    threshold: float
    box: tuple[float, float, float, float] | None = None  # xmin, ymin, xmax, ymax in frame pixels
    region_id: int | None = None

    @property
    def passes(self) -> bool:
        return self.score >= self.threshold


@dataclass(frozen=True, slots=True)
class Selection:
    predicted: tuple[Hypothesis, ...]
    discarded: tuple[Hypothesis, ...]


def decode(
    post: PostProcessing,
    output: LabelsOutput,
    tensors: Mapping[str, np.ndarray],
    transform: BoxTransform,
    *,
    keep: Keep | None = None,
    nms: float | None = None,
) -> list[Hypothesis]:
    """The hypotheses of one output of one image, best first (all of them, or those `keep` asks for).
    For detection, `keep.min_score` replaces the version's `discard_threshold` and `nms` its
    `nms_threshold` (DeepDetect's `confidence_threshold` and `nms_threshold` output parameters)."""
    if post.classification is not None:
        scores = tensors[graph_tensor_name(post.classification.output_tensor)]
        # Stored versions have them written out; the default covers a post-processing built by hand.
        thresholds = post.with_default_thresholds(len(output.labels)).thresholds
        assert thresholds is not None
        return classify(scores, output.labels, thresholds, keep=keep)
    assert post.detection is not None
    layout = post.detection.direct_output
    return detect(
        tensors[graph_tensor_name(layout.boxes_tensor)],
        tensors[graph_tensor_name(layout.scores_tensor)],
        tensors[graph_tensor_name(layout.classes_tensor)],
        output.labels,
        post.detection.thresholds,
        nms_threshold=post.detection.nms_threshold if nms is None else nms,
        discard_threshold=(
            post.detection.discard_threshold if keep is None or keep.min_score is None else keep.min_score
        ),
        transform=transform,
    )


@dataclass(frozen=True, slots=True)
class Keep:
    """Which classification hypotheses to build: those scoring at least `min_score` (or, without it,
    their label's threshold), the best `limit` of them (None: all). With 1000 labels per crop, building
    only these keeps post-processing off the critical path."""

    min_score: float | None = None
    limit: int | None = None


def classify(
    scores: np.ndarray, labels: Sequence[Label], thresholds: Sequence[float], *, keep: Keep | None = None
) -> list[Hypothesis]:
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if values.size != len(labels):
        raise PostProcessingError(
            f"the classification tensor has {values.size} values for one image but the spec has "
            f"{len(labels)} labels; use the tensor with one score per label"
        )
    candidates = np.arange(values.size)
    if keep is not None:
        floor = np.asarray(thresholds, dtype=np.float64) if keep.min_score is None else keep.min_score
        candidates = candidates[values >= floor]
    order = candidates[np.argsort(-values[candidates], kind="stable")]
    if keep is not None and keep.limit is not None:
        order = order[: keep.limit]
    return [Hypothesis(labels[i].id, labels[i].name, float(values[i]), float(thresholds[i])) for i in order]


def detect(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    labels: Sequence[Label],
    thresholds: Sequence[float],
    *,
    nms_threshold: float,
    discard_threshold: float,
    transform: BoxTransform,
) -> list[Hypothesis]:
    boxes = np.asarray(boxes, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    classes = np.asarray(classes).reshape(-1)
    if boxes.size != 4 * scores.size or classes.size != scores.size:
        raise PostProcessingError(
            f"detection tensors disagree: {boxes.size // 4} boxes, {scores.size} scores, {classes.size} "
            "classes per image; boxes must be [N, 4], scores and classes [N]"
        )
    index_of = {label.id: i for i, label in enumerate(labels)}
    class_ids = np.rint(classes.astype(np.float64)).astype(np.int64)
    frame_boxes = transform.to_frame(boxes.reshape(-1, 4))
    keep = [
        i
        for i in np.argsort(-scores, kind="stable")
        if scores[i] > 0 and scores[i] >= discard_threshold and int(class_ids[i]) in index_of
    ]
    kept = _nms(frame_boxes, scores, class_ids, keep, nms_threshold)
    hypotheses = []
    for region_id, i in enumerate(kept, start=1):
        label_index = index_of[int(class_ids[i])]
        label = labels[label_index]
        xmin, ymin, xmax, ymax = (float(v) for v in frame_boxes[i])
        hypotheses.append(
            Hypothesis(
                label.id,
                label.name,
                float(scores[i]),
                float(thresholds[label_index]),
                (xmin, ymin, xmax, ymax),
                region_id,
            )
        )
    return hypotheses


def _nms(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, order: list[int], iou: float
) -> list[int]:
    """Greedy per-class suppression: a box overlapping a better one of its class above `iou` goes."""
    kept: list[int] = []
    for i in order:
        if all(classes[j] != classes[i] or _iou(boxes[i], boxes[j]) <= iou for j in kept):
            kept.append(i)
    return kept


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def select(hypotheses: Sequence[Hypothesis], show_discarded: bool, max_predictions: int) -> Selection:
    """`predicted` = score ≥ threshold; `discarded` only when asked; at most `max_predictions` in all,
    predicted first (the official client's tests pin this)."""
    predicted = [h for h in hypotheses if h.passes][:max_predictions]
    room = max_predictions - len(predicted)
    discarded = [h for h in hypotheses if not h.passes][:room] if show_discarded else []
    return Selection(tuple(predicted), tuple(discarded))


def to_deepomatic(
    selection: Selection, image_width: int, image_height: int, offset_x: int = 0, offset_y: int = 0
) -> dict[str, Any]:
    """Deepomatic's `{"labels": {"predicted", "discarded"}}`; boxes normalized to the image as sent (a
    frame cropped from it by a `bbox` input starts at `offset_x`, `offset_y`)."""

    def item(h: Hypothesis) -> dict[str, Any]:
        out: dict[str, Any] = {
            "label_id": h.label_id,
            "label_name": h.label_name,
            "score": h.score,
            "threshold": h.threshold,
        }
        if h.box is not None:
            xmin, ymin, xmax, ymax = h.box
            out["roi"] = {
                "region_id": h.region_id,
                "bbox": {
                    "xmin": (xmin + offset_x) / image_width,
                    "ymin": (ymin + offset_y) / image_height,
                    "xmax": (xmax + offset_x) / image_width,
                    "ymax": (ymax + offset_y) / image_height,
                },
            }
        return out

    return {
        "labels": {
            "predicted": [item(h) for h in selection.predicted],
            "discarded": [item(h) for h in selection.discarded],
        }
    }
