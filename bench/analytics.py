"""Per-frame cost of the stream analytics at 720p: the motion gate on a 1280x720 Y plane (still and
moving), ByteTrack tracking and zone/line counting with 0, 5 and 20 moving detections, side by side.
Single thread, synthetic frames (a textured background with noise, moving rectangles).

    .venv/bin/python -m bench.analytics [--frames 300]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from streamd.analytics.motion import MotionConfig, MotionGate, y_plane
from streamd.analytics.tracking import TrackConfig, Tracker
from streamd.analytics.zones import (
    LineConfig,
    LineCounter,
    SceneConfig,
    TrackedDetection,
    ZoneConfig,
    ZoneCounter,
)
from streamd.video.frames import I420Frame

WIDTH, HEIGHT = 1280, 720


def timed(step: Callable[[int], object], frames: int) -> tuple[float, float]:
    """Median and 95th percentile µs of `step(index)` over `frames` calls (after 10 warm-up calls)."""
    for index in range(10):
        step(index)
    costs = []
    for index in range(10, 10 + frames):
        start = time.perf_counter()
        step(index)
        costs.append((time.perf_counter() - start) * 1e6)
    return float(np.median(costs)), float(np.percentile(costs, 95))


def i420_frames(count: int, moving: bool) -> list[I420Frame]:
    rng = np.random.default_rng(0)
    background = np.kron(
        rng.integers(40, 200, (HEIGHT // 40, WIDTH // 40), dtype=np.uint8), np.ones((40, 40), np.uint8)
    )
    frames = []
    for index in range(count):
        luma = np.clip(background + rng.normal(0, 2, background.shape), 0, 255).astype(np.uint8)
        if moving:
            x = (index * 12) % (WIDTH - 120)
            luma[300:500, x : x + 120] = 250
        planes = np.empty((HEIGHT * 3 // 2, WIDTH), np.uint8)
        planes[:HEIGHT], planes[HEIGHT:] = luma, 128
        frames.append(I420Frame(planes, WIDTH, HEIGHT))
    return frames


def detections(count: int, index: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """`count` 60x120 boxes on a grid, each moving 4 px a frame to the right."""
    slots = np.arange(count)
    x = 40 + (slots % 5) * 240 + 4 * (index % 40)
    y = 40 + (slots // 5) * 160
    boxes = np.stack([x, y, x + 60, y + 120], axis=1).astype(np.float32)
    classes = ["person" if slot % 2 else "car" for slot in slots]
    return boxes, np.full(count, 0.9, np.float32), classes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    rows: list[tuple[str, float, float]] = []
    for moving in (False, True):
        frames = i420_frames(64, moving)
        gate = MotionGate(MotionConfig(), WIDTH, HEIGHT)
        label = f"motion gate 720p ({'moving' if moving else 'still'})"
        rows.append(
            (label, *timed(lambda i, f=frames, g=gate: g.update(y_plane(f[i % len(f)])), args.frames))
        )
    scene = SceneConfig(
        zones=[ZoneConfig(name="left", points=[(0, 0), (0.5, 0), (0.5, 1), (0, 1)], normalized=True)],
        lines=[LineConfig(name="middle", points=((0.5, 0), (0.5, 1)), normalized=True)],
    )
    for count in (0, 5, 20):
        tracker = Tracker(TrackConfig())
        rows.append(
            (
                f"tracking, {count} detections",
                *timed(lambda i, n=count, t=tracker: t.update(*detections(n, i), pts_s=i / 30), args.frames),
            )
        )
        zones, lines = ZoneCounter(scene, WIDTH, HEIGHT), LineCounter(scene, WIDTH, HEIGHT)

        def count_scene(i: int, n: int = count, z: ZoneCounter = zones, c: LineCounter = lines) -> None:
            boxes, _, classes = detections(n, i)
            tracked = [
                TrackedDetection(k, name, tuple(box))
                for k, (box, name) in enumerate(zip(boxes, classes, strict=True))
            ]
            z.update(tracked)
            c.update(tracked, i / 30)

        rows.append((f"zones + lines, {count} detections", *timed(count_scene, args.frames)))
    print(f"{'per frame':40} {'median µs':>10} {'p95 µs':>10}")
    for label, median, p95 in rows:
        print(f"{label:40} {median:10.0f} {p95:10.0f}")


if __name__ == "__main__":
    main()
