"""Fused inference graphs: a frozen graph flattened, its batch norms folded into the convolutions, and
every convolution given a bias, so that oneDNN runs convolution, bias, activation (and a residual add)
in one pass over the activations instead of three or four.

TensorFlow's own optimiser (grappler) stops short of this on the graphs Keras exports. Measured on
MobileNetV2 224 `model.export()`, frozen, batch 8 (perf on the capacity benchmark, docs/design.md):
grappler pushes a batch norm's scale into a `Conv2D`'s weights but not into a depthwise convolution's,
so 17 broadcast multiplications stay; and oneDNN fuses an activation into a convolution only behind a
`BiasAdd`, which a batch norm's offset is not (an `AddV2`, or nothing at all once constant folding has
removed an offset of zeros), so all 35 `Relu6` run as separate Eigen passes. Here, on the GraphDef:

1. functions are inlined and constants folded (grappler, offline, once);
2. a per-channel multiplication right after a convolution with constant weights is folded into a copy
   of those weights (the rounding of one product per weight, `differences` checks the outputs);
3. a per-channel addition right after a convolution becomes a `BiasAdd`;
4. a convolution still without one gets a `BiasAdd` of zeros, so the session's remapper fuses it with
   what follows; the session then runs without constant folding and arithmetic simplification, which
   already ran in step 1 and would only remove those zeros again (`session_options`).

Only NHWC float32 convolutions are touched; a scale or an offset is folded only into one whose value
nothing else reads, a zero bias goes right before the one node that reads a convolution (past the
Identity nodes inlining leaves), or between it and all its readers when it has several (never before a
BiasAdd or a FusedBatchNorm, which TensorFlow fuses by itself), and a node keeps its name and its
value whenever anything outside the rewrite may read it (fed and fetched tensors are never rewritten).
The caller uses the result only if it answers like the original graph (networks/freezing.py).

Blocking (TensorFlow): the deploy and load threads only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CONVOLUTIONS = frozenset({"Conv2D", "DepthwiseConv2dNative"})
_ADDS = frozenset({"Add", "AddV2"})
_PASSING = frozenset({"Identity"})  # nodes a value goes through unchanged
# What the remapper fuses into a convolution by itself: a zero bias in between would stop it (a TF1
# model's conv → FusedBatchNormV3 → Relu becomes one _FusedConv2D as it is).
_FUSED_ALREADY = frozenset({"BiasAdd", "FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"})
OFFLINE_OPTIMIZERS = ("function", "constfold", "arithmetic")  # grappler's, run once before the rewrite


@dataclass(frozen=True, slots=True)
class Fused:
    """What the rewrite did, for the log and the task's data."""

    scales: int  # multiplications folded into weights
    biases: int  # additions turned into BiasAdd
    zero_biases: int  # BiasAdds of zeros given to convolutions without one

    @property
    def changed(self) -> bool:
        return bool(self.scales or self.biases or self.zero_biases)

    def describe(self) -> str:
        return (
            f"{self.scales} scale(s) folded into weights, {self.biases} offset(s) made biases, "
            f"{self.zero_biases} zero bias(es) added"
        )


def fuse(graph_def: Any, feeds: Sequence[str], fetches: Sequence[str]) -> tuple[Any, Fused]:
    """A flattened, fused copy of `graph_def` (a frozen GraphDef) computing `fetches` from `feeds`
    (tensor names). Raises ValueError when the optimised graph lost a feed or a fetch."""
    flat = _optimise_offline(graph_def, feeds, fetches)
    names = {node.name for node in flat.node}
    missing = [name for name in (*feeds, *fetches) if name.split(":")[0] not in names]
    if missing:
        raise ValueError(f"grappler's inlining lost {', '.join(missing)}")
    rewrite = _Rewrite(flat, {name.split(":")[0] for name in (*feeds, *fetches)})
    return flat, rewrite.run()


def session_options(config: Any) -> None:
    """Set a `ConfigProto` up for a fused graph (step 4 of the module's docstring)."""
    from tensorflow.core.protobuf import rewriter_config_pb2

    rewrite = config.graph_options.rewrite_options
    rewrite.constant_folding = rewriter_config_pb2.RewriterConfig.OFF
    rewrite.arithmetic_optimization = rewriter_config_pb2.RewriterConfig.OFF


def _optimise_offline(graph_def: Any, feeds: Sequence[str], fetches: Sequence[str]) -> Any:
    """Grappler's function inlining and constant folding, as a GraphDef (feeds and fetches preserved)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
    from tensorflow.python.grappler import tf_optimizer  # type: ignore[attr-defined]

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    meta_graph = tf.compat.v1.train.export_meta_graph(graph=graph, graph_def=graph.as_graph_def())
    preserved = meta_graph_pb2.CollectionDef()
    preserved.node_list.value.extend([*fetches, *feeds])
    meta_graph.collection_def["train_op"].CopyFrom(preserved)  # grappler keeps what this collection names
    config = config_pb2.ConfigProto()
    config.graph_options.rewrite_options.optimizers.extend(OFFLINE_OPTIMIZERS)
    config.graph_options.rewrite_options.min_graph_nodes = -1
    return tf_optimizer.OptimizeGraph(config, meta_graph)


class _Rewrite:
    """Steps 2-4 on a flat GraphDef, in place."""

    def __init__(self, graph_def: Any, kept: set[str]) -> None:
        self._graph = graph_def
        self._kept = kept  # feeds and fetches: never rewritten
        self._nodes = {node.name: node for node in graph_def.node}
        self._readers: dict[str, list[Any]] = defaultdict(list)  # data and control consumers
        for node in graph_def.node:
            for name in node.input:
                self._readers[_node_name(name)].append(node)
        self._added: list[Any] = []

    def run(self) -> Fused:
        scales = biases = zero_biases = 0
        for conv in [node for node in self._graph.node if _rewritable(node)]:
            if conv.name in self._kept:
                continue
            filter_value = self._constant(conv.input[1])
            if filter_value is None or filter_value.ndim != 4:
                continue
            channels = _out_channels(conv.op, filter_value.shape)
            if self._fold_scale(conv, filter_value, channels):
                scales += 1
            if self._to_bias(conv, channels):
                biases += 1
            elif self._zero_bias(conv, channels):
                zero_biases += 1
        self._graph.node.extend(self._added)
        return Fused(scales, biases, zero_biases)

    # -- the three rewrites --------------------------------------------------------------------------
    def _fold_scale(self, conv: Any, filter_value: np.ndarray, channels: int) -> bool:
        """conv → Mul(·, per-channel c): the weights times c; the Mul passes the conv's value on."""
        mul, source = self._next(conv)
        if mul is None or mul.op != "Mul":
            return False
        scale = self._per_channel(mul, source, channels)
        if scale is None:
            return False
        if conv.op == "Conv2D":  # filter [h, w, in, out]
            scaled = filter_value * scale
        else:  # depthwise filter [h, w, in, multiplier]: output channel = in * multiplier + m
            scaled = filter_value * scale.reshape(filter_value.shape[2], filter_value.shape[3])
        conv.input[1] = self._constant_node(f"{conv.name}/fused_filter", scaled)
        _become(mul, "Identity", [conv.name])
        self._readers[conv.name] = [mul]  # the Identity nodes skipped read nothing that is read
        return True

    def _to_bias(self, conv: Any, channels: int) -> bool:
        """conv → Add(·, per-channel b): BiasAdd(conv, b), under the Add's name."""
        add, source = self._next(conv)
        if add is None or add.op not in _ADDS:
            return False
        bias = self._per_channel(add, source, channels)
        if bias is None:
            return False
        _become(add, "BiasAdd", [conv.name, self._constant_node(f"{conv.name}/fused_bias", bias)])
        add.attr["data_format"].s = b"NHWC"
        self._readers[conv.name] = [add]  # the Identity nodes skipped read nothing that is read
        return True

    def _zero_bias(self, conv: Any, channels: int) -> bool:
        """A BiasAdd of zeros right before the one node that reads the conv's value (past the Identity
        nodes in between, which would keep the remapper from fusing it), or between the conv and
        everything that reads it."""
        following, source = self._next(conv)
        if not self._readers[conv.name] or (following is not None and following.op in _FUSED_ALREADY):
            return False
        import tensorflow as tf

        bias = tf.compat.v1.NodeDef(name=self._unused(f"{conv.name}/fused_zero_bias"), op="BiasAdd")
        bias.input.extend(
            [conv.name, self._constant_node(f"{conv.name}/fused_zeros", np.zeros(channels, np.float32))]
        )
        bias.attr["T"].type = conv.attr["T"].type
        bias.attr["data_format"].s = b"NHWC"
        if following is not None:
            following.input[list(following.input).index(source)] = bias.name
            self._readers[bias.name] = [following]
        else:
            for reader in self._readers[conv.name]:
                for index, name in enumerate(reader.input):
                    if not name.startswith("^") and _node_name(name) == conv.name:
                        reader.input[index] = bias.name
            self._readers[bias.name] = self._readers.pop(conv.name)
        self._readers[conv.name] = [bias]
        self._added.append(bias)
        return True

    # -- graph reading -------------------------------------------------------------------------------
    def _next(self, conv: Any) -> tuple[Any | None, str]:
        """The one node that reads the conv's value (through Identity nodes that nothing else reads),
        and the input name it reads it by; (None, "") when the value is read more than once."""
        current = conv
        while True:
            readers = self._readers[current.name]
            if len(readers) != 1:
                return None, ""
            reader = readers[0]
            data = [name for name in reader.input if _node_name(name) == current.name]
            if len(data) != 1 or data[0].startswith("^") or reader.name in self._kept:
                return None, ""
            if not self._passes(reader):
                return reader, data[0]
            current = reader

    def _per_channel(self, node: Any, source: str, channels: int) -> np.ndarray | None:
        """The constant other operand of a binary `node`, flattened, when it is one value per channel
        (shape [C] or [1, ..., 1, C]) of float32."""
        if len(node.input) != 2 or not _has_type(node, _FLOAT):
            return None
        other = node.input[1] if node.input[0] == source else node.input[0]
        value = self._constant(other)
        if value is None or value.dtype != np.float32 or value.size != channels or value.ndim > 4:
            return None
        if value.ndim == 0 or value.shape[-1] != channels:
            return None
        return value.reshape(channels)

    def _constant(self, name: str) -> np.ndarray | None:
        """The value of a Const (through Identity nodes), or None."""
        if name.startswith("^"):
            return None
        node = self._nodes.get(_node_name(name))
        while node is not None and self._passes(node):
            node = self._nodes.get(_node_name(node.input[0]))
        if node is None or node.op != "Const":
            return None
        import tensorflow as tf

        value: np.ndarray = tf.make_ndarray(node.attr["value"].tensor)
        return value

    def _passes(self, node: Any) -> bool:
        """An Identity with one data input whose control inputs, if any, are constants (as function
        inlining leaves them, `x + 0` after a folded offset): its value is its input's, and skipping it
        skips nothing that runs (an Assert or a CheckNumerics behind it stops the rewrite)."""
        if node.op not in _PASSING:
            return False
        data = [name for name in node.input if not name.startswith("^")]
        controls = [self._nodes.get(_node_name(name)) for name in node.input if name.startswith("^")]
        return len(data) == 1 and all(c is not None and c.op == "Const" for c in controls)

    def _unused(self, name: str) -> str:
        """`name`, or `name_2`, `name_3`... if the graph already has a node of that name."""
        candidate, suffix = name, 1
        while candidate in self._nodes:
            suffix += 1
            candidate = f"{name}_{suffix}"
        self._nodes[candidate] = None
        return candidate

    def _constant_node(self, name: str, value: np.ndarray) -> str:
        import tensorflow as tf

        name = self._unused(name)
        node = tf.compat.v1.NodeDef(name=name, op="Const")
        node.attr["dtype"].type = _FLOAT
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value.astype(np.float32)))
        self._nodes[name] = node
        self._added.append(node)
        return name


_FLOAT = 1  # DT_FLOAT in TensorFlow's types.proto


def _rewritable(node: Any) -> bool:
    return (
        node.op in CONVOLUTIONS
        and _has_type(node, _FLOAT)
        and ("data_format" not in node.attr or node.attr["data_format"].s in (b"", b"NHWC"))
        and len(node.input) == 2
    )


def _has_type(node: Any, dtype: int) -> bool:
    """Whether the node's `T` is `dtype` (without adding an empty `T` to a node that has none)."""
    return "T" in node.attr and node.attr["T"].type == dtype


def _out_channels(op: str, filter_shape: tuple[int, ...]) -> int:
    return filter_shape[3] if op == "Conv2D" else filter_shape[2] * filter_shape[3]


def _become(node: Any, op: str, inputs: list[str]) -> None:
    """Turn `node` into an `op` of these inputs, under its own name and with its own type."""
    dtype = node.attr["T"].type
    del node.input[:]
    node.input.extend(inputs)
    node.op = op
    node.attr.clear()
    node.attr["T"].type = dtype


def _node_name(tensor: str) -> str:
    return tensor.lstrip("^").split(":")[0]
