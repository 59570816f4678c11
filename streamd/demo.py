"""`streamd demo`: the daemon on embedded defaults with something to watch.

It starts the daemon, then through its own HTTP API registers a demo network (a small colour classifier
built here with fixed weights), a recognition spec and version, a chain, and a stream over a short H.264
video it encodes itself (looping, in real time), with a JSONL sink; prints where the results go and keeps
serving until interrupted. Model building and encoding run before the loop starts or in threads.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
from aiohttp import web

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


async def register_classifier(
    http: aiohttp.ClientSession,
    *,
    network_name: str,
    files: dict[str, bytes],
    preprocessing: dict[str, Any],
    spec_name: str,
    labels: list[str],
    output_tensor: str,
    threshold: float,
) -> dict[str, Any]:
    """Over the HTTP API, as a user would: a network (waiting for its deployment), a recognition spec
    with `labels` and a classification version of it. Returns the network."""
    form = aiohttp.FormData()
    form.add_field("name", network_name)
    form.add_field("framework", "tensorflow-1.x")
    form.add_field("preprocessing", orjson.dumps(preprocessing).decode())
    for name, content in files.items():
        form.add_field(name, content, filename=name)
    network = await _ok(await http.post("/v0.7/networks", data=form))
    while (task := await _ok(await http.get(f"/v0.7/tasks/{network['task_id']}")))["status"] == "pending":
        await asyncio.sleep(0.1)
    if task["status"] != "success":
        raise RuntimeError(f"network {network_name!r} failed to deploy: {task['error']}")
    thresholds = [threshold] * len(labels)
    spec = await _ok(
        await http.post(
            "/v0.7/recognition/specs",
            json={
                "name": spec_name,
                "outputs": [{"labels": {"labels": [{"id": i, "name": n} for i, n in enumerate(labels)]}}],
            },
        )
    )
    await _ok(
        await http.post(
            "/v0.7/recognition/versions",
            json={
                "spec_id": spec["id"],
                "network_id": network["id"],
                "post_processings": [
                    {"classification": {"output_tensor": output_tensor, "thresholds": thresholds}}
                ],
            },
        )
    )
    return network


async def register(
    base: str, files: dict[str, bytes], video: Path, headers: dict[str, str]
) -> dict[str, Any]:
    async with aiohttp.ClientSession(base, headers=headers) as http:
        await register_classifier(
            http,
            network_name="streamd demo colours",
            files=files,
            preprocessing={
                "inputs": [
                    {
                        "tensor_name": "input",
                        "image": {"target_size": "32x32", "color_channels": "BGR", "pixel_scaling": 1.0},
                    }
                ]
            },
            spec_name="demo-colours",
            labels=list(COLOURS),
            output_tensor="prob",
            threshold=0.5,
        )
        await _ok(await http.put("/v0.7/chains/demo", json={"calls": [{"service": "demo-colours"}]}))
        return await _ok(
            await http.post(
                "/v0.7/streams",
                json={
                    "name": "demo",
                    "source": {"uri": str(video), "options": {"loop": True, "realtime": True}},
                    "chain": "demo",
                    "fps": 5,
                    "sinks": [{"type": "jsonl", "path": "demo.jsonl"}],
                },
            )
        )


async def _ok(response: aiohttp.ClientResponse) -> dict[str, Any]:
    body = await response.json()
    if response.status >= 400:
        raise RuntimeError(f"{response.method} {response.url.path}: {response.status} {body.get('error')}")
    return body


def run_demo(settings: Settings) -> int:
    """Serve, set the demo up, print where to look, serve until SIGINT/SIGTERM."""
    from streamd.app import build_app

    files, video = prepare(settings)

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
                existing = await _ok(await http.get("/v0.7/streams"))
            if any(stream["name"] == "demo" for stream in existing["results"]):
                logger.info("the demo stream exists already (resumed)")
            else:
                stream = await register(base, files, video, headers)
                logger.info("demo stream %d started on %s", stream["id"], video)
            results = settings.storage.data_dir / "results" / "demo.jsonl"
            print(
                f"\nstreamd demo is running on {base}/\n"
                f"  results (one JSON line per processed frame): {results}\n"
                f"  stream status: curl {base}/v0.7/streams/\n"
                f"  stop: Ctrl-C\n",
                flush=True,
            )
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
    return 0
