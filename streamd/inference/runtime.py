"""InferenceRuntime: the loaded networks, each with its TFExecutor and DynamicBatcher, shared by all users.

Networks are adopted right after their deployment loads them, or loaded on first use; two callers that
need a network at once share one load. Unloading (network deleted, shutdown) closes the batcher first,
so queued items fail cleanly and running batches finish. Lives on the event loop; loads run on the
"streamd-load" thread, batches on each network's own thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamd.inference.batching import BatchPolicy, DynamicBatcher
from streamd.inference.executor import InferenceItem, ItemOutput, TFExecutor
from streamd.metrics import Metrics
from streamd.networks.meanfile import load_mean
from streamd.networks.savedmodel import load_savedmodel
from streamd.networks.spec import NetworkTuning, Preprocessing
from streamd.networks.tfmodel import LoadedModel
from streamd.settings import InferenceConfig
from streamd.store.networks import NetworkRecord, NetworkRepository

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class LoadedNetwork:
    network_id: int
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
        self._loaded: dict[int, LoadedNetwork] = {}
        self._loading: dict[int, asyncio.Task[LoadedNetwork]] = {}
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamd-load")

    @property
    def loaded(self) -> dict[int, LoadedNetwork]:
        return self._loaded

    def tuning(self, record: NetworkRecord) -> NetworkTuning:
        return NetworkTuning.from_metadata(record.metadata)

    def policy(self, record: NetworkRecord) -> BatchPolicy:
        tuning = self.tuning(record)
        max_batch = tuning.max_batch_size or self._config.max_batch_size
        if not record.preprocessing_spec.batched_output:
            max_batch = 1  # the network cannot take a batch: one image at a time
        return BatchPolicy(
            max_batch_size=max_batch,
            max_wait_s=self._config.max_wait_s if tuning.max_wait_s is None else tuning.max_wait_s,
            max_inflight=tuning.max_inflight_batches or self._config.max_inflight_batches,
        )

    def tf_threads(self, record: NetworkRecord) -> tuple[int, int]:
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
        self._loaded[record.network_id] = self._assemble(record, model, means)

    async def network(self, network_id: int) -> LoadedNetwork:
        loaded = self._loaded.get(network_id)
        if loaded is not None:
            return loaded
        task = self._loading.get(network_id)
        if task is None:
            task = asyncio.create_task(self._load(network_id), name=f"load-network-{network_id}")
            self._loading[network_id] = task
            task.add_done_callback(lambda _t: self._loading.pop(network_id, None))
        return await asyncio.shield(task)

    async def _load(self, network_id: int) -> LoadedNetwork:
        record = await self._networks.get(network_id)
        model, means = await asyncio.get_running_loop().run_in_executor(
            self._loader,
            load_network_files,
            self._networks.network_dir(network_id),
            record.preprocessing_spec,
            *self.tf_threads(record),
        )
        if network_id in self._loaded:  # adopted meanwhile
            model.close()
        else:
            self._loaded[network_id] = self._assemble(record, model, means)
            logger.info("network %d loaded for inference in %.2f s", network_id, model.load_time_s)
        return self._loaded[network_id]

    def _assemble(
        self, record: NetworkRecord, model: LoadedModel, means: list[np.ndarray | None]
    ) -> LoadedNetwork:
        name = f"network-{record.network_id}"
        on_timing = on_batch = None
        if self._metrics is not None:
            on_timing, on_batch = _observers(self._metrics, str(record.network_id))
        executor = TFExecutor(name, model, record.preprocessing_spec, means, on_timing)
        batcher: DynamicBatcher[InferenceItem, ItemOutput] = DynamicBatcher(
            name, executor.run, self.policy(record), on_batch
        )
        return LoadedNetwork(record.network_id, record.preprocessing_spec, executor, batcher)

    def retune(self, record: NetworkRecord) -> None:
        """Apply changed batching settings (PATCHed metadata) to a loaded network at once."""
        loaded = self._loaded.get(record.network_id)
        if loaded is not None:
            loaded.batcher.policy = self.policy(record)

    async def unload(self, network_id: int) -> None:
        loading = self._loading.get(network_id)
        if loading is not None:
            await asyncio.gather(loading, return_exceptions=True)
        loaded = self._loaded.pop(network_id, None)
        if loaded is None:
            return
        await loaded.batcher.close()
        await asyncio.to_thread(loaded.executor.close)
        logger.info("network %d unloaded", network_id)

    async def close(self) -> None:
        for task in list(self._loading.values()):
            task.cancel()
        await asyncio.gather(*self._loading.values(), return_exceptions=True)
        for network_id in list(self._loaded):
            await self.unload(network_id)
        self._loader.shutdown(wait=False, cancel_futures=True)


def load_network_files(
    directory: Path, preprocessing: Preprocessing, intra_op_threads: int = 0, inter_op_threads: int = 0
) -> tuple[LoadedModel, list[np.ndarray | None]]:
    """Blocking: the SavedModel and each input's mean, in its layout."""
    model = load_savedmodel(directory, intra_op_threads, inter_op_threads)
    try:
        means = [
            None
            if item.image.mean_file is None
            else load_mean(directory / item.image.mean_file, item.image.dimension_order)
            for item in preprocessing.inputs
        ]
    except Exception:
        model.close()
        raise
    return model, means


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
