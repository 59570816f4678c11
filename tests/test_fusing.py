"""Fused inference graphs (networks/fusing.py): batch norms folded into the convolutions that precede
them, offsets as BiasAdd, so that the session runs each convolution with its bias, activation and
residual add as one oneDNN op; outputs as the model's own; fetched values never rewritten."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest

from streamd.networks.freezing import FrozenSessionModel
from streamd.networks.fusing import fuse
from streamd.networks.savedmodel import load_network_files
from streamd.networks.spec import Preprocessing
from tests.conftest import preprocessing_for
from tests.factories.models import ModelFiles, _save, build_keras_blocks


def _executed_ops(session: object, fetch: str, feeds: dict[str, np.ndarray]) -> collections.Counter[str]:
    """The ops the session really runs (after its own optimiser), from the partition graphs."""
    import tensorflow as tf

    options = tf.compat.v1.RunOptions(output_partition_graphs=True)
    metadata = tf.compat.v1.RunMetadata()
    session.run(fetch, feeds, options=options, run_metadata=metadata)  # type: ignore[attr-defined]
    return collections.Counter(
        node.op for graph in metadata.partition_graphs for node in graph.node if node.op != "Const"
    )


def test_a_keras_export_runs_fused_with_the_same_outputs(keras_blocks: ModelFiles) -> None:
    preprocessing = Preprocessing.model_validate(
        preprocessing_for(keras_blocks, target_size="16x16", pixel_scaling=1.0)
    )
    fused, _ = load_network_files(keras_blocks.directory, preprocessing, 1, 1, freeze_graph=True)
    loaded, _ = load_network_files(keras_blocks.directory, preprocessing, 1, 1, freeze_graph=False)
    try:
        assert isinstance(fused, FrozenSessionModel)
        assert fused.fused is not None and (fused.fused.scales, fused.fused.biases) == (1, 3)
        feeds = {keras_blocks.input_tensor: np.random.default_rng(0).random((4, 16, 16, 3), np.float32)}
        ops = _executed_ops(fused._frozen, keras_blocks.output_tensor, feeds)
        # Every convolution carries its bias and activation; nothing of a batch norm runs on its own
        # (frozen only: Conv2D, DepthwiseConv2dNative, Mul, 2 Relu6 and 3 AddV2, one of them the residual
        # add, which stays: oneDNN's fusion of a residual add is not offered for this pattern).
        convolutions = {op: count for op, count in ops.items() if "Conv" in op}
        assert convolutions and all("Fused" in op for op in convolutions), ops
        assert sum(convolutions.values()) == 3
        assert not {"Mul", "Relu6", "Add", "BiasAdd"} & set(ops), ops
        assert ops["AddV2"] == 1
        for seed in range(3):
            images = np.random.default_rng(seed).random((4, 16, 16, 3), np.float32)
            batch = {keras_blocks.input_tensor: images}
            [want] = loaded.run([keras_blocks.output_tensor], batch)
            [got] = fused.run([keras_blocks.output_tensor], batch)
            assert want.shape == got.shape == (4, 4)
            assert np.ptp(want, axis=0).max() > 1e-4  # the inputs give different answers: a real comparison
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    finally:
        fused.close()
        loaded.close()


def test_convolutions_whose_offsets_fold_away_still_fuse_their_activation(tmp_path: Path) -> None:
    files = build_keras_blocks(tmp_path / "no-offsets", offsets=False)
    preprocessing = Preprocessing.model_validate(
        preprocessing_for(files, target_size="16x16", pixel_scaling=1.0)
    )
    fused, _ = load_network_files(files.directory, preprocessing, 1, 1, freeze_graph=True)
    try:
        assert isinstance(fused, FrozenSessionModel)
        assert fused.fused is not None and fused.fused.biases == 0 and fused.fused.zero_biases == 3
        feeds = {files.input_tensor: np.random.default_rng(0).random((4, 16, 16, 3), np.float32)}
        ops = _executed_ops(fused._frozen, files.output_tensor, feeds)
        # The zero biases sit right before the activations, past the Identity nodes that inlining
        # leaves where an offset was: ReLU6 runs inside the convolutions (the residual add stays, as
        # in the test above).
        assert not {"Mul", "Relu6", "BiasAdd"} & set(ops) and ops["AddV2"] == 1, ops
        assert sum(count for op, count in ops.items() if "Fused" in op and "Conv" in op) == 3, ops
    finally:
        fused.close()


def _tf1_conv_scaled(export_dir: Path) -> tuple[object, dict[str, np.ndarray]]:
    """depthwise conv → times a scale → plus an offset → relu, every weight a constant, as a frozen
    GraphDef; and a feed. (Depthwise: grappler itself already pushes a scale into a `Conv2D`'s weights.)"""
    import tensorflow as tf

    rng = np.random.default_rng(3)
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 6, 6, 2], name="input")
        weights = rng.normal(size=(3, 3, 2, 2)).astype(np.float32)  # 2 channels x 2: 4 out
        conv = tf.nn.depthwise_conv2d(images, weights, [1, 1, 1, 1], "SAME", name="conv")
        scaled = tf.multiply(conv, rng.uniform(0.5, 2, 4).astype(np.float32), name="scaled")
        shifted = tf.add(scaled, rng.normal(size=(1, 1, 1, 4)).astype(np.float32), name="shifted")
        tf.nn.relu(shifted, name="out")
        halved = tf.multiply(conv, np.float32(0.5), name="halved")  # a scalar: not one value per channel
        tf.identity(halved, name="other")
        _save(graph, export_dir)
    return graph.as_graph_def(), {"input:0": rng.random((2, 6, 6, 2), np.float32)}


def _run(graph_def: object, fetches: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        result: list[np.ndarray] = session.run(fetches, feeds)
        return result


def test_a_fetched_or_shared_value_is_never_rewritten(tmp_path: Path) -> None:
    graph_def, feeds = _tf1_conv_scaled(tmp_path / "m")
    want = _run(graph_def, ["out:0", "conv:0"], feeds)
    # The conv's value is fetched: it is left as it is.
    fused, done = fuse(graph_def, ["input:0"], ["out:0", "conv:0"])
    assert not done.changed
    np.testing.assert_allclose(_run(fused, ["out:0", "conv:0"], feeds), want, rtol=1e-6)
    # Read twice (by `scaled` and by `halved`): the scale cannot go into the weights either.
    fused, done = fuse(graph_def, ["input:0"], ["out:0", "other:0"])
    assert (done.scales, done.biases) == (0, 0)
    np.testing.assert_allclose(
        _run(fused, ["out:0", "other:0"], feeds), _run(graph_def, ["out:0", "other:0"], feeds), rtol=1e-6
    )
    # Only `out` served: the scale and the offset go into the conv.
    fused, done = fuse(graph_def, ["input:0"], ["out:0"])
    assert (done.scales, done.biases, done.zero_biases) == (1, 1, 0)
    ops = collections.Counter(node.op for node in fused.node)
    assert ops["Mul"] == 0 and ops["BiasAdd"] == 1 and ops["DepthwiseConv2dNative"] == 1
    np.testing.assert_allclose(_run(fused, ["out:0"], feeds), want[:1], rtol=1e-5, atol=1e-6)


def build_tf1_fused_batchnorm(export_dir: Path) -> ModelFiles:
    """A TF1 graph as tf.keras 2 and TF1 slim export them: conv → FusedBatchNormV3 (inference) → Relu6,
    a pattern TensorFlow fuses into one op by itself."""
    import tensorflow as tf

    rng = np.random.default_rng(5)
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 3], name="input")
        weights = tf.compat.v1.get_variable("w", initializer=rng.normal(size=(3, 3, 3, 4)).astype(np.float32))
        conv = tf.nn.conv2d(images, weights, 1, "SAME")
        gamma, beta, mean = (rng.uniform(0.5, 1.5, 4).astype(np.float32) for _ in range(3))
        variance = rng.uniform(0.5, 1.5, 4).astype(np.float32)
        normed, _, _ = tf.compat.v1.nn.fused_batch_norm(
            conv, gamma, beta, mean, variance, is_training=False, name="bn"
        )
        prob = tf.nn.softmax(tf.reduce_mean(tf.nn.relu6(normed), axis=[1, 2]), name="prob")
        # A signature names the output: the batch norm's unused statistics are no output of the model.
        signature = tf.compat.v1.saved_model.signature_def_utils.predict_signature_def(
            {"input": images}, {"prob": prob}
        )
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(export_dir))
            builder.add_meta_graph_and_variables(
                session, ["serve"], signature_def_map={"serving_default": signature}
            )
            builder.save()
    return ModelFiles.read(export_dir, "input:0", "prob:0")


def test_a_conv_that_tensorflow_fuses_with_its_batch_norm_keeps_that_fusion(tmp_path: Path) -> None:
    files = build_tf1_fused_batchnorm(tmp_path / "tf1-bn")
    preprocessing = Preprocessing.model_validate(preprocessing_for(files, pixel_scaling=1.0))
    model, _ = load_network_files(files.directory, preprocessing, 1, 1, freeze_graph=True)
    try:
        assert isinstance(model, FrozenSessionModel)
        # No zero bias went between the conv and its batch norm: nothing changed, so the frozen graph
        # runs as it is, and TensorFlow fuses conv, batch norm and ReLU6 into one op there.
        assert model.fused is None
        feeds = {files.input_tensor: np.random.default_rng(1).random((2, 8, 8, 3), np.float32)}
        ops = _executed_ops(model._frozen, files.output_tensor, feeds)
        assert not {"FusedBatchNormV3", "Relu6", "BiasAdd"} & set(ops), ops
        assert sum(count for op, count in ops.items() if "FusedConv2D" in op) == 1, ops
    finally:
        model.close()


def test_a_fused_graph_that_answers_differently_falls_back_to_the_frozen_one(
    keras_blocks: ModelFiles, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from streamd.networks import freezing

    verdicts = iter(["prob:0: largest difference 0.5", ""])  # the fused copy first, then the frozen one
    monkeypatch.setattr(freezing, "differences", lambda want, got, names: next(verdicts))
    preprocessing = Preprocessing.model_validate(
        preprocessing_for(keras_blocks, target_size="16x16", pixel_scaling=1.0)
    )
    model, _ = load_network_files(keras_blocks.directory, preprocessing, 1, 1, freeze_graph=True)
    try:
        assert isinstance(model, FrozenSessionModel) and model.fused is None
        assert (
            "frozen graph not fused: the fused copy differs (prob:0: largest difference 0.5)" in caplog.text
        )
        feeds = {keras_blocks.input_tensor: np.random.default_rng(0).random((2, 16, 16, 3), np.float32)}
        ops = _executed_ops(model._frozen, keras_blocks.output_tensor, feeds)
        # The frozen graph as it is: the depthwise conv runs unfused and its batch norm's scale as a Mul
        # (the fused graph has no Mul and only Fused* convolutions).
        assert ops["Mul"] == 1 and ops["Relu6"] == 1
        assert [op for op in ops if "Depthwise" in op] == ["_MklNativeDepthwiseConv2dNative"], ops
    finally:
        model.close()
