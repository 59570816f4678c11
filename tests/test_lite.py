"""Lite graphs (networks/lite.py, `inference.lite_graphs`): a frozen graph's served outputs run by
TensorFlow Lite's interpreter one image at a time, with the outputs of the model as loaded; anything
else, and any graph that does not convert, runs on TensorFlow as before."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamd.inference.executor import InferenceItem
from streamd.inference.runtime import InferenceRuntime
from streamd.networks.freezing import FrozenSessionModel
from streamd.networks.lite import LITE_BATCH_SIZE
from streamd.networks.savedmodel import load_network_files
from streamd.networks.spec import TUNING_KEY, Preprocessing
from streamd.settings import InferenceConfig
from tests.conftest import preprocessing_for
from tests.factories.models import ModelFiles, _save, build_tf1_detector, build_tf1_fragile


class _Refuses:
    """Stands in for the frozen TensorFlow session, to prove a run did not reach it."""

    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("ran on the TensorFlow session")

    def close(self) -> None:
        pass


def test_a_keras_export_runs_by_tensorflow_lite_with_the_same_outputs(keras_blocks: ModelFiles) -> None:
    preprocessing = Preprocessing.model_validate(
        preprocessing_for(keras_blocks, target_size="16x16", pixel_scaling=1.0)
    )
    lite, _ = load_network_files(
        keras_blocks.directory, preprocessing, 1, 1, freeze_graph=True, lite_graph=True
    )
    loaded, _ = load_network_files(keras_blocks.directory, preprocessing, 1, 1, freeze_graph=False)
    try:
        assert isinstance(lite, FrozenSessionModel) and lite.lite is not None and lite.fused is not None
        frozen_session, lite._frozen = lite._frozen, _Refuses()
        for seed, images in enumerate((1, 3, 5)):
            batch = {
                keras_blocks.input_tensor: np.random.default_rng(seed).random((images, 16, 16, 3), np.float32)
            }
            [want] = loaded.run([keras_blocks.output_tensor], batch)
            [got] = lite.run([keras_blocks.output_tensor], batch)
            assert got.shape == want.shape == (images, 4) and got.dtype == np.float32
            if images > 1:
                assert np.ptp(want, axis=0).max() > 1e-4  # the images give different answers
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        # An empty batch is not one image at a time: TensorFlow answers it.
        empty = {keras_blocks.input_tensor: np.zeros((0, 16, 16, 3), np.float32)}
        with pytest.raises(AssertionError, match="ran on the TensorFlow session"):
            lite.run([keras_blocks.output_tensor], empty)
        lite._frozen = frozen_session
    finally:
        lite.close()
        loaded.close()


def test_a_detector_runs_every_output_by_tensorflow_lite_and_other_tensors_on_tensorflow(
    tmp_path: Path,
) -> None:
    files = build_tf1_detector(tmp_path / "detector")
    preprocessing = Preprocessing.model_validate(preprocessing_for(files, pixel_scaling=1.0))
    lite, _ = load_network_files(files.directory, preprocessing, 1, 1, freeze_graph=True, lite_graph=True)
    loaded, _ = load_network_files(files.directory, preprocessing, 1, 1, freeze_graph=False)
    outputs = ["detection_boxes:0", "detection_scores:0", "detection_classes:0"]
    try:
        assert isinstance(lite, FrozenSessionModel) and lite.lite is not None
        batch = {"input:0": np.random.default_rng(2).random((3, 8, 8, 3), np.float32)}
        want = loaded.run(outputs, batch)
        frozen_session, lite._frozen = lite._frozen, _Refuses()
        got = lite.run(outputs, batch)
        assert [g.shape for g in got] == [w.shape for w in want] == [(3, 3, 4), (3, 3), (3, 3)]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
        # A tensor the converted graph does not serve runs on the original session, unchanged.
        [pooled] = lite.run(["Mean:0"], batch)
        np.testing.assert_allclose(pooled, batch["input:0"].mean(axis=(1, 2)), rtol=1e-5)
        lite._frozen = frozen_session
    finally:
        lite.close()
        loaded.close()


def _frozen_without_lite(
    files: ModelFiles, caplog: pytest.LogCaptureFixture
) -> tuple[FrozenSessionModel, list[str]]:
    """The model loaded with lite graphs on, which must have stayed frozen on TensorFlow, and the
    warnings of its load."""
    preprocessing = Preprocessing.model_validate(preprocessing_for(files, pixel_scaling=1.0))
    with caplog.at_level(logging.WARNING, logger="streamd.networks.freezing"):
        model, _ = load_network_files(
            files.directory, preprocessing, 1, 1, freeze_graph=True, lite_graph=True
        )
    assert isinstance(model, FrozenSessionModel) and model.lite is None
    return model, [record.getMessage() for record in caplog.records]


def test_a_graph_that_does_not_convert_runs_frozen_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():  # any image size: TensorFlow Lite takes only the batch dimension unknown
        images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="input")
        scale = tf.compat.v1.get_variable("scale", initializer=tf.constant([1.0, 2.0, 3.0]))
        tf.identity(tf.reduce_mean(images, axis=[1, 2]) * scale, name="scores")
        _save(graph, tmp_path / "any-size")
    model, reasons = _frozen_without_lite(
        ModelFiles.read(tmp_path / "any-size", "input:0", "scores:0"), caplog
    )
    try:
        assert any(reason.startswith("graph not run by TensorFlow Lite: ") for reason in reasons), reasons
        batch = {"input:0": np.random.default_rng(4).random((2, 8, 8, 3), np.float32)}
        [scores] = model.run(["scores:0"], batch)
        np.testing.assert_allclose(scores, batch["input:0"].mean(axis=(1, 2)) * [1.0, 2.0, 3.0], rtol=1e-5)
    finally:
        model.close()


def test_a_graph_that_checks_its_values_stays_on_tensorflow_which_still_refuses_bad_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """TensorFlow Lite's converter drops `check_numerics`: converted, the fragile model would answer a
    black image (with NaNs) where TensorFlow fails the run."""
    model, reasons = _frozen_without_lite(build_tf1_fragile(tmp_path / "fragile"), caplog)
    try:
        assert (
            "graph not run by TensorFlow Lite: ValueError: the graph checks its values (CheckNumerics), "
            "which TensorFlow Lite drops" in reasons
        ), reasons
        with pytest.raises(Exception, match="black image : Tensor had Inf values"):
            model.run(["prob:0"], {"input:0": np.zeros((1, 8, 8, 3), np.float32)})
    finally:
        model.close()


@dataclass(frozen=True)
class _Record:
    network_id: int
    metadata: dict[str, Any]
    preprocessing: Preprocessing


async def test_batches_of_a_lite_network_hold_at_most_a_few_images_unless_its_metadata_says(
    keras_blocks: ModelFiles,
) -> None:
    preprocessing = Preprocessing.model_validate(
        preprocessing_for(keras_blocks, target_size="16x16", pixel_scaling=1.0)
    )
    lite, _ = await asyncio.to_thread(
        load_network_files, keras_blocks.directory, preprocessing, 1, 1, freeze_graph=True, lite_graph=True
    )
    loaded, _ = await asyncio.to_thread(
        load_network_files, keras_blocks.directory, preprocessing, 1, 1, freeze_graph=False
    )
    runtime = InferenceRuntime(None, InferenceConfig())  # type: ignore[arg-type]  # no store needed
    plain = _Record(1, {}, preprocessing)
    tuned = _Record(2, {TUNING_KEY: {"max_batch_size": 16}}, preprocessing)
    try:
        assert InferenceConfig().max_batch_size == 32
        assert runtime.policy(plain).max_batch_size == 32  # before the model is loaded
        assert runtime.policy(plain, loaded).max_batch_size == 32  # TensorFlow: batches grow with load
        assert runtime.policy(plain, lite).max_batch_size == LITE_BATCH_SIZE == 4
        assert runtime.policy(tuned, lite).max_batch_size == 16  # the network's own setting wins
        runtime.adopt(plain, lite, [None])  # type: ignore[arg-type]
        assert runtime.loaded[1].batcher.policy.max_batch_size == 4
        runtime.retune(plain)  # type: ignore[arg-type]  # a PATCH keeps the cap
        assert runtime.loaded[1].batcher.policy.max_batch_size == 4
        # Twelve images queued at once go in batches of four, all answered.
        items = [
            InferenceItem((np.full((16, 16, 3), i * 20, np.uint8),), (keras_blocks.output_tensor,))
            for i in range(12)
        ]
        outputs = await asyncio.gather(*(runtime.loaded[1].infer(item) for item in items))
        assert len(outputs) == 12
        assert runtime.loaded[1].batcher.stats.batch_sizes == {4: 3}
    finally:
        await runtime.close()
        await asyncio.to_thread(loaded.close)
