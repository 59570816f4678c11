"""Stream leases and node heartbeats as SQL: one renewal round (`tick`) and the release at shutdown.

Plain synchronous functions of a connection, run on the lease thread (`streamd-lease`) through
`Database.run`, each call one transaction. Expiry is always compared with the database's `now()`,
never with this node's clock. `fair_share` is pure (no I/O) and decides how many streams to claim.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa

from streamd.store.schema import nodes, sink_spool, streams
from streamd.store.streams import CHANGES_CHANNEL

# Streams a node may run. Finished and errored ones hold a lease only while their webhook or MQTT sinks
# still deliver what they spooled ("draining"), and are claimed only if their spool is not empty.
ACTIVE = ("running", "paused")
ENDED = ("finished", "error")
UNDELIVERED_CLAIMS = 4  # ended streams with a spool a node takes over per round, beside its share


@dataclass(frozen=True, slots=True)
class Lease:
    stream_id: int
    epoch: int  # the fencing token: grows at each claim, checked on every write of the owner
    desired: str  # running | paused, as the API last set it (on any node)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    address: str
    max_streams: int
    ttl_s: float


@dataclass(frozen=True, slots=True)
class Round:
    """What one renewal round learned."""

    renewed: tuple[Lease, ...]  # leases this node still holds, with their desired state
    claimed: tuple[Lease, ...]  # streams newly taken (or taken back) by this node
    deleted: frozenset[int]  # held streams whose row is gone: deleted through some node's API
    surplus: int = 0  # held streams above this node's share: to hand over (rebalancing)
    # For each claimed stream whose owner had died: seconds since that owner's last renewal (its lease
    # end minus this node's ttl: one ttl is assumed cluster-wide), an upper bound of the outage.
    failovers_s: tuple[float, ...] = ()


def fair_share(capacities: Sequence[int], active: int) -> int:
    """The level L such that nodes running min(capacity, L) streams each run all `active` streams (or as
    many as the capacities allow): what each node aims at, so streams spread instead of filling the node
    that starts first."""
    if active <= 0 or not capacities:
        return 0
    level = 0
    while level < max(capacities):
        level += 1
        if sum(min(capacity, level) for capacity in capacities) >= active:
            return level
    return level


def _ttl(node: NodeInfo) -> sa.BindParameter[timedelta]:
    return sa.bindparam("ttl", timedelta(seconds=node.ttl_s), type_=sa.Interval)


def tick(
    conn: sa.Connection,
    node: NodeInfo,
    held: Mapping[int, int],
    statuses: Mapping[int, str],
    reclaim_own: bool = False,
    claim: bool = True,
) -> Round:
    """Heartbeat, renew `held` (stream id → epoch), claim free or expired streams up to this node's
    share (unless `claim` is false: a node leaving), publish `statuses` (stream id → status JSON) for
    the streams still held."""
    now = sa.func.now()
    _heartbeat(conn, node, len(held))
    renewed = _renew(conn, node, held)
    lost = set(held) - {lease.stream_id for lease in renewed}
    deleted: frozenset[int] = frozenset()
    if lost:
        existing = set(conn.execute(sa.select(streams.c.id).where(streams.c.id.in_(lost))).scalars())
        deleted = frozenset(lost - existing)
    running = sum(1 for lease in renewed if lease.desired in ACTIVE)  # not those delivering a spool
    share = _share(conn, node)
    surplus = max(0, running - share)
    claimed: tuple[Lease, ...] = ()
    failovers: tuple[float, ...] = ()
    if claim:
        active = streams.c.desired.in_(ACTIVE)
        claimed, failovers = _claim(conn, node, share - running, reclaim_own, active)
        spools, more = _claim(conn, node, UNDELIVERED_CLAIMS, reclaim_own, _undelivered())
        claimed, failovers = claimed + spools, failovers + more
    owned = (*renewed, *claimed)
    conn.execute(nodes.update().where(nodes.c.id == node.node_id).values(streams=len(owned)))
    epochs = {lease.stream_id: lease.epoch for lease in renewed}
    published = [
        {"sid": sid, "ep": epochs[sid], "st": status} for sid, status in statuses.items() if sid in epochs
    ]
    if published:
        conn.execute(
            streams.update()
            .where(
                streams.c.id == sa.bindparam("sid"),
                streams.c.owner == node.node_id,
                streams.c.epoch == sa.bindparam("ep"),
            )
            .values(status=sa.bindparam("st"), status_at=now),
            published,
        )
    # Nodes gone for long are forgotten; recently dead ones stay listed with their heartbeat age.
    forget = max(timedelta(minutes=1), 10 * timedelta(seconds=node.ttl_s))
    conn.execute(nodes.delete().where(nodes.c.heartbeat_at < now - sa.literal(forget, sa.Interval)))
    return Round(renewed, claimed, deleted, surplus, failovers)


def _heartbeat(conn: sa.Connection, node: NodeInfo, owned: int) -> None:
    from sqlalchemy.dialects.postgresql import insert

    now = sa.func.now()
    statement = insert(nodes).values(
        id=node.node_id,
        address=node.address,
        started_at=now,
        heartbeat_at=now,
        max_streams=node.max_streams,
        streams=owned,
    )
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[nodes.c.id],
            set_={"heartbeat_at": now, "address": node.address, "max_streams": node.max_streams},
        )
    )


def _renew(conn: sa.Connection, node: NodeInfo, held: Mapping[int, int]) -> tuple[Lease, ...]:
    if not held:
        return ()
    rows = conn.execute(
        streams.update()
        .where(
            streams.c.id.in_(list(held)),
            streams.c.owner == node.node_id,
            streams.c.lease_until > sa.func.now(),
        )
        .values(lease_until=sa.func.now() + _ttl(node))
        .returning(streams.c.id, streams.c.epoch, streams.c.desired)
    ).all()
    # Same id, another epoch: this node's stream was claimed and given back to it since (cannot happen
    # while it renews in time, but a renewal must never keep a lease the token says is someone else's).
    return tuple(Lease(r.id, r.epoch, r.desired) for r in rows if r.epoch == held[r.id])


def _share(conn: sa.Connection, node: NodeInfo) -> int:
    """The streams this node should run: its fair share among the live nodes, within its capacity.
    Sum over the live nodes >= the active streams, so a node above its share means another is below
    it, and handing the difference over converges (a node that joins gets streams without any stopping;
    one that joins after the others filled up gets them by rebalancing)."""
    live = sa.select(nodes.c.max_streams).where(nodes.c.heartbeat_at > sa.func.now() - _ttl(node))
    capacities = list(conn.execute(live).scalars())
    active = conn.execute(
        sa.select(sa.func.count()).select_from(streams).where(streams.c.desired.in_(ACTIVE))
    ).scalar_one()
    return min(node.max_streams, fair_share(capacities, active))


def _undelivered() -> sa.ColumnElement[bool]:
    """An ended stream whose webhook or MQTT sinks still hold spooled records: one whose node died or
    left is claimed to deliver them (StreamManager.drain_stored), then released. Delivering costs little,
    so these are claimed beside the fair share (UNDELIVERED_CLAIMS a round), not within it."""
    return sa.and_(streams.c.desired.in_(ENDED), sa.exists().where(sink_spool.c.stream_id == streams.c.id))


def _claim(
    conn: sa.Connection, node: NodeInfo, want: int, reclaim_own: bool, which: sa.ColumnElement[bool]
) -> tuple[tuple[Lease, ...], tuple[float, ...]]:
    now = sa.func.now()
    if want <= 0:
        return (), ()
    free_rows = [streams.c.owner.is_(None), streams.c.lease_until.is_(None), streams.c.lease_until <= now]
    if reclaim_own:
        # At start only: a node restarted under a fixed node_id takes its own leases back at once (the
        # process that held them is gone; later, a stream created here is already in `renewed`).
        free_rows.append(streams.c.owner == node.node_id)
    free = (
        sa.select(streams.c.id, streams.c.owner, streams.c.lease_until)
        .where(which, sa.or_(*free_rows))
        .order_by(streams.c.id)
        .limit(want)
        .with_for_update(skip_locked=True)
        .subquery()
    )
    since_renewal = sa.func.extract("epoch", now - free.c.lease_until + _ttl(node))
    rows = conn.execute(
        streams.update()
        .where(streams.c.id == free.c.id)
        .values(owner=node.node_id, epoch=streams.c.epoch + 1, lease_until=now + _ttl(node))
        .returning(
            streams.c.id,
            streams.c.epoch,
            streams.c.desired,
            free.c.owner.label("previous"),
            since_renewal.label("since_renewal"),
        )
    ).all()
    claimed = tuple(
        sorted((Lease(r.id, r.epoch, r.desired) for r in rows), key=lambda lease: lease.stream_id)
    )
    failovers = tuple(
        float(r.since_renewal) for r in rows if r.previous not in (None, node.node_id) and r.since_renewal
    )
    return claimed, failovers


def release(conn: sa.Connection, node_id: str, held: Mapping[int, int], *, leave: bool = True) -> int:
    """Give up `held` leases (stream id → epoch) at once, and with `leave` leave the nodes table (a
    graceful stop; without it, a handover while running); returns how many were released."""
    released = 0
    if held:
        released = conn.execute(
            streams.update()
            .where(
                sa.tuple_(streams.c.id, streams.c.epoch).in_(list(held.items())),
                streams.c.owner == node_id,
            )
            .values(owner=None, lease_until=None)
        ).rowcount
        if released:
            conn.execute(sa.select(sa.func.pg_notify(CHANGES_CHANNEL, "released")))
    if leave:
        conn.execute(nodes.delete().where(nodes.c.id == node_id))
    return released


def cluster_view(conn: sa.Connection, ttl_s: float) -> list[dict[str, object]]:
    """Every node with its streams, load and heartbeat age (database clock)."""
    age = sa.func.extract("epoch", sa.func.now() - nodes.c.heartbeat_at)
    up = sa.func.extract("epoch", sa.func.now() - nodes.c.started_at)
    rows = (
        conn.execute(sa.select(nodes, age.label("age"), up.label("up")).order_by(nodes.c.id)).mappings().all()
    )
    owned = conn.execute(
        sa.select(streams.c.owner, streams.c.id)
        .where(streams.c.owner.is_not(None), streams.c.lease_until > sa.func.now())
        .order_by(streams.c.id)
    ).all()
    by_node: dict[str, list[int]] = {}
    for owner, stream_id in owned:
        by_node.setdefault(owner, []).append(stream_id)
    return [
        {
            "node": row["id"],
            "address": row["address"],
            "alive": float(row["age"]) < ttl_s,
            "heartbeat_age_s": round(float(row["age"]), 3),
            "uptime_s": round(float(row["up"]), 3),
            "max_streams": row["max_streams"],
            "load": round(len(by_node.get(row["id"], [])) / row["max_streams"], 3)
            if row["max_streams"]
            else None,
            "streams": by_node.get(row["id"], []),
        }
        for row in rows
    ]


def node_address(conn: sa.Connection, node_id: str) -> str | None:
    """The advertised address of a node (None once it left the nodes table)."""
    address: str | None = conn.execute(
        sa.select(nodes.c.address).where(nodes.c.id == node_id)
    ).scalar_one_or_none()
    return address
