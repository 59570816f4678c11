"""Soak: several looping 720p streams through MobileNetV2 for a while, the daemon's memory sampled.

Prints, every `--interval` seconds, the process's resident memory, frames processed so far and the
streams' windowed fps, then the growth of resident memory after the first sample (the warm-up:
TensorFlow's arenas and oneDNN's kernels for each batch size). Per-frame bookkeeping must be
bounded, so the growth should stay near zero however long it runs.

    .venv/bin/python -m bench.soak [--streams 4] [--minutes 3] [--interval 20]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.inference import export_mobilenet
from bench.pipeline import encode_720p, register_classify_chain
from streamd.app import build_app
from streamd.settings import load
from tests.factories.daemon import free_port


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def soak(root: Path, streams: int, minutes: float, interval_s: float) -> list[float]:
    video = root / "media" / "720p.mp4"
    video.parent.mkdir(parents=True)
    await asyncio.to_thread(encode_720p, video, 10)
    input_name, output_name = await asyncio.to_thread(export_mobilenet, root / "model")
    port = free_port()
    settings = load(
        None,
        {},
        {
            "storage": {"data_dir": root / "data", "media_roots": [str(video.parent)]},
            "server": {"port": port},
        },
    )
    runner = web.AppRunner(build_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    samples = []
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            await register_classify_chain(http, root / "model", input_name, output_name)
            for index in range(streams):
                body = {
                    "name": f"soak-{index}",
                    "source": {"uri": str(video), "options": {"loop": True}},
                    "chain": "classify",
                    "sinks": [{"type": "jsonl", "path": f"soak-{index}.jsonl", "rotate_bytes": 10_000_000}],
                }
                response = await http.post("/v0.7/streams", json=body)
                assert response.status == 201, await response.text()
            started = time.monotonic()
            while time.monotonic() - started < minutes * 60:
                await asyncio.sleep(interval_s)
                listed = (await (await http.get("/v0.7/streams")).json())["results"]
                processed = sum(stream["frames"]["processed"] for stream in listed)
                dropped = sum(sum(stream["frames"]["dropped"].values()) for stream in listed)
                fps = sum(stream["fps_out"] for stream in listed)
                samples.append(resident_mb())
                print(
                    f"{time.monotonic() - started:6.0f} s  resident {samples[-1]:7.1f} MB  "
                    f"processed {processed:7d}  dropped {dropped}  fps {fps:6.1f}",
                    flush=True,
                )
    finally:
        await runner.cleanup()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--interval", type=float, default=20.0, help="seconds between samples")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        samples = asyncio.run(soak(Path(tmp), args.streams, args.minutes, args.interval))
    if len(samples) >= 2:
        growth = (samples[-1] - samples[0]) / samples[0] * 100
        print(
            f"{args.streams} looping 720p streams, {args.minutes:g} min: resident memory {samples[0]:.1f} MB "
            f"after the first sample, {samples[-1]:.1f} MB at the end ({growth:+.1f} %)"
        )


if __name__ == "__main__":
    main()
