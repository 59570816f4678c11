"""The README's first command: `streamd demo` in a real daemon process, results checked frame by frame."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from streamd.demo import COLOURS
from streamd.demo_video import placements
from streamd.models import emotions
from tests.factories.daemon import Daemon
from tests.factories.pretrained import Pretrained, box_of, iou

pytestmark = pytest.mark.slow


def wait_records(path: Path, count: int, timeout_s: float = 90.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_bytes().splitlines()
            if len(lines) >= count:
                return [json.loads(line) for line in lines]
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} records in {path} after {timeout_s} s")


def test_demo_finds_the_faces_of_its_video_and_resumes_after_a_restart(
    tmp_path: Path, pretrained: Pretrained
) -> None:
    data = tmp_path / "data"
    # The session's builds stand for the first run's (same package versions, so the demo reuses them).
    shutil.copytree(pretrained.built["faces"].directory.parents[2], data / "models")
    demo = Daemon(data, command="demo").start()
    try:
        records = wait_records(data / "results" / "demo.jsonl", 12)
        status, streams = demo.get("/v0.7/streams")
        assert status == 200 and [s["name"] for s in streams["results"]] == ["demo"]
        assert streams["results"][0]["state"] == "running"
    finally:
        assert demo.stop() == 0
    assert "streamd: building" not in demo.log()
    for record in records:
        # 30 fps capped at 10: every third frame; faces where the video's layout put them.
        assert record["frame_index"] % 3 == 0 and (record["width"], record["height"]) == (640, 480)
        expected = [place.map_box(pretrained.face) for place in placements(record["frame_index"])]
        found = record["predictions"][0]["classes"]
        assert len(found) == len(expected), record
        for face in found:
            assert face["cat"] == "face" and max(iou(box_of(face), box) for box in expected) >= 0.5
            [emotion] = face["emotions"]["classes"]
            assert emotion["cat"] in emotions.LABELS

    again = Daemon(data, command="demo").start()
    try:
        before = len((data / "results" / "demo.jsonl").read_bytes().splitlines())
        wait_records(data / "results" / "demo.jsonl", before + 3)
        status, streams = again.get("/v0.7/streams")
        assert [s["name"] for s in streams["results"]] == ["demo"]  # resumed, not created twice
    finally:
        assert again.stop() == 0
    assert "the demo stream exists already (resumed)" in again.log()


def test_synthetic_demo_classifies_its_colour_video(tmp_path: Path) -> None:
    data = tmp_path / "data"
    demo = Daemon(data, command="demo", args=("--synthetic",)).start()
    try:
        records = wait_records(data / "results" / "demo.jsonl", 8)
    finally:
        assert demo.stop() == 0
    names = list(COLOURS)
    for record in records:
        # 30 fps capped at 5: every sixth frame, 0.2 s apart; the background changes colour each second.
        assert record["frame_index"] % 6 == 0
        assert record["pts_s"] == round(record["frame_index"] / 30, 6)
        [prediction] = record["predictions"]
        [found] = prediction["classes"]
        assert found["cat"] == names[(record["frame_index"] // 30) % 3]
        assert found["prob"] > 0.9
        assert (record["width"], record["height"]) == (640, 360)
    assert [r["frame_index"] for r in records] == sorted(r["frame_index"] for r in records)
