"""What one service call of a chain returns per image, from its tensors: DeepDetect's output parameters.

`classes` (classification and detection, with `confidence_threshold`, `nms_threshold`), `vals` (the raw
layer named by `mllib.extract_layer`), a CTC-decoded sequence (`ctc`, `blank_label`) and `images`
(`output.image`: a layer as a picture). The finish functions built here run on the network's thread.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from streamd.chains import actions
from streamd.chains.spec import DD_SERVICE_BAD_REQUEST, ChainError, ServiceNode
from streamd.networks.postprocessing import Hypothesis, Keep, decode
from streamd.networks.preprocessing import BoxTransform
from streamd.networks.spec import graph_tensor_name


@dataclass(slots=True)
class Decoded:
    """One image's result: hypotheses (classes), or `vals` / `image` for a raw layer."""

    hypotheses: list[Hypothesis] = field(default_factory=list)
    vals: list[float] | None = None
    image: bytes | None = None  # PNG of the layer, with `output.image`
    pixels: np.ndarray | None = None  # the same, decoded, for recompose


Finish = Callable[[Mapping[str, np.ndarray], list[BoxTransform]], Decoded]


def layer_tensor(node: ServiceNode) -> str:
    """The tensor `mllib.extract_layer` names; "last" is the version's (first) output tensor."""
    assert node.extract_layer is not None
    if node.extract_layer == "last":
        return graph_tensor_name(node.service.post_processings[0].tensors()[0])
    return graph_tensor_name(node.extract_layer)


def fetches_of(node: ServiceNode) -> list[str]:
    if node.extract_layer is not None:
        return [layer_tensor(node)]
    return [name for post in node.service.post_processings for name in post.tensors()]


def finish_for(node: ServiceNode) -> Finish:
    service, output = node.service, node.output
    if node.extract_layer is not None:
        name = layer_tensor(node)

        def raw(tensors: Mapping[str, np.ndarray], transforms: list[BoxTransform]) -> Decoded:
            values = np.asarray(tensors[name])
            if output.image:
                pixels = as_picture(values)
                return Decoded(image=actions.encode_png(pixels), pixels=pixels)
            return Decoded(vals=values.astype(np.float64).reshape(-1).tolist())

        return raw
    if output.ctc:
        post, labels = service.post_processings[0], service.outputs[0].labels.labels
        assert post.classification is not None
        tensor = graph_tensor_name(post.classification.output_tensor)
        names = [label.name for label in labels]

        def sequence(tensors: Mapping[str, np.ndarray], transforms: list[BoxTransform]) -> Decoded:
            return Decoded([ctc_greedy(tensors[tensor], names, output.blank_label)])

        return sequence
    keep = Keep(output.confidence_threshold, None if output.best < 0 else output.best)

    def classes(tensors: Mapping[str, np.ndarray], transforms: list[BoxTransform]) -> Decoded:
        found: list[Hypothesis] = []
        for post, spec_output in zip(service.post_processings, service.outputs, strict=True):
            found.extend(
                decode(post, spec_output.labels, tensors, transforms[0], keep=keep, nms=output.nms_threshold)
            )
        return Decoded(found)

    return classes


def ctc_greedy(scores: np.ndarray, labels: list[str], blank: int) -> Hypothesis:
    """Greedy CTC: the best label per step, repeats merged, blanks dropped; the text is the labels'
    names joined, its probability that of the best path (the product of each step's best score)."""
    steps = np.asarray(scores, dtype=np.float64).reshape(-1, len(labels))
    best = steps.argmax(axis=1)
    text, previous = [], -1
    for index in best.tolist():
        if index != previous and index != blank:
            text.append(labels[index])
        previous = index
    prob = float(np.prod(steps[np.arange(len(best)), best])) if len(best) else 0.0
    return Hypothesis(0, "".join(text), prob, 0.0)


def as_picture(values: np.ndarray) -> np.ndarray:
    """A layer [H, W, C] (C 1 or 3) as uint8 pixels: values are clipped to 0..255."""
    if values.ndim == 2:
        values = values[:, :, None]
    if values.ndim != 3 or values.shape[2] not in (1, 3):
        raise ChainError(
            f"output.image needs a layer shaped [height, width, 1 or 3]; this one is {list(values.shape)}",
            dd_code=DD_SERVICE_BAD_REQUEST,
        )
    pixels = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels
