"""Loading TensorFlow SavedModels through `tf.compat.v1`, so TF1 graphs and TF2 exports alike are
addressed by tensor name, and checking them against their preprocessing.

Everything here blocks (TensorFlow import, graph load, variable restore): call it from a worker
thread, never from the event loop. TensorFlow is imported lazily because it costs seconds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamd.errors import ModelLoadError
from streamd.networks.meanfile import load_mean
from streamd.networks.spec import Preprocessing, graph_tensor_name

logger = logging.getLogger(__name__)

SERVE_TAG = "serve"


@dataclass(slots=True)
class LoadedModel:
    """A SavedModel loaded into its own graph and session; owned by exactly one thread."""

    graph: Any
    session: Any
    tags: tuple[str, ...]
    load_time_s: float

    def close(self) -> None:
        self.session.close()


def tensorflow_version() -> str | None:
    from importlib import metadata

    for dist in ("tensorflow-cpu", "tensorflow"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def load_savedmodel(export_dir: Path, intra_op_threads: int = 0, inter_op_threads: int = 0) -> LoadedModel:
    started = time.monotonic()
    tags = _read_tags(export_dir)
    import tensorflow as tf

    graph = tf.Graph()
    config = tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=intra_op_threads, inter_op_parallelism_threads=inter_op_threads
    )
    session = tf.compat.v1.Session(graph=graph, config=config)
    try:
        with graph.as_default():
            tf.compat.v1.saved_model.loader.load(session, list(tags), str(export_dir))
    except Exception as exc:
        session.close()
        raise ModelLoadError(_explain_load_failure(export_dir, exc)) from None
    return LoadedModel(graph, session, tags, time.monotonic() - started)


def _read_tags(export_dir: Path) -> tuple[str, ...]:
    """Tags of the MetaGraph to load: the one tagged `serve`, else the first one."""
    from google.protobuf import message, text_format
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    pb, pbtxt = export_dir / "saved_model.pb", export_dir / "saved_model.pbtxt"
    try:
        if pb.is_file():
            proto.ParseFromString(pb.read_bytes())
        elif pbtxt.is_file():
            text_format.Parse(pbtxt.read_text(encoding="utf-8"), proto)
        else:
            raise ModelLoadError(f"{export_dir.name}: no saved_model.pb or saved_model.pbtxt")
    except (message.DecodeError, text_format.ParseError, UnicodeDecodeError) as exc:
        name = "saved_model.pb" if pb.is_file() else "saved_model.pbtxt"
        raise ModelLoadError(
            f"{name} is not a TensorFlow SavedModel ({type(exc).__name__}: {exc}); upload the "
            "saved_model.pb written by tf.saved_model.save or SavedModelBuilder"
        ) from None
    if not proto.meta_graphs:
        raise ModelLoadError("the SavedModel holds no MetaGraph; re-export it with a 'serve' tag")
    tag_sets = [tuple(meta.meta_info_def.tags) for meta in proto.meta_graphs]
    for tags in tag_sets:
        if SERVE_TAG in tags:
            return tags
    return tag_sets[0]


def _explain_load_failure(export_dir: Path, exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not (export_dir / "variables" / "variables.index").exists() and "variables" in str(exc).lower():
        return (
            f"the SavedModel could not be loaded because its variables are missing ({text}); upload "
            "variables.index and every variables.data-NNNNN-of-NNNNN file with it"
        )
    return f"the SavedModel could not be loaded: {type(exc).__name__}: {text}"


def check_against_preprocessing(
    model: LoadedModel, export_dir: Path, preprocessing: Preprocessing
) -> list[dict[str, Any]]:
    """Every input tensor must exist and fit what the preprocessing produces; returns the inputs' report."""
    report = []
    for index, item in enumerate(preprocessing.inputs):
        name = graph_tensor_name(item.tensor_name)
        field = f"preprocessing.inputs[{index}].tensor_name"
        try:
            tensor = model.graph.get_tensor_by_name(name)
        except (KeyError, ValueError):
            raise ModelLoadError(
                f"{field} {item.tensor_name!r} is not a tensor of the graph; its placeholders are: "
                f"{', '.join(_placeholders(model.graph)) or 'none'}"
            ) from None
        graph_shape = _shape(tensor)
        expected = (None, *item.image.input_shape())
        _check_shape(field, item.tensor_name, graph_shape, expected)
        if item.image.mean_file is not None:
            mean = load_mean(export_dir / item.image.mean_file, item.image.dimension_order)
            _check_mean(index, item.image.mean_file, mean.shape, expected[1:])
        report.append({"tensor_name": name, "shape": list(graph_shape) if graph_shape else None})
    return report


def _placeholders(graph: Any) -> list[str]:
    return [f"{op.name}:0" for op in graph.get_operations() if op.type == "Placeholder"][:20]


def _shape(tensor: Any) -> tuple[int | None, ...] | None:
    shape = tensor.shape
    if shape.rank is None:
        return None
    return tuple(shape.as_list())


def _check_shape(
    field: str, tensor_name: str, graph_shape: tuple[int | None, ...] | None, expected: tuple[int | None, ...]
) -> None:
    if graph_shape is None:
        return
    fits = len(graph_shape) == len(expected) and all(
        g is None or e is None or g == e for g, e in zip(graph_shape[1:], expected[1:], strict=True)
    )
    if not fits:
        raise ModelLoadError(
            f"{field} {tensor_name!r} has shape {_fmt(graph_shape)} but the preprocessing produces "
            f"{_fmt(expected)}; fix target_size, color_channels or dimension_order"
        )


def _check_mean(
    index: int, name: str, mean_shape: tuple[int, ...], image_shape: tuple[int | None, ...]
) -> None:
    # A variable dimension (NETWORK resize) only admits a mean of extent 1 there.
    target = tuple(1 if dim is None else dim for dim in image_shape)
    try:
        fits = np.broadcast_shapes(mean_shape, target) == target
    except ValueError:
        fits = False
    if not fits:
        raise ModelLoadError(
            f"preprocessing.inputs[{index}].image.mean_file {name!r} has shape {mean_shape} in the input "
            f"layout, which does not broadcast against one image of shape {_fmt(image_shape)}"
        )


def _fmt(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if dim is None else str(dim) for dim in shape) + ")"
