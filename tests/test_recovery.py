"""Start-up recovery: interrupted deployments resume, leftovers of interrupted uploads and deletes go."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from streamd.app import build_app
from streamd.networks.spec import NetworkSpec
from streamd.settings import Settings
from streamd.store.db import Database
from streamd.store.networks import NetworkRecord, NetworkRepository
from tests.conftest import ON_BOTH_DATABASES, metric_sample, preprocessing_for, wait_task
from tests.factories.models import ModelFiles


def stage(directory: Path, model: ModelFiles) -> list[str]:
    for name, content in model.contents.items():
        target = directory / ("variables/" + name if name.startswith("variables.") else name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return list(model.contents)


async def accepted_upload(
    settings: Settings, model: ModelFiles, name: str
) -> tuple[Database, NetworkRepository, NetworkRecord]:
    """A network created as an upload creates it (row, files, pending task), with no daemon running;
    the database stays open for the caller to close."""
    db = Database(settings.database_path, settings.database_url)
    await db.open()
    networks = NetworkRepository(db, settings.storage.data_dir)
    staged = await asyncio.to_thread(networks.new_staging_dir)
    files = await asyncio.to_thread(stage, staged, model)
    spec = NetworkSpec.model_validate(
        {"name": name, "framework": "tensorflow-1.x", "preprocessing": preprocessing_for(model)}
    )
    return db, networks, await networks.create(spec, files, staged)


@ON_BOTH_DATABASES
async def test_pending_deployment_resumes_and_leftovers_are_swept(
    aiohttp_client: Any, settings: Settings, tf1_model: ModelFiles
) -> None:
    # A daemon that stopped right after accepting an upload: row and files in place, task pending.
    db, networks, record = await accepted_upload(settings, tf1_model, "interrupted")
    assert not record.deployed
    leftover_upload = await asyncio.to_thread(networks.new_staging_dir)
    orphan = networks.network_dir(record.network_id + 100)
    await asyncio.to_thread(orphan.mkdir)
    await db.close()

    client = await aiohttp_client(build_app(settings))
    task = await wait_task(client, record.task_id)
    assert task["status"] == "success", task
    assert task["data"]["network_id"] == record.network_id

    def exists(path: Path) -> bool:
        return path.exists()

    assert not await asyncio.to_thread(exists, leftover_upload)
    assert not await asyncio.to_thread(exists, orphan)
    assert await asyncio.to_thread(exists, networks.network_dir(record.network_id) / "saved_model.pb")
    info = await (await client.get("/info")).json()
    assert info["counts"]["networks"] == 1 and info["counts"]["pending_tasks"] == 0


@ON_BOTH_DATABASES
async def test_a_deployment_task_whose_network_was_removed_does_not_stay_pending(
    aiohttp_client: Any, settings: Settings, tf1_model: ModelFiles
) -> None:
    # A daemon that stopped after removing a network whose deployment failed, before ending its task.
    db, networks, record = await accepted_upload(settings, tf1_model, "removed")
    await networks.delete(record.network_id)
    await db.close()

    client = await aiohttp_client(build_app(settings))
    task = await (await client.get(f"/v0.7/tasks/{record.task_id}")).json()
    assert task["status"] == "error", task
    assert task["error"] == "the network was removed while its deployment was ending (the daemon stopped)"
    info = await (await client.get("/info")).json()
    assert info["counts"]["networks"] == 0 and info["counts"]["pending_tasks"] == 0
    assert await metric_sample(client, "streamd_network_deployments_total", outcome="error") == 1.0
