"""What a chain returns: frozen, typed result trees, turned into DeepDetect's JSON once, at the edges.

A `Prediction` is one input image: the first root service's `Output` (classes, raw `vals` or `images`)
and what other calls nest at the image level. A `Detection` (DeepDetect's class object: `cat`, `prob`,
`bbox`) carries what the calls below a crop nest in it. Nested results are keyed by service name (or
action id) and ordered by the calls' positions in the chain, so a record's bytes never depend on which
branch finished first. `last` is not stored: DeepDetect's flag on the last object of a list is written
when serialised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Fields of DeepDetect's result objects: a service or action id nesting under one of these names would
# overwrite it, so the chain validation refuses them (chains/plan.py).
RESERVED_KEYS = frozenset(
    {
        "uri",
        "classes",
        "vals",
        "images",
        "cat",
        "prob",
        "bbox",
        "last",
        "track_id",
        "zones",
        "motion",
        "events",
    }
)


@dataclass(frozen=True, slots=True)
class Box:
    """A box in the original frame's pixels (or in the service's own image with `bbox_coordinates`)."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float

    def to_json(self) -> dict[str, float]:
        return {"xmin": self.xmin, "ymin": self.ymin, "xmax": self.xmax, "ymax": self.ymax}


@dataclass(frozen=True, slots=True)
class Detection:
    """One class object: a category with its probability, a box when the service has boxes (and
    `output.bbox` is on), and the results of the calls that ran on its crop. On a stream, a tracked
    service's detections carry a `track_id` (None until a track is confirmed) and, with zones, the
    names of the zones holding them."""

    cat: str
    prob: float
    box: Box | None = None
    nested: Nested = ()
    track_id: int | None = None
    zones: tuple[str, ...] | None = None  # None: the stream has no zones (the key is left out)

    def to_json(self, *, last: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"cat": self.cat, "prob": self.prob}
        if self.box is not None:
            out["bbox"] = self.box.to_json()
        if self.track_id is not None:
            out["track_id"] = self.track_id
        if self.zones is not None:
            out["zones"] = list(self.zones)
        if last:
            out["last"] = True
        out.update(nested_json(self.nested))
        return out


@dataclass(frozen=True, slots=True)
class Classes:
    """A service's classes (classification, detection, a CTC sequence), best first."""

    classes: tuple[Detection, ...] = ()
    call_id: str = field(default="", compare=False)  # the call that made them (not serialised)

    def to_json(self) -> dict[str, Any]:
        last = len(self.classes) - 1
        return {"classes": [d.to_json(last=i == last) for i, d in enumerate(self.classes)]}


@dataclass(frozen=True, slots=True)
class Vals:
    """A raw layer (`mllib.extract_layer`), or a drawn image as DeepDetect's row-major BGR numbers.
    The sequence is kept as given (it can hold a whole frame): not copied, not to be mutated."""

    vals: Sequence[float]

    def to_json(self) -> dict[str, Any]:
        return {"vals": self.vals}


@dataclass(frozen=True, slots=True)
class Images:
    """Pictures, base64-encoded: `output.image` layers, drawn boxes, recomposed crops."""

    images: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"images": list(self.images)}


Output = Classes | Vals | Images
Nested = tuple[tuple[str, Output], ...]


@dataclass(frozen=True, slots=True)
class Prediction:
    """One input image's results: DeepDetect's prediction object."""

    uri: str
    output: Output = Classes()
    nested: Nested = ()

    def to_json(self) -> dict[str, Any]:
        return {"uri": self.uri, **self.output.to_json(), **nested_json(self.nested)}

    def detections(self) -> tuple[Detection, ...]:
        return self.output.classes if isinstance(self.output, Classes) else ()


def nested_json(nested: Nested) -> dict[str, Any]:
    return {key: output.to_json() for key, output in nested}


def predictions_json(predictions: Sequence[Prediction]) -> list[dict[str, Any]]:
    return [prediction.to_json() for prediction in predictions]
