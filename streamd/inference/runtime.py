"""InferenceRuntime: the loaded networks, each with its TFExecutor and DynamicBatcher, shared by all users.

Networks are adopted right after their deployment loads them, or loaded on first use; two callers that
need a network at once share one load. Public networks (operator-installed, keyed by slug) load on first
use the same way. Unloading (network deleted, shutdown) closes the batcher first,
so queued items fail cleanly and running batches finish. Lives on the event loop; loads run on the
"streamd-load" thread, batches on each network's own thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from streamd.inference.batching import BatchPolicy, DynamicBatcher
from streamd.inference.executor import InferenceItem, ItemOutput, TFExecutor
from streamd.metrics import Metrics
from streamd.networks.freezing import runs_lite
from streamd.networks.lite import LITE_BATCH_SIZE
from streamd.networks.public import PublicNetwork
from streamd.networks.savedmodel import load_network_files
from streamd.networks.spec import NetworkTuning, Preprocessing
from streamd.networks.tfmodel import LoadedModel
from streamd.settings import InferenceConfig
from streamd.store.networks import NetworkRecord, NetworkRepository

logger = logging.getLogger(__name__)

NetworkKey = int | str  # a network id, or a public network's slug


class NetworkConfig(Protocol):
    """What loading and batching need of a network: a NetworkRecord or a PublicNetwork."""

    @property
    def metadata(self) -> dict[str, Any]: ...

    @property
    def preprocessing(self) -> Preprocessing: ...


def network_label(key: NetworkKey) -> str:
    """Name in logs, thread names and metric labels; slugs are prefixed so `12` and public `12` differ."""
    return str(key) if isinstance(key, int) else f"public/{key}"


@dataclass(slots=True)
class LoadedNetwork:
    """A network ready to run: its preprocessing, its TF threads and the batcher in front of them."""

    network_id: NetworkKey
    preprocessing: Preprocessing
    executor: TFExecutor
    batcher: DynamicBatcher[InferenceItem, ItemOutput]

    async def infer(self, item: InferenceItem) -> ItemOutput:
        return await self.batcher.submit(item)


class InferenceRuntime:
    def __init__(
        self, networks: NetworkRepository, config: InferenceConfig, metrics: Metrics | None = None
    ) -> None:
        self._networks = networks
        self._metrics = metrics
        self._config = config
        self._loaded: dict[NetworkKey, LoadedNetwork] = {}
        self._loading: dict[NetworkKey, asyncio.Task[LoadedNetwork]] = {}
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamd-load")

    @property
    def loaded(self) -> dict[NetworkKey, LoadedNetwork]:
        return self._loaded

    def tuning(self, record: NetworkConfig) -> NetworkTuning:
        return NetworkTuning.from_metadata(record.metadata)

    def policy(self, record: NetworkConfig, model: LoadedModel | None = None) -> BatchPolicy:
        """How `record`'s batches are cut; `model`, once loaded, may cap their size (LITE_BATCH_SIZE)."""
        tuning = self.tuning(record)
        max_batch = tuning.max_batch_size or self._config.max_batch_size
        if tuning.max_batch_size is None and model is not None and runs_lite(model):
            max_batch = min(max_batch, LITE_BATCH_SIZE)
        if not record.preprocessing.batched_output:
            max_batch = 1  # the network cannot take a batch: one image at a time
        return BatchPolicy(
            max_batch_size=max_batch,
            max_wait_s=self._config.max_wait_s if tuning.max_wait_s is None else tuning.max_wait_s,
            max_inflight=tuning.max_inflight_batches or self._config.max_inflight_batches,
        )

    @property
    def graph_optimisation(self) -> tuple[bool, bool, bool]:
        """Whether loaded Session models run through frozen copies of their graphs, whether those are
        fused, and run by TensorFlow Lite ([inference] freeze_graphs, fuse_graphs, lite_graphs)."""
        return self._config.freeze_graphs, self._config.fuse_graphs, self._config.lite_graphs

    def tf_threads(self, record: NetworkConfig) -> tuple[int, int]:
        """(intra-op, inter-op) TensorFlow threads: the network's metadata.streamd, else [inference]."""
        tuning = self.tuning(record)
        intra = self._config.intra_op_threads if tuning.intra_op_threads is None else tuning.intra_op_threads
        inter = self._config.inter_op_threads if tuning.inter_op_threads is None else tuning.inter_op_threads
        return intra, inter

    def adopt(self, record: NetworkRecord, model: LoadedModel, means: list[np.ndarray | None]) -> None:
        """Take over a model its deployment just loaded (eager loading)."""
        if record.network_id in self._loaded:
            model.close()
            return
        self._loaded[record.network_id] = self._assemble(record.network_id, record, model, means)

    async def network(self, network_id: int) -> LoadedNetwork:
        """A private network, loaded from its directory on first use since the start."""
        return await self._get(network_id, self._load_private)

    async def public(self, entry: PublicNetwork) -> LoadedNetwork:
        """A public network, loaded from its directory on first use (never deployed, never deleted)."""

        async def load(_slug: NetworkKey) -> LoadedNetwork:
            return await self._load(entry.slug, entry.directory, entry)

        return await self._get(entry.slug, load)

    async def _get(
        self, key: NetworkKey, load: Callable[[NetworkKey], Coroutine[Any, Any, LoadedNetwork]]
    ) -> LoadedNetwork:
        loaded = self._loaded.get(key)
        if loaded is not None:
            return loaded
        task = self._loading.get(key)
        if task is None:
            task = asyncio.create_task(load(key), name=f"load-network-{network_label(key)}")
            self._loading[key] = task
            task.add_done_callback(lambda _t: self._loading.pop(key, None))
        return await asyncio.shield(task)

    async def _load_private(self, network_id: NetworkKey) -> LoadedNetwork:
        assert isinstance(network_id, int)
        record = await self._networks.get(network_id)
        # Cluster mode: fetched from the database first if this node has no complete copy yet.
        return await self._load(network_id, await self._networks.local_dir(network_id), record)

    async def _load(self, key: NetworkKey, directory: Path, config: NetworkConfig) -> LoadedNetwork:
        model, means = await asyncio.get_running_loop().run_in_executor(
            self._loader,
            load_network_files,
            directory,
            config.preprocessing,
            *self.tf_threads(config),
            *self.graph_optimisation,
        )
        if key in self._loaded:  # adopted meanwhile
            model.close()
        else:
            self._loaded[key] = self._assemble(key, config, model, means)
            logger.info("network %s loaded for inference in %.2f s", network_label(key), model.load_time_s)
        return self._loaded[key]

    def _assemble(
        self, key: NetworkKey, config: NetworkConfig, model: LoadedModel, means: list[np.ndarray | None]
    ) -> LoadedNetwork:
        label = network_label(key)
        name = f"network-{label.replace('/', '-')}"
        on_timing = on_batch = None
        if self._metrics is not None:
            on_timing, on_batch = _observers(self._metrics, label)
        executor = TFExecutor(name, model, config.preprocessing, means, on_timing)
        batcher: DynamicBatcher[InferenceItem, ItemOutput] = DynamicBatcher(
            name, executor.run, self.policy(config, model), on_batch
        )
        return LoadedNetwork(key, config.preprocessing, executor, batcher)

    def retune(self, record: NetworkRecord) -> None:
        """Apply changed batching settings (PATCHed metadata) to a loaded network at once."""
        loaded = self._loaded.get(record.network_id)
        if loaded is not None:
            loaded.batcher.policy = self.policy(record, loaded.executor.model)

    async def unload(self, network_id: NetworkKey) -> None:
        """Close a network's batcher (queued items fail) and then its TF threads; no-op if not loaded."""
        loading = self._loading.get(network_id)
        if loading is not None:
            await asyncio.gather(loading, return_exceptions=True)
        loaded = self._loaded.pop(network_id, None)
        if loaded is None:
            return
        await loaded.batcher.close()
        await asyncio.to_thread(loaded.executor.close)
        logger.info("network %s unloaded", network_label(network_id))

    async def close(self) -> None:
        for task in list(self._loading.values()):
            task.cancel()
        await asyncio.gather(*self._loading.values(), return_exceptions=True)
        for network_id in list(self._loaded):
            await self.unload(network_id)
        self._loader.shutdown(wait=False, cancel_futures=True)


def _observers(
    metrics: Metrics, network: str
) -> tuple[Callable[[float, float], None], Callable[[int, list[float], bool, int], None]]:
    preprocess = metrics.preprocess_duration.labels(network)
    run = metrics.run_duration.labels(network)
    sizes, waits = metrics.batch_size.labels(network), metrics.queue_wait.labels(network)
    items, batches = metrics.items.labels(network), metrics.batches.labels(network)
    errors, item_errors = metrics.inference_errors.labels(network), metrics.item_errors.labels(network)

    def on_timing(preprocess_s: float, run_s: float) -> None:
        preprocess.observe(preprocess_s)
        run.observe(run_s)

    def on_batch(size: int, queue_waits: list[float], failed: bool, failed_items: int) -> None:
        sizes.observe(size)
        batches.inc()
        items.inc(size)
        for wait in queue_waits:
            waits.observe(wait)
        if failed:
            errors.inc()
        if failed_items:
            item_errors.inc(failed_items)

    return on_timing, on_batch
