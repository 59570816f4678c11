"""Spool throughput: the disk spool (one node) against cluster mode's spool in PostgreSQL.

One sink's spool driven as `SpoolingSink` drives it, from the event loop: appends of `--batch` records
of `--record-bytes` each (the spool writer appends whatever spilled since its last write: 1 when the
loop is quick, more under load), then delivery's peek + consume of batches of `--batch` until empty.
Printed: records per second and milliseconds per call, for the disk spool (`<tmp>/spool`, unbuffered
appends, no fsync), PostgreSQL as the tests run it (fsync and synchronous_commit off) and PostgreSQL
durable (both on: each commit waits for the WAL flush). PostgreSQL is a throwaway local server
(tests/factories/postgres.py) on the same machine: a remote server adds a network round trip per call.

    .venv/bin/python -m bench.spool [--records 2000] [--record-bytes 500] [--batch 1]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import orjson

from streamd.sinks.db_spool import DatabaseSpool
from streamd.sinks.spool import DiskSpool, RecordSpool
from streamd.store.db import Database
from streamd.store.spools import SpoolKey
from streamd.store.streams import StreamRepository
from tests.factories import postgres
from tests.factories.postgres import postgres_server


def _records(count: int, size: int) -> list[bytes]:
    head = orjson.dumps({"stream_id": 1, "frame_index": 0, "pad": ""})
    return [
        orjson.dumps({"stream_id": 1, "frame_index": n, "pad": "x" * max(0, size - len(head))})
        for n in range(count)
    ]


async def _drive(spool: RecordSpool, records: list[bytes], batch: int) -> tuple[float, float]:
    """Seconds to append every record, then to peek + consume them all, `batch` at a time."""
    await spool.open()
    started = time.perf_counter()
    for start in range(0, len(records), batch):
        assert await spool.append(records[start : start + batch]) == len(records[start : start + batch])
    appended = time.perf_counter()
    while spool.pending:
        taken = await spool.peek(batch)
        await spool.consume(len(taken))
    drained = time.perf_counter()
    await spool.close()
    return appended - started, drained - appended


def _report(name: str, count: int, batch: int, seconds: tuple[float, float]) -> None:
    calls = -(-count // batch)
    append_s, drain_s = seconds
    print(
        f"{name:<24} append {count / append_s:8.0f} records/s ({1000 * append_s / calls:6.2f} ms/call)"
        f"   peek+consume {count / drain_s:8.0f} records/s ({1000 * drain_s / calls:6.2f} ms/batch)"
    )


async def _database(url: str, records: list[bytes], batch: int) -> tuple[float, float]:
    registry = Database(Path("unused"), url)
    await registry.open()
    stream_id = await StreamRepository(registry).create("bench", {"name": "bench"}, lease=("bench", 600))
    spool_db = Database(Path("unused"), url, thread_name="streamd-spool", migrate=False)
    await spool_db.open()
    try:
        spool = DatabaseSpool(spool_db, SpoolKey(stream_id, 0), epoch=1, max_bytes=1 << 40)
        return await _drive(spool, records, batch)
    finally:
        await spool_db.close()
        await registry.close()


async def run(count: int, size: int, batch: int) -> None:
    records = _records(count, size)
    print(f"{count} records of {len(records[0])}-{len(records[-1])} bytes, {batch} per call")
    with tempfile.TemporaryDirectory(prefix="streamd-spool-bench-") as tmp:
        _report("disk (no fsync)", count, batch, await _drive(DiskSpool(Path(tmp), 1 << 40), records, batch))
    with postgres_server() as server, server.database() as url:
        _report("postgresql (fsync off)", count, batch, await _database(url, records, batch))
    # The test server's fsync=off is on its command line, which ALTER SYSTEM cannot override: start one
    # without it for the durable figure.
    fast, postgres._FAST = postgres._FAST, ("max_connections=60",)
    try:
        with postgres_server() as server, server.database() as url:
            _report("postgresql (durable)", count, batch, await _database(url, records, batch))
    finally:
        postgres._FAST = fast


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=2000, help="records to spool (default 2000)")
    parser.add_argument("--record-bytes", type=int, default=500, help="size of a record (default 500)")
    parser.add_argument("--batch", type=int, default=1, help="records per append and per peek (default 1)")
    args = parser.parse_args()
    asyncio.run(run(args.records, args.record_bytes, args.batch))


if __name__ == "__main__":
    main()
