"""Benchmark: raw `session.run` against streamd's DynamicBatcher + TFExecutor, side by side in one run.

Builds a MobileNetV2-sized classifier (`tf.keras.applications.MobileNetV2(weights=None)`, random weights)
exported as a SavedModel and loaded the way streamd loads networks, then prints:
  - raw session.run images/s at batch 1 and at each batch size (the best one marked);
  - images/s through DynamicBatcher with N concurrent callers each submitting single 224x224 frames
    (preprocessing included, on the executor thread);
  - the ratios batcher / raw-best and batcher / raw-batch-1.

    .venv/bin/python -m bench.inference [--callers 8] [--seconds 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from streamd.inference.batching import BatchPolicy, DynamicBatcher
from streamd.inference.executor import InferenceItem, ItemOutput, TFExecutor
from streamd.networks.savedmodel import load_network_files
from streamd.networks.spec import Preprocessing
from streamd.settings import InferenceConfig


def export_mobilenet(directory: Path) -> tuple[str, str]:
    """Export MobileNetV2 224 as a SavedModel; returns its serving input and output tensor names."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    model = tf.keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    model.export(str(directory), verbose=False)
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((directory / "saved_model.pb").read_bytes())
    signature = proto.meta_graphs[0].signature_def["serving_default"]
    return next(iter(signature.inputs.values())).name, next(iter(signature.outputs.values())).name


def raw_rate(
    session: object,
    input_name: str,
    output_name: str,
    batch: int,
    seconds: float,
    callers: int = 1,
    size: int = 224,
) -> float:
    """Images/s of `session.run` on one preprocessed batch, called in a loop by `callers` threads at once."""
    data = np.random.default_rng(0).random((batch, size, size, 3), dtype=np.float32)
    session.run(output_name, {input_name: data})  # warm-up
    counts = [0] * callers
    started = time.monotonic()

    def call(index: int) -> None:
        while time.monotonic() - started < seconds:
            session.run(output_name, {input_name: data})
            counts[index] += batch

    threads = [threading.Thread(target=call, args=(index,)) for index in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.monotonic() - started)


async def batcher_rate(
    executor: TFExecutor,
    output_name: str,
    callers: int,
    seconds: float,
    max_batch: int,
    max_wait_s: float,
    max_inflight: int = 1,
) -> tuple[float, float]:
    batcher: DynamicBatcher[InferenceItem, ItemOutput] = DynamicBatcher(
        "bench", executor.run, BatchPolicy(max_batch, max_wait_s, max_inflight)
    )
    frames = [
        np.random.default_rng(i).integers(0, 255, (224, 224, 3), dtype=np.uint8) for i in range(callers)
    ]
    await batcher.submit(InferenceItem((frames[0],), (output_name,)))  # warm-up
    deadline = time.monotonic() + seconds
    counts = [0] * callers

    async def caller(index: int) -> None:
        item = InferenceItem((frames[index],), (output_name,))
        while time.monotonic() < deadline:
            await batcher.submit(item)
            counts[index] += 1

    started = time.monotonic()
    await asyncio.gather(*(caller(i) for i in range(callers)))
    elapsed = time.monotonic() - started
    await batcher.close()
    return sum(counts) / elapsed, batcher.stats.mean_batch_size


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0, help="measuring time of each configuration")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians are reported)")
    parser.add_argument("--batches", default="1,4,8,16,32", help="raw batch sizes to measure")
    parser.add_argument("--max-wait-s", type=float, default=0.005)
    parser.add_argument(
        "--inflight-batches",
        type=int,
        default=InferenceConfig().max_inflight_batches,
        help="batches running at once (default: the daemon's); 1 is measured beside it",
    )
    args = parser.parse_args()
    inflights = sorted({1, args.inflight_batches})

    with tempfile.TemporaryDirectory() as tmp:
        export_dir = Path(tmp) / "mobilenet_v2"
        input_name, output_name = export_mobilenet(export_dir)
        preprocessing = Preprocessing.model_validate(
            {
                "inputs": [
                    {
                        "tensor_name": input_name,
                        "image": {"target_size": "224x224", "color_channels": "RGB", "pixel_scaling": 2.0},
                    }
                ]
            }
        )
        model, means = load_network_files(export_dir, preprocessing)
        print(f"MobileNetV2 224, input {input_name}, output {output_name}, load {model.load_time_s:.2f} s")

        executor = TFExecutor("bench", model, preprocessing, means)
        sizes = [int(b) for b in args.batches.split(",")]
        raw: dict[int, list[float]] = {size: [] for size in sizes}
        batched: dict[int, list[float]] = {inflight: [] for inflight in inflights}
        mean_batches: dict[int, list[float]] = {inflight: [] for inflight in inflights}
        # Interleaved rounds, medians reported: this machine's speed drifts by 10-20 % over a minute.
        for _ in range(args.rounds):
            for size in sizes:
                raw[size].append(raw_rate(model.session, input_name, output_name, size, args.seconds))
            for inflight in inflights:
                rate, mean_batch = asyncio.run(
                    batcher_rate(
                        executor,
                        output_name,
                        args.callers,
                        args.seconds,
                        max(sizes),
                        args.max_wait_s,
                        inflight,
                    )
                )
                batched[inflight].append(rate)
                mean_batches[inflight].append(mean_batch)
        executor.close()
    medians = {size: statistics.median(rates) for size, rates in raw.items()}
    best = max(medians, key=medians.__getitem__)
    for size, rate in medians.items():
        marker = "  <- best" if size == best else ""
        print(f"raw session.run batch {size:>3}: {rate:7.1f} img/s (median of {args.rounds}){marker}")
    for inflight in inflights:
        rate = statistics.median(batched[inflight])
        print(
            f"DynamicBatcher, {args.callers} callers x single frames, {inflight} batch(es) at once: "
            f"{rate:7.1f} img/s (mean batch {statistics.median(mean_batches[inflight]):.1f}, "
            "preprocessing included)"
        )
        print(f"  ratio batcher / raw best (batch {best:>2}): {rate / medians[best]:.2f}   (target >= 0.9)")
        if args.callers in medians:
            same = rate / medians[args.callers]
            print(f"  ratio batcher / raw batch {args.callers:>2} (its batch size): {same:.2f}")
        print(f"  ratio batcher / raw batch 1                : {rate / medians[1]:.2f}   (target >= 1.7)")


if __name__ == "__main__":
    main()
