"""Cameras per machine: adds real-time cameras to one daemon until one falls behind, then halves the gap
to the last step held (deleting cameras or adding them back) down to one camera, and prints the largest
number held beside the limit computed from measured decode and inference costs.

Each camera is a 720p30 H.264 clip (~1.6 Mbit/s, 2 s GOP, no B-frames; `--height 1080` for 1080p)
played at its frame rate in a loop (`options.realtime` + `loop`), capped at `--fps`, through the model
(default MobileNetV2 224, random weights) to a JSONL sink; `--rtsp` of them come through GStreamer's RTSP
server instead (the live path). A step holds when every camera emits at least 0.95 x its cap (less one
frame for the window's edges), nothing is dropped and the p95 capture->sink latency is within
`--latency-bound-s`. Capture->sink is the record's `latency_s` (decoded -> sink) plus how late the frame
was decoded against its stream time (the smallest `captured_ts - pts_s` of the camera in the window is
"on time"), so a decoder that falls behind during the window shows. New cameras of a step are spread
over one GOP, as real cameras are not in phase. The decode/inference split comes from the decoder
threads' own CPU time (/proc). Other processes' CPU is printed with the limit on the cores they left.
Stage p95s are the buckets that hold them in the stage histograms' growth during the window, over every
camera.

    .venv/bin/python -m bench.capacity [--fps 5] [--start 4] [--step 4] [--max-cameras 40] [--seconds 30]
    .venv/bin/python -m bench.capacity --fps 0.5 --start 32 --step 16 --max-cameras 96
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.capacity_media import (
    decode_cost_ms,
    encode_camera,
    inference_cost_ms,
    model_tensors,
    remux_repeated,
)
from bench.inference import export_mobilenet
from bench.pipeline import register_classify_chain
from streamd.app import build_app
from streamd.settings import load
from streamd.streams.budget import held_frames
from streamd.streams.counters import STAGES
from tests.factories.daemon import free_port
from tests.factories.rtsp import RtspServer

GOP_S = 2.0
CLIP_S = 10
NOT_DROPS = frozenset({"fps_cap", "not_decoded"})  # chosen skips, not losses


@dataclass(frozen=True, slots=True)
class Snapshot:
    wall_ts: float
    process_cpu_s: float
    decoder_cpu_s: float
    machine_busy_s: float
    rss_bytes: int
    dropped: int
    batched: tuple[float, float]  # (items, batches) of all networks so far
    stages: dict[str, dict[float, float]]  # stage -> upper bound -> frames so far, all streams


@dataclass(frozen=True, slots=True)
class Step:
    cameras: int
    held: bool
    min_fps_out: float
    dropped: int
    latency_s: tuple[float, float, float]
    late_p95_s: float  # of capture->sink: how late frames were decoded against their stream time
    cores: float
    decode_cores: float
    other_cores: float  # what other processes of the machine used meanwhile
    rss_per_camera_mb: float
    stages_p95_s: dict[str, tuple[float, float] | None]  # the histogram bucket holding each p95
    mean_batch: float


def proc_text(path: str) -> str:
    return Path(path).read_text()


def decoder_cpu_s() -> float:
    """CPU time of the decoder threads (`streamd-decode-*`), from /proc: they decode and nothing else."""
    import os
    import threading

    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for thread in threading.enumerate():
        if thread.name.startswith("streamd-decode-") and thread.native_id is not None:
            try:
                fields = proc_text(f"/proc/self/task/{thread.native_id}/stat").rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def machine_busy_s() -> float:
    import os

    fields = [int(v) for v in proc_text("/proc/stat").splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def machine_line() -> str:
    """The CPU and the kernels TensorFlow runs: figures from different machines only compare as ratios,
    and an AVX2 CPU without oneDNN runs MobileNetV2 1.5 x slower (streamd/__init__.py)."""
    import os

    from streamd.networks.savedmodel import kernels

    info = proc_text("/proc/cpuinfo")
    model = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?"
    )
    flags = next(
        (line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []
    )
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"machine: {os.cpu_count()} x {model} ({isa}), TensorFlow {kernels()} kernels"


def rss_bytes() -> int:
    for line in proc_text("/proc/self/status").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def snapshot(http: aiohttp.ClientSession) -> Snapshot:
    listed = (await (await http.get("/v0.7/streams")).json())["results"]
    dropped = sum(
        count
        for stream in listed
        for reason, count in stream["frames"]["dropped"].items()
        if reason not in NOT_DROPS
    )
    decoder = await asyncio.to_thread(decoder_cpu_s)
    busy = await asyncio.to_thread(machine_busy_s)
    rss = await asyncio.to_thread(rss_bytes)
    batched, stages = histogram_totals(await (await http.get("/metrics")).text())
    return Snapshot(time.time(), time.process_time(), decoder, busy, rss, dropped, batched, stages)


def histogram_totals(metrics: str) -> tuple[tuple[float, float], dict[str, dict[float, float]]]:
    """(items, batches) summed over networks, from the batch size histogram's sum and count; and the
    stage histograms' cumulative buckets summed over streams."""
    from prometheus_client.parser import text_string_to_metric_families

    totals = {"streamd_inference_batch_size_sum": 0.0, "streamd_inference_batch_size_count": 0.0}
    stages: dict[str, dict[float, float]] = {stage: {} for stage in STAGES}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
            elif sample.name == "streamd_stream_stage_seconds_bucket":
                buckets = stages.setdefault(sample.labels["stage"], {})
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    batched = totals["streamd_inference_batch_size_sum"], totals["streamd_inference_batch_size_count"]
    return batched, stages


def window_quantile(
    before: dict[float, float], after: dict[float, float], q: float
) -> tuple[float, float] | None:
    """The bucket (lower, upper bound) holding the q-quantile of what a cumulative histogram gained
    between two snapshots; None when nothing was observed. Only the bucket: interpolating in it, as
    Prometheus's histogram_quantile does, read 0.22 s for a stage whose records said 0.13 s."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    lower = 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= q * counts[-1]:
            return lower, bound
        lower = bound
    return lower, math.inf


def window_records(
    path: Path, start_ts: float, end_ts: float, play_s: float | None
) -> tuple[int, list[float], list[float]]:
    """Records captured in [start_ts, end_ts): their count, capture->sink latencies, and the part of
    those that is lateness of decoding. "On time" is the camera's smallest `captured_ts - pts_s` in
    the window, and for a looping file (`play_s`: the clip's length) in each play of the window: a
    looping file loses its reopening time at each replay (its pacing restarts with the play), which a
    camera never does and is not lateness."""
    import orjson

    records = [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []
    window = [r for r in records if start_ts <= r["captured_ts"] < end_ts]
    if not window:
        return 0, [], []

    def play(record: dict[str, Any]) -> int:
        return int(record["pts_s"] // play_s) if play_s else 0

    on_time: dict[int, float] = {}
    for r in window:
        on_time[play(r)] = min(on_time.get(play(r), math.inf), r["captured_ts"] - r["pts_s"])
    late = [r["captured_ts"] - r["pts_s"] - on_time[play(r)] for r in window]
    return len(window), [lateness + r["latency_s"] for lateness, r in zip(late, window, strict=True)], late


@dataclass(frozen=True, slots=True)
class Camera:
    stream_id: int
    results: str  # its JSONL file, under the daemon's results directory
    live: bool  # through the RTSP server


async def set_cameras(
    http: aiohttp.ClientSession,
    cameras: list[Camera],
    count: int,
    fps: float,
    video: str,
    rtsp: tuple[int, str],
) -> None:
    """Add cameras (or delete the newest) until `count` run; the first `rtsp[0]` of all come from the
    RTSP URL `rtsp[1]`. A camera added again gets a new stream and file (names stay unique)."""
    while len(cameras) > count:
        response = await http.delete(f"/v0.7/streams/{cameras.pop().stream_id}")
        assert response.status == 204, await response.text()
    first = len(cameras)
    for index in range(first, count):
        live = index < rtsp[0]
        name = f"cam-{index}-{time.monotonic_ns()}"
        body = {
            "name": name,
            "source": {
                "uri": rtsp[1] if live else video,
                "options": {} if live else {"loop": True, "realtime": True},
            },
            "chain": "classify",
            "fps": fps,
            "sinks": [{"type": "jsonl", "path": f"{name}.jsonl"}],
        }
        response = await http.post("/v0.7/streams", json=body)
        assert response.status == 201, await response.text()
        cameras.append(Camera((await response.json())["id"], f"{name}.jsonl", live))
        await asyncio.sleep(GOP_S / max(1, count - first))  # out of phase, as real cameras are


async def measure_step(
    http: aiohttp.ClientSession, results: Path, cameras: list[Camera], args: argparse.Namespace, base_rss: int
) -> Step:
    await asyncio.sleep(args.warmup_s)
    before = await snapshot(http)
    await asyncio.sleep(args.seconds)
    after = await snapshot(http)
    stages = {  # over the window and every camera (the status's p95 covers each stream's last frames)
        stage: window_quantile(before.stages.get(stage, {}), after.stages.get(stage, {}), 0.95)
        for stage in STAGES
    }
    await asyncio.sleep(min(args.latency_bound_s * 4, 5.0))  # let frames captured in the window arrive
    counts, latencies, lateness = [], [], []
    for running in cameras:
        count, camera, late = await asyncio.to_thread(
            window_records,
            results / running.results,
            before.wall_ts,
            after.wall_ts,
            None if running.live else CLIP_S,
        )
        counts.append(count)
        latencies.extend(camera)
        lateness.extend(late)
    seconds = after.wall_ts - before.wall_ts
    p = percentiles(latencies)
    dropped = after.dropped - before.dropped
    held = min(counts) >= 0.95 * args.fps * seconds - 1 and dropped == 0 and p[1] <= args.latency_bound_s
    cores = (after.process_cpu_s - before.process_cpu_s) / seconds
    return Step(
        len(cameras),
        held,
        min(counts) / seconds,
        dropped,
        (p[0], p[1], p[2]),
        percentiles(lateness)[1],
        cores,
        (after.decoder_cpu_s - before.decoder_cpu_s) / seconds,
        (after.machine_busy_s - before.machine_busy_s) / seconds - cores,
        (after.rss_bytes - base_rss) / len(cameras) / 1024**2,
        stages,
        (after.batched[0] - before.batched[0]) / max(1.0, after.batched[1] - before.batched[1]),
    )


def percentiles(values: list[float]) -> list[float]:
    """p50, p95, p99 (inf when there is nothing)."""
    ordered = sorted(values)
    return [
        ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.inf
        for q in (0.5, 0.95, 0.99)
    ]


def show(step: Step, cost_ms: float) -> None:
    p50, p95, p99 = step.latency_s
    per_camera = 1000 * step.cores / step.cameras
    decode = 1000 * step.decode_cores / step.cameras
    stages = " ".join(
        f"{stage} {'-' if bucket is None else f'{bucket[0]:g}-{bucket[1]:g}'}"
        for stage, bucket in step.stages_p95_s.items()
    )
    print(
        f"N={step.cameras:3} {'held' if step.held else 'FELL BEHIND'}: min fps out {step.min_fps_out:.2f}, "
        f"dropped {step.dropped}, capture->sink p50/p95/p99 {p50:.2f}/{p95:.2f}/{p99:.2f} s "
        f"(decoding late p95 {step.late_p95_s:.2f} s); "
        f"{step.cores:.2f} cores = {per_camera:.1f} core-ms/s per camera (decode {decode:.1f}, "
        f"inference and the rest {per_camera - decode:.1f}); RSS +{step.rss_per_camera_mb:.1f} MB per "
        f"camera; batches of {step.mean_batch:.1f} frames on average; stage p95 in the window (s) {stages}; "
        f"other processes {step.other_cores:.2f} cores, so the cores "
        f"left hold {left_limit(step, cost_ms):.1f} cameras at the costs measured alone",
        flush=True,
    )


async def ramp(
    cost_ms: float,
    http: aiohttp.ClientSession,
    results: Path,
    video: Path,
    rtsp: tuple[int, str],
    args: argparse.Namespace,
) -> list[Step]:
    """Steps of `--step` cameras until one falls behind, then halving the gap between the last held
    and the first that fell behind (cameras deleted or added back) down to one camera."""
    base_rss = await asyncio.to_thread(rss_bytes)
    steps: list[Step] = []
    cameras: list[Camera] = []

    async def measure(count: int) -> bool:
        await set_cameras(http, cameras, count, args.fps, str(video), rtsp)
        step = await measure_step(http, results, cameras, args, base_rss)
        show(step, cost_ms)
        steps.append(step)
        return step.held

    held, target = 0, args.start
    while target <= args.max_cameras and await measure(target):
        held, target = target, target + args.step
    if target > args.max_cameras or not args.refine:
        return steps
    fell = target
    while fell - held > 1:  # from 0 when the first step fell behind
        middle = (held + fell) // 2
        if await measure(middle):
            held = middle
        else:
            fell = middle
    return steps


def overrides(assignments: list[str]) -> dict[str, dict[str, Any]]:
    """`section.field=value` (a TOML value) as settings sections."""
    import tomllib

    sections: dict[str, dict[str, Any]] = {}
    for assignment in assignments:
        key, value = assignment.split("=", 1)
        section, field = key.strip().split(".", 1)
        sections.setdefault(section, {})[field] = tomllib.loads(f"v = {value}")["v"]
    return sections


async def start_daemon(root: Path, video: Path, assignments: list[str]) -> tuple[web.AppRunner, int]:
    port = free_port()
    sections = overrides(assignments)
    sections.setdefault("storage", {}).update(data_dir=root / "data", media_roots=[str(video.parent)])
    sections.setdefault("server", {})["port"] = port
    settings = load(None, {}, sections)
    runner = web.AppRunner(build_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def rtsp_launch(path: Path) -> str:
    return f"( filesrc location={path} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 )"


async def costs(root: Path, video: Path, args: argparse.Namespace) -> tuple[Path, tuple[str, str], float]:
    """The model (exported unless given), and the 2-core limit from decoding and inference measured
    alone: 2000 core-ms/s over (decode per camera-second + inference per frame x fps)."""
    if args.model is None:
        model_dir = root / "model"
        tensors = await asyncio.to_thread(export_mobilenet, model_dir)
    else:
        model_dir = Path(args.model)
        tensors = await asyncio.to_thread(model_tensors, model_dir)
    settings = [a.replace(" ", "").lower() for a in args.set]
    skip_loop_filter = "streams.skip_loop_filter=true" in settings
    decode_ms = await asyncio.to_thread(decode_cost_ms, video, args.fps, 3, skip_loop_filter)
    frozen = "inference.freeze_graphs=false" not in settings
    fused = frozen and "inference.fuse_graphs=false" not in settings
    measured = {"as loaded": await asyncio.to_thread(inference_cost_ms, model_dir, *tensors, args.size)}
    if frozen:
        measured["frozen"] = await asyncio.to_thread(
            inference_cost_ms, model_dir, *tensors, args.size, frozen=True, fused=False
        )
    if fused:
        measured["fused"] = await asyncio.to_thread(
            inference_cost_ms, model_dir, *tensors, args.size, frozen=True, fused=True
        )
    if frozen and "inference.lite_graphs=false" not in settings:
        measured["lite"] = await asyncio.to_thread(
            inference_cost_ms, model_dir, *tensors, args.size, frozen=True, fused=fused, lite=True
        )
    (used, infer_ms), *others = reversed(measured.items())  # the daemon runs the last one
    limit = 2000 / (decode_ms + infer_ms * args.fps)
    alternatives = "".join(f"; {ms:.2f} {how}" for how, ms in others)
    print(
        f"{args.height}p30 at {args.fps:g} fps, each measured alone: decoding {decode_ms:.1f} core-ms per "
        f"camera-second, inference {infer_ms:.2f} core-ms per frame (raw session.run, batch 8, two "
        f"threads, {used}{alternatives}): 2-core limit "
        f"2000 / ({decode_ms:.1f} + {infer_ms:.2f} x {args.fps:g}) = {limit:.1f}",
        flush=True,
    )
    return model_dir, tensors, limit


async def run(root: Path, args: argparse.Namespace) -> None:
    video = root / "media" / "cam.mp4"
    width = 1920 if args.height == 1080 else 1280
    await asyncio.to_thread(encode_camera, video, CLIP_S, 30, GOP_S, args.bitrate, width, args.height)
    model_dir, tensors, limit = await costs(root, video, args)
    print(machine_line(), flush=True)
    frame_mb = width * args.height * 1.5 / 1024**2
    held = held_frames(8, args.fps) + held_frames(24, args.fps)
    print(
        f"frames a camera may hold: {held} = {held * frame_mb:.0f} MB "
        f"(the 8 + 24 before: {32 * frame_mb:.0f} MB)"
    )
    server = None
    if args.rtsp:
        long_video = root / "rtsp" / "cam.mp4"
        steps_max = (args.max_cameras - args.start) / args.step + 1 + math.log2(max(2, args.step))
        repeats = math.ceil(steps_max * (args.seconds + args.warmup_s + 15) / CLIP_S) + 1
        await asyncio.to_thread(remux_repeated, video, long_video, repeats)
        server = RtspServer(free_port(), rtsp_launch(long_video))
        await asyncio.to_thread(server.start)
    runner, port = await start_daemon(root, video, args.set)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            await register_classify_chain(http, model_dir, *tensors, size=args.size)
            rtsp = (args.rtsp, server.url if server is not None else "")
            steps = await ramp(2000 / limit, http, root / "data" / "results", video, rtsp, args)
    finally:
        await runner.cleanup()
        if server is not None:
            await asyncio.to_thread(server.close)
    summarize(steps, limit)


def left_limit(step: Step, cost_ms: float) -> float:
    """The cameras that the cores other processes left during the step hold at `cost_ms` each."""
    return max(0.0, 2.0 - step.other_cores) * 1000 / cost_ms


def summarize(steps: list[Step], limit: float) -> None:
    held = [step for step in steps if step.held]
    if not held:
        print(f"no step held; computed limit {limit:.1f}")
        return
    best = max(held, key=lambda step: step.cameras)
    ceiling = (
        "" if len(held) < len(steps) else " (the ramp stopped at --max-cameras before any camera fell behind)"
    )
    print(
        f"largest N held: {best.cameras}{ceiling}; computed 2-core limit {limit:.1f}; held/limit "
        f"{best.cameras / limit:.2f}"
    )
    left = left_limit(best, 2000 / limit)
    print(
        f"on the cores other processes left during that step ({2 - best.other_cores:.2f}): limit "
        f"{left:.1f}, held/limit {best.cameras / left if left else math.inf:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fps", type=float, default=5.0, help="each camera's cap")
    parser.add_argument("--start", type=int, default=4, help="cameras of the first step")
    parser.add_argument("--step", type=int, default=4, help="cameras added per step")
    parser.add_argument("--max-cameras", type=int, default=40)
    parser.add_argument(
        "--no-refine",
        dest="refine",
        action="store_false",
        help="stop at the first step that falls behind (default: halve the gap to the last held)",
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window of each step")
    parser.add_argument("--warmup-s", type=float, default=8.0, help="after adding cameras, before measuring")
    parser.add_argument("--latency-bound-s", type=float, default=0.5, help="p95 capture->sink bound")
    parser.add_argument("--rtsp", type=int, default=2, help="cameras served over RTSP (the live path)")
    parser.add_argument("--height", type=int, choices=(720, 1080), default=720)
    parser.add_argument("--bitrate", type=int, default=1_600_000, help="bits/s of the camera clip")
    parser.add_argument("--model", help="a SavedModel directory (default: MobileNetV2, random weights)")
    parser.add_argument(
        "--set", action="append", default=[], help="a daemon setting, `section.field=value` (repeatable)"
    )
    parser.add_argument("--size", type=int, default=224, help="the model's square input size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "media").mkdir()
        asyncio.run(run(Path(tmp), args))


if __name__ == "__main__":
    main()
