"""Chains stored by name, on both databases: storing an existing name replaces its definition and says
so. On PostgreSQL the insert-or-nothing reported rowcount -1, so a replacement passed for a creation
and the old definition stayed (PUT /v0.7/chains/{name} answered 201 and changed nothing)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from streamd.store.chains import ChainRepository
from streamd.store.db import Database
from tests.conftest import ON_BOTH_DATABASES

pytestmark = ON_BOTH_DATABASES

FIRST = {"calls": [{"service": "imagenet"}]}
SECOND = {"calls": [{"service": "imagenet", "parameters": {"output": {"best": 2}}}]}


@pytest.fixture
async def store(tmp_path: Path, database_url: str | None) -> AsyncIterator[ChainRepository]:
    db = Database(tmp_path / "streamd.db", database_url)
    await db.open()
    yield ChainRepository(db)
    await db.close()


async def test_storing_a_name_again_replaces_its_definition(store: ChainRepository) -> None:
    record, created = await store.put("pets", FIRST)
    assert created and record.definition == FIRST
    record, created = await store.put("pets", SECOND)
    assert not created and record.definition == SECOND
    assert (await store.get("pets")).definition == SECOND
