"""Stream leases as SQL against a real PostgreSQL: claims spread by capacity, never twice, expiry by the
database's clock, fencing of a stale owner's writes, release at a graceful stop; the fair share alone."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from streamd.cluster.leases import NodeInfo, Round, fair_share, release, tick
from streamd.entities import Position
from streamd.store.db import Database
from streamd.store.schema import sink_spool, streams
from streamd.store.streams import Fence, StreamRepository
from streamd.store.tasks import TaskRepository
from tests.factories.postgres import PostgresServer


def test_fair_share_fills_nodes_evenly_up_to_their_capacities() -> None:
    assert fair_share([4, 4, 4], 6) == 2
    assert fair_share([4, 4, 4], 7) == 3
    assert fair_share([1, 10], 6) == 5  # the small node runs 1, the big one 5
    assert fair_share([2, 2], 9) == 2  # more streams than room: everyone full
    assert fair_share([3], 0) == 0
    assert fair_share([], 5) == 0


@pytest.fixture
async def db(postgres: PostgresServer, tmp_path: Path) -> AsyncIterator[Database]:
    with postgres.database() as url:
        database = Database(tmp_path / "unused", url)
        await database.open()
        yield database
        await database.close()


async def _streams(db: Database, count: int) -> list[int]:
    store = StreamRepository(db)
    return [await store.create(f"s{i}", {"name": f"s{i}"}) for i in range(count)]


def _node(name: str, max_streams: int = 10, ttl_s: float = 5.0) -> NodeInfo:
    return NodeInfo(name, f"http://{name}/", max_streams, ttl_s)


async def _tick(db: Database, node: NodeInfo, held: dict[int, int] | None = None) -> Round:
    return await db.run(functools.partial(tick, node=node, held=held or {}, statuses={}))


def _held(result: Round) -> dict[int, int]:
    return {lease.stream_id: lease.epoch for lease in (*result.renewed, *result.claimed)}


async def test_nodes_claim_their_fair_share_and_renew_without_a_new_epoch(db: Database) -> None:
    ids = await _streams(db, 6)
    a = _node("a")
    first = await _tick(db, a)  # alone: it takes everything
    assert [lease.stream_id for lease in first.claimed] == ids
    assert {lease.epoch for lease in first.claimed} == {1}
    renewed = await _tick(db, a, _held(first))
    assert _held(renewed) == {sid: 1 for sid in ids} and renewed.claimed == ()


async def test_a_node_claims_only_free_streams_and_never_renews_what_it_does_not_run(db: Database) -> None:
    ids = await _streams(db, 6)
    a, b = _node("a", max_streams=3), _node("b", max_streams=3)
    await _tick(db, b)  # b registers first (and claims up to its capacity, alone: 3)
    first_a = await _tick(db, a)
    first_b = _held(await _tick(db, b, {}))  # b held nothing locally: its earlier claims are not renewed
    assert sorted(_held(first_a)) == ids[3:] and first_b == {}


async def test_an_expired_lease_moves_with_a_new_epoch_and_fences_the_old_owner(db: Database) -> None:
    [stream_id] = await _streams(db, 1)
    a, b = _node("a", ttl_s=0.5), _node("b", ttl_s=0.5)
    held_a = _held(await _tick(db, a))
    assert held_a == {stream_id: 1}
    assert (await _tick(db, b)).claimed == ()  # a's lease is valid: nothing to take
    await asyncio.sleep(0.6)  # a stops renewing; the database's clock decides
    taken = await _tick(db, b)
    assert [(lease.stream_id, lease.epoch) for lease in taken.claimed] == [(stream_id, 2)]
    [failover_s] = taken.failovers_s  # since a's last renewal: its ttl and the sleep, not much more
    assert 0.6 <= failover_s < 1.5
    late = await _tick(db, a, held_a)
    assert late.renewed == () and late.deleted == frozenset()  # lost, not deleted: a stops it
    store = StreamRepository(db)
    await store.save_checkpoint(stream_id, Position(90, 3.0, 3.0), Fence("a", 1))  # refused
    await store.save_checkpoint(stream_id, Position(30, 1.0, 1.0), Fence("b", 2))
    assert not await store.set_desired(stream_id, "finished", fence=Fence("a", 1))
    [record] = await store.shared(stream_id)
    assert (record.owner, record.epoch, record.desired) == ("b", 2, "running")
    assert record.checkpoint == Position(30, 1.0, 1.0)


async def test_a_released_lease_is_taken_at_once_and_a_deleted_stream_is_reported(db: Database) -> None:
    first, second = await _streams(db, 2)
    a, b = _node("a", ttl_s=60), _node("b", ttl_s=60)
    held_a = _held(await _tick(db, a))
    assert held_a == {first: 1, second: 1}
    await db.run(functools.partial(release, node_id="a", held={first: 1}))
    assert [lease.stream_id for lease in (await _tick(db, b)).claimed] == [first]
    await StreamRepository(db).delete(second)
    assert (await _tick(db, a, {second: 1})).deleted == frozenset({second})


async def test_a_node_above_its_share_hands_the_surplus_to_a_node_that_joined(db: Database) -> None:
    ids = await _streams(db, 7)
    a, b = _node("a", ttl_s=60), _node("b", ttl_s=60)
    held_a = _held(await _tick(db, a))  # alone: all 7
    assert sorted(held_a) == ids
    joined = await _tick(db, b)  # nothing free: b waits, at 0
    assert joined.claimed == () and joined.surplus == 0
    crowded = await _tick(db, a, held_a)
    assert crowded.surplus == 3  # shares: 4 and 3 (a's capacity and b's alike; a keeps the larger)
    assert (await _tick(db, b)).claimed == ()  # a still holds them until it hands them over
    newest = dict(sorted(held_a.items())[-3:])
    assert await db.run(functools.partial(release, node_id="a", held=newest, leave=False)) == 3
    took = await _tick(db, b)
    assert [lease.stream_id for lease in took.claimed] == ids[-3:] and took.failovers_s == ()
    rest = {sid: epoch for sid, epoch in held_a.items() if sid not in newest}
    settled = await _tick(db, a, rest)
    assert settled.surplus == 0 and sorted(_held(settled)) == ids[:4]
    assert (await _tick(db, b, _held(took))).surplus == 0


async def test_a_leaving_node_renews_what_it_stops_and_claims_nothing(db: Database) -> None:
    first, second = await _streams(db, 2)
    a, b = _node("a", ttl_s=60), _node("b", ttl_s=60)
    held_a = _held(await _tick(db, a, {}))
    await StreamRepository(db).create("new", {"name": "new"})  # a stream free to claim
    leaving = await db.run(functools.partial(tick, node=a, held=held_a, statuses={}, claim=False))
    assert _held(leaving) == held_a and leaving.claimed == ()  # renewed while they stop, nothing new
    assert len((await _tick(db, b)).claimed) == 1  # the free one is left to the others
    assert sorted(held_a) == [first, second]


async def test_an_ended_stream_with_a_spool_is_claimed_beside_the_share_and_never_a_surplus(
    db: Database,
) -> None:
    running, ended, delivered = await _streams(db, 3)
    store = StreamRepository(db)
    for stream_id in (ended, delivered):
        await store.set_desired(stream_id, "finished")
    spooled = {"stream_id": ended, "sink_index": 0, "seq": 1, "epoch": 0, "record": b"{}"}
    await db.run(lambda conn: conn.execute(sink_spool.insert().values(**spooled)))
    a = _node("a", max_streams=1, ttl_s=60)
    first = await _tick(db, a)  # its share is the one running stream; the spool is taken besides
    assert sorted(_held(first)) == [running, ended]
    assert {lease.stream_id: lease.desired for lease in first.claimed}[ended] == "finished"
    again = await _tick(db, a, _held(first))
    assert sorted(_held(again)) == [running, ended] and again.surplus == 0 and again.claimed == ()


async def test_concurrent_claims_never_take_a_stream_twice(db: Database, postgres: PostgresServer) -> None:
    await _streams(db, 20)
    url = db.where  # no password in tests
    others = [Database(Path("unused"), url, thread_name=f"lease-{i}", migrate=False) for i in range(4)]
    for other in others:
        await other.open()
    try:
        rounds = await asyncio.gather(
            *(_tick(other, _node(f"n{i}", max_streams=20)) for i, other in enumerate(others))
        )
    finally:
        for other in others:
            await other.close()
    claimed = [lease.stream_id for result in rounds for lease in result.claimed]
    assert len(claimed) == len(set(claimed)) == 20
    owners = await db.run(
        lambda conn: conn.execute(sa.select(streams.c.owner, sa.func.count()).group_by(streams.c.owner)).all()
    )
    assert sum(count for _, count in owners) == 20 and None not in dict(owners)


async def test_a_restart_fails_only_its_own_nodes_pending_tasks(db: Database) -> None:
    mine, theirs = TaskRepository(db, "a"), TaskRepository(db, "b")
    mine_id, theirs_id = await mine.create("inference"), await theirs.create("inference")
    assert await mine.fail_pending("inference", "interrupted") == 1
    assert (await mine.get(mine_id)).status == "error"
    assert (await theirs.get(theirs_id)).status == "pending"
