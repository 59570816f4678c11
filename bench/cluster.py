"""Cluster mode on a throwaway PostgreSQL (Debian's package, as tests/factories/postgres.py starts it):

1. Failover: N daemon processes with a short lease, S looping realtime file streams; `kill -9` of the
   node owning the most streams, K times (a new node is started after each kill so capacity stays):
   seconds from the kill until every one of its streams is owned by another node, polled through
   GET /v0.7/cluster every 50 ms. Printed: median and max.
2. Database load of those daemons: committed transactions per second (pg_stat_database xact_commit
   deltas over a window, nothing else polling), with the N nodes idle and then running the S streams.
   It counts every transaction (lease rounds, checkpoints, status), not lease rounds alone.
3. Simulation without daemons: `--sim-nodes` node ids x `--sim-streams-per-node` streams, each node's
   round (streamd/cluster/leases.py `tick`, with a status document per held stream) run every ttl/3 on
   its own thread and connection in this process: time until every stream is owned, streams per node,
   statements and transactions per second, p50/p99 round latency.

    .venv/bin/python -m bench.cluster [--nodes 3] [--streams 6] [--ttl 3] [--kills 10] [--window-s 15]
        [--sim-nodes 50] [--sim-streams-per-node 20] [--sim-ttl 6] [--sim-s 30] [--skip-daemons]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg
import requests
import sqlalchemy as sa

from streamd.cluster.leases import NodeInfo, release, tick
from streamd.store.db import Database
from streamd.store.streams import StreamRepository
from tests.factories.daemon import Daemon, register_colour_chain
from tests.factories.models import build_tf1_classifier
from tests.factories.postgres import PostgresServer, postgres_server
from tests.factories.videos import encode_h264


def wait_for(predicate: Callable[[], Any], timeout_s: float) -> float:
    """Seconds until `predicate()` holds, polled every 50 ms."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"not within {timeout_s} s")
        time.sleep(0.05)
    return time.monotonic() - start


def xact_commits(server: PostgresServer, database: str) -> int:
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (database,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def commits_per_s(server: PostgresServer, database: str, window_s: float) -> float:
    # A busy backend flushes its counters at a commit at least 1 s after its last flush, an idle one
    # only after 10 s idle (PostgreSQL 15): exact for the connections that commit every round, up to a
    # second of lag at each end of the window, which a long window keeps small.
    time.sleep(1.5)
    before = xact_commits(server, database)
    time.sleep(window_s)
    return (xact_commits(server, database) - before) / window_s


class ClusterRig:
    """N daemons on one database; the network files copied to each node (not shared by streamd yet)."""

    def __init__(self, root: Path, url: str, ttl_s: float, max_streams: int) -> None:
        self.root, self.url, self.ttl_s, self.max_streams = root, url, ttl_s, max_streams
        self.media, self.results = root / "media", root / "results"
        self.results.mkdir(parents=True)
        encode_h264(self.media / "loop.mp4", frames=30)
        self.nodes: dict[str, Daemon] = {}
        self._names = 0

    def add(self) -> Daemon:
        self._names += 1
        name = f"n{self._names}"
        env = {
            "STREAMD_STORAGE__DATABASE_URL": self.url,
            "STREAMD_STORAGE__RESULT_ROOTS": str(self.results),
            "STREAMD_STORAGE__MEDIA_ROOTS": str(self.media),
            "STREAMD_CLUSTER__NODE_ID": name,
            "STREAMD_CLUSTER__LEASE_TTL_S": str(self.ttl_s),
            "STREAMD_CLUSTER__MAX_STREAMS": str(self.max_streams),
        }
        daemon = Daemon(self.root / name, env=env)  # network files: fetched from PostgreSQL on first use
        self.nodes[name] = daemon.start()
        return daemon

    def owners(self) -> dict[str, set[int]]:
        daemon = next(iter(self.nodes.values()))
        status, body = daemon.get("/v0.7/cluster")
        assert status == 200, body
        return {node["node"]: set(node["streams"]) for node in body["nodes"] if node["streams"]}

    def create_streams(self, count: int) -> None:
        names = list(self.nodes)
        for index in range(count):
            daemon = self.nodes[names[index % len(names)]]
            response = requests.post(
                f"{daemon.url}v0.7/streams",
                json={
                    "name": f"s{index}",
                    "source": {"uri": "loop.mp4", "options": {"loop": True, "realtime": True}},
                    "chain": "whole",
                    "fps": 2,
                    "sinks": [{"type": "jsonl", "path": str(self.results / f"s{index}.jsonl")}],
                },
                timeout=30,
            )
            response.raise_for_status()

    def stop(self) -> None:
        for daemon in self.nodes.values():
            if daemon.process is not None:
                daemon.stop()


def _moved(rig: ClusterRig, victim: str, lost: set[int]) -> bool:
    return lost <= {s for node, ids in rig.owners().items() if node != victim for s in ids}


def failover_and_load(server: PostgresServer, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="streamd-bench-cluster-") as tmp, server.database() as url:
        database = url.rsplit("/", 1)[1]
        rig = ClusterRig(Path(tmp), url, args.ttl, args.streams)
        try:
            register_colour_chain(rig.add(), build_tf1_classifier(Path(tmp) / "model"))
            for _ in range(args.nodes - 1):
                rig.add()
            idle = commits_per_s(server, database, args.window_s)
            print(
                f"database load, {args.nodes} nodes idle (ttl {args.ttl} s): {idle:.1f} transactions/s, "
                f"{idle / args.nodes:.2f} per node",
                flush=True,
            )
            rig.create_streams(args.streams)
            wait_for(lambda: sum(len(s) for s in rig.owners().values()) == args.streams, 30)
            busy = commits_per_s(server, database, args.window_s)
            print(
                f"database load, {args.nodes} nodes, {args.streams} streams: {busy:.1f} transactions/s, "
                f"{(busy - idle) / args.streams:.2f} more per stream",
                flush=True,
            )
            times = []
            for kill in range(args.kills):
                owners = {name: ids for name, ids in rig.owners().items() if name in rig.nodes}
                victim = max(owners, key=lambda name: len(owners[name]))
                lost = owners[victim]
                rig.nodes.pop(victim).kill()
                seconds = wait_for(functools.partial(_moved, rig, victim, lost), args.ttl * 5)
                times.append(seconds)
                print(
                    f"kill {kill + 1}: {victim}'s {len(lost)} stream(s) owned elsewhere after {seconds:.2f} s"
                )
                rig.add()
            if times:
                print(
                    f"failover after kill -9 (ttl {args.ttl} s, bound ttl + ttl/3 = {args.ttl * 4 / 3:.1f} s)"
                    ":"
                    f" median {statistics.median(times):.2f} s, max {max(times):.2f} s over "
                    f"{len(times)} kills",
                    flush=True,
                )
        finally:
            rig.stop()


class SimulatedNode(threading.Thread):
    """One node's lease rounds, every ttl/3, on its own connection."""

    def __init__(self, engine: sa.Engine, info: NodeInfo, until: float, status: str) -> None:
        super().__init__(name=f"sim-{info.node_id}", daemon=True)
        self.engine, self.info, self.until, self.status = engine, info, until, status
        self.held: dict[int, int] = {}
        self.latencies: list[float] = []
        self.errors = 0
        self.handed_over = 0

    def run(self) -> None:
        period = self.info.ttl_s / 3
        next_round = time.monotonic() + random.uniform(0, period)  # nodes do not start in step
        while next_round < self.until:
            time.sleep(max(0.0, next_round - time.monotonic()))
            started = time.monotonic()
            statuses = dict.fromkeys(self.held, self.status)
            try:
                with self.engine.begin() as conn:
                    result = tick(conn, self.info, self.held, statuses, reclaim_own=False)
            except sa.exc.DBAPIError:
                self.errors += 1
            else:
                self.held = {lease.stream_id: lease.epoch for lease in (*result.renewed, *result.claimed)}
                if result.surplus:  # hand the newest over at once, as a node does once they stopped
                    surplus = dict(sorted(self.held.items())[-result.surplus :])
                    with self.engine.begin() as conn:
                        release(conn, self.info.node_id, surplus, leave=False)
                    self.handed_over += len(surplus)
                    self.held = {sid: epoch for sid, epoch in self.held.items() if sid not in surplus}
            self.latencies.append(time.monotonic() - started)
            next_round = started + period


async def _seed(url: str, root: Path, count: int) -> None:
    """The schema (streamd's migrations) and `count` running streams, unowned."""
    database = Database(root, url)
    await database.open()
    store = StreamRepository(database)
    for index in range(count):
        await store.create(f"s{index}", {"name": f"s{index}"})
    await database.close()


def simulate(server: PostgresServer, args: argparse.Namespace, *, join_first: bool) -> None:
    """join_first False: the streams exist when every node starts at once (a cold start of the whole
    cluster); True: every node has joined before the streams are created (cameras added later)."""
    total = args.sim_nodes * args.sim_streams_per_node
    with tempfile.TemporaryDirectory(prefix="streamd-bench-sim-") as tmp, server.database() as url:
        database = url.rsplit("/", 1)[1]
        asyncio.run(_seed(url, Path(tmp), 0 if join_first else total))
        engine = sa.create_engine(
            url.replace("postgresql://", "postgresql+psycopg://"), pool_size=args.sim_nodes
        )
        statements = [0]
        lock = threading.Lock()

        @sa.event.listens_for(engine, "before_cursor_execute")
        def _count(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
            with lock:
                statements[0] += len(parameters) if many else 1

        # A stream status as the API shows it, about the size an owner publishes.
        status = orjson.dumps(
            {"state": "running", "fps": 5.0, "frames": 123456, "last_error": None, "counters": {"dropped": 0}}
        ).decode()
        start = time.monotonic()
        until = start + args.sim_s
        info = [
            NodeInfo(f"sim-{i:03d}", f"http://10.0.0.{i}:8080/", args.sim_max_streams, args.sim_ttl)
            for i in range(args.sim_nodes)
        ]
        sims = [SimulatedNode(engine, node, until, status) for node in info]
        for sim in sims:
            sim.start()
        if join_first:
            wait_for(lambda: all(sim.latencies for sim in sims), args.sim_ttl)
            asyncio.run(_seed(url, Path(tmp), total))
            start = time.monotonic()
        converged: float | None = None
        balanced: float | None = None
        while time.monotonic() < until:
            counts = [len(sim.held) for sim in sims]
            if balanced is None and sum(counts) >= total and max(counts) - min(counts) <= 1:
                balanced = time.monotonic() - start
            if converged is None and sum(len(sim.held) for sim in sims) >= total:
                converged = time.monotonic() - start
                # Steady state from here: count statements and commits over the rest of the run.
                steady_statements, steady_commits, steady_at = (
                    statements[0],
                    xact_commits(server, database),
                    time.monotonic(),
                )
            time.sleep(0.05)
        for sim in sims:
            sim.join()
        per_node = sorted(len(sim.held) for sim in sims)
        latencies = sorted(latency for sim in sims for latency in sim.latencies)
        print(
            f"simulation, {'nodes joined before the streams were created' if join_first else 'cold start'}:"
            f" {args.sim_nodes} nodes x {args.sim_streams_per_node} streams, ttl {args.sim_ttl} s "
            f"(rounds every {args.sim_ttl / 3:.2f} s), max_streams {args.sim_max_streams}, {args.sim_s} s",
            flush=True,
        )
        if converged is None:
            print(f"  not converged: {sum(per_node)} of {total} streams owned")
            return
        elapsed = time.monotonic() - steady_at
        time.sleep(1.5)  # counters flushed
        commits = (xact_commits(server, database) - steady_commits) / elapsed
        rate = (statements[0] - steady_statements) / elapsed
        p50 = latencies[len(latencies) // 2]
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(
            f"  every stream owned after {converged:.2f} s; "
            f"streams per node min {per_node[0]}, median {per_node[len(per_node) // 2]}, max {per_node[-1]}"
        )
        print(
            f"  balanced (every node within one stream of the others) after "
            f"{'never' if balanced is None else f'{balanced:.2f} s'}; "
            f"{sum(sim.handed_over for sim in sims)} streams handed over by rebalancing"
        )
        print(
            f"  steady state: {rate:.0f} statements/s ({rate / args.sim_nodes:.1f} per node, "
            f"{rate / total:.2f} per stream), {commits:.0f} transactions/s"
        )
        print(
            f"  round latency p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms over {len(latencies)} rounds; "
            f"failed rounds {sum(sim.errors for sim in sims)}",
            flush=True,
        )
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=3, help="daemon processes (default 3)")
    parser.add_argument("--streams", type=int, default=6, help="looping file streams at 2 fps (default 6)")
    parser.add_argument(
        "--ttl", type=float, default=3.0, help="lease ttl of the daemons, seconds (default 3)"
    )
    parser.add_argument("--kills", type=int, default=10, help="kill -9 rounds (default 10)")
    parser.add_argument(
        "--window-s", type=float, default=15.0, help="database load window, seconds (default 15)"
    )
    parser.add_argument("--skip-daemons", action="store_true", help="only the simulation")
    parser.add_argument(
        "--sim-nodes", type=int, default=50, help="simulated nodes (default 50; 0: no simulation)"
    )
    parser.add_argument(
        "--sim-streams-per-node", type=int, default=20, help="streams per simulated node (20)"
    )
    parser.add_argument(
        "--sim-max-streams", type=int, default=50, help="max_streams of each simulated node (50)"
    )
    parser.add_argument("--sim-ttl", type=float, default=6.0, help="simulated lease ttl, seconds (default 6)")
    parser.add_argument("--sim-s", type=float, default=30.0, help="simulation length, seconds (default 30)")
    args = parser.parse_args()
    with postgres_server() as server:
        if not args.skip_daemons:
            failover_and_load(server, args)
        if args.sim_nodes > 0:
            simulate(server, args, join_first=False)
            simulate(server, args, join_first=True)


if __name__ == "__main__":
    main()
