"""StreamManager: validates stream requests, starts and supervises pipelines, persists and resumes them.

Runs on the event loop; probing a file source (av.open) and path checks run in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import shutil
import time
from pathlib import Path

from streamd.chains.catalogue import INLINE, ChainCatalogue
from streamd.chains.runner import ChainRunner
from streamd.chains.spec import ChainPlan
from streamd.egress import EgressPolicy
from streamd.entities import Position, Sink, StreamStatus
from streamd.errors import NotFoundError
from streamd.metrics import Metrics
from streamd.settings import StreamsConfig
from streamd.store.db import Database
from streamd.store.streams import Fence, StreamRecord, StreamRepository
from streamd.streams.analytics import check_scene
from streamd.streams.bodies import JsonlSinkBody, StreamBody
from streamd.streams.budget import decoder_threads, held_frames, usable_cores
from streamd.streams.ends import StreamEnds
from streamd.streams.pipeline import PipelineSettings, StreamPipeline
from streamd.streams.state import PAUSABLE, RESUMABLE, StreamState, require
from streamd.video.buffer import DropPolicy
from streamd.video.source import NETWORK_SCHEMES, SourceSettings

logger = logging.getLogger(__name__)

DRAIN_POLL_S = 0.5  # how often an ended stream's sinks are checked for what they still have to deliver


class StreamManager:
    """Owns every stream: checks and starts them, persists their wanted state, resumes them."""

    def __init__(
        self,
        store: StreamRepository,
        runner: ChainRunner,
        catalogue: ChainCatalogue,
        config: StreamsConfig,
        egress: EgressPolicy,
        *,
        data_dir: Path,
        media_roots: tuple[Path, ...],
        result_roots: tuple[Path, ...],
        metrics: Metrics | None = None,
        lease: tuple[str, float, int] | None = None,
        spool_db: Database | None = None,
    ) -> None:
        self._store = store
        # Cluster mode: (node id, lease ttl, max streams). `held` maps the streams whose lease this node
        # holds to their epoch; streams/cluster code keeps it (streamd/cluster/node.py).
        self.node_id: str | None = lease[0] if lease is not None else None
        self._lease_ttl_s, self.max_streams = (lease[1], lease[2]) if lease is not None else (0.0, 0)
        self.held: dict[int, int] = {}
        # Cluster mode: ended streams whose lease this node keeps while their network sinks deliver what
        # they spooled (stream → epoch); renewed like `held`, released once delivered.
        self.draining: dict[int, int] = {}
        self.changed_s: dict[int, float] = {}  # see _record_desired
        self._metrics = metrics
        self._runner = runner
        self._catalogue = catalogue
        self._config = config
        # Cluster mode: `result_roots` holds only the shared roots, and network sinks spool to `spool_db`.
        self.ends = StreamEnds(config, egress, data_dir, media_roots, result_roots, spool_db=spool_db)
        self._pipelines: dict[int, StreamPipeline] = {}
        self.bodies: dict[int, StreamBody] = {}
        self._watchers: set[asyncio.Task[None]] = set()

    def uses_chain(self, name: str) -> list[int]:
        return [
            sid
            for sid, p in self._pipelines.items()
            if p.chain_name == name and p.state != StreamState.STOPPED
        ]

    async def create(self, body: StreamBody, plan: ChainPlan, chain_name: str) -> StreamPipeline | int:
        """The running pipeline, or in cluster mode with this node full, the id of the stored stream."""
        check_scene(plan, body.scene)
        uri, live = await self.ends.check_source(body.source)
        await self.ends.check_sinks(body.sinks)
        body = self.ends.anchored(body)
        if self.node_id is None:
            stream_id = await self._store.create(body.name, body.model_dump())
            epoch = None
        elif len(self.held) >= self.max_streams:  # full: another node claims it at its next renewal
            return await self._store.create(body.name, body.model_dump())
        else:
            lease = (self.node_id, self._lease_ttl_s)
            stream_id = await self._store.create(body.name, body.model_dump(), lease=lease)
            self.held[stream_id] = epoch = 1
        try:
            return await self._launch(
                stream_id, body, plan, chain_name, uri, live, paused=False, start=None, epoch=epoch
            )
        except BaseException:
            # The client is told it failed: no stream stays behind (to be retried at a restart, or, in
            # cluster mode, owned and running on no node until its lease runs out).
            self.held.pop(stream_id, None)
            with contextlib.suppress(Exception):
                await self._store.delete(stream_id)
            raise

    def _stream_settings(
        self, body: StreamBody, uri: str, live: bool, start: Position | None
    ) -> tuple[SourceSettings, PipelineSettings]:
        """Its decoder's settings and its frame bounds: threads by the streams running, frames by its
        fps (streams/budget.py)."""
        config = self._config
        options = body.source.options
        source = SourceSettings(
            uri=uri,
            is_live=live,
            fps_cap=body.fps,
            loop=options.loop,
            realtime=options.realtime,
            rtsp_transport=options.rtsp_transport,
            stall_timeout_s=options.timeout_s or config.stall_timeout_s,
            reconnect_max_s=config.reconnect_max_s,
            max_reconnects=options.max_reconnects,
            start=start,
            egress=self.ends.egress,
            keyframe_only=config.keyframe_only_decoding,
            skip_loop_filter=config.skip_loop_filter,
            decoder_threads=decoder_threads(
                len(self._pipelines) + 1, usable_cores(), bool(body.fps and config.keyframe_only_decoding)
            ),
            motion=body.motion,
        )
        policy = DropPolicy(body.drop_policy or ("drop_oldest" if live else "wait"))
        return source, PipelineSettings(
            held_frames(config.buffer_frames, body.fps),
            held_frames(config.frames_in_flight, body.fps),
            policy,
            config.checkpoint_interval_s,
            body.scene,
            config.live_batch_wait_s,
        )

    async def _launch(
        self,
        stream_id: int,
        body: StreamBody,
        plan: ChainPlan,
        chain_name: str,
        uri: str,
        live: bool,
        *,
        paused: bool,
        start: Position | None,
        epoch: int | None = None,
    ) -> StreamPipeline:
        source, settings = self._stream_settings(body, uri, live, start)
        fence = None if epoch is None or self.node_id is None else Fence(self.node_id, epoch)
        sinks = [
            self.ends.sink(stream_id, body.name, index, sink, epoch) for index, sink in enumerate(body.sinks)
        ]
        self._observe_sinks(stream_id, list(enumerate(sinks)))
        pipeline = StreamPipeline(
            stream_id,
            body.name,
            chain_name,
            source,
            plan,
            sinks,
            self._runner,
            settings,
            self._metrics,
            run=await self._store.start_run(stream_id),
            checkpoint=lambda position: self._store.save_checkpoint(stream_id, position, fence),
            lease=None if fence is None else (fence.epoch, fence.node_id),
        )
        try:
            await pipeline.start(paused=paused)
        except BaseException:
            await pipeline.stop()  # closes what started (a sink that refused its file, say)
            raise
        self._pipelines[stream_id] = pipeline
        self.bodies[stream_id] = body
        watcher = asyncio.create_task(self._watch(pipeline), name=f"stream-{stream_id}-watch")
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return pipeline

    def _observe_sinks(self, stream_id: int, sinks: list[tuple[int, Sink]]) -> None:
        if self._metrics is None:
            return
        for index, sink in sinks:
            sink.stats.observe = self._metrics.sink_observer(str(stream_id), str(index))
            sink.stats.observe_delivery = self._metrics.sink_delivery.labels(
                str(stream_id), str(index)
            ).observe

    async def _watch(self, pipeline: StreamPipeline) -> None:
        """Persist the end of a stream (finished or error) so a restart does not replay it."""
        await pipeline.done.wait()
        if pipeline.state not in (StreamState.FINISHED, StreamState.ERROR):
            return
        if pipeline.lease is None:
            await self._store.set_desired(pipeline.stream_id, pipeline.state.value)
            return
        # Cluster mode: only its holder at this epoch may end it. It keeps the lease while its sinks
        # deliver what they spooled (if this node dies meanwhile, another takes that over), then releases.
        epoch, node_id = pipeline.lease
        if self.held.get(pipeline.stream_id) == epoch:
            del self.held[pipeline.stream_id]
            self.draining[pipeline.stream_id] = epoch
        await self._store.set_desired(pipeline.stream_id, pipeline.state.value, fence=Fence(node_id, epoch))
        await self._release_when_delivered(pipeline, Fence(node_id, epoch))

    async def _release_when_delivered(self, pipeline: StreamPipeline, fence: Fence) -> None:
        """Cluster mode: release an ended stream's lease once its sinks are idle, unless this node lost
        it meanwhile (deleted, claimed elsewhere, or this node leaving: that releases it)."""
        stream_id = pipeline.stream_id

        def ours() -> bool:
            return self._pipelines.get(stream_id) is pipeline and self.draining.get(stream_id) == fence.epoch

        # Polled: idleness is several sinks' queues and spools, and a few checks a second cost nothing.
        while ours() and not all(sink.idle for sink in pipeline.sinks):  # noqa: ASYNC110
            await asyncio.sleep(DRAIN_POLL_S)
        if not ours():
            return
        del self.draining[stream_id]
        try:
            await self._store.set_desired(stream_id, pipeline.state.value, fence=fence, release=True)
        except Exception as exc:  # the lease then runs out; nothing is left to deliver
            logger.warning("stream %d: cannot release its lease after delivering: %s", stream_id, exc)

    async def drain_stored(self, record: StreamRecord, body: StreamBody, epoch: int | None = None) -> None:
        """An ended stream listed with its state, and its webhook and MQTT sinks that still hold spooled
        records started to deliver them: after a restart, or in cluster mode when this node claimed the
        delivery from a node that died or left. Nothing is decoded again."""
        stream_id = record.stream_id
        chain_name = body.chain if isinstance(body.chain, str) else INLINE
        pipeline = self._show(stream_id, body, chain_name, StreamState(record.desired), None)
        if epoch is not None:
            self.held.pop(stream_id, None)
            self.draining[stream_id] = epoch
        candidates = [
            (index, sink)
            for index, sink in enumerate(body.sinks)
            if not isinstance(sink, JsonlSinkBody)
            and (epoch is not None or await asyncio.to_thread(self.ends.spool_dir(stream_id, index).is_dir))
        ]
        started: list[tuple[int, Sink]] = []
        for index, sink_body in candidates:
            sink = self.ends.sink(stream_id, body.name, index, sink_body, epoch)
            try:
                await sink.start()
            except Exception as exc:  # supervision boundary: the spool stays for a later start
                logger.warning("stream %d: sink %d cannot deliver its spool now: %s", stream_id, index, exc)
                continue
            if sink.idle:  # nothing spooled after all
                await sink.close()
                continue
            started.append((index, sink))
        self._observe_sinks(stream_id, started)
        pipeline.sinks = [sink for _, sink in started]
        if started:
            logger.info("stream %d (%s): delivering what its sinks spooled", stream_id, record.desired)
        if epoch is not None and self.node_id is not None:
            task = asyncio.create_task(
                self._release_when_delivered(pipeline, Fence(self.node_id, epoch)),
                name=f"stream-{stream_id}-drain",
            )
            self._watchers.add(task)
            task.add_done_callback(self._watchers.discard)

    def get(self, stream_id: int) -> StreamPipeline:
        pipeline = self._pipelines.get(stream_id)
        if pipeline is None:
            raise NotFoundError(f"stream {stream_id} does not exist", code="stream_not_found")
        return pipeline

    def statuses(self) -> list[tuple[str, StreamStatus]]:
        """Every stream's status with its metric label (its id), for the gauges read at scrape time."""
        return [(str(pipeline.stream_id), pipeline.status()) for pipeline in self.all()]

    def all(self) -> list[StreamPipeline]:
        return [self._pipelines[sid] for sid in sorted(self._pipelines)]

    async def pause(self, stream_id: int) -> StreamPipeline:
        pipeline = self.get(stream_id)
        require(pipeline.state, PAUSABLE, "pause", stream_id)
        pipeline.pause()
        await self._record_desired(stream_id, "paused")
        return pipeline

    async def resume(self, stream_id: int) -> StreamPipeline:
        pipeline = self.get(stream_id)
        require(pipeline.state, RESUMABLE, "resume", stream_id)
        pipeline.resume()
        await self._record_desired(stream_id, "running")
        return pipeline

    async def _record_desired(self, stream_id: int, desired: str) -> None:
        """Store a pause or resume made here. `changed_s` says when it reached the database (inf while on
        its way): a lease round that read the row before must not undo it (ClusterNode._follow)."""
        self.changed_s[stream_id] = math.inf
        try:
            await self._store.set_desired(stream_id, desired)
        finally:
            self.changed_s[stream_id] = time.monotonic()

    async def delete(self, stream_id: int) -> None:
        """Delete always deletes: a sink that cannot flush (a full disk) is logged and its loss counted,
        and the row and spools go all the same."""
        pipeline = self.get(stream_id)
        try:
            await pipeline.stop()
        except Exception:  # supervision boundary: stopping may fail, deleting must not
            logger.exception("stream %d: stopping it failed; deleting it anyway", stream_id)
        # Its webhook spools go too (also those of a stream only listed since a restart, which has no
        # sink objects): nothing will ever deliver them.
        spools = [self.ends.spool_dir(stream_id, index) for index in range(len(self.bodies[stream_id].sinks))]
        await asyncio.to_thread(_remove_dirs, spools)
        del self._pipelines[stream_id]
        self.bodies.pop(stream_id, None)
        self.held.pop(stream_id, None)
        self.draining.pop(stream_id, None)
        self.changed_s.pop(stream_id, None)
        await self._store.delete(stream_id)

    async def resume_all(self) -> int:
        """Restart what was running or paused before the last stop (or crash); show what had ended, and
        deliver what its sinks still had spooled."""
        resumed = 0
        for record in await self._store.all():
            body = StreamBody.model_validate(record.definition)
            if record.desired in ("finished", "error"):
                await self.drain_stored(record, body)
                continue
            if await self.start_stored(record, body):
                resumed += 1
        return resumed

    async def start_stored(self, record: StreamRecord, body: StreamBody, epoch: int | None = None) -> bool:
        """Start a stored stream from its checkpoint (at a restart, or when this node claimed it); one that
        cannot start is shown in `error` and False returned."""
        chain_name = body.chain if isinstance(body.chain, str) else INLINE
        try:
            plan, chain_name = await self._catalogue.stream_plan(body.chain)
            uri, live = await self.ends.check_source(body.source)
            # Its JSONL paths again: this node's result roots may differ from those of the node that
            # accepted it (cluster mode), or the configuration changed since.
            await self.ends.check_sinks(body.sinks, urls=False)
            await self._launch(
                record.stream_id,
                body,
                plan,
                chain_name,
                uri,
                live,
                paused=record.desired == "paused",
                start=record.checkpoint,
                epoch=epoch,
            )
        except Exception as exc:  # supervision boundary: one broken stream must not stop the others
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            logger.warning("stream %d cannot resume: %s", record.stream_id, message)
            self._show(record.stream_id, body, chain_name, StreamState.ERROR, f"cannot resume: {message}")
            return False
        return True

    def forget(self, stream_id: int) -> StreamPipeline | None:
        """Cluster mode: this node no longer runs the stream (lease lost or row deleted elsewhere); the
        caller stops the returned pipeline."""
        self.held.pop(stream_id, None)
        self.draining.pop(stream_id, None)
        self.changed_s.pop(stream_id, None)
        self.bodies.pop(stream_id, None)
        return self._pipelines.pop(stream_id, None)

    async def remove_spools(self, stream_id: int, sinks: int) -> None:
        await asyncio.to_thread(
            _remove_dirs, [self.ends.spool_dir(stream_id, index) for index in range(sinks)]
        )

    def _show(
        self, stream_id: int, body: StreamBody, chain_name: str, state: StreamState, last_error: str | None
    ) -> StreamPipeline:
        """A stream that ended before the restart (or cannot resume): listed with its state, not run."""
        source = SourceSettings(uri=body.source.uri, is_live=body.source.uri.startswith(NETWORK_SCHEMES))
        pipeline = StreamPipeline(
            stream_id,
            body.name,
            chain_name,
            source,
            ChainPlan(roots=(), data=()),
            [],
            self._runner,
            PipelineSettings(1, 1, DropPolicy.WAIT),
            self._metrics,
        )
        pipeline.state = state
        if last_error is not None:
            pipeline.error.set(last_error)
        self._pipelines[stream_id] = pipeline
        self.bodies[stream_id] = body
        return pipeline

    async def close(self) -> None:
        await asyncio.gather(
            *(pipeline.stop() for pipeline in self._pipelines.values()), return_exceptions=True
        )
        for watcher in list(self._watchers):
            watcher.cancel()
        self._pipelines.clear()


def _remove_dirs(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
