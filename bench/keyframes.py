"""Keyframe-only decoding: CPU per camera for real-time 720p30 cameras (2 s GOP) capped at 0.5 fps,
with `streams.keyframe_only_decoding` on and off, side by side in one run.

Each camera is a looping 720p H.264 file played at its frame rate, through MobileNetV2 224 and a JSONL
sink. Prints, per mode, the process CPU (cores) per camera over the measured window, fps out and drops.

    .venv/bin/python -m bench.keyframes [--cameras 8] [--seconds 20] [--fps 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.inference import export_mobilenet
from bench.pipeline import encode_720p, register_classify_chain
from streamd.app import build_app
from streamd.settings import load
from tests.factories.daemon import free_port


async def measure(
    root: Path, model: tuple[str, str], cameras: int, seconds: float, fps: float, keyframe_only: bool
) -> dict[str, Any]:
    video = root / "media" / "cam.mp4"
    port = free_port()
    settings = load(
        None,
        {},
        {
            "storage": {"data_dir": root / f"data-{keyframe_only}", "media_roots": [str(video.parent)]},
            "server": {"port": port},
            "streams": {"keyframe_only_decoding": keyframe_only},
        },
    )
    runner = web.AppRunner(build_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            await register_classify_chain(http, root / "model", *model)
            for index in range(cameras):
                body = {
                    "name": f"cam-{index}",
                    "source": {"uri": str(video), "options": {"loop": True, "realtime": True}},
                    "chain": "classify",
                    "fps": fps,
                    "sinks": [{"type": "jsonl", "path": f"cam-{index}.jsonl"}],
                }
                response = await http.post("/v0.7/streams", json=body)
                assert response.status == 201, await response.text()
            await asyncio.sleep(6)  # past the GOP measurement and the first batches
            cpu, wall = time.process_time(), time.monotonic()
            await asyncio.sleep(seconds)
            cores = (time.process_time() - cpu) / (time.monotonic() - wall)
            listed = (await (await http.get("/v0.7/streams")).json())["results"]
    finally:
        await runner.cleanup()
    dropped: dict[str, int] = {}
    for stream in listed:
        for reason, count in stream["frames"]["dropped"].items():
            dropped[reason] = dropped.get(reason, 0) + count
    return {
        "cores_per_camera": cores / cameras,
        "fps_out": sum(stream["fps_out"] for stream in listed) / cameras,
        "decoded": sum(stream["frames"]["decoded"] for stream in listed),
        "dropped": dropped,
    }


async def main_async(cameras: int, seconds: float, fps: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "media").mkdir()
        await asyncio.to_thread(encode_720p, root / "media" / "cam.mp4", 10, 30, 60)
        model = await asyncio.to_thread(export_mobilenet, root / "model")
        results = {}
        for keyframe_only in (False, True):
            results[keyframe_only] = await measure(root, model, cameras, seconds, fps, keyframe_only)
            outcome = results[keyframe_only]
            mode = str(keyframe_only).lower()
            per_camera_ms = outcome["cores_per_camera"] * 1000
            print(
                f"keyframe_only_decoding={mode:5}: {per_camera_ms:6.1f} core-ms/s per camera, "
                f"fps out {outcome['fps_out']:.2f} per camera, dropped {outcome['dropped']}",
                flush=True,
            )
        ratio = results[False]["cores_per_camera"] / results[True]["cores_per_camera"]
        print(
            f"{cameras} cameras, 720p30, 2 s GOP, fps {fps:g}: full decoding costs {ratio:.1f}x "
            "keyframe-only decoding"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--fps", type=float, default=0.5)
    args = parser.parse_args()
    asyncio.run(main_async(args.cameras, args.seconds, args.fps))


if __name__ == "__main__":
    main()
