"""The real chain of `bench.chain --real`: MTCNN faces → crop → FER emotions on the demo video.

Prints the detector alone (raw `session.run`, one 640x480 frame per call), the whole chain end to end
(frames/s, frames decoded beforehand: decoding 640x480 H.264 costs ~1 ms of the ~40 ms a frame takes),
and the emotion classifier fed crops by a chain (a fixed grid of face-sized boxes, so the detector
costs nothing) against its raw batched `session.run` at the same batch size.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.chain import chain_rate, export_grid_detector, record
from streamd.chains.plan import build_plan
from streamd.chains.spec import ChainBody, ResolvedService
from streamd.demo import FACES_CHAIN
from streamd.demo_video import encode_faces_video
from streamd.inference.runtime import InferenceRuntime, LoadedModel
from streamd.models.catalogue import BuiltModel
from streamd.models.command import build_all
from streamd.models.registration import post_processing
from streamd.networks.recognition import PostProcessing, SpecOutput
from streamd.networks.savedmodel import load_network_files
from streamd.networks.spec import Preprocessing
from streamd.settings import InferenceConfig


def decoded_frames(video: Path, count: int) -> list[np.ndarray]:
    """`count` BGR frames spread over the whole video (all its scenes)."""
    import av

    with av.open(str(video)) as container:
        frames = [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]
    step = max(1, len(frames) // count)
    return frames[::step][:count]


def service(built: BuiltModel, network_id: int) -> ResolvedService:
    model = built.model
    labels = [{"id": i + (model.kind == "detection"), "name": n} for i, n in enumerate(model.labels)]
    output = SpecOutput.model_validate(
        {"labels": {"roi": "BBOX" if model.kind == "detection" else "NONE", "labels": labels}}
    )
    post = PostProcessing.model_validate(post_processing(built))
    return ResolvedService(
        model.name,
        network_id,
        network_id,
        network_id,
        model.kind == "detection",
        model.labels,
        (post,),
        (output,),
    )


def adopt(
    runtime: InferenceRuntime, built: BuiltModel, network_id: int, root: Path
) -> tuple[LoadedModel, Preprocessing]:
    """Load a built model as a deployment would hand it over (its extra files, the mean, beside it)."""
    directory = root / built.model.name
    shutil.copytree(built.directory, directory)
    for name, content in built.model.extra_files.items():
        (directory / name).write_bytes(content)
    pre = Preprocessing.model_validate(
        {"inputs": [{"tensor_name": built.input_tensor, "image": built.model.image}]}
    )
    model, means = load_network_files(directory, pre)
    runtime.adopt(record(network_id, pre, built.model.max_batch_size), model, means)
    return model, pre


def raw_rate(model: LoadedModel, built: BuiltModel, batch: np.ndarray, seconds: float) -> float:
    """Images/s of the model's own `run` on one preprocessed batch, in a loop."""
    fetches = list(built.outputs.values())
    model.run(fetches, {built.input_tensor: batch})  # warm-up
    done, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        model.run(fetches, {built.input_tensor: batch})
        done += len(batch)
    return done / (time.monotonic() - started)


async def frame_rate(
    runtime: InferenceRuntime, plan: Any, frames: list[np.ndarray], in_flight: int
) -> tuple[float, int]:
    from streamd.chains.runner import ChainRunner

    runner = ChainRunner(runtime, Path(tempfile.gettempdir()))
    await runner.run(plan, frames[:1], ["warm-up"])
    queue, faces = list(range(len(frames))), 0

    async def worker() -> None:
        nonlocal faces
        while queue:
            index = queue.pop()
            [prediction] = await runner.run(plan, [frames[index]], [f"frame{index}"])
            faces += sum(1 for face in prediction["classes"] if face.get("emotions"))

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return len(frames) / (time.monotonic() - started), faces


def run(data_dir: Path, frames_count: int, in_flight: int, rounds: int, grid: int) -> None:
    faces, emotions = build_all("all", data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        encode_faces_video(root / "faces.mp4")
        frames = decoded_frames(root / "faces.mp4", frames_count)
        runtime = InferenceRuntime(None, InferenceConfig())  # type: ignore[arg-type]
        detector, _ = adopt(runtime, faces, 1, root)
        classifier, _ = adopt(runtime, emotions, 2, root)
        export_grid_detector(root / "grid", grid)
        grid_pre = Preprocessing.model_validate(
            {"inputs": [{"tensor_name": "input", "image": {"target_size": "64x64"}}]}
        )
        grid_model, grid_means = load_network_files(root / "grid", grid_pre)
        runtime.adopt(record(3, grid_pre, 32), grid_model, grid_means)
        resolved = {"faces": service(faces, 1), "emotions": service(emotions, 2), "grid": grid_service(grid)}
        real = build_plan(ChainBody.model_validate(FACES_CHAIN), resolved.__getitem__, require_data=False)
        fixed = build_plan(ChainBody.model_validate(grid_chain()), resolved.__getitem__, require_data=False)
        frame = frames[0][:, :, ::-1].astype(np.float32)[None]  # RGB, 0-255: the detector's input
        crops = np.random.default_rng(0).random((grid * grid, 64, 64, 1), dtype=np.float32) * 2 - 1
        results: dict[str, list[float]] = {"detector": [], "chain": [], "raw": [], "fed": []}
        found = 0
        for _ in range(rounds):  # interleaved: this machine's speed drifts over a minute
            results["detector"].append(raw_rate(detector, faces, frame, 4.0))
            fps, found = asyncio.run(frame_rate(runtime, real, frames, in_flight))
            results["chain"].append(fps)
            results["raw"].append(raw_rate(classifier, emotions, crops, 4.0))
            results["fed"].append(
                asyncio.run(chain_rate(runtime, fixed, frames, in_flight, child="emotions"))
            )
        asyncio.run(runtime.close())
    report(results, frames, found, grid, in_flight)


def grid_service(grid: int) -> ResolvedService:
    from dataclasses import replace

    from bench.chain import services

    return replace(services("unused", grid)["detector"], name="grid", spec_id=3, version_id=3, network_id=3)


def grid_chain() -> dict[str, Any]:
    return {
        "calls": [
            {"service": "grid"},
            {"id": "crop", "action": {"type": "crop"}},
            {"parent_id": "crop", "service": "emotions", "parameters": {"output": {"best": 1}}},
        ]
    }


def report(
    results: dict[str, list[float]], frames: list[np.ndarray], faces: int, grid: int, in_flight: int
) -> None:
    median = {key: statistics.median(values) for key, values in results.items()}
    print(f"demo video 640x480, {len(frames)} frames, {faces} faces in them, frames in flight: {in_flight}")
    print(f"face detector raw run, batch 1           : {median['detector']:7.1f} frames/s (median)")
    print(f"faces → crop → emotions, end to end      : {median['chain']:7.1f} frames/s (median)")
    print(f"emotions raw run, batch {grid * grid:>2}              : {median['raw']:7.1f} img/s (median)")
    print(f"emotions fed crops by a chain            : {median['fed']:7.1f} crops/s (median)")
    print(f"ratio chain / raw (emotions)             : {median['fed'] / median['raw']:.2f}")
