"""Running a validated chain on frames: services through the networks' batchers, actions on pixels,
results nested DeepDetect-style to any depth.

Every image of one service call (all frames, or all crops of all frames at that level) is submitted at
once, so they meet in the network's dynamic batch; sibling branches run concurrently. Results are
collected in slots private to one run and frozen into `results.Prediction` trees when it ends (nested
results in call order, whatever branch finished first). Runs on the event loop; inference runs on the
networks' threads, drawing/encoding/saving in worker threads.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from streamd.chains import actions
from streamd.chains.outputs import Decoded, fetches_of, finish_for
from streamd.chains.results import Box, Classes, Detection, Images, Nested, Output, Prediction, Vals
from streamd.chains.spec import ActionNode, ChainPlan, CropParams, DrawParams, OutputParams, ServiceNode
from streamd.entities import Image
from streamd.inference.executor import InferenceItem
from streamd.inference.runtime import InferenceRuntime
from streamd.metrics import Metrics
from streamd.networks.postprocessing import Hypothesis
from streamd.networks.preprocessing import as_array

logger = logging.getLogger(__name__)

NodeT = TypeVar("NodeT", ServiceNode, ActionNode)


@dataclass(slots=True)
class _Slot:
    """A result object being built: the outputs calls nest in it, with their call positions."""

    entries: list[tuple[int, str, _ClassesSlot | Output]] = field(default_factory=list)

    def put(self, position: int, key: str, output: _ClassesSlot | Output) -> None:
        self.entries.append((position, key, output))

    def nested(self) -> Nested:
        return tuple((key, _freeze(output)) for _, key, output in sorted(self.entries, key=lambda e: e[0]))


@dataclass(slots=True)
class _ImageSlot(_Slot):
    """An input image's prediction: the first root's output, and what nests at the image level."""

    uri: str = ""
    output: _ClassesSlot | Output | None = None

    def freeze(self) -> Prediction:
        output = Classes() if self.output is None else _freeze(self.output)
        return Prediction(self.uri, output, self.nested())


@dataclass(slots=True)
class _DetectionSlot(_Slot):
    """A class object: what the calls below a crop of it nest in it."""

    cat: str = ""
    prob: float = 0.0
    box: Box | None = None

    def freeze(self) -> Detection:
        return Detection(self.cat, self.prob, self.box, self.nested())


@dataclass(slots=True)
class _ClassesSlot:
    """A service's classes for one image; filters narrow what is shown (DeepDetect filters the parent's
    own output), the calls under them see only what they kept."""

    detections: list[_DetectionSlot]
    call_id: str
    shown: set[int] | None = None  # indexes into `detections`; None: all

    def freeze(self) -> Classes:
        shown = self.shown
        kept = (d for i, d in enumerate(self.detections) if shown is None or i in shown)
        return Classes(tuple(d.freeze() for d in kept), self.call_id)


def _freeze(output: _ClassesSlot | Output) -> Output:
    return output.freeze() if isinstance(output, _ClassesSlot) else output


@dataclass(slots=True)
class ImageRef:
    pixels: Image  # BGR at full resolution: crops come from the original pixels, never the network input
    to_frame: np.ndarray  # 2x3 affine: these pixels → original frame pixels
    slot: _Slot  # the result object this image's results nest in
    name: str  # stem for saved files
    parent: ImageRef | None = None  # for a crop: the image it was cut from, and where (recompose)
    region: tuple[int, int, int, int] | None = None


@dataclass(slots=True)
class Found:
    """One image's hypotheses from a service call, as its filters left them."""

    image: ImageRef
    hypotheses: list[Hypothesis]  # boxes in `image` pixels
    indexes: list[int]  # each hypothesis's detection in `classes`
    classes: _ClassesSlot | None  # None for `vals` and `images` outputs
    decoded: Decoded | None = None  # the service's whole output (an image with `output.image`)

    def detection(self, position: int) -> _DetectionSlot:
        assert self.classes is not None
        return self.classes.detections[self.indexes[position]]


class ChainRunner:
    def __init__(self, runtime: InferenceRuntime, files_dir: Path, metrics: Metrics | None = None) -> None:
        self._runtime = runtime
        self._files_dir = files_dir
        self._metrics = metrics

    async def run(self, plan: ChainPlan, frames: Sequence[Image], uris: list[str]) -> list[Prediction]:
        slots = [_ImageSlot(uri=uri) for uri in uris]
        images = [
            ImageRef(frame, actions.IDENTITY.copy(), slot, _stem(uri, index))
            for index, (frame, uri, slot) in enumerate(zip(frames, uris, slots, strict=True))
        ]
        await asyncio.gather(
            *(self._service(root, images, first=position == 0) for position, root in enumerate(plan.roots))
        )
        return [slot.freeze() for slot in slots]

    async def _service(self, node: ServiceNode, images: list[ImageRef], *, first: bool = False) -> None:
        """Run one service call on `images`; the first root's output is its image's prediction (DeepDetect's
        `classes`, `vals` or `images`), any other nests under the service's name."""
        service = node.service
        loaded = await self._runtime.network(service.network_id)
        fetches = loaded.executor.check_fetches(fetches_of(node))
        finish = finish_for(node)
        started = time.monotonic()
        outputs = await asyncio.gather(
            *(loaded.infer(InferenceItem((image.pixels,), fetches, finish)) for image in images)
        )
        if self._metrics is not None:
            self._metrics.chain_call_duration.labels(service.name).observe(time.monotonic() - started)
        found = []
        for image, output in zip(images, outputs, strict=True):
            decoded: Decoded = output.finished
            hypotheses = select(decoded.hypotheses, node.output, service.has_boxes)
            to_frame = image.to_frame if node.output.bbox_coordinates == "frame" else actions.IDENTITY
            if self._metrics is not None:
                self._metrics.detections.labels(service.name).observe(len(hypotheses))
            result: _ClassesSlot | Output
            classes = None
            if decoded.vals is not None:
                result = Vals(decoded.vals)
            elif decoded.image is not None:
                result = Images((base64.b64encode(decoded.image).decode(),))
            else:
                detections = [detection_slot(h, to_frame, node.output.bbox) for h in hypotheses]
                result = classes = _ClassesSlot(detections, node.call_id)
            if first:
                assert isinstance(image.slot, _ImageSlot)
                image.slot.output = result
            else:
                image.slot.put(node.index, service.name, result)
            found.append(Found(image, hypotheses, list(range(len(hypotheses))), classes, decoded))
        await asyncio.gather(*(self._action(child, found) for child in node.children))

    async def _action(self, node: ActionNode, found: list[Found]) -> None:
        if node.kind == "filter":
            await self._filter(node, found)
        elif node.kind == "crop":
            await self._crop(node, found)
        elif node.kind == "rotate":
            await self._rotate(node, found)
        elif node.kind == "recompose":
            await self._recompose(node, found)
        else:
            await self._draw(node, found)

    async def _filter(self, node: ActionNode, found: list[Found]) -> None:
        keep = set(node.params.classes)
        kept = []
        for item in found:
            positions = [p for p, h in enumerate(item.hypotheses) if h.label_name in keep]
            indexes = [item.indexes[p] for p in positions]
            if item.classes is not None:  # the parent's own output is filtered too (DeepDetect)
                shown = set(indexes)
                item.classes.shown = shown if item.classes.shown is None else item.classes.shown & shown
            hypotheses = [item.hypotheses[p] for p in positions]
            kept.append(Found(item.image, hypotheses, indexes, item.classes, item.decoded))
        await asyncio.gather(*(self._action(child, kept) for child in _child_nodes(node, ActionNode)))

    async def _crop(self, node: ActionNode, found: list[Found]) -> None:
        params: CropParams = node.params
        crops = []
        with_boxes = [item for item in found if item.hypotheses]
        wholes = await asyncio.gather(*(self._whole(item.image) for item in with_boxes))
        for item, pixels in zip(with_boxes, wholes, strict=True):
            height, width = pixels.shape[:2]
            for index, hypothesis in enumerate(item.hypotheses):
                assert hypothesis.box is not None
                region = actions.crop_region(hypothesis.box, width, height, params)
                if region is None:
                    logger.debug("crop %s: box %s misses the image", node.call_id, hypothesis.box)
                    continue
                x0, y0, x1, y1 = region
                crops.append(
                    ImageRef(
                        pixels[y0:y1, x0:x1],
                        actions.compose(item.image.to_frame, actions.translation(x0, y0)),
                        item.detection(index),
                        f"crop_{item.image.name}_{index}",
                        item.image,
                        region,
                    )
                )
        if params.save_crops and crops:
            await asyncio.to_thread(self._save, params.save_path, [(c.name, c.pixels) for c in crops])
        if crops:
            await self._children(node, crops)

    async def _rotate(self, node: ActionNode, found: list[Found]) -> None:
        turned = []
        for item in found:
            if not item.hypotheses:
                continue  # nothing above the threshold: the orientation is unknown
            angle = actions.rotation_angle(item.hypotheses[0].label_name, node.params.orientation)
            pixels, local = actions.rotate(await self._whole(item.image), angle)
            turned.append(
                ImageRef(
                    pixels,
                    actions.compose(item.image.to_frame, local),
                    item.image.slot,
                    f"{item.image.name}_rot{angle}",
                )
            )
        if turned:
            await self._children(node, turned)

    async def _children(self, node: ActionNode, images: list[ImageRef]) -> None:
        await asyncio.gather(*(self._service(child, images) for child in _child_nodes(node, ServiceNode)))

    async def _draw(self, node: ActionNode, found: list[Found]) -> None:
        params: DrawParams = node.params
        for item in found:
            boxes = [h.box for h in item.hypotheses if h.box is not None]
            labels = [(h.label_name, h.score) for h in item.hypotheses if h.box is not None]
            drawn = await asyncio.to_thread(
                actions.draw_boxes, await self._whole(item.image), boxes, labels, params
            )
            if params.output_images and params.output_format == "jpeg":
                jpeg = await asyncio.to_thread(actions.encode_jpeg, drawn)
                item.image.slot.put(node.index, node.call_id, Images((base64.b64encode(jpeg).decode(),)))
            elif params.output_images:  # DeepDetect's form: the BGR bytes, row by row, as numbers
                vals = await asyncio.to_thread(lambda: drawn.reshape(-1).tolist())  # noqa: B023
                item.image.slot.put(node.index, node.call_id, Vals(vals))
            if params.save_img:
                await asyncio.to_thread(self._save, params.save_path, [(f"draw_{item.image.name}", drawn)])

    async def _recompose(self, node: ActionNode, found: list[Found]) -> None:
        """DeepDetect's recompose: each crop's generated image pasted back where the crop was cut (resized
        to the crop's size), one picture per source image, as `images` under the action id."""
        groups: dict[int, tuple[ImageRef, list[tuple[tuple[int, int, int, int] | None, np.ndarray]]]] = {}
        for item in found:
            if item.image.parent is not None and item.decoded is not None and item.decoded.pixels is not None:
                piece = (item.image.region, item.decoded.pixels)
                groups.setdefault(id(item.image.parent), (item.image.parent, []))[1].append(piece)
        for parent, pieces in groups.values():
            pasted = await asyncio.to_thread(actions.paste_back, await self._whole(parent), pieces)
            png = await asyncio.to_thread(actions.encode_png, pasted)
            parent.slot.put(node.index, node.call_id, Images((base64.b64encode(png).decode(),)))
            if node.params.save_img:
                await asyncio.to_thread(
                    self._save, node.params.save_path, [(f"recompose_{parent.name}", pasted)]
                )

    @staticmethod
    async def _whole(image: ImageRef) -> np.ndarray:
        """The image's full pixels; a stream's frame is converted from yuv420p then, off the loop."""
        if isinstance(image.pixels, np.ndarray):
            return image.pixels
        return await asyncio.to_thread(as_array, image.pixels)

    def _save(self, save_path: str, images: list[tuple[str, Image]]) -> None:
        """Blocking: PNG files under <data_dir>/chains/<save_path>/."""
        directory = self._files_dir / save_path
        directory.mkdir(parents=True, exist_ok=True)
        for name, pixels in images:
            cv2.imwrite(str(directory / f"{name}.png"), as_array(pixels))


def select(hypotheses: list[Hypothesis], output: OutputParams, has_boxes: bool) -> list[Hypothesis]:
    """DeepDetect's output parameters: `confidence_threshold` (≥; without it each label's own threshold),
    `best` classes for classifiers, `best_bbox` boxes for detectors."""
    if output.confidence_threshold is None:
        kept = [h for h in hypotheses if h.passes]
    else:
        kept = [h for h in hypotheses if h.score >= output.confidence_threshold]
    kept.sort(key=lambda h: -h.score)
    if not has_boxes and output.best >= 0:
        kept = kept[: output.best]
    if has_boxes and output.best_bbox >= 0:
        kept = kept[: output.best_bbox]
    return kept


def detection_slot(hypothesis: Hypothesis, to_frame: np.ndarray, bbox: bool = True) -> _DetectionSlot:
    box = None
    if hypothesis.box is not None and bbox:
        box = Box(*actions.map_box(to_frame, hypothesis.box))
    return _DetectionSlot(cat=hypothesis.label_name, prob=hypothesis.score, box=box)


def _child_nodes(node: ActionNode, kind: type[NodeT]) -> list[NodeT]:
    """A crop's or rotate's children are services, a filter's are actions (the plan checks each edge)."""
    children = [child for child in node.children if isinstance(child, kind)]
    assert len(children) == len(node.children)
    return children


def _stem(uri: str, index: int) -> str:
    inline = uri.startswith(("data:", "data[")) or uri == str(index)  # an inline image's uri is its index
    tail = "" if inline else uri.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    cleaned = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in tail)[:60]
    return cleaned or f"image{index}"
