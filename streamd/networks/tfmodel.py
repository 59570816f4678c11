"""Loaded networks as the executor sees them: tensors fed and fetched by name, whichever TensorFlow
runtime serves them (a TF1 `Session`, or the signature functions of `tf.saved_model.load`).

Everything here blocks (TensorFlow calls): network threads and the deploy/load threads only. Both
kinds may be run from two threads at once (`Session.run` and concrete functions are thread-safe).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

Shape = tuple[int | None, ...] | None


@dataclass(frozen=True, slots=True)
class Signature:
    """One `signature_def` of the MetaGraph: argument → graph tensor name, output key → tensor name."""

    key: str
    inputs: Mapping[str, str]
    outputs: Mapping[str, str]
    input_shapes: Mapping[str, Shape]


class LoadedModel(Protocol):
    """What the executor, the deployment checks and the warm-up need from a loaded SavedModel."""

    kind: Literal["session", "function"]
    tags: tuple[str, ...]
    signatures: tuple[Signature, ...]
    load_time_s: float

    def run(self, fetches: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]: ...
    def input_shape(self, name: str) -> Shape:
        """Shape of a tensor that can be fed; KeyError if it cannot be."""
        ...

    def input_names(self) -> list[str]: ...
    def can_fetch(self, name: str, feeds: Sequence[str]) -> bool: ...
    def close(self) -> None: ...


class SessionModel:
    """A SavedModel in its own graph and session: any tensor of the graph can be fed or fetched."""

    kind: Literal["session", "function"] = "session"

    def __init__(
        self, graph: Any, session: Any, tags: tuple[str, ...], signatures: tuple[Signature, ...]
    ) -> None:
        self.graph = graph
        self.session = session
        self.tags = tags
        self.signatures = signatures
        self.load_time_s = 0.0

    def run(self, fetches: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        outputs: list[np.ndarray] = self.session.run(list(fetches), feed_dict=dict(feeds))
        return outputs

    def input_shape(self, name: str) -> Shape:
        try:
            tensor = self.graph.get_tensor_by_name(name)
        except ValueError:  # a malformed name ("a:b:c") is as unknown as a missing one
            raise KeyError(name) from None
        return None if tensor.shape.rank is None else tuple(tensor.shape.as_list())

    def input_names(self) -> list[str]:
        return [f"{op.name}:0" for op in self.graph.get_operations() if op.type == "Placeholder"][:20]

    def can_fetch(self, name: str, feeds: Sequence[str]) -> bool:
        try:
            self.graph.get_tensor_by_name(name)
        except (KeyError, ValueError):
            return False
        return True

    def close(self) -> None:
        self.session.close()


class FunctionModel:
    """A SavedModel loaded with `tf.saved_model.load`: only the tensor names of its `signature_def`s
    exist; fetching a signature's output calls that signature's function with its inputs."""

    kind: Literal["session", "function"] = "function"

    def __init__(self, loaded: Any, tags: tuple[str, ...], signatures: tuple[Signature, ...]) -> None:
        self._loaded = loaded  # keeps the variables the functions capture alive
        self._functions = {sig.key: loaded.signatures[sig.key] for sig in signatures}
        self.tags = tags
        self.signatures = signatures
        self.load_time_s = 0.0
        self._outputs = {tensor: (sig, key) for sig in signatures for key, tensor in sig.outputs.items()}
        self._shapes = {
            tensor: sig.input_shapes[arg] for sig in signatures for arg, tensor in sig.inputs.items()
        }

    def run(self, fetches: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        wanted: dict[str, list[tuple[int, str]]] = {}
        for index, name in enumerate(fetches):
            sig, key = self._outputs[name]
            wanted.setdefault(sig.key, []).append((index, key))
        values: list[np.ndarray] = [np.empty(0)] * len(fetches)
        for sig in self.signatures:
            if sig.key not in wanted:
                continue
            outputs = self._functions[sig.key](**{arg: feeds[t] for arg, t in sig.inputs.items()})
            for index, key in wanted[sig.key]:
                values[index] = outputs[key].numpy()
        return values

    def input_shape(self, name: str) -> Shape:
        return self._shapes[name]

    def input_names(self) -> list[str]:
        return sorted(self._shapes)

    def can_fetch(self, name: str, feeds: Sequence[str]) -> bool:
        found = self._outputs.get(name)
        return found is not None and set(found[0].inputs.values()) <= set(feeds)

    def fetchable(self, feeds: Sequence[str]) -> list[str]:
        return sorted(name for name in self._outputs if self.can_fetch(name, feeds))

    def close(self) -> None:
        self._functions.clear()
        self._loaded = None


def describe_tf_error(exc: BaseException, call: str = "session.run") -> str:
    """TensorFlow's OpError text is a traceback digest; keep the node and the sentence that matters."""
    message = getattr(exc, "message", None) or str(exc)
    noise = ("Graph execution error", "Detected at node", "Node:")
    lines = [
        line.strip()
        for line in message.splitlines()
        if line.strip() and not line.startswith((" ", "\t")) and not line.startswith(noise)
    ]
    node = getattr(getattr(exc, "node_def", None), "name", None)
    where = f" at node {node!r}" if node else ""
    return f"{call} failed{where}: {type(exc).__name__}: {lines[-1] if lines else message}"
