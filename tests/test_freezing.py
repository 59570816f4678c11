"""Frozen graphs (networks/freezing.py): a Session model's served outputs run through a copy of its graph
with the variables folded into constants, with the same outputs; other tensors still come from the
original graph; a graph whose frozen copy answers differently is kept as loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamd.networks.freezing import FrozenSessionModel, differences, variable_bytes
from streamd.networks.savedmodel import load_network_files
from streamd.networks.spec import Preprocessing
from tests.conftest import preprocessing_for
from tests.factories.models import (
    ModelFiles,
    _save,
    build_tf1_classifier,
    classifier_weights,
    serving_signature_names,
)

VARIABLE_OPS = {"VarHandleOp", "VariableV2"}  # no variable in the graph: nothing left to read one


def _preprocessing(files: ModelFiles) -> Preprocessing:
    return Preprocessing.model_validate(preprocessing_for(files, pixel_scaling=1.0))


def _batch(seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).random((4, size, size, 3), dtype=np.float32) * 255


def build_keras_batchnorm(export_dir: Path) -> ModelFiles:
    """A Keras 3 model with convolutions and batch normalisation (non-trivial moving statistics),
    exported with `model.export()`: the kind of graph freezing is for."""
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        layer.set_weights([rng.normal(0.5, 0.3, w.shape).astype(np.float32) for w in layer.get_weights()])
    model.export(str(export_dir), verbose=False)
    return ModelFiles.read(export_dir, *serving_signature_names(export_dir))


@pytest.fixture(scope="module")
def keras_bn(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    return build_keras_batchnorm(tmp_path_factory.mktemp("keras-bn"))


def test_a_keras_export_runs_frozen_with_the_same_outputs(keras_bn: ModelFiles) -> None:
    preprocessing = _preprocessing(keras_bn)
    frozen, _ = load_network_files(keras_bn.directory, preprocessing, 1, 1, freeze_graph=True)
    loaded, _ = load_network_files(keras_bn.directory, preprocessing, 1, 1, freeze_graph=False)
    try:
        assert isinstance(frozen, FrozenSessionModel)
        assert not isinstance(loaded, FrozenSessionModel)
        ops = {op.type for op in frozen._frozen.graph.get_operations()}  # type: ignore[attr-defined]
        assert not ops & VARIABLE_OPS and "Const" in ops
        assert VARIABLE_OPS & {op.type for op in loaded.graph.get_operations()}  # type: ignore[attr-defined]
        assert variable_bytes(loaded.graph) > 0  # type: ignore[attr-defined]
        for seed in range(3):
            feeds = {keras_bn.input_tensor: _batch(seed) / 255}
            [want] = loaded.run([keras_bn.output_tensor], feeds)
            [got] = frozen.run([keras_bn.output_tensor], feeds)
            assert want.shape == got.shape == (4, 3)
            assert np.ptp(want[:, 0]) > 1e-4  # the inputs give different answers: a real comparison
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    finally:
        frozen.close()
        loaded.close()


def test_tensors_outside_the_served_outputs_come_from_the_original_graph(tmp_path: Path) -> None:
    files = build_tf1_classifier(tmp_path / "tf1")
    preprocessing = _preprocessing(files)
    model, _ = load_network_files(files.directory, preprocessing, 1, 1, freeze_graph=True)
    try:
        assert isinstance(model, FrozenSessionModel)
        feeds = {"input:0": _batch(0)}
        pooled = feeds["input:0"].mean(axis=(1, 2))
        [logits, prob] = model.run(["logits:0", "prob:0"], feeds)  # logits: not a served output
        np.testing.assert_allclose(logits, pooled @ classifier_weights(), rtol=1e-5)
        expected = np.exp(logits - logits.max(axis=1, keepdims=True))
        np.testing.assert_allclose(prob, expected / expected.sum(axis=1, keepdims=True), rtol=1e-5)
        [alone] = model.run(["prob:0"], feeds)  # the frozen copy
        np.testing.assert_allclose(alone, prob, rtol=1e-6)
    finally:
        model.close()


def build_tf1_noisy(export_dir: Path) -> ModelFiles:
    """A classifier that adds fresh noise at every run: no copy of it can answer the same."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 3], name="input")
        weights = tf.compat.v1.get_variable("weights", initializer=tf.ones([3, 3]))
        logits = tf.matmul(tf.reduce_mean(images, axis=[1, 2]), weights)
        tf.nn.softmax(logits + tf.random.uniform(tf.shape(logits)), name="prob")
        _save(graph, export_dir)
    return ModelFiles.read(export_dir, "input:0", "prob:0")


def test_a_graph_whose_frozen_copy_answers_differently_is_kept_as_loaded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = build_tf1_noisy(tmp_path / "noisy")
    model, _ = load_network_files(files.directory, _preprocessing(files), 1, 1, freeze_graph=True)
    try:
        assert not isinstance(model, FrozenSessionModel)
        assert "graph not frozen, kept as loaded: the frozen copy differs (prob:0: largest difference" in (
            caplog.text
        )
    finally:
        model.close()


def test_differences_name_the_output_and_what_differs() -> None:
    a = np.array([[0.1, 0.9]], np.float32)
    assert differences([a], [a.copy()], ["p:0"]) == ""
    assert differences([a], [a + 1e-7], ["p:0"]) == ""
    assert differences([a], [a + 0.01], ["p:0"]) == "p:0: largest difference 0.01"
    assert differences([a], [a[:, :1]], ["p:0"]) == "p:0: float32[1, 1] for float32[1, 2]"
    assert differences([np.array([1, 2])], [np.array([1, 3])], ["c:0"]) == "c:0: values differ"
