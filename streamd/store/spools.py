"""Network sinks' spools as rows of `sink_spool` (cluster mode): appended, read in order and deleted by the
stream's current lease holder only.

Plain synchronous functions of a connection, run on the spool thread (`streamd-spool`) through
`Database.run`, each call one transaction. Every write first takes a share lock on the stream's row while
it still carries the writer's epoch: a claim by another node (which bumps the epoch, `FOR UPDATE SKIP
LOCKED` then `UPDATE`) cannot commit while the lock is held, and once it has committed the epoch no longer
matches. So no write of a stale owner lands after the claim, and the new owner sees all of the old one's.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from streamd.store.schema import sink_spool, streams


class SpoolFencedError(Exception):
    """The stream's row no longer carries this writer's epoch (another node claimed it) or is gone
    (deleted): this node may not write or consume its spool any more."""


@dataclass(frozen=True, slots=True)
class SpoolKey:
    """Whose spool: a stream's sink, by its index in the stream's definition."""

    stream_id: int
    sink_index: int

    def where(self) -> sa.ColumnElement[bool]:
        return sa.and_(sink_spool.c.stream_id == self.stream_id, sink_spool.c.sink_index == self.sink_index)


def _hold(conn: sa.Connection, key: SpoolKey, epoch: int) -> None:
    """Share-lock the stream's row if it still carries `epoch`; SpoolFencedError otherwise.

    Only the epoch is compared, not the owner: a finished stream releases its lease (owner NULL) but keeps
    its epoch, and its sinks still deliver what they spooled; only a claim hands the stream on, and a
    claim always bumps the epoch."""
    held = conn.execute(
        sa.select(streams.c.id)
        .where(streams.c.id == key.stream_id, streams.c.epoch == epoch)
        .with_for_update(read=True)
    ).first()
    if held is None:
        raise SpoolFencedError(
            f"stream {key.stream_id} is no longer held at epoch {epoch} (claimed by another node, or deleted)"
        )


def size(conn: sa.Connection, key: SpoolKey) -> tuple[int, int]:
    """Records and bytes waiting in the spool."""
    count, total = conn.execute(
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(sa.func.length(sink_spool.c.record)), 0))
        .select_from(sink_spool)
        .where(key.where())
    ).one()
    return int(count), int(total)


def append(conn: sa.Connection, key: SpoolKey, epoch: int, records: list[bytes]) -> None:
    """Add `records` after the last one, all of them or (on any error) none: one transaction."""
    _hold(conn, key, epoch)
    last = conn.execute(sa.select(sa.func.max(sink_spool.c.seq)).where(key.where())).scalar_one()
    first = (last or 0) + 1
    conn.execute(
        sink_spool.insert(),
        [
            {
                "stream_id": key.stream_id,
                "sink_index": key.sink_index,
                "seq": first + offset,
                "epoch": epoch,
                "record": record,
            }
            for offset, record in enumerate(records)
        ],
    )


def peek(conn: sa.Connection, key: SpoolKey, epoch: int, count: int) -> list[tuple[int, bytes]]:
    """Up to `count` of the oldest records with their sequence numbers, left in place. Fenced too: a stale
    owner stops delivering instead of sending records the new owner also sends."""
    _hold(conn, key, epoch)
    rows = conn.execute(
        sa.select(sink_spool.c.seq, sink_spool.c.record)
        .where(key.where())
        .order_by(sink_spool.c.seq)
        .limit(count)
    ).all()
    return [(int(seq), bytes(record)) for seq, record in rows]


def consume(conn: sa.Connection, key: SpoolKey, epoch: int, through_seq: int) -> int:
    """Delete the records up to `through_seq` (delivered or refused); returns how many."""
    _hold(conn, key, epoch)
    return conn.execute(sink_spool.delete().where(key.where(), sink_spool.c.seq <= through_seq)).rowcount
