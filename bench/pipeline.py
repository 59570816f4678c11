"""Benchmark: streamd end to end on a 720p H.264 file, against the raw model and a naive loop, in one run.

Prints:
  - raw `session.run` images/s of the model at its best batch size (preprocessed input, no decoding),
    from one calling thread (the issue's reference) and from two at once (as streamd's executor runs);
  - streamd's end-to-end fps: the file streamed through the real daemon (HTTP API, decoder thread,
    chain, dynamic batcher, TF executor, JSONL sink), processed frames / wall time;
  - a naive loop on the same file: decode → preprocess → session.run at batch 1 → write a JSON line;
  - the ratios streamd / raw-best (target >= 0.85) and streamd / naive (target >= 1.8).

    .venv/bin/python -m bench.pipeline [--seconds 10] [--rounds 2] [--frames-in-flight N]
        [--inflight-batches N]

streamd runs on its defaults ([streams] frames_in_flight, [inference] max_inflight_batches) unless told.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import orjson
from aiohttp import web

from bench.inference import export_mobilenet, raw_rate
from streamd.app import build_app
from streamd.models.registration import register_classifier
from streamd.networks.preprocessing import preprocess
from streamd.networks.savedmodel import load_network_files
from streamd.networks.spec import Preprocessing
from streamd.settings import load
from streamd.video.source import to_image
from tests.factories.daemon import free_port


def encode_720p(path: Path, seconds: int, fps: int = 30, gop: int | None = None) -> int:
    """A moving 720p H.264 clip; `gop` fixes the keyframe interval in frames (an IP camera's GOP)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    frames = seconds * fps
    with av.open(str(path), "w") as container:
        stream = container.add_stream("h264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.options = {"preset": "veryfast"}
        if gop is not None:
            stream.options["x264-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0"
        for index in range(frames):
            frame = np.roll(base, index * 8, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return frames


def preprocessing_for(input_name: str, size: int = 224) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "tensor_name": input_name,
                "image": {
                    "target_size": f"{size}x{size}",
                    "resize_type": "SQUASH",
                    "color_channels": "RGB",
                    "pixel_scaling": 2.0,
                },
            }
        ]
    }


def _read_files(model_dir: Path) -> dict[str, bytes]:
    """Blocking: every file of the exported model, by name (walked and read in a worker thread)."""
    return {path.name: path.read_bytes() for path in sorted(model_dir.rglob("*")) if path.is_file()}


async def register_classify_chain(
    http: aiohttp.ClientSession, model_dir: Path, input_name: str, output_name: str, size: int = 224
) -> None:
    """The exported MobileNetV2 as network, spec "imagenet" and version, and the chain "classify"."""
    files = await asyncio.to_thread(_read_files, model_dir)
    await register_classifier(
        http,
        network_name="mobilenet",
        files=files,
        preprocessing=preprocessing_for(input_name, size),
        spec_name="imagenet",
        labels=[str(i) for i in range(1000)],
        output_tensor=output_name,
        threshold=0.0,
    )
    await http.put("/v0.7/chains/classify", json={"calls": [{"service": "imagenet"}]})


def raw_with_decoder(video: Path, session: Any, input_name: str, output_name: str, fps: float) -> float:
    """Raw session.run (two threads calling, batch 8, as streamd's executor runs) while a thread decodes
    the same video at `fps`, as streamd must: the ceiling on these cores for a pipeline that decodes
    in-process."""
    stop = threading.Event()

    def decode() -> None:
        period = 1.0 / fps
        while not stop.is_set():
            with av.open(str(video)) as container:
                for frame in container.decode(video=0):
                    started = time.monotonic()
                    to_image(frame)
                    if stop.wait(max(0.0, period - (time.monotonic() - started))):
                        return

    thread = threading.Thread(target=decode, name="bench-decoder")
    thread.start()
    try:
        return raw_rate(session, input_name, output_name, 8, 4.0, 2)
    finally:
        stop.set()
        thread.join()


def naive_loop(video: Path, session: Any, input_name: str, output_name: str, out: Path) -> float:
    spec = Preprocessing.model_validate(preprocessing_for(input_name)).inputs[0].image
    started = time.monotonic()
    count = 0
    with av.open(str(video)) as container, out.open("wb") as sink:
        for frame in container.decode(video=0):
            batch, _ = preprocess([frame.to_ndarray(format="bgr24")], spec)
            scores = session.run(output_name, {input_name: batch})
            sink.write(orjson.dumps({"frame": count, "top": int(np.argmax(scores[0]))}) + b"\n")
            count += 1
    return count / (time.monotonic() - started)


async def streamd_rate(
    root: Path,
    model_dir: Path,
    input_name: str,
    output_name: str,
    video: Path,
    frames: int,
    frames_in_flight: int | None,
    metrics: bool = True,
    inflight_batches: int | None = None,
    streams: int = 1,
) -> float:
    """Frames processed per second of wall time, all `streams` copies of the file together."""
    port = free_port()
    settings = load(
        None,
        {},
        {
            "storage": {"data_dir": root / "data", "media_roots": [str(video.parent)]},
            "server": {"port": port},
            "streams": {"frames_in_flight": frames_in_flight},  # None: the daemon's default
            "metrics": {"enabled": metrics},
            "inference": {"max_inflight_batches": inflight_batches},
        },
    )
    runner = web.AppRunner(build_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            await register_classify_chain(http, model_dir, input_name, output_name)
            # The first pass warms TensorFlow up: every new batch size costs oneDNN a one-time setup
            # (378 ms for the first batch of 16, 116 ms after). The second pass is the steady state.
            for name, count in (("warm-up", 1), ("bench", streams)):
                started = time.monotonic()
                ids = []
                for index in range(count):
                    body = {
                        "name": f"{name}-{index}",
                        "source": {"uri": str(video)},
                        "chain": "classify",
                        "sinks": [{"type": "jsonl", "path": f"{name}-{index}.jsonl"}],
                    }
                    ids.append((await (await http.post("/v0.7/streams", json=body)).json())["id"])
                for stream_id in ids:
                    while True:
                        status = await (await http.get(f"/v0.7/streams/{stream_id}")).json()
                        if status["state"] in ("finished", "error"):
                            break
                        await asyncio.sleep(0.05)
                    assert status["frames"]["processed"] == frames, status
                elapsed = time.monotonic() - started
            return streams * frames / elapsed
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds",
        type=int,
        default=30,
        help="length of the 30 fps test video (long enough that "
        "starting and stopping the stream weigh little)",
    )
    parser.add_argument("--frames-in-flight", type=int, default=None, help="default: the daemon's")
    parser.add_argument("--inflight-batches", type=int, default=None, help="default: the daemon's")
    parser.add_argument(
        "--streams",
        type=int,
        default=1,
        help="streams of the file at once (their frames share the batches); fps is their total",
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--metrics-overhead",
        action="store_true",
        help="also run streamd with metrics disabled and print the difference",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        video = root / "media" / "720p.mp4"
        video.parent.mkdir()
        frames = encode_720p(video, args.seconds)
        input_name, output_name = export_mobilenet(root / "model")
        model, _ = load_network_files(
            root / "model", Preprocessing.model_validate(preprocessing_for(input_name))
        )

        def streamd(directory: Path, metrics: bool) -> float:
            return asyncio.run(
                streamd_rate(
                    directory,
                    root / "model",
                    input_name,
                    output_name,
                    video,
                    frames,
                    args.frames_in_flight,
                    metrics,
                    args.inflight_batches,
                    args.streams,
                )
            )

        raws, raws2, streamds, naives, bare, shared = [], [], [], [], [], []
        for round_index in range(args.rounds):
            raws.append(
                max(raw_rate(model.session, input_name, output_name, size, 4.0) for size in (8, 16, 32))
            )
            raws2.append(
                max(raw_rate(model.session, input_name, output_name, size, 4.0, 2) for size in (8, 16))
            )
            naives.append(naive_loop(video, model.session, input_name, output_name, root / "naive.jsonl"))
            if args.metrics_overhead:
                bare.append(streamd(root / f"bare{round_index}", False))
            streamds.append(streamd(root / f"run{round_index}", True))
            shared.append(raw_with_decoder(video, model.session, input_name, output_name, streamds[-1]))
        model.close()
    raw, ours, naive = statistics.median(raws), statistics.median(streamds), statistics.median(naives)
    print(
        f"720p H.264, {frames} frames; MobileNetV2 224; "
        f"{args.streams} stream(s) at once; frames in flight {args.frames_in_flight or 'default'}; "
        f"batches in flight {args.inflight_batches or 'default'}; {args.rounds} rounds (medians)"
    )
    raw2 = statistics.median(raws2)
    print(f"raw session.run, best of batch 8/16/32  : {raw:7.1f} img/s")
    print(f"raw, two threads calling, batch 8/16    : {raw2:7.1f} img/s")
    print(f"streamd end to end (file → JSONL)        : {ours:7.1f} fps")
    print(f"naive loop (decode, preprocess, batch 1) : {naive:7.1f} fps")
    print(f"ratio streamd / raw best                 : {ours / raw:.2f}   (target >= 0.85)")
    print(f"ratio streamd / naive loop               : {ours / naive:.2f}   (target >= 1.8)")
    print(f"ratio streamd / raw with two callers     : {ours / raw2:.2f}")
    ceiling = statistics.median(shared)
    print(f"raw, two callers, beside a decoder       : {ceiling:7.1f} img/s (decoding at streamd's fps)")
    print(f"ratio streamd / that ceiling             : {ours / ceiling:.2f}")
    if bare:
        without = statistics.median(bare)
        print(f"streamd with metrics disabled            : {without:7.1f} fps")
        print(f"metrics overhead                         : {(without - ours) / without * 100:+.1f} % of fps")


if __name__ == "__main__":
    main()
