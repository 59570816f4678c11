"""Network files in PostgreSQL (cluster mode, streamd/store/blobs.py) on a throwaway server (Debian's
package, as tests/factories/postgres.py starts it): a network of `--mb` MB of incompressible weights
(plus a small graph file) is registered through NetworkRepository.create on node "a" (hash + store
the blobs + link), then fetched by node "b", which has no copy (stream, verify, rename into place).

Printed per run: seconds and MB/s for the store and the fetch, and the peak resident memory each added
over the process's size before it (Linux: VmHWM, reset through /proc/self/clear_refs), to show that
neither holds a whole file in memory.

    .venv/bin/python -m bench.blobs [--mb 300] [--runs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

from streamd.networks.spec import NetworkSpec
from streamd.store.blobs import BlobStore
from streamd.store.db import Database
from streamd.store.networks import NetworkRepository
from tests.factories.postgres import postgres_server

SPEC = NetworkSpec.model_validate(
    {
        "name": "bench",
        "framework": "tensorflow-1.x",
        "preprocessing": {"inputs": [{"tensor_name": "input:0", "image": {"target_size": "8x8"}}]},
    }
)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> int:
    """Reset the peak RSS to the current RSS; returns the current RSS in kB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmRSS")


def _write_network(directory: Path, size_mb: int) -> list[str]:
    (directory / "variables").mkdir(parents=True)
    (directory / "saved_model.pb").write_bytes(os.urandom(64 * 1024))
    (directory / "variables" / "variables.index").write_bytes(os.urandom(4 * 1024))
    with (directory / "variables" / "variables.data-00000-of-00001").open("wb") as out:
        for _ in range(size_mb):
            out.write(os.urandom(1 << 20))
    return ["saved_model.pb", "variables.index", "variables.data-00000-of-00001"]


async def _run(url: str, root: Path, size_mb: int) -> tuple[float, int, float, int]:
    db = Database(root / "unused", url)
    await db.open()
    stores = [BlobStore(url), BlobStore(url)]
    for store in stores:
        await store.open()
    try:
        a = NetworkRepository(db, root / "a", blobs=stores[0], node_id="a")
        b = NetworkRepository(db, root / "b", blobs=stores[1], node_id="b")
        staged = await asyncio.to_thread(a.new_staging_dir)
        files = await asyncio.to_thread(_write_network, staged, size_mb)
        base = await asyncio.to_thread(_reset_peak)
        started = time.monotonic()
        record = await a.create(SPEC, files, staged)
        store_s = time.monotonic() - started
        store_peak = _status_kb("VmHWM") - base
        base = await asyncio.to_thread(_reset_peak)
        started = time.monotonic()
        await b.local_dir(record.network_id)
        fetch_s = time.monotonic() - started
        fetch_peak = _status_kb("VmHWM") - base
        await a.delete(record.network_id)
        return store_s, store_peak, fetch_s, fetch_peak
    finally:
        for store in stores:
            await store.close()
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=300, help="size of the weights file, MB (MiB)")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    total_mb = args.mb + 68 / 1024
    with postgres_server() as server:
        for run in range(args.runs):
            root = Path(tempfile.mkdtemp(prefix="streamd-bench-blobs-"))
            try:
                with server.database() as url:
                    store_s, store_kb, fetch_s, fetch_kb = asyncio.run(_run(url, root, args.mb))
            finally:
                shutil.rmtree(root, ignore_errors=True)
            phases = [
                f"{name} {seconds:.2f} s ({total_mb / seconds:.0f} MiB/s, peak RSS +{kb / 1024:.0f} MiB)"
                for name, seconds, kb in (("store", store_s, store_kb), ("fetch", fetch_s, fetch_kb))
            ]
            print(f"run {run + 1}: {total_mb:.0f} MiB network: {', '.join(phases)}", flush=True)


if __name__ == "__main__":
    main()
