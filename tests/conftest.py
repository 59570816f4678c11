"""Shared fixtures: the real app through aiohttp_client, real SavedModels, blocking-call detection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import orjson
import pytest
import pytest_timeout
from aiohttp import FormData
from aiohttp.test_utils import TestClient
from blockbuster import BlockBuster, blockbuster_ctx

from streamd.api.context import SERVICES
from streamd.app import build_app
from streamd.settings import Settings, load
from tests.factories.models import (
    ModelFiles,
    build_keras_blocks,
    build_tf1_classifier,
    build_tf1_detector,
    build_tf2_classifier,
)
from tests.factories.mosquitto import Mosquitto
from tests.factories.postgres import PostgresServer, postgres_server
from tests.factories.pretrained import Pretrained, build_pretrained
from tests.factories.videos import encode_h264


def _dump_stacks_and_tasks(terminal: Any) -> None:
    """pytest-timeout's dump of every thread's stack, then every asyncio task's: a test that hangs on
    the loop shows where each task waits, not only the loop's select()."""
    _dump_thread_stacks(terminal)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    for task in asyncio.all_tasks(loop):
        terminal.write(f"\n--- {task!r}\n")
        for frame in task.get_stack():
            terminal.write(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}\n")


_dump_thread_stacks = pytest_timeout.dump_stacks
pytest_timeout.dump_stacks = _dump_stacks_and_tasks


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Any blocking call made on the event loop thread fails the test."""
    with blockbuster_ctx() as bb:
        for function in bb.functions.values():
            # pytest-timeout prints stacks from the loop thread when a test hangs: let it.
            function.can_block_in("pytest_timeout.py", "timeout_sigalrm")
            function.can_block_in("conftest.py", "_dump_stacks_and_tasks")
        yield bb


async def metric_sample(client: TestClient, name: str, **labels: str) -> float | None:
    """One sample of the app's metrics registry (collected in a thread: it reads /proc)."""
    registry = client.app[SERVICES].metrics.registry
    return await asyncio.to_thread(registry.get_sample_value, name, labels)


def make_settings(data_dir: Path, **sections: dict[str, Any]) -> Settings:
    storage = {"data_dir": data_dir, **sections.get("storage", {})}
    if storage.get("database_url") and "result_roots" not in storage:
        # Cluster mode writes JSONL files only under configured (shared) roots: the results directory the
        # tests read stands for one.
        storage["result_roots"] = [data_dir / "results"]
    return load(None, {}, {**sections, "storage": storage})


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the session (started only by tests that use it)."""
    with postgres_server() as server:
        yield server


@pytest.fixture
def own_postgres() -> Iterator[tuple[PostgresServer, str]]:
    """A server and database of the test's own, for tests that halt it (halting the session's server
    would cut every other test's connections)."""
    with postgres_server() as server, server.database() as url:
        yield server, url
        if server.process is None or server.process.poll() is not None:
            server.launch()  # the test failed while it was halted: the database is dropped next


# What a module that also runs on PostgreSQL marks itself with: every test runs on both databases.
ON_BOTH_DATABASES = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None: the embedded SQLite file. Parametrized (ON_BOTH_DATABASES) with "postgresql": a fresh
    database on the session's PostgreSQL server, dropped after the test."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield None
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    with server.database() as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return make_settings(tmp_path / "data", storage={"database_url": database_url})


@pytest.fixture
async def client(aiohttp_client: Callable[..., Any], settings: Settings) -> TestClient:
    return await aiohttp_client(build_app(settings))


@pytest.fixture(scope="session")
def tf1_model(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    return build_tf1_classifier(tmp_path_factory.mktemp("models") / "tf1")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto broker on 127.0.0.1, killed at the end of the test."""
    server = Mosquitto(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def wide_detector(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    """An 80x40 detector (tests/factories/models.py: fixed boxes, scores from the colours)."""
    return build_tf1_detector(tmp_path_factory.mktemp("models") / "wide-detector", height=40, width=80)


@pytest.fixture(scope="session")
def keras_blocks(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    """MobileNetV2's building blocks in Keras 3 (tests/factories/models.py), for fusing and lite graphs."""
    return build_keras_blocks(tmp_path_factory.mktemp("models") / "keras-blocks")


@pytest.fixture(scope="session")
def tf2_model(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    return build_tf2_classifier(tmp_path_factory.mktemp("models") / "tf2")


@pytest.fixture(scope="session")
def pbtxt_model(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    return build_tf1_classifier(tmp_path_factory.mktemp("models") / "pbtxt", as_text=True)


def preprocessing_for(model: ModelFiles, **image: Any) -> dict[str, Any]:
    return {
        "inputs": [{"tensor_name": model.input_tensor, "image": {"target_size": "8x8", **image}}],
        "batched_output": True,
    }


def network_form(
    model: ModelFiles | None,
    *,
    preprocessing: dict[str, Any] | None = None,
    fields: dict[str, str] | None = None,
    files: dict[str, bytes] | None = None,
    name: str = "tiny classifier",
) -> FormData:
    """The curl form of a create request: JSON text fields plus one file part per file."""
    form = FormData()
    form.add_field("name", name)
    form.add_field("framework", "tensorflow-1.x")
    if preprocessing is None and model is not None:
        preprocessing = preprocessing_for(model)
    if preprocessing is not None:
        form.add_field("preprocessing", orjson.dumps(preprocessing).decode())
    for key, value in (fields or {}).items():
        form.add_field(key, value)
    uploads = dict(model.contents) if model else {}
    uploads.update(files or {})
    for file_name, content in uploads.items():
        form.add_field(file_name, content, filename=file_name, content_type="application/octet-stream")
    return form


async def wait_until(predicate: Callable[[], Any], timeout_s: float = 60.0, interval_s: float = 0.05) -> Any:
    """Poll an async predicate until it returns something truthy; fail loudly on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s (last value {value!r})")
        await asyncio.sleep(interval_s)


async def wait_task(client: TestClient, task_id: int, timeout_s: float = 90.0) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        response = await client.get(f"/v0.7/tasks/{task_id}")
        assert response.status == 200
        task = await response.json()
        return task if task["status"] != "pending" else None

    return await wait_until(done, timeout_s)


async def create_network(client: TestClient, form: FormData) -> dict[str, Any]:
    response = await client.post("/v0.7/networks", data=form)
    body = await response.json()
    assert response.status == 201, body
    return body


@pytest.fixture
def media_settings(tmp_path: Path, database_url: str | None) -> Settings:
    media = tmp_path / "media"
    encode_h264(media / "colours.mp4", frames=30, fps=30)
    encode_h264(media / "long.mp4", frames=90, fps=30)
    (media / "notes.txt").write_text("not a video")
    (media / "still.png").write_bytes(cv2.imencode(".png", np.zeros((96, 160, 3), np.uint8))[1].tobytes())
    return make_settings(
        tmp_path / "data", storage={"media_roots": [str(media)], "database_url": database_url}
    )


@pytest.fixture
async def app_client(aiohttp_client: Any, media_settings: Settings) -> TestClient:
    return await aiohttp_client(build_app(media_settings))


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Pretrained:
    """The real face and emotion models, built once per session (about 20 s), with their references."""
    pytest.importorskip("mtcnn", reason="the models extra is not installed (bash scripts/setup installs it)")
    return build_pretrained(tmp_path_factory.mktemp("pretrained"))
