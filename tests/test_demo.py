"""The README's first command: `streamd demo` in a real daemon process, results checked frame by frame."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from streamd.demo import COLOURS
from tests.factories.daemon import Daemon


def wait_records(path: Path, count: int, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_bytes().splitlines()
            if len(lines) >= count:
                return [json.loads(line) for line in lines]
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} records in {path} after {timeout_s} s")


def test_demo_classifies_its_own_video_and_resumes_after_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    demo = Daemon(data, command="demo").start()
    try:
        records = wait_records(data / "results" / "demo.jsonl", 8)
        status, streams = demo.get("/v0.7/streams")
        assert status == 200 and [s["name"] for s in streams["results"]] == ["demo"]
        assert streams["results"][0]["state"] == "running"
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

    again = Daemon(data, command="demo").start()
    try:
        before = len((data / "results" / "demo.jsonl").read_bytes().splitlines())
        wait_records(data / "results" / "demo.jsonl", before + 3)
        status, streams = again.get("/v0.7/streams")
        assert [s["name"] for s in streams["results"]] == ["demo"]  # resumed, not created twice
    finally:
        assert again.stop() == 0
    assert "the demo stream exists already (resumed)" in again.log()
