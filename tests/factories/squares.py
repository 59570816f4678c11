"""Moving squares for the analytics tests: a TF1 detector that finds solid red and blue squares, and
H.264 scenes (PyAV) whose squares move at known speeds, so tracks, crossings and motion are known
from the frame index.

Blocking (TensorFlow, encoding, file writes): call from sync fixtures, never from the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from tests.factories.models import ModelFiles

WIDTH, HEIGHT, FPS = 320, 192, 30
SIDE = 32  # squares' side in pixels
BACKGROUND = 120  # grey level of the still background

# Detector classes, in the order of its outputs (class id = index + 1), and the BGR colour each finds.
SQUARE_CLASSES = ("red", "blue")
SQUARE_COLOURS_BGR = ((0, 0, 255), (255, 0, 0))
COLOUR_TOLERANCE = 60.0  # per channel, so H.264's chroma smearing at the edges stays a square

# The crossing scene: a red square moves right on the upper band, a blue one left on the lower band, both
# visible on every frame. A vertical line at x = LINE_X; the squares' bottom centres cross it at
# RED_CROSSES_AT (left → right) and BLUE_CROSSES_AT (right → left).
CROSSING_FRAMES = 36
RED_Y, BLUE_Y = 32, 120
LINE_X = WIDTH // 2


def red_x(index: int) -> int:
    """Left edge of the red square on frame `index`: 4 + 8·i (bottom centre 20 + 8·i, 164 at i = 18)."""
    return 4 + 8 * index


def blue_x(index: int) -> int:
    """Left edge of the blue square on frame `index`: 284 - 6·i (bottom centre 300 - 6·i, 156 at i = 24)."""
    return WIDTH - SIDE - 4 - 6 * index


RED_CROSSES_AT, BLUE_CROSSES_AT = 18, 24

# The motion scene: a still background; a white square crosses it on frames MOTION_FRAMES only.
MOTION_SCENE_FRAMES = 60
MOTION_FRAMES = range(20, 30)


def background() -> np.ndarray:
    """The still scene: grey with a few darker and lighter blocks (texture for the contrast stretch),
    none of them near red or blue."""
    frame = np.full((HEIGHT, WIDTH, 3), BACKGROUND, np.uint8)
    frame[8:24, 200:264] = 60
    frame[72:104, 16:80] = 180
    frame[160:184, 96:224] = 90
    frame[150:190, 280:312] = 200
    return frame


def crossing_frame(index: int) -> np.ndarray:
    """BGR frame `index` of the crossing scene."""
    frame = background()
    frame[RED_Y : RED_Y + SIDE, red_x(index) : red_x(index) + SIDE] = SQUARE_COLOURS_BGR[0]
    frame[BLUE_Y : BLUE_Y + SIDE, blue_x(index) : blue_x(index) + SIDE] = SQUARE_COLOURS_BGR[1]
    return frame


def motion_frame(index: int) -> np.ndarray:
    """BGR frame `index` of the motion scene: a white square 24 px wide moving right 8 px a frame on
    MOTION_FRAMES, nothing moving elsewhere."""
    frame = background()
    if index in MOTION_FRAMES:
        x = 40 + 8 * (index - MOTION_FRAMES.start)
        frame[100:124, x : x + 24] = 255
    return frame


def encode_scene(path: Path, frames: list[np.ndarray], fps: int = FPS) -> Path:
    """BGR frames → an H.264 MP4 (yuv420p, every frame kept)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("h264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "18"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def encode_crossing(path: Path) -> Path:
    return encode_scene(path, [crossing_frame(i) for i in range(CROSSING_FRAMES)])


def encode_motion(path: Path) -> Path:
    return encode_scene(path, [motion_frame(i) for i in range(MOTION_SCENE_FRAMES)])


def decode_i420(path: Path) -> list[np.ndarray]:
    """Every frame of a video as I420 planes (H·3/2 x W uint8), as streamd's decoder keeps them."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="yuv420p") for frame in container.decode(video=0)]


def build_square_detector(export_dir: Path) -> ModelFiles:
    """TF1 graph in the TF Object Detection API layout, finding one red and one blue square per image.

    Input `input:0` [N,H,W,3] float BGR in 0..255 (streamd's default preprocessing; any H, W). Per class,
    the pixels within COLOUR_TOLERANCE of its colour on every channel form a mask; its bounding box is
    `detection_boxes` [N,2,4] (ymin, xmin, ymax, xmax normalised to the input), `detection_scores` [N,2]
    is 1 when the mask has a pixel and 0 otherwise, `detection_classes` [N,2] = 1 (red), 2 (blue)."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="input")
        colours = tf.constant(np.array(SQUARE_COLOURS_BGR, np.float32))  # [K, 3]
        distance = tf.abs(images[:, None] - colours[None, :, None, None, :])  # [N, K, H, W, 3]
        tolerance = tf.compat.v1.get_variable("tolerance", initializer=tf.constant(COLOUR_TOLERANCE))
        mask = tf.reduce_all(distance <= tolerance, axis=-1)  # [N, K, H, W]
        rows = tf.reduce_any(mask, axis=3)  # [N, K, H]
        columns = tf.reduce_any(mask, axis=2)  # [N, K, W]
        height = tf.cast(tf.shape(images)[1], tf.float32)
        width = tf.cast(tf.shape(images)[2], tf.float32)
        ymin, ymax = _extent(rows)
        xmin, xmax = _extent(columns)
        found = tf.cast(tf.reduce_any(rows, axis=2), tf.float32)
        boxes = tf.stack([ymin / height, xmin / width, ymax / height, xmax / width], axis=-1)
        tf.identity(boxes * found[..., None], name="detection_boxes")
        tf.identity(found, name="detection_scores")
        batch = tf.shape(images)[0]
        classes = tf.constant(np.arange(1, len(SQUARE_CLASSES) + 1, dtype=np.float32))
        tf.identity(tf.tile(classes[None], [batch, 1]), name="detection_classes")
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(export_dir))
            builder.add_meta_graph_and_variables(session, [tf.compat.v1.saved_model.tag_constants.SERVING])
            builder.save()
    return ModelFiles.read(export_dir, "input:0", "detection_boxes:0")


def _extent(present: object) -> tuple[object, object]:
    """First index with True and one past the last, along the last axis, as floats."""
    import tensorflow as tf

    as_int = tf.cast(present, tf.int32)
    first = tf.argmax(as_int, axis=-1)
    last = tf.cast(tf.shape(as_int)[-1], tf.int64) - tf.argmax(tf.reverse(as_int, axis=[-1]), axis=-1)
    return tf.cast(first, tf.float32), tf.cast(last, tf.float32)


def run_square_detector(model: ModelFiles, i420_frames: list[np.ndarray]) -> list[SquareDetections]:
    """The detector's kept detections (score > 0.5) for each I420 frame, boxes in frame pixels, run with
    TensorFlow directly (streamd's default preprocessing: BGR, 0..255, the frame's own size)."""
    import cv2
    import tensorflow as tf

    outputs = ["detection_boxes:0", "detection_scores:0", "detection_classes:0"]
    found = []
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        tf.compat.v1.saved_model.loader.load(session, ["serve"], str(model.directory))
        for planes in i420_frames:
            bgr = cv2.cvtColor(planes, cv2.COLOR_YUV2BGR_I420)
            height, width = bgr.shape[:2]
            boxes, scores, classes = session.run(outputs, {"input:0": bgr[None].astype(np.float32)})
            kept = scores[0] > 0.5
            ymin, xmin, ymax, xmax = (boxes[0][kept] * (height, width, height, width)).T
            names = tuple(SQUARE_CLASSES[int(c) - 1] for c in classes[0][kept])
            found.append(SquareDetections(np.stack([xmin, ymin, xmax, ymax], axis=1), scores[0][kept], names))
    return found


@dataclass(frozen=True)
class SquareDetections:
    """One frame's detections: boxes [N,4] xmin, ymin, xmax, ymax in frame pixels, scores, class names."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: tuple[str, ...]
