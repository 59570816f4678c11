"""Benchmark: registering a ~20 MB SavedModel through the real daemon, side by side with a direct load.

Prints, from one run: the upload (POST until 201) time, the create-to-task-success time, and the time of
loading the same SavedModel directly with streamd.networks.savedmodel in this process (warm TF import),
so the API's overhead over the bare load is visible.

    .venv/bin/python -m bench.deploy [--megabytes 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import requests

from streamd.networks.savedmodel import load_savedmodel
from tests.factories.daemon import Daemon
from tests.factories.models import build_tf1_classifier


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--megabytes", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tf1_classifier(root / "model", extra_bytes=args.megabytes * 1024 * 1024)
        size_mb = sum(len(c) for c in model.contents.values()) / 1e6
        direct = []
        for _ in range(args.repeat):
            loaded = load_savedmodel(model.directory)
            direct.append(loaded.load_time_s)
            loaded.close()

        daemon = Daemon(root / "data").start()
        uploads, totals = [], []
        try:
            session = requests.Session()
            preprocessing = '{"inputs": [{"tensor_name": "input", "image": {"target_size": "8x8"}}]}'
            for index in range(args.repeat):
                started = time.monotonic()
                response = session.post(
                    daemon.url + "v0.7/networks",
                    data={
                        "name": f"bench-{index}",
                        "framework": "tensorflow-1.x",
                        "preprocessing": preprocessing,
                    },
                    files={name: (name, content) for name, content in model.contents.items()},
                    timeout=600,
                )
                response.raise_for_status()
                uploaded = time.monotonic()
                task_url = f"{daemon.url}v0.7/tasks/{response.json()['task_id']}"
                while (task := session.get(task_url, timeout=10).json())["status"] == "pending":
                    time.sleep(0.01)
                finished = time.monotonic()
                assert task["status"] == "success", task
                uploads.append(uploaded - started)
                totals.append(finished - started)
        finally:
            daemon.stop()

    print(f"SavedModel size                 : {size_mb:.1f} MB")
    print(f"direct load (warm, in-process)  : {statistics.median(direct):.3f} s (median of {args.repeat})")
    print(f"upload (POST until 201)         : {statistics.median(uploads):.3f} s")
    print(
        f"create-to-task-success          : {statistics.median(totals):.3f} s "
        f"(first, incl. daemon's cold TF import: {totals[0]:.3f} s)"
    )
    print(f"ratio create-to-success / direct: {statistics.median(totals) / statistics.median(direct):.1f}x")


if __name__ == "__main__":
    main()
