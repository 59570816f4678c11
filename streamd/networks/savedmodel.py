"""Loading TensorFlow SavedModels and checking them against their preprocessing.

Each SavedModel runs where it runs correctly: the TF1 `Session` loader when every variable its
signatures read was restored (TF1 graphs, `tf.Module` exports, Keras 3 `model.export()`), which keeps
any tensor of the graph addressable and the per-network thread pools; otherwise (a Keras model saved
with `tf.saved_model.save`, whose object-based variables the TF1 loader leaves unrestored) the
signature functions of `tf.saved_model.load`, addressed by the tensor names of its `signature_def`s.

Everything here blocks (TensorFlow import, graph load, variable restore): call it from a worker
thread, never from the event loop. TensorFlow is imported lazily because it costs seconds.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamd.errors import ModelLoadError
from streamd.networks.freezing import freeze
from streamd.networks.meanfile import load_mean
from streamd.networks.spec import Preprocessing, graph_tensor_name
from streamd.networks.tfmodel import FunctionModel, LoadedModel, SessionModel, Shape, Signature

logger = logging.getLogger(__name__)

SERVE_TAG = "serve"
# Written by tf.saved_model.save next to the real signatures; it runs the init ops, takes no input.
INIT_SIGNATURE = "__saved_model_init_op"


def tensorflow_version() -> str | None:
    """The installed TensorFlow distribution's version, without importing TensorFlow."""
    from importlib import metadata

    for dist in ("tensorflow-cpu", "tensorflow"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def kernels() -> str:
    """Which CPU kernels TensorFlow runs: "oneDNN" or "Eigen" (streamd/__init__.py asks for oneDNN; the
    environment may say otherwise), "unknown" for a TensorFlow without the private module that tells."""
    try:
        from tensorflow.python.util import _pywrap_util_port  # type: ignore[attr-defined]

        return "oneDNN" if _pywrap_util_port.IsMklEnabled() else "Eigen"
    except (ImportError, AttributeError):
        return "unknown"


@functools.cache
def log_kernels() -> None:
    """Once, since every inference figure depends on it: which kernels run, and why."""
    logger.info(
        "TensorFlow runs %s CPU kernels (TF_ENABLE_ONEDNN_OPTS=%s)",
        kernels(),
        os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"),
    )


def load_savedmodel(export_dir: Path, intra_op_threads: int = 0, inter_op_threads: int = 0) -> LoadedModel:
    log_kernels()
    started = time.monotonic()
    meta = _read_metagraph(export_dir)
    tags, signatures = tuple(meta.meta_info_def.tags), _signatures(meta)
    session = _load_session(export_dir, tags, signatures, intra_op_threads, inter_op_threads)
    model: LoadedModel = session
    unrestored = _unrestored_variables(session)
    if unrestored:
        session.close()
        logger.info(
            "%s: the TF1 loader leaves %d variable(s) unrestored (%s); running its signatures through "
            "tf.saved_model.load",
            export_dir.name,
            len(unrestored),
            ", ".join(unrestored[:3]),
        )
        model = _load_functions(export_dir, tags, signatures)
    model.load_time_s = time.monotonic() - started
    return model


def load_network_files(
    directory: Path,
    preprocessing: Preprocessing,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    freeze_graph: bool = False,
    fuse_graph: bool = True,
    lite_graph: bool = False,
) -> tuple[LoadedModel, list[np.ndarray | None]]:
    """Blocking: the SavedModel and each input's mean, in its layout; with `freeze_graph`, a Session
    model's served outputs run through a frozen copy of its graph (fused too with `fuse_graph`) when
    that gives the same results, run by TensorFlow Lite with `lite_graph` (networks/freezing.py,
    networks/fusing.py, networks/lite.py)."""
    model = load_savedmodel(directory, intra_op_threads, inter_op_threads)
    try:
        means = [
            None
            if item.image.mean_file is None
            else load_mean(directory / item.image.mean_file, item.image.dimension_order)
            for item in preprocessing.inputs
        ]
    except Exception:
        model.close()
        raise
    if freeze_graph and isinstance(model, SessionModel):
        model = freeze(
            model, preprocessing, means, intra_op_threads, inter_op_threads, fuse_graph, lite_graph
        )
    return model, means


def _load_session(
    export_dir: Path, tags: tuple[str, ...], signatures: tuple[Signature, ...], intra: int, inter: int
) -> SessionModel:
    import tensorflow as tf

    graph = tf.Graph()
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=intra, inter_op_parallelism_threads=inter)
    session = tf.compat.v1.Session(graph=graph, config=config)
    try:
        with graph.as_default():
            tf.compat.v1.saved_model.loader.load(session, list(tags), str(export_dir))
    except Exception as exc:
        session.close()
        raise ModelLoadError(_explain_load_failure(export_dir, exc)) from None
    return SessionModel(graph, session, tags, signatures)


def _unrestored_variables(model: SessionModel) -> list[str]:
    """Resource variables that the signatures' outputs read and the TF1 loader did not restore.

    Checked per signature rather than over the whole graph: `model.export()` graphs hold unused,
    never-restored copies of the variables beside the ones their functions capture."""
    import tensorflow as tf

    handles: dict[str, Any] = {}
    names = {op.name for op in model.graph.get_operations()}
    pending = [
        model.graph.get_operation_by_name(name.split(":")[0])
        for sig in model.signatures
        for name in sig.outputs.values()
        if name.split(":")[0] in names
    ]
    seen = {op.name for op in pending}
    while pending:
        op = pending.pop()
        if op.type == "VarHandleOp":
            handles[op.name] = op.outputs[0]
        for parent in [tensor.op for tensor in op.inputs] + list(op.control_inputs):
            if parent.name not in seen:
                seen.add(parent.name)
                pending.append(parent)
    if not handles:
        return []
    with model.graph.as_default(), tf.name_scope("streamd_restored"):
        checks = [tf.raw_ops.VarIsInitializedOp(resource=handle) for handle in handles.values()]
    restored = model.session.run(checks)
    return sorted(name for name, ok in zip(handles, restored, strict=True) if not ok)


def _load_functions(
    export_dir: Path, tags: tuple[str, ...], signatures: tuple[Signature, ...]
) -> FunctionModel:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(export_dir), tags=list(tags))
        return FunctionModel(loaded, tags, signatures)
    except Exception as exc:
        raise ModelLoadError(_explain_load_failure(export_dir, exc)) from None


def _read_metagraph(export_dir: Path) -> Any:
    """The MetaGraph to load: the one tagged `serve`, else the first one."""
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
    for meta in proto.meta_graphs:
        if SERVE_TAG in meta.meta_info_def.tags:
            return meta
    return proto.meta_graphs[0]


def _signatures(meta: Any) -> tuple[Signature, ...]:
    return tuple(
        Signature(
            key,
            {arg: info.name for arg, info in sig.inputs.items()},
            {out: info.name for out, info in sig.outputs.items()},
            {arg: _proto_shape(info.tensor_shape) for arg, info in sig.inputs.items()},
        )
        for key, sig in sorted(meta.signature_def.items())
        if key != INIT_SIGNATURE and sig.outputs
    )


def _proto_shape(shape: Any) -> Shape:
    if shape.unknown_rank:
        return None
    return tuple(None if dim.size < 0 else dim.size for dim in shape.dim)


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
            graph_shape = model.input_shape(name)
        except KeyError:
            raise ModelLoadError(f"{field} {item.tensor_name!r} {_inputs_hint(model)}") from None
        expected = (None, *item.image.input_shape())
        _check_shape(field, item.tensor_name, graph_shape, expected)
        if item.image.mean_file is not None:
            mean = load_mean(export_dir / item.image.mean_file, item.image.dimension_order)
            _check_mean(index, item.image.mean_file, mean.shape, expected[1:])
        report.append({"tensor_name": name, "shape": list(graph_shape) if graph_shape else None})
    return report


def _inputs_hint(model: LoadedModel) -> str:
    names = ", ".join(model.input_names()) or "none"
    if model.kind == "session":
        return f"is not a tensor of the graph; its placeholders are: {names}"
    return f"is not an input of the SavedModel's signatures; they are: {names}"


def _check_shape(field: str, tensor_name: str, graph_shape: Shape, expected: tuple[int | None, ...]) -> None:
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
