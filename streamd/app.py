"""`build_app(settings)`: the one way to assemble the daemon, used by `streamd serve` and by the tests.

Objects are built here without I/O; `cleanup_ctx` opens them at start-up and closes them in reverse
order at shutdown, only what was opened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from streamd.api.context import SERVICES, Services
from streamd.api.middleware import MIDDLEWARES
from streamd.api.routes import setup_routes
from streamd.chains.catalogue import ChainCatalogue
from streamd.chains.runner import ChainRunner
from streamd.cluster.node import ClusterNode, default_node_id
from streamd.egress import EgressPolicy
from streamd.inference.deployment import Deployer
from streamd.inference.jobs import InferenceJobs
from streamd.inference.runtime import InferenceRuntime
from streamd.metrics import Metrics
from streamd.networks.public import load_public_networks
from streamd.networks.savedmodel import tensorflow_version
from streamd.settings import Settings
from streamd.store.blobs import BlobStore
from streamd.store.chains import ChainRepository
from streamd.store.db import Database
from streamd.store.networks import NetworkRepository
from streamd.store.recognition import RecognitionRepository
from streamd.store.streams import StreamRepository
from streamd.store.tasks import TaskRepository
from streamd.streams.manager import StreamManager

logger = logging.getLogger(__name__)

# A spool statement waits on the stream's row lock at most this long (a claim holds it for milliseconds);
# past it the append fails and is retried, its records kept in memory meanwhile.
SPOOL_STATEMENT_TIMEOUT_S = 10.0


def build_app(settings: Settings) -> web.Application:
    db = Database(settings.database_path, settings.database_url)
    # Cluster mode when the registry is PostgreSQL: this node's name, on its tasks, leases and records;
    # network files stored in the database too, fetched by the nodes that need them.
    node_id: str | None = None
    blobs: BlobStore | None = None
    if settings.database_url is not None:
        node_id = settings.cluster.node_id or default_node_id()
        blobs = BlobStore(settings.database_url)
    networks = NetworkRepository(db, settings.storage.data_dir, blobs=blobs, node_id=node_id)
    tasks = TaskRepository(db, node_id)
    metrics = Metrics() if settings.metrics.enabled else None
    runtime = InferenceRuntime(networks, settings.inference, metrics)
    runner = ChainRunner(runtime, settings.storage.data_dir / "chains", metrics)
    chains = ChainRepository(db)
    recognition = RecognitionRepository(db)
    catalogue = ChainCatalogue(chains, recognition, networks, settings.chains)
    stream_store = StreamRepository(db)
    lease = None if node_id is None else (node_id, settings.cluster.lease_ttl_s, settings.cluster.max_streams)
    spool_db = _spool_db(settings)
    streams = StreamManager(
        stream_store,
        runner,
        catalogue,
        settings.streams,
        EgressPolicy(settings.egress, settings.server),
        data_dir=settings.storage.data_dir,
        media_roots=settings.media_roots,
        # Cluster mode: JSONL files only under the configured roots, which every node must share.
        result_roots=settings.result_roots if node_id is None else settings.storage.result_roots,
        metrics=metrics,
        lease=lease,
        spool_db=spool_db,
    )
    if metrics is not None:
        metrics.add_stream_gauges(streams.statuses)
    cluster = None
    if settings.database_url is not None:
        cluster = ClusterNode(
            settings.cluster, settings.database_url, _address(settings), streams, stream_store
        )
        if metrics is not None:
            cluster.observe = metrics.cluster_observe
    svc = Services(
        settings=settings,
        db=db,
        networks=networks,
        tasks=tasks,
        recognition=recognition,
        runtime=runtime,
        deployer=Deployer(networks, tasks, runtime, settings.networks, metrics, node_id),
        jobs=InferenceJobs(tasks),
        chains=chains,
        chain_catalogue=catalogue,
        chains_runner=runner,
        streams=streams,
        metrics=metrics,
        blobs=blobs,
        spool_db=spool_db,
        cluster=cluster,
    )
    app = web.Application(middlewares=MIDDLEWARES, client_max_size=settings.server.json_max_bytes)
    app[SERVICES] = svc
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_runtime_ctx)
    app.cleanup_ctx.append(_deployer_ctx)
    app.cleanup_ctx.append(_spool_ctx)
    app.cleanup_ctx.append(_streams_ctx)
    setup_routes(app)
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    svc = app[SERVICES]
    await svc.db.open()
    if svc.blobs is not None:
        await svc.blobs.open()
    await svc.networks.sweep()
    svc.public_networks = await asyncio.to_thread(load_public_networks, svc.settings.networks.public_dir)
    svc.tensorflow_version = await asyncio.to_thread(tensorflow_version)
    yield
    if svc.blobs is not None:
        await svc.blobs.close()
    await svc.db.close()


async def _runtime_ctx(app: web.Application) -> AsyncIterator[None]:
    svc = app[SERVICES]
    interrupted = await svc.jobs.recover()
    if interrupted:
        logger.warning(
            "%d inference task(s) were interrupted by the last stop and are now in error", interrupted
        )
    pruner = asyncio.create_task(
        svc.jobs.prune_forever(svc.settings.storage.task_retention_s), name="streamd-task-pruner"
    )
    yield
    pruner.cancel()
    await asyncio.gather(pruner, return_exceptions=True)
    await svc.jobs.close()
    await svc.runtime.close()


async def _deployer_ctx(app: web.Application) -> AsyncIterator[None]:
    svc = app[SERVICES]
    if svc.cluster is None:  # cluster mode: after this node's first heartbeat (_streams_ctx)
        await _resume_deployments(svc)
    svc.ready = True
    yield
    svc.ready = False
    await svc.deployer.close()


async def _spool_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cluster mode: the spool database opens before the streams start and closes after they stopped
    (their sinks' last appends go through it)."""
    spool_db = app[SERVICES].spool_db
    if spool_db is None:
        yield
        return
    await spool_db.open()
    yield
    await spool_db.close()


async def _streams_ctx(app: web.Application) -> AsyncIterator[None]:
    """Streams start last (their networks and chains must be ready) and stop first."""
    svc = app[SERVICES]
    if svc.cluster is not None:
        # Cluster mode: this node runs what it claims, not every stored stream (streamd/cluster/node.py).
        await svc.cluster.start()
        # Now that this node counts as live, the deployments it takes over are seen as its own.
        await _resume_deployments(svc, svc.settings.cluster.lease_ttl_s)
        yield
        await svc.cluster.stop()
        return
    resumed = await svc.streams.resume_all()
    if resumed:
        logger.info("resumed %d stream(s)", resumed)
    yield
    await svc.streams.close()


async def _resume_deployments(svc: Services, live_ttl_s: float | None = None) -> None:
    resumed = await svc.deployer.resume_pending(live_ttl_s)
    if resumed:
        logger.info("resumed %d interrupted deployment(s)", resumed)


def _spool_db(settings: Settings) -> Database | None:
    """Cluster mode: webhook and MQTT spools in PostgreSQL, so that another node delivers what this one
    accepted; on a connection and thread of their own, never queued behind registry writes."""
    if settings.database_url is None:
        return None
    spool_db = Database(
        settings.database_path, settings.database_url, thread_name="streamd-spool", migrate=False
    )
    spool_db.statement_timeout_s = SPOOL_STATEMENT_TIMEOUT_S
    return spool_db


def _address(settings: Settings) -> str:
    if settings.cluster.advertise_url is not None:
        return settings.cluster.advertise_url
    return f"http://{settings.server.host}:{settings.server.port}/"
