"""Fault campaign: what the outside QA campaign did to the daemon, repeated in one run, with its figures.

1. A real RTSP camera (GStreamer's server) killed and restarted N times: reconnects seen and the time
   from the camera's restart to the stream processing frames again.
2. A webhook receiver down for a while (its port closed) while a stream keeps producing: records
   lost, duplicated and out of order at the receiver, against the stream's own JSONL file.
3. `kill -9` of the daemon, K times, with a looping and a non-looping file stream running: records
   replayed per restart, frames lost, torn JSONL lines, SQLite's integrity check.
4. The daemon's threads and resident memory before and after cases 1 and 2 (one process throughout).

    .venv/bin/python -m bench.faults [--rtsp-kills 20] [--webhook-down-s 60] [--kills 5]
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import sqlite3
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from tests.factories.daemon import Daemon, free_port, register_colour_chain
from tests.factories.models import ModelFiles, build_tf1_classifier
from tests.factories.rtsp import RtspServer
from tests.factories.videos import encode_h264


class Receiver:
    """A webhook receiver on 127.0.0.1 that can go down (port closed) and come back on the same port."""

    def __init__(self, *, failing: bool = False) -> None:
        self.port = free_port()
        self.records: list[dict[str, Any]] = []
        self.failing = failing  # answer 500 instead of taking the records
        self._server: ThreadingHTTPServer | None = None

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if receiver.failing:
                    self.send_response(500)
                else:
                    receiver.records.extend(body if isinstance(body, list) else [body])
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, name="receiver", daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def create_stream(
    daemon: Daemon, name: str, source: dict[str, Any], sinks: list[dict[str, Any]], **more: Any
) -> int:
    response = requests.post(
        f"{daemon.url}v0.7/streams",
        json={"name": name, "source": source, "chain": "whole", "sinks": sinks, **more},
        timeout=30,
    )
    response.raise_for_status()
    return int(response.json()["id"])


def status(daemon: Daemon, stream_id: int) -> dict[str, Any]:
    return daemon.get(f"/v0.7/streams/{stream_id}")[1]


def process_figures(pid: int) -> tuple[int, float]:
    """(threads, resident MB) of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["Threads"]), int(fields["VmRSS"].split()[0]) / 1024


def kill_camera_once(daemon: Daemon, camera: RtspServer, stream_id: int) -> float:
    """Kill the camera while the stream runs, restart it; seconds until the stream processes again."""
    wait_for(
        "frames", lambda: (s := status(daemon, stream_id))["state"] == "running" and s["frames"]["processed"]
    )
    before = status(daemon, stream_id)
    camera.signal(signal.SIGKILL)
    wait_for("the stream to notice", lambda: status(daemon, stream_id)["reconnects"] > before["reconnects"])
    camera.start()
    restarted = time.monotonic()
    wait_for(
        "frames after the restart",
        lambda: (
            (s := status(daemon, stream_id))["state"] == "running"
            and s["frames"]["processed"] > before["frames"]["processed"] + 1
        ),
    )
    return time.monotonic() - restarted


def rtsp_case(daemon: Daemon, kills: int) -> dict[str, Any]:
    camera = RtspServer(free_port())
    camera.start()
    try:
        stream_id = create_stream(
            daemon,
            "camera",
            {"uri": camera.url, "options": {"timeout_s": 2.0}},
            [{"type": "jsonl", "path": "cam.jsonl"}],
        )
        back_s = [kill_camera_once(daemon, camera, stream_id) for _ in range(kills)]
        final = status(daemon, stream_id)
        requests.delete(f"{daemon.url}v0.7/streams/{stream_id}", timeout=30).raise_for_status()
    finally:
        camera.close()
    return {
        "kills": kills,
        "reconnects": final["reconnects"],
        "back_median_s": statistics.median(back_s),
        "back_max_s": max(back_s),
        "state_after": final["state"],
    }


def webhook_case(daemon: Daemon, root: Path, down_s: float) -> dict[str, Any]:
    receiver = Receiver()
    receiver.up()
    stream_id = create_stream(
        daemon,
        "hooked",
        {"uri": "loop.mp4", "options": {"loop": True, "realtime": True}},
        [
            {"type": "jsonl", "path": "hooked.jsonl"},
            {
                "type": "webhook",
                "url": f"http://127.0.0.1:{receiver.port}/hook",
                "batch_size": 10,
                "timeout_s": 2,
            },
        ],
        fps=10,
    )
    wait_for("first deliveries", lambda: len(receiver.records) > 20)
    receiver.down()
    time.sleep(down_s)
    receiver.up()
    requests.post(f"{daemon.url}v0.7/streams/{stream_id}/pause", timeout=30).raise_for_status()
    time.sleep(0.5)
    emitted = status(daemon, stream_id)["sinks"][0]["delivered"]
    wait_for("the spool to drain", lambda: status(daemon, stream_id)["sinks"][1]["delivered"] >= emitted, 120)
    final = status(daemon, stream_id)
    requests.delete(f"{daemon.url}v0.7/streams/{stream_id}", timeout=30).raise_for_status()
    receiver.down()
    truth = [
        json.loads(line)["frame_index"]
        for line in (root / "data" / "results" / "hooked.jsonl").read_bytes().splitlines()
    ]
    got = [record["frame_index"] for record in receiver.records]
    return {
        "down_s": down_s,
        "emitted": len(truth),
        "received": len(got),
        "lost": len(set(truth) - set(got)),
        "duplicated": len(got) - len(set(got)),
        "out_of_order": sum(1 for a, b in itertools.pairwise(got) if b <= a),
        "spooled": final["sinks"][1]["spooled"],
        "dropped": final["sinks"][1]["dropped"],
    }


def kill_case(root: Path, model: ModelFiles, kills: int) -> dict[str, Any]:
    daemon = Daemon(root / "data").start()
    register_colour_chain(daemon, model)
    clip = create_stream(
        daemon,
        "clip",
        {"uri": "clip.mp4", "options": {"realtime": True}},
        [{"type": "jsonl", "path": "clip.jsonl"}],
    )
    create_stream(
        daemon,
        "loop",
        {"uri": "loop.mp4", "options": {"loop": True, "realtime": True}},
        [{"type": "jsonl", "path": "loop.jsonl"}],
    )
    for _ in range(kills):
        target = status(daemon, clip)["frames"]["processed"] + 45
        wait_for("progress", lambda target=target: status(daemon, clip)["frames"]["processed"] >= target)
        daemon.kill()
        daemon.start()
    wait_for("the clip to finish", lambda: status(daemon, clip)["state"] == "finished", 120)
    assert daemon.stop() == 0
    out: dict[str, Any] = {"kills": kills}
    for name, frames in (("clip", 900), ("loop", None)):
        lines = (root / "data" / "results" / f"{name}.jsonl").read_bytes().splitlines()
        records, torn = [], 0
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                torn += 1
        indices = [record["frame_index"] for record in records]
        replayed = sum(count - 1 for count in Counter(indices).values())
        expected = set(range(frames if frames else max(indices) + 1))
        out[name] = {
            "records": len(records),
            "runs": len({record["run"] for record in records}),
            "replayed_per_restart": replayed / kills,
            "lost": len(expected - set(indices)),
            "torn_lines": torn,
        }
    with sqlite3.connect(root / "data" / "streamd.sqlite3") as conn:
        out["sqlite_integrity"] = conn.execute("PRAGMA integrity_check").fetchone()[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rtsp-kills", type=int, default=20)
    parser.add_argument("--webhook-down-s", type=float, default=60.0)
    parser.add_argument("--kills", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tf1_classifier(root / "model")
        encode_h264(root / "data" / "media" / "loop.mp4", frames=60)
        encode_h264(root / "data" / "media" / "clip.mp4", frames=900)
        daemon = Daemon(root / "data", env={"STREAMD_STREAMS__RECONNECT_MAX_S": "1"}).start()
        try:
            register_colour_chain(daemon, model)
            assert daemon.process is not None
            before = process_figures(daemon.process.pid)
            rtsp = rtsp_case(daemon, args.rtsp_kills)
            print(
                f"RTSP camera killed {rtsp['kills']}x: {rtsp['reconnects']} reconnects, back to running "
                f"{rtsp['back_median_s']:.2f} s median, {rtsp['back_max_s']:.2f} s max after the camera "
                "restarted",
                flush=True,
            )
            hook = webhook_case(daemon, root, args.webhook_down_s)
            print(
                f"webhook receiver down {hook['down_s']:.0f} s: {hook['emitted']} records emitted, "
                f"{hook['received']} received, {hook['lost']} lost, {hook['duplicated']} duplicated, "
                f"{hook['out_of_order']} out of order ({hook['spooled']} went through the spool, dropped "
                f"{hook['dropped'] or 0})",
                flush=True,
            )
            after = process_figures(daemon.process.pid)
            print(
                f"daemon through both: threads {before[0]} -> {after[0]}, resident {before[1]:.0f} -> "
                f"{after[1]:.0f} MB",
                flush=True,
            )
        finally:
            daemon.stop()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tf1_classifier(root / "model")
        encode_h264(root / "data" / "media" / "loop.mp4", frames=60)
        encode_h264(root / "data" / "media" / "clip.mp4", frames=900)
        result = kill_case(root, model, args.kills)
        for name in ("clip", "loop"):
            figures = result[name]
            print(
                f"kill -9 x{result['kills']}, {'non-looping' if name == 'clip' else 'looping'} file: "
                f"{figures['records']} records over {figures['runs']} runs, "
                f"{figures['replayed_per_restart']:.1f} replayed per restart, {figures['lost']} lost, "
                f"{figures['torn_lines']} torn lines",
                flush=True,
            )
        print(f"SQLite integrity_check after the kills: {result['sqlite_integrity']}", flush=True)
    durability_cases(args.kills)


def durability_cases(kills: int) -> None:
    from bench import durability
    from tests.factories.disk import small_disk

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tf1_classifier(root / "model")
        hook = durability.failing_receiver_kill_case(root / "hook", model, min(kills, 3))
        print(
            f"kill -9 x{hook['kills']} while the webhook receiver fails (live camera): {hook['written']} "
            f"records written to JSONL a second before a kill, {hook['lost']} of them lost",
            flush=True,
        )
        ts = durability.backwards_case(root / "ts", model)
        print(
            f"MPEG-TS segments joined (timestamps back to 0), fps 5: {ts['emitted']} of {ts['expected']} "
            f"records, {ts['lost']} lost, {ts['discontinuities']} discontinuity counted",
            flush=True,
        )
        if not durability.can_mount():
            print("full disk: not measured (a tmpfs needs root)")
            return
        media = root / "media"
        encode_h264(media / "loop.mp4", frames=60)
        with small_disk(root / "disk", 8 * 1024**2) as disk:
            full = durability.full_disk_case(disk, media, model, 5.0)
        for name, outcome in (("JSONL", full["jsonl"]), ("webhook", full["webhook"])):
            taken = outcome.get("written", outcome.get("received"))
            print(
                f"disk full {full['full_s']:.0f} s, {name} sink: {full['emitted']} emitted, {taken} kept, "
                f"dropped {outcome['dropped']} (counted), {outcome['lost']} lost uncounted; stream degraded "
                f"while full: {full['degraded_while_full']}",
                flush=True,
            )


if __name__ == "__main__":
    main()
