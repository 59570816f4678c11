"""Snapshots: a stream's latest processed frame with its results drawn, nested labels included.

Pure pixel work (cv2); the API calls it from a worker thread.
"""

from __future__ import annotations

from typing import Any

import cv2

from streamd.chains.actions import colour_of, encode_jpeg
from streamd.networks.preprocessing import Image, as_array

Box = tuple[float, float, float, float]


def collect(classes: list[dict[str, Any]], prefix: str = "") -> tuple[list[tuple[Box, str]], list[str]]:
    """Boxes with their labels (a child's classes appended, `person: blue`), and whole-image labels."""
    boxes: list[tuple[Box, str]] = []
    texts: list[str] = []
    for item in classes:
        label = f"{prefix}{item['cat']} {item['prob']:.2f}"
        children = [
            (key, value) for key, value in item.items() if isinstance(value, dict) and "classes" in value
        ]
        child_labels = [c["cat"] for _, value in children for c in value["classes"] if "bbox" not in c]
        if child_labels:
            label += ": " + ", ".join(child_labels)
        if "bbox" in item:
            bbox = item["bbox"]
            boxes.append(((bbox["xmin"], bbox["ymin"], bbox["xmax"], bbox["ymax"]), label))
        else:
            texts.append(label)
        for _, value in children:
            nested_boxes, _ = collect([c for c in value["classes"] if "bbox" in c])
            boxes.extend(nested_boxes)
    return boxes, texts


def render(pixels: Image, predictions: list[dict[str, Any]]) -> bytes:
    canvas = as_array(pixels).copy()
    texts: list[str] = []
    for prediction in predictions:
        found_boxes, found_texts = collect(prediction.get("classes", []))
        texts += found_texts
        for key, value in prediction.items():  # other root services, nested at image level
            if isinstance(value, dict) and "classes" in value and key != "classes":
                more_boxes, more_texts = collect(value["classes"], f"{key}: ")
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
