"""Tiny real TensorFlow SavedModels with fixed weights, so tests can predict their outputs exactly.

Blocking (TensorFlow import, graph building, file writes): call from sync fixtures, never from the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CLASSIFIER_CLASSES = 3


@dataclass(frozen=True)
class ModelFiles:
    """A SavedModel directory, its tensor names, and its files keyed by upload name (read once, up
    front, so async tests never read files on the loop)."""

    directory: Path
    input_tensor: str
    output_tensor: str
    contents: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def read(cls, directory: Path, input_tensor: str, output_tensor: str) -> ModelFiles:
        contents = {p.name: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
        return cls(directory, input_tensor, output_tensor, contents)


def classifier_weights(channels: int = 3, classes: int = CLASSIFIER_CLASSES) -> np.ndarray:
    """Fixed weights: class k responds to channel k % channels."""
    weights = np.zeros((channels, classes), dtype=np.float32)
    for k in range(classes):
        weights[k % channels, k] = 4.0 + k
    return weights


def build_tf1_classifier(
    export_dir: Path,
    *,
    height: int = 8,
    width: int = 8,
    channels: int = 3,
    classes: int = CLASSIFIER_CLASSES,
    as_text: bool = False,
    extra_bytes: int = 0,
) -> ModelFiles:
    """TF1-style graph: input `input:0` [N,H,W,C] → mean over H,W → matmul (a variable) → softmax `prob:0`.

    `extra_bytes` adds an unused variable of that size, to make big models for upload tests.
    """
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, height, width, channels], name="input")
        pooled = tf.reduce_mean(images, axis=[1, 2], name="pooled")
        weights = tf.compat.v1.get_variable(
            "weights", initializer=tf.constant(classifier_weights(channels, classes))
        )
        logits = tf.matmul(pooled, weights, name="logits")
        tf.nn.softmax(logits, name="prob")
        if extra_bytes:
            # An initializer op, not a constant: the bytes live in variables/, not in the graph.
            tf.compat.v1.get_variable(
                "ballast",
                shape=[extra_bytes // 4],
                initializer=tf.compat.v1.random_uniform_initializer(seed=1),
            )
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(export_dir))
            builder.add_meta_graph_and_variables(session, [tf.compat.v1.saved_model.tag_constants.SERVING])
            builder.save(as_text=as_text)
    return ModelFiles.read(export_dir, "input:0", "prob:0")


def build_tf2_classifier(export_dir: Path, *, height: int = 8, width: int = 8) -> ModelFiles:
    """The same classifier exported the TF2 way (tf.Module + tf.saved_model.save)."""
    import tensorflow as tf

    class Classifier(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weights = tf.Variable(classifier_weights(3), name="weights")

        @tf.function(input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32, name="images")])
        def __call__(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
            pooled = tf.reduce_mean(images, axis=[1, 2])
            return {"prob": tf.nn.softmax(tf.matmul(pooled, self.weights))}

    module = Classifier()
    tf.saved_model.save(module, str(export_dir), signatures=module.__call__.get_concrete_function())
    return ModelFiles.read(export_dir, "serving_default_images:0", "StatefulPartitionedCall:0")


DETECTOR_BOXES = np.array(
    [[0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 0.9, 0.9], [0.12, 0.12, 0.52, 0.52]], dtype=np.float32
)  # [ymin, xmin, ymax, xmax] normalized to the network input
DETECTOR_CLASSES = np.array([1.0, 2.0, 1.0], dtype=np.float32)


def detector_scores(pooled: np.ndarray) -> np.ndarray:
    """Scores the detector gives a frame whose preprocessed channels average to `pooled` (c0, c1, c2)."""
    return np.array([pooled[0], pooled[1], 0.9 * pooled[0]], dtype=np.float32)


def build_tf1_detector(export_dir: Path, *, height: int = 8, width: int = 8) -> ModelFiles:
    """TF Object Detection API layout: `detection_boxes` [N,3,4] (fixed boxes), `detection_scores` [N,3]
    (from the mean of channels 0 and 1, see detector_scores), `detection_classes` [N,3] = 1, 2, 1.
    Boxes 0 and 2 overlap (IoU ≈ 0.82) with the same class, so NMS keeps only the better one."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, height, width, 3], name="input")
        pooled = tf.reduce_mean(images, axis=[1, 2])
        batch = tf.shape(images)[0]
        boxes = tf.tile(tf.constant(DETECTOR_BOXES)[None], [batch, 1, 1])
        tf.identity(boxes, name="detection_boxes")
        scale = tf.compat.v1.get_variable("scale", initializer=tf.constant([1.0, 1.0, 0.9]))
        scores = tf.stack([pooled[:, 0], pooled[:, 1], pooled[:, 0]], axis=1) * scale
        tf.identity(scores, name="detection_scores")
        tf.identity(tf.tile(tf.constant(DETECTOR_CLASSES)[None], [batch, 1]), name="detection_classes")
        _save(graph, export_dir)
    return ModelFiles.read(export_dir, "input:0", "detection_boxes:0")


def build_tf1_fragile(export_dir: Path) -> ModelFiles:
    """A classifier that fails inside session.run for an all-black image (check_numerics on log(0))."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 3], name="input")
        pooled = tf.reduce_mean(images, axis=[1, 2])
        checked = tf.debugging.check_numerics(
            tf.math.log(tf.reduce_sum(pooled, axis=1, keepdims=True)), "black image"
        )
        weights = tf.compat.v1.get_variable("weights", initializer=tf.constant(classifier_weights(3)))
        tf.nn.softmax(tf.matmul(pooled, weights) + 0.0 * checked, name="prob")
        _save(graph, export_dir)
    return ModelFiles.read(export_dir, "input:0", "prob:0")


def _save(graph: object, export_dir: Path) -> None:
    import tensorflow as tf

    with tf.compat.v1.Session(graph=graph) as session:
        session.run(tf.compat.v1.global_variables_initializer())
        builder = tf.compat.v1.saved_model.Builder(str(export_dir))
        builder.add_meta_graph_and_variables(session, [tf.compat.v1.saved_model.tag_constants.SERVING])
        builder.save()


KERAS_BIAS = np.array([0.1, -0.2, 0.3], dtype=np.float32)


def build_keras_classifier(export_dir: Path, *, how: str) -> tuple[ModelFiles, Any]:
    """A Keras 3 classifier (mean over H,W → dense softmax, fixed weights and bias) exported with
    `tf.saved_model.save(model, dir)` (`how="save"`) or `model.export(dir)` (`how="export"`).

    Returns the files, with the signature's tensor names read from saved_model.pb (Keras chooses
    them), and the Keras model itself, so tests compare with its own output."""
    import keras
    import tensorflow as tf

    inputs = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(CLASSIFIER_CLASSES, activation="softmax")
    model = keras.Model(inputs, dense(pooled))
    dense.set_weights([classifier_weights(3), KERAS_BIAS])
    if how == "save":
        tf.saved_model.save(model, str(export_dir))
    else:
        model.export(str(export_dir), verbose=False)
    input_name, output_name = serving_signature_names(export_dir)
    return ModelFiles.read(export_dir, input_name, output_name), model


def serving_signature_names(export_dir: Path) -> tuple[str, str]:
    """(input, output) tensor names of the `serving_default` signature, as saved_model.pb names them."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    signature = proto.meta_graphs[0].signature_def["serving_default"]
    [tensor_in], [tensor_out] = signature.inputs.values(), signature.outputs.values()
    return tensor_in.name, tensor_out.name


def build_tf1_unrunnable(export_dir: Path) -> ModelFiles:
    """A classifier whose output reads a variable that nothing saves or initializes (a local
    variable without an init op): it loads, and fails in every session.run."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 3], name="input")
        pooled = tf.reduce_mean(images, axis=[1, 2])
        weights = tf.compat.v1.get_variable(
            "unsaved_weights",
            initializer=tf.constant(classifier_weights(3)),
            collections=[tf.compat.v1.GraphKeys.LOCAL_VARIABLES],
        )
        tf.nn.softmax(tf.matmul(pooled, weights), name="prob")
        _save(graph, export_dir)
    return ModelFiles.read(export_dir, "input:0", "prob:0")


def build_tf1_sequence(export_dir: Path, *, width: int = 8, height: int = 8) -> ModelFiles:
    """A CTC-style sequence model: input [N,H,W,3] → one step per column: the column's mean colour
    → logits over 4 labels (0 blank, bias 0.5; k = 1..3 weight 4 on channel k-1) → softmax `seq`
    [N,W,4]. A blue, green, red or black column therefore reads label 1, 2, 3 or blank."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, height, width, 3], name="input")
        columns = tf.reduce_mean(images, axis=1)  # [N, W, 3]
        weights = np.zeros((3, 4), dtype=np.float32)
        for k in range(1, 4):
            weights[k - 1, k] = 4.0
        kernel = tf.compat.v1.get_variable("kernel", initializer=tf.constant(weights))
        bias = tf.constant(np.array([0.5, 0.0, 0.0, 0.0], dtype=np.float32))
        tf.nn.softmax(tf.einsum("nwc,ck->nwk", columns, kernel) + bias, name="seq")
        _save(graph, export_dir)
    return ModelFiles.read(export_dir, "input:0", "seq:0")


def build_tf1_painter(export_dir: Path, *, size: int = 8) -> ModelFiles:
    """An image-to-image model (a stand-in for DeepDetect's GAN): `painted` = (1 - input) · 255, the
    negative of an image preprocessed to [0, 1], as uint8-range pixels [N, size, size, 3]."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, size, size, 3], name="input")
        scale = tf.compat.v1.get_variable("scale", initializer=tf.constant(255.0))
        tf.identity((1.0 - images) * scale, name="painted")
        _save(graph, export_dir)
    return ModelFiles.read(export_dir, "input:0", "painted:0")


def build_keras_blocks(export_dir: Path, *, offsets: bool = True) -> ModelFiles:
    """MobileNetV2's building blocks in Keras 3, exported with `model.export()`: convolution and
    depthwise convolution, each with batch normalisation (non-trivial statistics, so scales are not 1),
    ReLU6, a linear bottleneck and a residual add. Without `offsets`, every batch norm's offset is 0
    (beta and moving mean 0, as in a model with random weights): grappler then folds the offsets away
    and the convolutions need zero biases to fuse."""
    import keras

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.ReLU(6.0)(y)
    y = keras.layers.Conv2D(8, 1, use_bias=False)(y)
    y = keras.layers.BatchNormalization()(y)  # linear bottleneck: no activation
    x = keras.layers.Add()([x, y])
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(4, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(7)
    for layer in model.layers:
        weights = layer.get_weights()
        if isinstance(layer, keras.layers.BatchNormalization):  # gamma, beta, mean, variance (> 0)
            weights = [rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in weights]
            if not offsets:
                weights[1][:] = weights[2][:] = 0.0
        else:
            weights = [rng.normal(0.0, 0.5, w.shape).astype(np.float32) for w in weights]
        layer.set_weights(weights)
    model.export(str(export_dir), verbose=False)
    return ModelFiles.read(export_dir, *serving_signature_names(export_dir))
