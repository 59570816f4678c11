"""LISTEN/NOTIFY: a change made through one node reaches the stream's owner at once, not at its next
lease round; the snapshot of a stream run elsewhere comes from its owner. The lease here is long (ttl
30 s: rounds every 10 s), so only a notification explains an owner that pauses, resumes and stops
within a couple of seconds; the owner also counts what woke it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from tests.factories.daemon import Daemon, register_colour_chain
from tests.factories.models import ModelFiles
from tests.factories.postgres import PostgresServer
from tests.factories.videos import encode_h264
from tests.test_cluster import _node, _owners, _records, _wait, metric_value

pytestmark = pytest.mark.slow

TTL_S = 30.0
AT_ONCE_S = 2.5  # a quarter of a renewal period


@pytest.fixture
def pair(tmp_path: Path, postgres: PostgresServer, tf1_model: ModelFiles) -> Iterator[tuple[Daemon, Daemon]]:
    media, results = tmp_path / "media", tmp_path / "results"
    results.mkdir()
    encode_h264(media / "loop.mp4", frames=30)
    with postgres.database() as url:
        a = _node(tmp_path, "a", url, results, media, ttl_s=TTL_S)
        b = _node(tmp_path, "b", url, results, media, ttl_s=TTL_S)
        try:
            a.start()
            register_colour_chain(a, tf1_model)
            b.start()
            yield a, b
        finally:
            for daemon in (a, b):
                if daemon.process is not None:
                    daemon.stop()


def _state_on(daemon: Daemon, stream: int) -> str:
    return str(daemon.get(f"/v0.7/streams/{stream}")[1]["state"])


def test_pause_resume_and_delete_through_another_node_reach_the_owner_at_once(
    pair: tuple[Daemon, Daemon], tmp_path: Path
) -> None:
    a, b = pair
    results = tmp_path / "results"
    body = {
        "name": "s",
        "source": {"uri": "loop.mp4", "options": {"loop": True, "realtime": True}},
        "chain": "whole",
        "fps": 5,
        "sinks": [{"type": "jsonl", "path": str(results / "s1.jsonl")}],
    }
    response = requests.post(f"{a.url}v0.7/streams", json=body, timeout=30)
    assert response.status_code == 201, response.text
    stream = response.json()["id"]
    assert _owners(b) == {"a": [stream]}
    _wait(lambda: _state_on(a, stream) == "running" and len(_records(results, stream)) >= 3, 20)
    woken = metric_value(a, "streamd_cluster_events_total", event="notified")
    # Any node answers for the picture too: b fetches it from a.
    picture = requests.get(f"{b.url}v0.7/streams/{stream}/snapshot.jpg", timeout=10)
    assert picture.status_code == 200 and picture.headers["X-Streamd-Node"] == "a"
    assert picture.headers["Content-Type"] == "image/jpeg"
    decoded = cv2.imdecode(np.frombuffer(picture.content, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (96, 160, 3)
    # A forwarded request is answered, never forwarded again (no proxy loops while a stream moves).
    hop = requests.get(
        f"{b.url}v0.7/streams/{stream}/snapshot.jpg", headers={"X-Streamd-Proxied": "a"}, timeout=10
    )
    assert hop.status_code == 503 and hop.json()["code"] == "stream_moving", hop.text

    assert requests.post(f"{b.url}v0.7/streams/{stream}/pause", timeout=10).status_code == 200
    paused_s = _wait(lambda: _state_on(a, stream) == "paused", AT_ONCE_S)
    assert requests.post(f"{b.url}v0.7/streams/{stream}/resume", timeout=10).status_code == 200
    resumed_s = _wait(lambda: _state_on(a, stream) == "running", AT_ONCE_S)
    assert requests.delete(f"{b.url}v0.7/streams/{stream}", timeout=10).status_code == 204
    gone = f"stream {stream} stops here: deleted through another node"
    stopped_s = _wait(lambda: gone in a.log(), AT_ONCE_S)
    print(f"seen by the owner after: pause {paused_s:.2f}, resume {resumed_s:.2f}, delete {stopped_s:.2f} s")
    assert metric_value(a, "streamd_cluster_events_total", event="notified") >= woken + 3
    gone_picture = requests.get(f"{b.url}v0.7/streams/{stream}/snapshot.jpg", timeout=10)
    assert gone_picture.status_code == 404, gone_picture.text
    written = len(_records(results, stream))
    time.sleep(1.0)
    assert len(_records(results, stream)) == written  # the owner stopped writing
