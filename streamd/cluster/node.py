"""ClusterNode: this daemon as a member of the cluster. Runs on the event loop; its SQL runs on its own
`streamd-lease` thread and connection, so renewals never queue behind registry writes.

Every ttl/3 one round (streamd/cluster/leases.py) heartbeats, renews the held leases, claims this node's
share of free or expired streams and publishes their status; the StreamManager then starts what was
claimed, stops what was lost (at once: a stale owner must not keep writing) and applies pause, resume
and deletion made through other nodes. A node that cannot renew within its ttl (by its own monotonic
clock, counted from when the last successful round was sent) stops every stream it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson

from streamd.cluster.leases import ENDED, Lease, NodeInfo, Round, cluster_view, release, tick
from streamd.settings import ClusterConfig
from streamd.store.db import Database, postgres_url
from streamd.store.streams import CHANGES_CHANNEL, StreamRepository
from streamd.streams.bodies import StreamBody
from streamd.streams.manager import StreamManager
from streamd.streams.pipeline import StreamPipeline
from streamd.streams.state import PAUSABLE, StreamState

logger = logging.getLogger(__name__)

MIN_ROUND_GAP_S = 0.1
STOP_WAIT_S = 10.0  # at shutdown, for the lease round and the listener to end once cancelled


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class ClusterNode:
    def __init__(
        self,
        config: ClusterConfig,
        database_url: str,
        address: str,
        manager: StreamManager,
        store: StreamRepository,
    ) -> None:
        assert manager.node_id is not None
        self.info = NodeInfo(manager.node_id, address, config.max_streams, config.lease_ttl_s)
        self._db = Database(Path("."), database_url, thread_name="streamd-lease", migrate=False)
        # A round stuck past a renewal period or two is as good as failed: fail it and try again (the
        # self-fencing deadline below, not this timeout, is what keeps a stale owner from writing).
        self._db.statement_timeout_s = self._db.connect_timeout_s = max(2.0, config.lease_ttl_s / 3)
        self._manager = manager
        self.store = store
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()  # streams stopping
        self._adopting: set[asyncio.Task[None]] = set()  # claimed streams starting
        self._valid_until: float | None = None  # monotonic: when the held leases surely expire
        # Streams stopping to be released (rebalancing): still renewed, so their last checkpoint and
        # sink flushes land under a valid lease however long the stop takes.
        self._handing_over: dict[int, int] = {}
        self._wake = asyncio.Event()  # a stream changed through some node: run a round now
        self._closing = False
        self._listener: asyncio.Task[None] | None = None
        # libpq's form of the URL (no SQLAlchemy driver name), for psycopg's own connection.
        self._listen_url = (
            postgres_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        )
        self.error: str | None = None  # why the last round failed, while it did
        self.rounds = 0
        self.observe: Callable[[str, float], None] = lambda _event, _value: None  # metrics, when wired

    def _observe(self, event: str, value: float) -> None:
        self.observe(event, value)

    @property
    def period_s(self) -> float:
        return self.info.ttl_s / 3

    @property
    def healthy(self) -> bool:
        """Renewing: the last round succeeded and its leases have not run out."""
        return self.error is None and self._valid_until is not None and time.monotonic() < self._valid_until

    async def start(self) -> None:
        """Join: open the lease connection and run the first round (it may take back this node's own
        leases when node_id is fixed), then renew every ttl/3."""
        await self._db.open()
        await self._round(first=True)
        # As resume_all on one node: what this node takes at start runs before it says it is ready.
        await asyncio.gather(*self._adopting, return_exceptions=True)
        self._task = asyncio.create_task(self._forever(), name="streamd-cluster-leases")
        self._listener = asyncio.create_task(self._listen(), name="streamd-cluster-listen")

    async def stop(self) -> None:
        """Graceful leave: stop the rounds, stop the streams under leases still renewed (their last
        checkpoint lands, fenced; nothing new is claimed), then release the leases so other nodes take
        them at their next round."""
        self._closing = True
        for task in (self._task, self._listener):
            if task is None:
                continue
            task.cancel()
            # Bounded: a library that swallowed the cancellation must not hold the shutdown for ever.
            done, _ = await asyncio.wait({task}, timeout=STOP_WAIT_S)
            if not done:
                logger.warning("cluster: %s did not stop within %.0f s", task.get_name(), STOP_WAIT_S)
        for adopting in self._adopting:
            adopting.cancel()  # a pipeline it would start now would outlive the manager's close
        await asyncio.gather(*self._adopting, return_exceptions=True)
        held = {**self._manager.held, **self._manager.draining}
        # The streams stop (sinks flushed, last checkpoint) under leases still renewed, never claiming.
        renewing = asyncio.create_task(self._renew_only(held), name="streamd-cluster-leaving")
        try:
            await self._manager.close()
            await asyncio.gather(*self._background, return_exceptions=True)
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
        try:
            released = await self._db.run(functools.partial(release, node_id=self.info.node_id, held=held))
            logger.info("cluster: node %s left, %d lease(s) released", self.info.node_id, released)
        except Exception as exc:  # shutdown boundary: the leases then expire after their ttl
            logger.warning("cluster: cannot release leases (they expire in %.1f s): %s", self.info.ttl_s, exc)
        await self._db.close()

    async def view(self) -> list[dict[str, object]]:
        return await self._db.run(functools.partial(cluster_view, ttl_s=self.info.ttl_s))

    async def _forever(self) -> None:
        while not self._closing:
            started = time.monotonic()
            self._wake.clear()  # a change notified from here on gets a round after this one
            try:
                await self._round()
            except Exception as exc:  # supervision boundary: a failed round is retried next period
                self.error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
                self._observe("round_failed", 1)
                logger.warning("cluster: lease renewal failed: %s", self.error)
                if self._valid_until is not None and time.monotonic() >= self._valid_until:
                    self._fence("its leases expired while the database could not be reached")
            # Until the next period, or sooner when another node changed a stream (LISTEN below); never
            # more than one round per MIN_ROUND_GAP_S, so a burst of API calls costs one round.
            await asyncio.sleep(max(0.0, started + MIN_ROUND_GAP_S - time.monotonic()))
            remaining = max(0.0, started + self.period_s - time.monotonic())
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that arrives as
            # the event is set (a NOTIFY during shutdown), and stop() would then wait for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wake.wait()

    async def _listen(self) -> None:
        """LISTEN for stream changes made through any node (creation unowned, pause, resume, delete,
        release) and wake the lease round: the owner follows at once instead of within ttl/3. Only a
        wake-up: the round reads the truth from the rows, so a lost notification costs one period."""
        import psycopg

        while not self._closing:
            try:
                # TCP keepalives: a half-open connection (a database host gone) must not block
                # notifies() for ever; it fails within ~10 s and is opened again.
                conn = await psycopg.AsyncConnection.connect(
                    self._listen_url,
                    autocommit=True,
                    connect_timeout=max(2, int(self.period_s)),
                    keepalives=1,
                    keepalives_idle=5,
                    keepalives_interval=2,
                    keepalives_count=3,
                )
                async with conn:
                    await conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                    self._wake.set()  # what changed while this node was not listening
                    async for _notify in conn.notifies():
                        self._wake.set()
                        self._observe("notified", 1)
            except (psycopg.Error, OSError) as exc:
                logger.info("cluster: not listening for stream changes (retrying): %s", exc)
            except Exception:  # supervision boundary: rounds still run every ttl/3 meanwhile
                logger.exception("cluster: the stream change listener failed (restarting it)")
            await asyncio.sleep(self.period_s)

    async def _renew_only(self, held: dict[int, int]) -> None:
        """While this node leaves: keep `held` renewed every period, claim nothing."""
        call = functools.partial(tick, node=self.info, held=held, statuses={}, claim=False)
        while True:
            await asyncio.sleep(self.period_s)
            with contextlib.suppress(Exception):  # the leases then expire after their ttl
                await self._db.run(call)

    async def _round(self, *, first: bool = False) -> None:
        sent = time.monotonic()
        held, draining = dict(self._manager.held), dict(self._manager.draining)
        statuses = {
            sid: orjson.dumps(self._manager.get(sid).status().to_api()).decode()
            for sid in (*held, *draining)
            if sid in self._manager.bodies
        }
        renew = {**held, **draining, **self._handing_over}
        call = functools.partial(tick, node=self.info, held=renew, statuses=statuses, reclaim_own=first)
        job = asyncio.ensure_future(self._db.run(call))
        if self._valid_until is not None:
            try:
                async with asyncio.timeout(self._valid_until - sent):
                    result = await asyncio.shield(job)
            except TimeoutError:
                self._fence("no lease renewal reached the database within the lease ttl")
                result = await job
        else:
            result = await job
        self._valid_until = sent + self.info.ttl_s
        self.error = None
        self.rounds += 1
        self._observe("round_ok", 1)
        self._apply(result, held, draining, sent)
        self._observe("streams", len(self._manager.held))

    def _apply(self, result: Round, held: dict[int, int], draining: dict[int, int], sent: float) -> None:
        manager = self._manager
        renewed = {lease.stream_id: lease for lease in result.renewed}
        for stream_id, epoch in draining.items():
            if manager.draining.get(stream_id) != epoch:
                continue  # delivered and released, or deleted here, while the round ran
            if stream_id in result.deleted:
                self._drop(stream_id, "deleted through another node", remove_spools=True)
            elif stream_id not in renewed:
                self._drop(stream_id, "its lease was lost while it delivered its spool", remove_spools=False)
                self._observe("lost", 1)
        for stream_id, epoch in held.items():
            if manager.held.get(stream_id) != epoch:
                continue  # ended or deleted here while the round ran
            if stream_id in result.deleted:
                self._drop(stream_id, "deleted through another node", remove_spools=True)
            elif stream_id not in renewed:
                self._drop(stream_id, "its lease was lost (not renewed in time)", remove_spools=False)
                self._observe("lost", 1)
            elif manager.changed_s.get(stream_id, -math.inf) < sent:
                # (A pause or resume made here after this round was sent is newer than what it read.)
                self._follow(renewed[stream_id])
        for lease in result.claimed:
            if lease.stream_id in manager.held:
                continue
            manager.held[lease.stream_id] = lease.epoch
            self._spawn(self._adopt(lease), f"stream-{lease.stream_id}-adopt", self._adopting)
        for seconds in result.failovers_s:
            self._observe("failover", seconds)
        if result.claimed:
            self._observe("claimed", len(result.claimed))
        if result.failovers_s:
            self._observe("taken_over", len(result.failovers_s))
        if result.surplus and not self._handing_over:
            # The newest streams move: the oldest keep their node (and their sinks' connections).
            surplus = sorted(s for s in renewed if manager.held.get(s) == renewed[s].epoch)[-result.surplus :]
            for stream_id in surplus:
                self._spawn(
                    self._hand_over(stream_id, renewed[stream_id].epoch), f"stream-{stream_id}-handover"
                )

    async def _hand_over(self, stream_id: int, epoch: int) -> None:
        """Rebalancing: stop the stream here (its last checkpoint lands while the lease is still valid),
        then release its lease so that a node below its share claims it at its next round."""
        self._handing_over[stream_id] = epoch
        try:
            pipeline = self._manager.forget(stream_id)  # renewed through _handing_over until released
            logger.info("cluster: stream %d handed over (this node is above its share)", stream_id)
            if pipeline is not None:
                with contextlib.suppress(Exception):  # its sinks log their own failures
                    await pipeline.stop()
            await self._db.run(
                functools.partial(release, node_id=self.info.node_id, held={stream_id: epoch}, leave=False)
            )
            self._observe("handed_over", 1)
        except Exception as exc:  # the lease then expires after its ttl: the stream moves anyway
            logger.warning("cluster: cannot release stream %d after handing it over: %s", stream_id, exc)
        finally:
            self._handing_over.pop(stream_id, None)

    def _follow(self, lease: Lease) -> None:
        """Pause or resume as the row says (the API call may have reached another node)."""
        if lease.stream_id not in self._manager.bodies:
            return  # still starting: it starts in the state the row had then
        pipeline = self._manager.get(lease.stream_id)
        if lease.desired == "paused" and pipeline.state in PAUSABLE:
            pipeline.pause()
        elif lease.desired == "running" and pipeline.state == StreamState.PAUSED:
            pipeline.resume()

    async def _adopt(self, lease: Lease) -> None:
        records = await self.store.shared(lease.stream_id)
        if not records or self._manager.held.get(lease.stream_id) != lease.epoch:
            self._manager.held.pop(lease.stream_id, None)
            return
        record = records[0]
        body = StreamBody.model_validate(record.definition)
        if record.desired in ENDED:
            # It ended on a node that died or left before its sinks delivered what they spooled.
            logger.info(
                "cluster: stream %d (%s) claimed at epoch %d to deliver its spool",
                lease.stream_id,
                record.desired,
                lease.epoch,
            )
            await self._manager.drain_stored(record, body, epoch=lease.epoch)
            return
        logger.info("cluster: stream %d claimed at epoch %d", lease.stream_id, lease.epoch)
        if not await self._manager.start_stored(record, body, epoch=lease.epoch):
            # It cannot run here (a source this node cannot open): shown in error, its lease kept so
            # that it does not bounce between nodes; deleting it is the way out, as on one node.
            return
        if self._manager.held.get(lease.stream_id) != lease.epoch:
            self._drop(lease.stream_id, "its lease was lost while it started", remove_spools=False)

    def _drop(self, stream_id: int, reason: str, *, remove_spools: bool) -> None:
        sinks = len(self._manager.bodies[stream_id].sinks) if stream_id in self._manager.bodies else 0
        pipeline = self._manager.forget(stream_id)
        logger.warning("cluster: stream %d stops here: %s", stream_id, reason)
        if pipeline is not None:
            self._spawn(
                self._stop(pipeline, stream_id, sinks if remove_spools else 0), f"stream-{stream_id}-stop"
            )

    async def _stop(self, pipeline: StreamPipeline, stream_id: int, spools: int) -> None:
        with contextlib.suppress(Exception):  # its sinks log their own failures
            await pipeline.stop()
        if spools:
            await self._manager.remove_spools(stream_id, spools)

    def _fence(self, reason: str) -> None:
        """Stop every stream at once: another node may own them by now."""
        if self._manager.held:
            self._observe("fenced", len(self._manager.held))
        for stream_id in list(self._manager.held):
            self._drop(stream_id, reason, remove_spools=False)

    def _spawn(
        self, coro: Coroutine[Any, Any, None], name: str, owner: set[asyncio.Task[None]] | None = None
    ) -> None:
        tasks = self._background if owner is None else owner
        task = asyncio.create_task(coro, name=name)
        tasks.add(task)
        task.add_done_callback(tasks.discard)
