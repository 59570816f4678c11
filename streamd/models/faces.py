"""The face detector: the `mtcnn` package's P-Net, R-Net and O-Net weights in one TensorFlow graph.

`build_face_detector(directory)` writes a SavedModel taking RGB frames (`[N, H, W, 3]` float32, 0-255, any
size) and giving TF Object Detection API tensors: `detection_boxes` `[N, MAX_FACES, 4]` normalised
`[ymin, xmin, ymax, xmax]`, `detection_scores` (0 where no face) and `detection_classes` (1: face).
Runs in the CLI process or a worker thread (TensorFlow, file I/O); never on the daemon's event loop.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

MIN_FACE_PX = 20  # smallest face searched for, in input pixels (mtcnn's default)
PYRAMID_FACTOR = 0.709  # scale between two pyramid levels (mtcnn's default)
PYRAMID_LEVELS = 12  # enough for a 640-pixel input; levels smaller than a P-Net cell are masked out
CELL_PX = 12  # P-Net's receptive field
PNET_THRESHOLD, RNET_THRESHOLD, ONET_THRESHOLD = 0.6, 0.7, 0.8
PROPOSALS_PER_LEVEL, PROPOSALS, REFINED, MAX_FACES = 64, 128, 64, 32


def package_version() -> str:
    return version("mtcnn")


def _stage_models() -> tuple[Any, Any, Any]:
    """The three Keras networks with the package's weights."""
    from mtcnn.network.onet import ONet
    from mtcnn.network.pnet import PNet
    from mtcnn.network.rnet import RNet
    from mtcnn.utils.tensorflow import load_weights

    models = []
    for model, weights in ((PNet(), "pnet.lz4"), (RNet(), "rnet.lz4"), (ONet(), "onet.lz4")):
        model.build()
        model.set_weights(load_weights(weights))
        models.append(model)
    return models[0], models[1], models[2]


def _nms(boxes: Any, scores: Any, *, iou: float, threshold: float, keep: int) -> tuple[Any, Any]:
    """Per-image NMS on `[N, K, 4]` pixel boxes `(x1, y1, x2, y2)` → `[N, keep, 4]`, scores padded with 0."""
    import tensorflow as tf

    kept_boxes, kept_scores, _, _ = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :],
        scores[:, :, None],
        max_output_size_per_class=keep,
        max_total_size=keep,
        iou_threshold=iou,
        score_threshold=threshold,
        clip_boxes=False,  # pixel coordinates, not normalised
    )
    return kept_boxes, kept_scores


def _square(boxes: Any) -> Any:
    """Each box grown to a square around its centre (the next stage's input is square)."""
    import tensorflow as tf

    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    side = tf.maximum(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return tf.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=-1)


def _pnet_level(pnet: Any, images: Any, scale: float, min_side: Any) -> tuple[Any, Any]:
    """Proposals of one pyramid level in input pixels, `[N, cells, 4]` and `[N, cells]`."""
    import tensorflow as tf

    size = tf.cast(tf.shape(images)[1:3], tf.float32) * scale
    resized = tf.image.resize(images, tf.maximum(tf.cast(size, tf.int32), CELL_PX))
    regression, probabilities = pnet(resized)
    rows, cols = tf.shape(regression)[1], tf.shape(regression)[2]
    grid_y, grid_x = tf.meshgrid(tf.range(rows), tf.range(cols), indexing="ij")
    x1 = tf.cast(grid_x * 2 + 1, tf.float32)
    y1 = tf.cast(grid_y * 2 + 1, tf.float32)
    cells = tf.stack([x1, y1, x1 + CELL_PX - 1, y1 + CELL_PX - 1], axis=-1)[None]
    boxes = (cells + regression * (CELL_PX - 1)) / scale
    # A level whose image is smaller than one cell was padded up to it: its proposals are not real.
    usable = tf.cast(min_side * scale >= CELL_PX, tf.float32)
    scores = probabilities[..., 1] * usable
    count = rows * cols
    return tf.reshape(boxes, [-1, count, 4]), tf.reshape(scores, [-1, count])


def _refine(net: Any, images: Any, boxes: Any, scores: Any, side: int) -> tuple[Any, Any]:
    """R-Net / O-Net on the crops of the live proposals; dead ones (score 0) stay 0."""
    import tensorflow as tf

    live = tf.where(scores > 0)
    picked = tf.gather_nd(boxes, live)
    height, width = (tf.cast(v, tf.float32) for v in tf.unstack(tf.shape(images)[1:3]))
    x1, y1, x2, y2 = tf.unstack(picked, axis=-1)
    crops = tf.image.crop_and_resize(
        images,
        tf.stack([y1 / height, x1 / width, y2 / height, x2 / width], axis=-1),
        tf.cast(live[:, 0], tf.int32),
        [side, side],
    )
    # One spare crop: oneDNN's convolutions fail on an empty batch (a frame without proposals).
    outputs = [out[:-1] for out in net(tf.concat([crops, tf.zeros([1, side, side, 3])], axis=0))]
    sizes = tf.stack([x2 - x1 + 1, y2 - y1 + 1] * 2, axis=-1)
    refined = picked + outputs[0] * sizes
    dense = tf.shape(scores, out_type=tf.int64)
    return (
        tf.scatter_nd(live, refined, tf.concat([dense, [4]], axis=0)),
        tf.scatter_nd(live, outputs[-1][:, 1], dense),
    )


def detect_faces(models: tuple[Any, Any, Any], frames: Any) -> dict[str, Any]:
    """The whole cascade on a batch of same-sized RGB frames (0-255)."""
    import tensorflow as tf

    pnet, rnet, onet = models
    images = (frames - 127.5) / 128.0
    shape = tf.cast(tf.shape(images)[1:3], tf.float32)
    min_side = tf.reduce_min(shape)
    first = CELL_PX / MIN_FACE_PX
    levels = [
        _nms(
            *_pnet_level(pnet, images, first * PYRAMID_FACTOR**k, min_side),
            iou=0.5,
            threshold=PNET_THRESHOLD,
            keep=PROPOSALS_PER_LEVEL,
        )
        for k in range(PYRAMID_LEVELS)
    ]
    boxes, scores = _nms(
        tf.concat([b for b, _ in levels], axis=1),
        tf.concat([s for _, s in levels], axis=1),
        iou=0.7,
        threshold=PNET_THRESHOLD,
        keep=PROPOSALS,
    )
    boxes, scores = _refine(rnet, images, _square(boxes), scores, 24)
    boxes, scores = _nms(boxes, scores, iou=0.7, threshold=RNET_THRESHOLD, keep=REFINED)
    boxes, scores = _refine(onet, images, _square(boxes), scores, 48)
    boxes, scores = _nms(boxes, scores, iou=0.7, threshold=ONET_THRESHOLD, keep=MAX_FACES)
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    height, width = shape[0], shape[1]
    normalised = tf.clip_by_value(tf.stack([y1 / height, x1 / width, y2 / height, x2 / width], -1), 0.0, 1.0)
    return {
        "detection_boxes": normalised,
        "detection_scores": scores,
        "detection_classes": tf.cast(scores > 0, tf.float32),
    }


def build_face_detector(directory: Path) -> None:
    """Write the detector as a SavedModel into `directory` (which must not exist yet)."""
    import keras
    import tensorflow as tf

    models = _stage_models()
    archive = keras.export.ExportArchive()
    for model in models:
        archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda frames: detect_faces(models, frames),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="frames")],
    )
    archive.write_out(str(directory), verbose=False)
