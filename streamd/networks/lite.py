"""Lite graphs: a frozen graph's served outputs run by TensorFlow Lite's interpreter (XNNPACK kernels).

MobileNetV2 224 on a 2-core AMD EPYC (AVX2) took 20-23 core-ms per image through the fused frozen
graph on oneDNN, 12-16 through TensorFlow Lite's interpreter with its default XNNPACK delegate on one
thread (docs/design.md, "Lite graphs"). XNNPACK is fastest per image at batch 1, and an interpreter
resized to another batch size re-plans its tensors, so each interpreter keeps batch 1 and a batch is
run one image at a time; an interpreter is not thread-safe, so each concurrent batch takes one from a
pool (two batches of a network run at once by default, so two interpreters, each with its own copy of
the packed weights).

The frozen (or fused) session is converted as it stands, by tensor name, so the daemon's feeds and
fetches need no mapping. The copy is used only when every probed output matches the frozen graph's on
the probe batch (same check as freezing: shapes, types, allclose 1e-4/1e-5); a graph that does not
convert (ops TensorFlow Lite lacks, string inputs, more than the batch dimension unknown) keeps running
as it was, and so does a graph that checks its values (`check_numerics`, `Assert`: the converter
drops them, see CHECKING_OPS). Anything but exactly the converted feeds and a subset of its outputs
runs on the session.

Blocking (TensorFlow): the deploy and load threads; `LiteRunner.run` on the inference threads.
"""

from __future__ import annotations

import queue
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Most images a batch of a network run here holds, unless the network's own metadata sets its size.
# A batch runs one image after another on one thread, so a bigger batch costs no less per image: it
# only makes its first images wait for its last and leaves the other batch slot idle at its end. Under
# load the batcher's batches grow (that pays on TensorFlow, where batch 8 costs half of batch 1 per
# image); here 9 cameras just past an overload stayed behind with batches of 22-27 and 2-3 s latency,
# while with batches of 4 they recovered (docs/design.md, "Lite batches").
LITE_BATCH_SIZE = 4

# Ops whose only effect is to fail the run (or print) on bad values: TensorFlow Lite's converter drops
# them, so a graph holding one would answer where TensorFlow refuses (a black image through a
# `check_numerics` on its log) and stays on TensorFlow.
CHECKING_OPS = frozenset({"CheckNumerics", "CheckNumericsV2", "Assert", "Print", "PrintV2"})


class LiteRunner:
    """A converted graph and a pool of batch-1 interpreters of it."""

    def __init__(self, model: bytes, feeds: Sequence[str], outputs: Sequence[str]) -> None:
        self.model_bytes = len(model)
        self._model = model
        self._feeds = frozenset(feeds)
        self._outputs = frozenset(outputs)
        self._pool: queue.SimpleQueue[_Interpreter] = queue.SimpleQueue()
        self._pool.put(_Interpreter(model))  # fails here, at load, if it cannot run at all

    def serves(self, fetches: Sequence[str], feeds: Mapping[str, np.ndarray]) -> bool:
        # An empty batch has nothing to run one image at a time: the session answers for it.
        return self._feeds == feeds.keys() and self._outputs.issuperset(fetches) and _images(feeds) > 0

    def run(self, fetches: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        try:
            interpreter = self._pool.get_nowait()
        except queue.Empty:
            interpreter = _Interpreter(self._model)  # one more batch at once than before
        try:
            return interpreter.run(fetches, feeds)
        finally:
            self._pool.put(interpreter)


class _Interpreter:
    def __init__(self, model: bytes) -> None:
        import tensorflow as tf

        with warnings.catch_warnings():
            # TensorFlow points to the ai-edge-litert package for the interpreter; 2.21 still has it,
            # and a TensorFlow without it fails the conversion, which keeps the frozen graph.
            warnings.simplefilter("ignore", UserWarning)
            self._interpreter = tf.lite.Interpreter(model_content=model, num_threads=1)
        self._interpreter.allocate_tensors()
        self._inputs = {d["name"]: d["index"] for d in self._interpreter.get_input_details()}
        self._outputs = {d["name"]: d["index"] for d in self._interpreter.get_output_details()}

    def run(self, fetches: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        images = _images(feeds)
        results: list[list[np.ndarray]] = [[] for _ in fetches]
        for i in range(images):
            for name, batch in feeds.items():
                self._interpreter.set_tensor(self._inputs[_op(name)], batch[i : i + 1])
            self._interpreter.invoke()
            for column, name in zip(results, fetches, strict=True):
                column.append(self._interpreter.get_tensor(self._outputs[_op(name)]))
        return [np.concatenate(column) for column in results]


def convert(session: Any, feeds: Sequence[str], outputs: Sequence[str]) -> LiteRunner:
    """`session`'s graph from `feeds` to `outputs` converted to TensorFlow Lite; raises what the
    converter or the interpreter raise when it cannot be."""
    import tensorflow as tf

    graph = session.graph
    checks = sorted({op.type for op in graph.get_operations()} & CHECKING_OPS)
    if checks:
        raise ValueError(f"the graph checks its values ({', '.join(checks)}), which TensorFlow Lite drops")
    converter = tf.compat.v1.lite.TFLiteConverter.from_session(
        session,
        [graph.get_tensor_by_name(name) for name in feeds],
        [graph.get_tensor_by_name(name) for name in outputs],
    )
    return LiteRunner(converter.convert(), feeds, outputs)


def _images(feeds: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(feeds.values()))) if feeds else 0


def _op(tensor: str) -> str:
    """The interpreter's name of a graph tensor: `name:0` is `name`, `name:1` stays `name:1`."""
    return tensor[:-2] if tensor.endswith(":0") else tensor
