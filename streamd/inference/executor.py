"""TFExecutor: one loaded network and the threads that run its batches.

A batch of items goes in; on one of the network's threads each input's images are preprocessed into one
tensor, the model (`session.run`, or a signature function for networks the TF1 loader cannot run, see
networks/savedmodel.py) fetches the union of the tensors the items asked for, and each item gets its
slice (and its own `finish` callback's result, e.g. post-processing). TensorFlow releases the GIL while
it runs, so the event loop keeps running meanwhile.

How many batches run at once is the batcher's decision (`max_inflight_batches`); the executor only has
enough threads for the most it may allow. Two concurrent `session.run` calls on two cores fill each
other's gaps (feeding, serial ops, a core lent to a decoder): measured in docs/design.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamd.entities import Image
from streamd.errors import InvalidRequestError, StreamdError
from streamd.limits import MAX_INFLIGHT_BATCHES
from streamd.networks.preprocessing import BoxTransform, FrameOrder, prepare, to_input_batch
from streamd.networks.spec import Preprocessing, graph_tensor_name
from streamd.networks.tfmodel import LoadedModel, describe_tf_error

logger = logging.getLogger(__name__)

Finish = Callable[[dict[str, np.ndarray], list[BoxTransform]], Any]


class InferenceError(StreamdError):
    """`session.run` or the shape of its outputs failed for a batch."""

    http_status = 500
    code = "inference_failed"


@dataclass(frozen=True, slots=True)
class InferenceItem:
    """One image per network input, the tensors to fetch, and what to do with them on the network's thread."""

    images: tuple[Image, ...]
    fetches: tuple[str, ...]
    finish: Finish | None = None
    frame_order: FrameOrder = "BGR"


@dataclass(frozen=True, slots=True)
class ItemOutput:
    tensors: dict[str, np.ndarray]
    transforms: list[BoxTransform]
    finished: Any = None


class TFExecutor:
    def __init__(
        self,
        name: str,
        model: LoadedModel,
        preprocessing: Preprocessing,
        means: Sequence[np.ndarray | None],
        on_timing: Callable[[float, float], None] | None = None,
    ) -> None:
        """`on_timing(preprocess_s, run_s)` is called on the batch's thread after each batch (metrics)."""
        self.name = name
        self._on_timing = on_timing
        self.model = model
        self.preprocessing = preprocessing
        self.means = list(means)
        self.input_tensors = [graph_tensor_name(item.tensor_name) for item in preprocessing.inputs]
        self._call = "session.run" if model.kind == "session" else "the signature function"
        # Threads start on demand, so a network that never runs two batches at once keeps one thread.
        self._threads = ThreadPoolExecutor(
            max_workers=MAX_INFLIGHT_BATCHES, thread_name_prefix=f"streamd-tf-{name}"
        )

    def check_fetches(self, fetches: Sequence[str]) -> tuple[str, ...]:
        """Normalise tensor names and reject those the graph does not have (cheap, any thread)."""
        names = []
        for name in fetches:
            tensor_name = graph_tensor_name(name)
            if not self.model.can_fetch(tensor_name, self.input_tensors):
                raise InvalidRequestError(f"tensor {name!r} {self._fetch_hint()}", code="unknown_tensor")
            names.append(tensor_name)
        return tuple(names)

    def _fetch_hint(self) -> str:
        if self.model.kind == "session":
            return f"is not in the graph of {self.name}; check the name (e.g. 'prob' or 'prob:0')"
        # Only signature outputs exist once a SavedModel runs as functions: say which.
        outputs = [name for sig in self.model.signatures for name in sig.outputs.values()]
        fed = [name for name in outputs if self.model.can_fetch(name, self.input_tensors)]
        return (
            f"is not an output of the signatures of {self.name} that its inputs feed; they are: "
            f"{', '.join(sorted(fed)) or 'none'}"
        )

    async def run(self, items: Sequence[InferenceItem]) -> list[ItemOutput | BaseException]:
        return await asyncio.get_running_loop().run_in_executor(self._threads, self.run_batch, list(items))

    def run_batch(self, items: list[InferenceItem]) -> list[ItemOutput | BaseException]:
        """Network thread: preprocess, run, split, finish. A failure of the run fails the whole batch."""
        started = time.monotonic()
        prepared = [
            self._prepare(index, [item.images[index] for item in items], items)
            for index in range(len(self.input_tensors))
        ]
        transforms = [list(per_item) for per_item in zip(*(t for _, t in prepared), strict=True)]
        fetches = sorted({name for item in items for name in item.fetches})
        ran = time.monotonic()
        try:
            if self.preprocessing.batched_output and self._same_shapes(prepared):
                outputs = self._run_batched(prepared, fetches, len(items))
            else:
                outputs = [self._run_single(prepared, fetches, i) for i in range(len(items))]
        except InferenceError:
            raise
        except Exception as exc:  # TensorFlow's errors, reworded for a person
            raise InferenceError(f"{self.name}: {describe_tf_error(exc, self._call)}") from exc
        run_s = time.monotonic() - ran
        if self._on_timing is not None:
            self._on_timing(ran - started, run_s)
        return [
            self._finish(item, tensors, transforms[i])
            for i, (item, tensors) in enumerate(zip(items, outputs, strict=True))
        ]

    def _prepare(
        self, index: int, frames: list[Image], items: list[InferenceItem]
    ) -> tuple[list[np.ndarray], list[BoxTransform]]:
        spec = self.preprocessing.inputs[index].image
        images, transforms = [], []
        for frame, item in zip(frames, items, strict=True):
            image, [transform] = prepare([frame], spec, item.frame_order)
            images.extend(image)
            transforms.append(transform)
        return images, transforms

    @staticmethod
    def _same_shapes(prepared: list[tuple[list[np.ndarray], list[BoxTransform]]]) -> bool:
        return all(len({image.shape for image in images}) == 1 for images, _ in prepared)

    def _feed(
        self, prepared: list[tuple[list[np.ndarray], list[BoxTransform]]], select: slice
    ) -> dict[str, Any]:
        feed = {}
        for index, (images, _) in enumerate(prepared):
            spec = self.preprocessing.inputs[index].image
            feed[self.input_tensors[index]] = to_input_batch(images[select], spec, self.means[index])
        return feed

    def _run_batched(
        self, prepared: list[tuple[list[np.ndarray], list[BoxTransform]]], fetches: list[str], size: int
    ) -> list[dict[str, np.ndarray]]:
        values = self.model.run(fetches, self._feed(prepared, slice(None)))
        per_item: list[dict[str, np.ndarray]] = [{} for _ in range(size)]
        for name, value in zip(fetches, values, strict=True):
            array = np.asarray(value)
            if array.ndim == 0 or array.shape[0] != size:
                raise InferenceError(
                    f"tensor {name} has shape {array.shape} for a batch of {size}: its first dimension is "
                    "not the batch; register the network with batched_output false"
                )
            for i in range(size):
                per_item[i][name] = array[i]
        return per_item

    def _run_single(
        self, prepared: list[tuple[list[np.ndarray], list[BoxTransform]]], fetches: list[str], index: int
    ) -> dict[str, np.ndarray]:
        values = self.model.run(fetches, self._feed(prepared, slice(index, index + 1)))
        out = {}
        for name, value in zip(fetches, values, strict=True):
            array = np.asarray(value)
            # Without batched outputs a leading dimension of 1 may or may not be the batch: drop it if so.
            out[name] = (
                array[0] if self.preprocessing.batched_output and array.ndim and len(array) == 1 else array
            )
        return out

    @staticmethod
    def _finish(item: InferenceItem, tensors: dict[str, np.ndarray], transforms: list[BoxTransform]) -> Any:
        mine = {name: tensors[name] for name in item.fetches}
        try:
            finished = item.finish(mine, transforms) if item.finish is not None else None
        except Exception as exc:  # one item's post-processing must not fail its batch-mates
            return exc
        return ItemOutput(mine, transforms, finished)

    def close(self) -> None:
        """Runs queued batches to completion, then closes the session (blocking: not on the loop)."""
        self._threads.shutdown(wait=True)
        self.model.close()
