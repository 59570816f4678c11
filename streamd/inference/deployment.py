"""Deployment tasks: each new network is loaded once off the event loop, checked against its
preprocessing and run on test batches of the sizes its batcher will use (networks/warmup.py); the task
ends `success`, or `error` with a message a person can act on.

A network that fails to deploy is removed (row and files): only loadable networks stay registered.
Failing to *fetch* its files is not the network's fault: a database or disk error is retried with
backoff, and a network whose files cannot be had on this node stays registered, its task pending.
A network that deploys is handed, loaded, to the inference runtime (eager loading). The coroutines run
on the loop; loading runs on the single "streamd-deploy" thread, so two large models never load at once.

Cluster mode: one node runs a network's deployment, the one that received the upload (or, if it died
meanwhile, the next node to start); its success means the files are in PostgreSQL and that node loaded
and ran them. Other nodes fetch and load the network on first use (docs/design.md, Cluster).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from streamd.errors import InsufficientStorageError, NotFoundError, StreamdError, UnavailableError
from streamd.inference.runtime import InferenceRuntime
from streamd.metrics import Metrics
from streamd.networks.freezing import FrozenSessionModel, runs_lite
from streamd.networks.savedmodel import check_against_preprocessing, load_network_files
from streamd.networks.spec import Preprocessing
from streamd.networks.tfmodel import LoadedModel
from streamd.networks.warmup import warm_up
from streamd.settings import NetworksConfig
from streamd.store.networks import DEPLOY_TASK, NetworkRecord, NetworkRepository
from streamd.store.tasks import TaskRepository

logger = logging.getLogger(__name__)

FETCH_RETRY_MAX_S = 30.0


def validate_network(
    export_dir: Path,
    preprocessing: Preprocessing,
    max_batch_size: int,
    intra_op_threads: int,
    inter_op_threads: int,
    freeze_graph: bool = False,
    fuse_graph: bool = True,
    lite_graph: bool = False,
) -> tuple[LoadedModel, list[np.ndarray | None], dict[str, Any]]:
    """Load the SavedModel, check it and run it; blocking, runs on the deploy thread."""
    model, means = load_network_files(
        export_dir, preprocessing, intra_op_threads, inter_op_threads, freeze_graph, fuse_graph, lite_graph
    )
    try:
        inputs = check_against_preprocessing(model, export_dir, preprocessing)
        warmed = warm_up(model, preprocessing, means, max_batch_size)
    except BaseException:
        model.close()
        raise
    report = {
        "inputs": inputs,
        "tags": list(model.tags),
        "runtime": model.kind,
        "frozen_graph": isinstance(model, FrozenSessionModel),
        "fused_graph": isinstance(model, FrozenSessionModel) and model.fused is not None,
        "lite_graph": runs_lite(model),
        "load_time_s": round(model.load_time_s, 3),
        **warmed.report(),
    }
    return model, means, report


async def local_files(networks: NetworkRepository, network: NetworkRecord) -> Path | None:
    """The network's files on this node (cluster mode: a deployment taken over from another node
    fetches them first). A database or disk failing now is retried with backoff; None when the
    files cannot be had here (streamd stopping, or files on an old node only): the task stays
    pending and the network registered, since nothing says the model is bad."""
    delay = 1.0
    while True:
        try:
            return await networks.local_dir(network.network_id)
        except UnavailableError as exc:
            logger.warning("network %d is not deployed here for now: %s", network.network_id, exc.message)
            return None
        except (sa.exc.DBAPIError, OSError, InsufficientStorageError) as exc:
            logger.warning(
                "network %d: its files could not be fetched (%s: %s); retrying in %.0f s",
                network.network_id,
                type(exc).__name__,
                " ".join(str(exc).split())[:300],
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(2 * delay, FETCH_RETRY_MAX_S)


class Deployer:
    """Runs deployment tasks, one load at a time, and hands deployed networks to the runtime."""

    def __init__(
        self,
        networks: NetworkRepository,
        tasks: TaskRepository,
        runtime: InferenceRuntime,
        config: NetworksConfig,
        metrics: Metrics | None = None,
        node_id: str | None = None,
    ) -> None:
        self._networks = networks
        self._node_id = node_id  # cluster mode: named in the data of the tasks this node completes
        self._metrics = metrics
        self._tasks = tasks
        self._runtime = runtime
        self._config = config
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamd-deploy")
        self._running: set[asyncio.Task[None]] = set()

    def start(self, network: NetworkRecord) -> None:
        """Deploy a network just created, in the background; its task records the outcome."""
        task = asyncio.create_task(self._deploy(network), name=f"deploy-network-{network.network_id}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def resume_pending(self, live_ttl_s: float | None = None) -> int:
        """Restart deployments that a stop or crash interrupted; their tasks are still pending.

        Cluster mode (`live_ttl_s` given, after this node's first heartbeat): only this node's, and
        those of nodes that have not heartbeated for `live_ttl_s` (NetworkRepository.claim_undeployed)."""
        unowned = await self._tasks.fail_unowned_deployments(
            DEPLOY_TASK, "the network was removed while its deployment was ending (the daemon stopped)"
        )
        if unowned:
            logger.info("%d deployment task(s) of removed networks marked as failed", unowned)
            if self._metrics is not None:
                self._metrics.deployments.labels("error").inc(unowned)
        if live_ttl_s is None:
            pending = await self._networks.undeployed()
        else:
            pending = await self._networks.claim_undeployed(live_ttl_s)
        for network in pending:
            logger.info("resuming deployment of network %d (task %d)", network.network_id, network.task_id)
            self.start(network)
        return len(pending)

    async def close(self) -> None:
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _deploy(self, network: NetworkRecord) -> None:
        try:
            export_dir = await local_files(self._networks, network)
            if export_dir is None:
                return
            job = asyncio.get_running_loop().run_in_executor(
                self._executor,
                validate_network,
                export_dir,
                network.preprocessing,
                self._runtime.policy(network).max_batch_size,
                *self._runtime.tf_threads(network),
                *self._runtime.graph_optimisation,
            )
            model, means, report = await asyncio.wait_for(job, self._config.deploy_timeout_s)
        except StreamdError as exc:
            await self._fail(network, exc.message)
        except TimeoutError:
            await self._fail(
                network,
                "loading and test batches took longer than networks.deploy_timeout_s="
                f"{self._config.deploy_timeout_s:g} s; raise the setting for very large models",
            )
        except Exception as exc:  # supervision boundary: a broken model must not break the daemon
            logger.exception("deployment of network %d failed unexpectedly", network.network_id)
            await self._fail(
                network, f"unexpected error while loading the model: {type(exc).__name__}: {exc}"
            )
        else:
            if not await self._networks.mark_deployed(network.network_id):
                # Deleted while it loaded: the delete ends the task ("deleted before ..."), not us.
                await asyncio.to_thread(model.close)
                return
            self._runtime.adopt(network, model, means)
            data = {"network_id": network.network_id, **report}
            if self._node_id is not None:
                data["node"] = self._node_id
            await self._tasks.finish(network.task_id, "success", data=data)
            logger.info("network %d deployed in %.2f s", network.network_id, report["load_time_s"])
            if self._metrics is not None:
                self._metrics.deployments.labels("success").inc()

    async def _fail(self, network: NetworkRecord, reason: str) -> None:
        # Remove before ending the task: a client that reads "has been removed" must find no row and
        # no file left (ending it first let a fast client see the files still being deleted).
        try:
            await self._networks.delete(network.network_id)
        except NotFoundError:
            # Deleted while it loaded: the delete removes the row before the files, so a load that
            # failed on the vanishing files lands here, and the delete's own message must end the task.
            logger.info("network %d deleted during its deployment (%s)", network.network_id, reason)
            return
        message = f"network {network.network_id} was not deployed and has been removed: {reason}"
        logger.warning("%s", message)
        if self._metrics is not None:
            self._metrics.deployments.labels("error").inc()
        await self._tasks.finish(network.task_id, "error", error=message)
