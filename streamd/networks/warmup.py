"""The deployment's test run: a real batch through every output the network is known to serve, at each
batch size worth warming, so a network that cannot run fails its deployment instead of every request,
and the first batches of a stream do not pay oneDNN's set-up of a new input shape.

Blocking (TensorFlow runs): the deploy thread only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamd.errors import ModelLoadError
from streamd.networks.preprocessing import preprocess
from streamd.networks.spec import ImagePreprocessing, Preprocessing, graph_tensor_name
from streamd.networks.tfmodel import LoadedModel, SessionModel, describe_tf_error

logger = logging.getLogger(__name__)

# Mid-grey rather than black: a network may legitimately refuse an all-zero input (a log of the
# mean, a division by the variance), and that must fail those requests, not the whole network.
PROBE_LEVEL = 128
# Never fetch these from a TF1 graph's ends: handles and containers cannot be returned to numpy.
_UNFETCHABLE = {"resource", "variant"}


@dataclass(frozen=True, slots=True)
class WarmUp:
    outputs: list[str]
    batch_sizes: list[int]
    time_s: float

    def report(self) -> dict[str, Any]:
        return {
            "probed_outputs": self.outputs,
            "warmed_batch_sizes": self.batch_sizes,
            "warm_up_time_s": round(self.time_s, 3),
        }


def warm_sizes(max_batch_size: int) -> list[int]:
    """1, the powers of two below the maximum, and the maximum: a few dozen ms each for MobileNetV2
    (docs/design.md), and the sizes a loaded batcher meets most (full batches, lone frames)."""
    sizes = {1, max_batch_size}
    size = 2
    while size < max_batch_size:
        sizes.add(size)
        size *= 2
    return sorted(sizes)


def probe_outputs(model: LoadedModel, preprocessing: Preprocessing) -> list[str]:
    """The outputs of every signature the preprocessing feeds; for a graph without one (TF1 Builder
    graphs often have none), its ends: tensors computed from the inputs that no op consumes."""
    feeds = [graph_tensor_name(item.tensor_name) for item in preprocessing.inputs]
    outputs = sorted(
        {
            name
            for sig in model.signatures
            if set(sig.inputs.values()) <= set(feeds)  # `model.export()` adds a `serve` twin we don't feed
            for name in sig.outputs.values()
        }
    )
    if outputs or not isinstance(model, SessionModel):
        return outputs
    return _graph_ends(model.graph, feeds)


def _graph_ends(graph: Any, feeds: list[str]) -> list[str]:
    fed = {graph.get_tensor_by_name(name).op for name in feeds}
    downstream, pending = set(fed), list(fed)
    while pending:
        for tensor in pending.pop().outputs:
            for consumer in tensor.consumers():
                if consumer not in downstream:
                    downstream.add(consumer)
                    pending.append(consumer)
    ends = [
        tensor
        for op in downstream - fed
        for tensor in op.outputs
        if not tensor.consumers() and tensor.dtype.name not in _UNFETCHABLE
    ]
    # An end that also needs a placeholder the preprocessing does not feed (`is_training`) is not
    # something this network can be asked for.
    return sorted(t.name for t in ends if not _needs_unfed_placeholder(t.op, fed))


def _needs_unfed_placeholder(op: Any, fed: set[Any]) -> bool:
    seen, pending = {op}, [op]
    while pending:
        current = pending.pop()
        if current in fed:
            continue  # a fed tensor cuts the graph: what is above it does not run
        if current.type == "Placeholder":
            return True
        for parent in [t.op for t in current.inputs] + list(current.control_inputs):
            if parent not in seen:
                seen.add(parent)
                pending.append(parent)
    return False


def warm_up(
    model: LoadedModel,
    preprocessing: Preprocessing,
    means: list[np.ndarray | None],
    max_batch_size: int,
) -> WarmUp:
    """Run a batch of mid-grey frames of each warmed size through every probed output; a failure
    is a ModelLoadError naming the size and TensorFlow's reason."""
    started = time.monotonic()
    outputs = probe_outputs(model, preprocessing)
    sizes = warm_sizes(max_batch_size)
    if not outputs and model.kind == "function":
        # Only signature outputs exist there: none fed means nothing could ever be asked of it.
        raise ModelLoadError(
            "no signature of the SavedModel is fed entirely by the preprocessing's tensor_name(s); its "
            f"inputs are: {', '.join(model.input_names()) or 'none'}"
        )
    if not outputs:
        return WarmUp(outputs, [], 0.0)
    call = "session.run" if model.kind == "session" else "the signature function"
    for size in sizes:
        feeds = {
            graph_tensor_name(item.tensor_name): _grey_batch(item.image, mean, size)
            for item, mean in zip(preprocessing.inputs, means, strict=True)
        }
        try:
            model.run(outputs, feeds)
        except Exception as exc:  # TensorFlow's errors, any type: the network cannot serve
            raise ModelLoadError(
                f"a test batch of {size} mid-grey image(s) failed for {', '.join(outputs)}: "
                f"{describe_tf_error(exc, call)}"
            ) from None
    elapsed = time.monotonic() - started
    logger.info("ran batches of %s through %d output(s) in %.2f s", sizes, len(outputs), elapsed)
    return WarmUp(outputs, sizes, elapsed)


def _grey_batch(spec: ImagePreprocessing, mean: np.ndarray | None, size: int) -> np.ndarray:
    width, height = spec.size_wh or (int(spec.target_size), int(spec.target_size))
    frame = np.full((height, width, 3), PROBE_LEVEL, dtype=np.uint8)
    batch, _ = preprocess([frame] * size, spec, mean)
    return batch
