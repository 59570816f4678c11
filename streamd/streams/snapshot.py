"""Snapshots: a stream's latest processed frame with its results drawn, nested labels included.

Pure pixel work (cv2); the API calls it from a worker thread.
"""

from __future__ import annotations

import cv2

from streamd.chains.actions import colour_of, encode_jpeg
from streamd.chains.results import Classes, Detection, Prediction
from streamd.entities import Image
from streamd.networks.preprocessing import as_array

Box = tuple[float, float, float, float]


def collect(detections: tuple[Detection, ...], prefix: str = "") -> tuple[list[tuple[Box, str]], list[str]]:
    """Boxes with their labels (a child's classes appended, `person: blue`), and whole-image labels."""
    boxes: list[tuple[Box, str]] = []
    texts: list[str] = []
    for item in detections:
        label = f"{prefix}{item.cat} {item.prob:.2f}"
        children = [output.classes for _, output in item.nested if isinstance(output, Classes)]
        child_labels = [c.cat for classes in children for c in classes if c.box is None]
        if child_labels:
            label += ": " + ", ".join(child_labels)
        if item.box is not None:
            box = item.box
            boxes.append(((box.xmin, box.ymin, box.xmax, box.ymax), label))
        else:
            texts.append(label)
        for classes in children:
            nested_boxes, _ = collect(tuple(c for c in classes if c.box is not None))
            boxes.extend(nested_boxes)
    return boxes, texts


def render(pixels: Image, prediction: Prediction) -> bytes:
    """A JPEG of the frame with its boxes and labels drawn, nested ones included (CPU: a worker thread)."""
    canvas = as_array(pixels).copy()
    found_boxes, texts = collect(prediction.detections())
    for key, output in prediction.nested:  # other root services, nested at image level
        if isinstance(output, Classes):
            more_boxes, more_texts = collect(output.classes, f"{key}: ")
            found_boxes += more_boxes
            texts += more_texts
    for (xmin, ymin, xmax, ymax), label in found_boxes:
        colour = colour_of(label.split(" ")[0])
        cv2.rectangle(canvas, (round(xmin), round(ymin)), (round(xmax), round(ymax)), colour, 2)
        cv2.putText(
            canvas,
            label,
            (round(xmin), max(12, round(ymin) - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            colour,
            1,
            cv2.LINE_AA,
        )
    for line, text in enumerate(texts):
        cv2.putText(
            canvas, text, (6, 18 + 18 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 2, cv2.LINE_AA
        )
        cv2.putText(
            canvas, text, (6, 18 + 18 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA
        )
    return encode_jpeg(canvas)
