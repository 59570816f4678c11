"""Frozen graphs: a Session model's variables folded into constants for the outputs it serves.

A SavedModel reads its weights from variables at every run, so TensorFlow's graph optimiser cannot
fold what depends on weights only. Keras 3 exports (and `tf.Module` ones) compute batch normalisation
from its four variables at every call, as broadcast multiplications and additions over each
activation; with constants, grappler folds them into one scale and offset per channel. Measured on
MobileNetV2 224 exported by `model.export()` (batch 8, two intra-op threads, this project's 2-core VM,
one run side by side): 18.2 -> 13.1 core-ms per image, outputs identical (bench/inference.py).

The frozen graph only holds what the probed outputs need (warmup.probe_outputs: the signatures' outputs
the preprocessing feeds, or the graph's ends), so the original session stays beside it for any other
tensor a recognition version may name later: such runs go to the original, unchanged. The cost is a
second copy of the weights in memory, which is why models above `MAX_FROZEN_BYTES` are left as they are.
A frozen graph is used only once its outputs matched the original's on a probe batch of random images.

Blocking (TensorFlow): the deploy and load threads only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from streamd.networks.fusing import Fused, fuse, session_options
from streamd.networks.lite import LiteRunner, convert
from streamd.networks.preprocessing import preprocess
from streamd.networks.spec import ImagePreprocessing, Preprocessing, graph_tensor_name
from streamd.networks.tfmodel import LoadedModel, SessionModel
from streamd.networks.warmup import probe_outputs

logger = logging.getLogger(__name__)

MAX_FROZEN_BYTES = 512 * 1024**2  # a second copy of the weights is not worth more than this
PROBE_BATCH = 2
_VARIABLE_OPS = {"VarHandleOp", "VariableV2", "Variable"}


class FrozenSessionModel(SessionModel):
    """A Session model whose probed outputs run through a frozen copy of its graph.

    Everything else (introspection, shapes, other tensors) is the original model's, so deployment
    checks and error messages are unchanged."""

    def __init__(
        self,
        original: SessionModel,
        session: object,
        fetchable: frozenset[str],
        feedable: frozenset[str],
        fused: Fused | None = None,
    ) -> None:
        super().__init__(original.graph, original.session, original.tags, original.signatures)
        self.load_time_s = original.load_time_s
        self._frozen = session
        self._fetchable = fetchable
        self._feedable = feedable
        self.fused = fused  # what networks/fusing.py rewrote, None if the graph runs as frozen
        self.lite: LiteRunner | None = None  # networks/lite.py, when the graph runs there

    def run(self, fetches: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if self.lite is not None and self.lite.serves(fetches, feeds):
            return self.lite.run(fetches, feeds)
        if self._fetchable.issuperset(fetches) and self._feedable.issuperset(feeds):
            outputs: list[np.ndarray] = self._frozen.run(list(fetches), feed_dict=dict(feeds))  # type: ignore[attr-defined]
            return outputs
        return super().run(fetches, feeds)

    def close(self) -> None:
        self.lite = None  # its interpreters go with their last reference
        self._frozen.close()  # type: ignore[attr-defined]
        super().close()


def runs_lite(model: LoadedModel) -> bool:
    """Whether a loaded model's served outputs run on TensorFlow Lite (networks/lite.py)."""
    return isinstance(model, FrozenSessionModel) and model.lite is not None


def freeze(
    model: SessionModel,
    preprocessing: Preprocessing,
    means: list[np.ndarray | None],
    intra_op_threads: int,
    inter_op_threads: int,
    fuse_graph: bool = True,
    lite_graph: bool = False,
) -> SessionModel:
    """`model` with its probed outputs frozen (fused, run by TensorFlow Lite: networks/fusing.py,
    networks/lite.py), or `model` itself when freezing is not possible or not worth it (logged with the
    reason; a network never fails to load because of this)."""
    try:
        return _freeze(
            model, preprocessing, means, intra_op_threads, inter_op_threads, fuse_graph, lite_graph
        )
    except Exception:  # an optimisation failing in a way not foreseen below: the model as loaded
        logger.exception("graph not frozen, kept as loaded: unexpected error")
        return model


def _freeze(
    model: SessionModel,
    preprocessing: Preprocessing,
    means: list[np.ndarray | None],
    intra_op_threads: int,
    inter_op_threads: int,
    fuse_graph: bool,
    lite_graph: bool,
) -> SessionModel:
    import tensorflow as tf

    feeds = [graph_tensor_name(item.tensor_name) for item in preprocessing.inputs]
    try:
        outputs = probe_outputs(model, preprocessing)
    except Exception:  # a feed the graph lacks: the deployment's checks explain it, not this
        return model
    if not outputs:
        return model
    weights = variable_bytes(model.graph)
    if weights == 0 or weights > MAX_FROZEN_BYTES:
        logger.info("graph not frozen: its variables hold %.1f MB", weights / 1024**2)
        return model
    started = time.monotonic()
    try:
        with model.graph.as_default():
            graph_def = tf.compat.v1.graph_util.convert_variables_to_constants(
                model.session, model.graph.as_graph_def(), sorted({name.split(":")[0] for name in outputs})
            )
    except Exception as exc:  # TensorFlow's errors, any type: the model stays as it was loaded
        logger.warning("graph not frozen, kept as loaded: %s: %s", type(exc).__name__, exc)
        return model
    try:
        probe = {
            graph_tensor_name(item.tensor_name): _random_batch(item.image, mean)
            for item, mean in zip(preprocessing.inputs, means, strict=True)
        }
        want = model.run(outputs, probe)
    except Exception as exc:  # the deployment's own checks explain a model that cannot run
        logger.warning("graph not frozen, kept as loaded: %s: %s", type(exc).__name__, exc)
        return model
    threads = (intra_op_threads, inter_op_threads)
    candidates: list[tuple[Any, Fused | None]] = [(graph_def, None)]
    if fuse_graph:
        candidates = _candidates(graph_def, feeds, outputs)
    chosen = _first_answering(candidates, want, probe, outputs, threads)
    if chosen is None:
        return model
    session, fused = chosen
    logger.info(
        "graph frozen for %d output(s): %.1f MB of variables folded into constants%s in %.2f s",
        len(outputs),
        weights / 1024**2,
        "" if fused is None else f", then fused ({fused.describe()})",
        time.monotonic() - started,
    )
    try:
        frozen = FrozenSessionModel(model, session, frozenset(outputs), frozenset(feeds), fused)
    except BaseException:
        session.close()
        raise
    if lite_graph:
        frozen.lite = _lite(session, feeds, outputs, probe, want)
    return frozen


def _lite(
    session: Any, feeds: list[str], outputs: list[str], probe: dict[str, np.ndarray], want: list[np.ndarray]
) -> LiteRunner | None:
    """The frozen graph converted to TensorFlow Lite if it answers like the original on the probe."""
    started = time.monotonic()
    try:
        runner = convert(session, feeds, outputs)
        mismatch = differences(want, runner.run(outputs, probe), outputs)
    except Exception as exc:  # the converter's and the interpreter's errors, any type
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        logger.warning("graph not run by TensorFlow Lite: %s: %s", type(exc).__name__, first_line)
        return None
    if mismatch:
        logger.warning("graph not run by TensorFlow Lite: the converted copy differs (%s)", mismatch)
        return None
    logger.info(
        "graph converted to TensorFlow Lite (%.1f MB) in %.2f s",
        runner.model_bytes / 1024**2,
        time.monotonic() - started,
    )
    return runner


def _candidates(graph_def: Any, feeds: list[str], outputs: list[str]) -> list[tuple[Any, Fused | None]]:
    """The frozen graph fused (networks/fusing.py) when that changed anything, then as it is."""
    try:
        fused_def, fused = fuse(graph_def, feeds, outputs)
    except Exception as exc:  # an optimisation: the frozen graph as it is
        logger.warning("frozen graph not fused: %s: %s", type(exc).__name__, exc)
        return [(graph_def, None)]
    return [(fused_def, fused), (graph_def, None)] if fused.changed else [(graph_def, None)]


def _first_answering(
    candidates: list[tuple[Any, Fused | None]],
    want: list[np.ndarray],
    probe: dict[str, np.ndarray],
    outputs: list[str],
    threads: tuple[int, int],
) -> tuple[Any, Fused | None] | None:
    """A session of the first candidate graph whose outputs on the probe are the original's."""
    for graph_def, fused in candidates:
        session = None
        try:
            session = _session(graph_def, fused, *threads)
            mismatch = differences(want, session.run(outputs, feed_dict=probe), outputs)
        except Exception as exc:  # TensorFlow's errors, any type
            mismatch = f"{type(exc).__name__}: {exc}"
        if not mismatch:
            return session, fused
        if session is not None:
            session.close()
        if fused is not None:
            logger.warning("frozen graph not fused: the fused copy differs (%s)", mismatch)
        else:
            logger.warning("graph not frozen, kept as loaded: the frozen copy differs (%s)", mismatch)
    return None


def _session(graph_def: object, fused: Fused | None, intra_op_threads: int, inter_op_threads: int) -> Any:
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    config = tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=intra_op_threads, inter_op_parallelism_threads=inter_op_threads
    )
    if fused is not None:
        session_options(config)
    return tf.compat.v1.Session(graph=graph, config=config)


def variable_bytes(graph: object) -> int:
    """Bytes of the graph's variables, from their declared shapes and types (unknown shapes: 0)."""
    total = 0
    for op in graph.get_operations():  # type: ignore[attr-defined]
        if op.type not in _VARIABLE_OPS:
            continue
        shape = op.get_attr("shape")
        dims = [dim.size for dim in shape.dim] if hasattr(shape, "dim") else shape.as_list()
        if any(dim is None or dim < 0 for dim in dims):
            continue
        total += int(np.prod(dims, dtype=np.int64)) * op.get_attr("dtype").size
    return total


def differences(want: list[np.ndarray], got: list[np.ndarray], names: Sequence[str]) -> str:
    """What differs between the original's outputs and the frozen copy's, '' when nothing does."""
    for name, a, b in zip(names, want, got, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"{name}: {b.dtype}{list(b.shape)} for {a.dtype}{list(a.shape)}"
        if a.dtype.kind in "fc" and not np.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True):
            return f"{name}: largest difference {float(np.nanmax(np.abs(a - b))):.3g}"
        if a.dtype.kind not in "fc" and not np.array_equal(a, b):
            return f"{name}: values differ"
    return ""


def _random_batch(spec: ImagePreprocessing, mean: np.ndarray | None) -> np.ndarray:
    width, height = spec.size_wh or (int(spec.target_size), int(spec.target_size))
    frames = np.random.default_rng(0).integers(0, 256, (PROBE_BATCH, height, width, 3), dtype=np.uint8)
    batch, _ = preprocess(list(frames), spec, mean)
    return batch
