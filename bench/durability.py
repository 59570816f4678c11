"""The durability cases of `bench.faults`: kill -9 while a receiver fails, a full disk under both sinks,
timestamps that go backwards. Each returns the records lost (emitted but neither delivered nor counted
as dropped) beside what was counted."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import requests

from bench.faults import Receiver, create_stream, status, wait_for
from tests.factories.daemon import Daemon, free_port, register_colour_chain
from tests.factories.disk import SmallDisk
from tests.factories.models import ModelFiles
from tests.factories.rtsp import RtspServer
from tests.factories.videos import encode_joined_ts


def failing_receiver_kill_case(root: Path, model: ModelFiles, kills: int) -> dict[str, Any]:
    """A live camera, a receiver answering 500, kill -9 mid-backoff, then the receiver back: records
    the JSONL sink had written a second before each kill that never reached the receiver."""
    (root / "data").mkdir(parents=True)
    receiver = Receiver(failing=True)
    receiver.up()
    camera = RtspServer(free_port())
    camera.start()
    daemon = Daemon(root / "data").start()
    settled: set[tuple[int, int]] = set()
    try:
        register_colour_chain(daemon, model)
        hook = {"type": "webhook", "url": f"http://127.0.0.1:{receiver.port}/hook"}
        sinks = [{"type": "jsonl", "path": "gate.jsonl"}, hook]
        stream_id = create_stream(daemon, "gate", {"uri": camera.url}, sinks, fps=10)
        for _ in range(kills):
            wait_for("records spooling", lambda: status(daemon, stream_id)["sinks"][1]["spooled"] >= 20)
            time.sleep(2.5)
            killed_at = time.time()
            daemon.kill()
            for line in (root / "data" / "results" / "gate.jsonl").read_bytes().splitlines():
                record = json.loads(line)
                if record["captured_ts"] < killed_at - 1.0:
                    settled.add((record["run"], record["frame_index"]))
            daemon.start()
        receiver.failing = False
        wait_for(
            "the spool to drain",
            lambda: settled <= {(r["run"], r["frame_index"]) for r in receiver.records},
            60,
        )
    except RuntimeError:
        pass  # timed out: what is missing is counted below
    finally:
        daemon.stop()
        camera.close()
        receiver.down()
    got = {(r["run"], r["frame_index"]) for r in receiver.records}
    return {"kills": kills, "written": len(settled), "lost": len(settled - got)}


def full_disk_case(disk: SmallDisk, media: Path, model: ModelFiles, full_s: float) -> dict[str, Any]:
    """Both sinks of one stream on a disk that fills for `full_s` and frees again, the receiver down
    meanwhile: what each sink delivered, dropped (counted) and lost (neither)."""
    receiver = Receiver(failing=True)
    receiver.up()
    daemon = Daemon(
        disk.path / "data",
        env={"STREAMD_STORAGE__MEDIA_ROOTS": str(media), "STREAMD_STREAMS__WEBHOOK_QUEUE_RECORDS": "20"},
    ).start()
    try:
        register_colour_chain(daemon, model)
        sinks = [
            {"type": "jsonl", "path": "cam.jsonl"},
            {"type": "webhook", "url": f"http://127.0.0.1:{receiver.port}/hook"},
        ]
        source = {"uri": "loop.mp4", "options": {"loop": True, "realtime": True}}
        stream_id = create_stream(daemon, "cam", source, sinks, fps=10)
        wait_for("records", lambda: status(daemon, stream_id)["sinks"][1]["spooled"] >= 20)
        disk.fill()
        time.sleep(full_s)
        degraded = status(daemon, stream_id)["degraded"]
        disk.free()
        receiver.failing = False
        time.sleep(2)
        requests.post(f"{daemon.url}v0.7/streams/{stream_id}/pause", timeout=30).raise_for_status()
        time.sleep(1.0)  # the frames in the chain when it paused are still emitted

        last: list[int] = []

        def settled() -> dict[str, Any] | None:
            """Every record delivered or counted, and nothing new emitted for a second."""
            sinks = status(daemon, stream_id)["sinks"]
            done = all(s["delivered"] + sum(s["dropped"].values()) == s["emitted"] for s in sinks)
            quiet = last[-1:] == [sinks[0]["emitted"]]
            last.append(sinks[0]["emitted"])
            time.sleep(1.0)
            return sinks if done and quiet else None

        jsonl, hook = wait_for("both sinks to settle", settled, 60)
        lines = (disk.path / "data" / "results" / "cam.jsonl").read_bytes().splitlines()
        received = len(receiver.records)
    finally:
        daemon.stop()
        receiver.down()
    return {
        "full_s": full_s,
        "degraded_while_full": degraded,
        "emitted": jsonl["emitted"],
        "jsonl": {
            "written": len(lines),
            "dropped": jsonl["dropped"],
            "lost": jsonl["emitted"] - len(lines) - sum(jsonl["dropped"].values()),
        },
        "webhook": {
            "received": received,
            "dropped": hook["dropped"],
            "lost": hook["emitted"] - received - sum(hook["dropped"].values()),
        },
    }


def backwards_case(root: Path, model: ModelFiles) -> dict[str, Any]:
    """Two MPEG-TS segments joined (timestamps restart at 0), capped at 5 fps."""
    encode_joined_ts(root / "data" / "media" / "joined.ts", (30, 45))
    daemon = Daemon(root / "data").start()
    try:
        register_colour_chain(daemon, model)
        stream_id = create_stream(
            daemon, "ts", {"uri": "joined.ts"}, [{"type": "jsonl", "path": "ts.jsonl"}], fps=5
        )
        final = wait_for(
            "the file to end", lambda: (s := status(daemon, stream_id))["state"] == "finished" and s
        )
    finally:
        daemon.stop()
    kept = [
        json.loads(line)["frame_index"]
        for line in (root / "data" / "results" / "ts.jsonl").read_bytes().splitlines()
    ]
    expected = list(range(0, 75, 6))
    return {
        "expected": len(expected),
        "emitted": len(kept),
        "lost": len(set(expected) - set(kept)),
        "discontinuities": final["discontinuities"],
    }


def can_mount() -> bool:
    return os.geteuid() == 0
