"""The database restarted under a running cluster: both nodes go not-ready and stop their streams (a
node that cannot renew must assume another owns them), then recover on their own when PostgreSQL is
back: every stream owned and running again, records continuing under a new epoch, none lost.

A server of its own (not the session's shared one): the test stops and restarts it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.factories.daemon import Daemon, register_colour_chain
from tests.factories.models import ModelFiles
from tests.factories.postgres import PostgresServer, postgres_server
from tests.factories.videos import encode_h264
from tests.test_cluster import _node, _owners, _records, _wait

pytestmark = pytest.mark.slow

TTL_S = 3.0


@pytest.fixture
def outage(tmp_path: Path, tf1_model: ModelFiles) -> Iterator[tuple[PostgresServer, Daemon, Daemon]]:
    media, results = tmp_path / "media", tmp_path / "results"
    results.mkdir()
    encode_h264(media / "loop.mp4", frames=30)
    with postgres_server() as server, server.database() as url:
        a = _node(tmp_path, "a", url, results, media, ttl_s=TTL_S)
        b = _node(tmp_path, "b", url, results, media, ttl_s=TTL_S)
        try:
            a.start()
            register_colour_chain(a, tf1_model)  # b fetches the network's files from PostgreSQL
            b.start()
            yield server, a, b
        finally:
            for daemon in (a, b):
                if daemon.process is not None:
                    daemon.stop()
            if server.process is not None and server.process.poll() is not None:
                server.launch()  # a test that failed during the outage: the database is dropped next


def _ready(daemon: Daemon) -> tuple[int, Any]:
    return daemon.get("/readyz")


def test_a_database_restart_makes_nodes_not_ready_then_they_recover_every_stream(
    outage: tuple[PostgresServer, Daemon, Daemon], tmp_path: Path
) -> None:
    server, a, b = outage
    results = tmp_path / "results"
    for index in range(4):
        response = requests.post(
            f"{(a, b)[index % 2].url}v0.7/streams",
            json={
                "name": f"s{index}",
                "source": {"uri": "loop.mp4", "options": {"loop": True, "realtime": True}},
                "chain": "whole",
                "fps": 5,
                "sinks": [{"type": "jsonl", "path": str(results / f"s{index + 1}.jsonl")}],
            },
            timeout=30,
        )
        assert response.status_code == 201, response.text
    ids = [1, 2, 3, 4]
    _wait(lambda: {k: len(v) for k, v in _owners(a).items()} == {"a": 2, "b": 2}, 10)
    _wait(lambda: all(len(_records(results, s)) >= 3 for s in ids), 20)
    assert _ready(a)[0] == _ready(b)[0] == 200

    server.halt()
    halted = time.monotonic()
    _wait(lambda: _ready(a)[0] == 503 and _ready(b)[0] == 503, TTL_S + 5)
    status, body = _ready(a)
    assert body["code"] in {"database_unwritable", "cluster_leases_lost"}, body
    # Fenced once their leases ran out by their own clocks: no record is written after that.
    _wait(lambda: time.monotonic() - halted > TTL_S + 1, TTL_S + 2)
    counts = {s: len(_records(results, s)) for s in ids}
    time.sleep(1.5)
    assert {s: len(_records(results, s)) for s in ids} == counts  # every stream stopped

    server.launch()
    recovered_s = _wait(lambda: _ready(a)[0] == 200 and _ready(b)[0] == 200, 30)
    print(f"ready again {recovered_s:.2f} s after PostgreSQL came back")
    _wait(lambda: sorted(s for v in _owners(a).values() for s in v) == ids, 3 * TTL_S)
    _wait(lambda: all(len(_records(results, s)) >= counts[s] + 3 for s in ids), 20)
    for stream in ids:
        records = _records(results, stream)
        epochs = [r["epoch"] for r in records]
        assert epochs == sorted(epochs) and epochs[-1] > epochs[0]  # taken again, under a new epoch
        status, body = a.get(f"/v0.7/streams/{stream}")
        assert status == 200 and body["state"] == "running", body
    listed = a.get("/v0.7/streams")[1]["results"]
    assert sorted(s["id"] for s in listed) == ids
    assert json.loads(json.dumps(b.get("/v0.7/cluster")[1]))["unassigned"] == []
