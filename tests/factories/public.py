"""Public networks installed the way an operator does: `<public_dir>/<slug>/network.json` beside the
SavedModel files. Blocking file writes: call from sync fixtures or helpers, never from the loop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.factories.models import ModelFiles

COLOUR_LABELS = [{"id": 1, "name": "blue"}, {"id": 2, "name": "green"}, {"id": 3, "name": "red"}]


def install_public(public_dir: Path, slug: str, model: ModelFiles, manifest: dict[str, Any]) -> Path:
    entry = public_dir / slug
    (entry / "variables").mkdir(parents=True)
    for name, content in model.contents.items():
        (entry / ("variables/" + name if name.startswith("variables.") else name)).write_bytes(content)
    (entry / "network.json").write_text(json.dumps(manifest))
    return entry


def colour_manifest(*, recognition: bool = True, thresholds: list[float] | None = None) -> dict[str, Any]:
    """The tiny classifier with pixel_scaling 1 (pooled channels = colour / 255) and, when `recognition`,
    the colours spec read from `prob`."""
    manifest: dict[str, Any] = {
        "name": "Colours",
        "description": "blue, green or red",
        "framework": "tensorflow-1.x",
        "preprocessing": {
            "inputs": [{"tensor_name": "input", "image": {"target_size": "8x8", "pixel_scaling": 1.0}}]
        },
    }
    if recognition:
        classification: dict[str, Any] = {"output_tensor": "prob"}
        if thresholds is not None:
            classification["thresholds"] = thresholds
        manifest["recognition"] = {
            "outputs": [{"labels": {"roi": "NONE", "labels": COLOUR_LABELS}}],
            "post_processings": [{"classification": classification}],
        }
    return manifest
