"""The real daemon in a subprocess (`python -m streamd serve`, or `demo`), for end-to-end tests over real
HTTP.

Synchronous helpers: use them from sync tests or through asyncio.to_thread.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from deepomatic.api.client import Client

from tests.factories.models import ModelFiles
from tests.factories.videos import COLOUR_SPEC, colour_version


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Daemon:
    def __init__(
        self,
        data_dir: Path,
        *,
        env: dict[str, str] | None = None,
        config: Path | None = None,
        args: tuple[str, ...] = (),
        command: str = "serve",
    ) -> None:
        self._args = args
        self._command = command
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self._env = env or {}
        self._config = config
        self.log_path = data_dir.parent / f"daemon-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> Daemon:
        args = [
            sys.executable,
            "-m",
            "streamd",
            self._command,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        if self._config is not None:
            args += ["--config", str(self._config)]
        args += list(self._args)
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMD_")}
        env.update(self._env)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}:\n{self.log()}")
            try:
                if self.get("/readyz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"daemon not ready after {timeout_s} s:\n{self.log()}")

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(self.url.rstrip("/") + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as in a crash."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def register_colour_chain(daemon: Daemon, model: ModelFiles) -> None:
    """Network, spec, version and the chain "whole" through the daemon's HTTP API."""
    import requests

    http, api = requests.Session(), daemon.url + "v0.7"
    network = http.post(
        f"{api}/networks",
        data={
            "name": "c",
            "framework": "tensorflow-1.x",
            "preprocessing": json.dumps(
                {"inputs": [{"tensor_name": "input", "image": {"target_size": "8x8"}}]}
            ),
        },
        files={name: (name, content) for name, content in model.contents.items()},
        timeout=30,
    ).json()
    Client(api_key="unused", host=daemon.url).Task.retrieve(network["task_id"]).wait()
    spec = http.post(f"{api}/recognition/specs", json=COLOUR_SPEC, timeout=10).json()
    http.post(
        f"{api}/recognition/versions", json=colour_version(spec["id"], network["id"]), timeout=10
    ).raise_for_status()
    http.put(f"{api}/chains/whole", json={"calls": [{"service": "colours"}]}, timeout=10).raise_for_status()
