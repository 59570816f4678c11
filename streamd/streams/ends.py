"""A stream's two ends: the source it may read (a network URL the egress rules allow, or a video file
under a media root) and the sinks it writes (JSONL files under a result root, never a media root;
network sinks with their spools: on disk under `<data_dir>/spool/`, or in cluster mode in PostgreSQL).

In cluster mode a stream may move to another node, so what its sinks leave must be reachable from every
node: JSONL files only under the configured `storage.result_roots` (shared, not `<data_dir>/results`),
spools in the `sink_spool` table."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamd.egress import EgressPolicy
from streamd.entities import Sink
from streamd.errors import InvalidRequestError
from streamd.inference.sources import local_path
from streamd.settings import StreamsConfig
from streamd.sinks.db_spool import DatabaseSpool
from streamd.sinks.jsonl import JsonlSink, check_existing
from streamd.sinks.mqtt import MqttSink
from streamd.sinks.spool import DiskSpool, RecordSpool
from streamd.sinks.webhook import WebhookSink
from streamd.store.db import Database
from streamd.store.spools import SpoolKey
from streamd.streams.bodies import JsonlSinkBody, MqttSinkBody, SourceBody, StreamBody, WebhookSinkBody
from streamd.video.source import NETWORK_SCHEMES, redact

# FFmpeg's demuxers for single images (PNG, JPEG, BMP... are "<codec>_pipe"): a picture is not a stream.
STILL_IMAGE_FORMATS = frozenset({"image2", "image2pipe"})

SinkBody = JsonlSinkBody | WebhookSinkBody | MqttSinkBody


class StreamEnds:
    """Checks a stream's source and sink paths, and builds its sinks."""

    def __init__(
        self,
        config: StreamsConfig,
        egress: EgressPolicy,
        data_dir: Path,
        media_roots: tuple[Path, ...],
        result_roots: tuple[Path, ...],
        *,
        spool_db: Database | None = None,
    ) -> None:
        self._config = config
        self.egress = egress
        self._data_dir = data_dir
        self._media_roots = media_roots
        # Relative paths resolve under the first. On one node <data_dir>/results comes first; in cluster
        # mode only the configured (shared) roots are given, and there may be none.
        self._result_roots = result_roots
        self._spool_db = spool_db  # cluster mode: network sinks spool to PostgreSQL through it

    @property
    def cluster(self) -> bool:
        """Cluster mode: spools in PostgreSQL, JSONL files only under the configured (shared) roots."""
        return self._spool_db is not None

    async def check_source(self, source: SourceBody) -> tuple[str, bool]:
        """The URI FFmpeg opens and whether it is live; local files must be videos under a media root."""
        uri = source.uri
        if uri.startswith(NETWORK_SCHEMES):
            await self.egress.check_url("source", uri)
            return uri, True
        path_text = uri.removeprefix("file://")
        return await asyncio.to_thread(self._check_file, path_text), False

    def _check_file(self, path_text: str) -> str:
        path = Path(path_text)
        roots = self._media_roots
        if not path.is_absolute():
            path = roots[0] / path
        resolved = local_path(str(path), f"source {path_text!r}", roots)
        if not resolved.is_file():
            raise InvalidRequestError(
                f"source {path_text!r} does not exist (looked for {resolved})", code="invalid_source"
            )
        try:
            import av

            with av.open(str(resolved)) as container:
                if not container.streams.video:
                    raise InvalidRequestError(
                        f"source {path_text!r} has no video stream", code="invalid_source"
                    )
                if container.format.name in STILL_IMAGE_FORMATS or container.format.name.endswith("_pipe"):
                    raise InvalidRequestError(
                        f"source {path_text!r} is a still image ({container.format.name}), not a video: "
                        "run a chain on it with POST /chain/{name} instead",
                        code="invalid_source",
                    )
        except av.error.FFmpegError as exc:
            raise InvalidRequestError(
                f"source {path_text!r} is not a readable video: {exc}", code="invalid_source"
            ) from None
        return str(resolved)

    async def check_sinks(self, sinks: Sequence[SinkBody], *, urls: bool = True) -> None:
        """400 for a JSONL path outside the result roots (or a file that is not a results file) and,
        with `urls`, for a network sink's URL the egress rules refuse."""
        for index, sink in enumerate(sinks):
            if isinstance(sink, JsonlSinkBody):
                await asyncio.to_thread(self.jsonl_path, sink.path)
            elif urls:
                await self.egress.check_url(f"sinks[{index}]", sink.url)

    def sink(self, stream_id: int, name: str, index: int, body: SinkBody, epoch: int | None = None) -> Sink:
        """The sink `body` describes; `epoch` is the stream's lease in cluster mode (it fences the spool)."""
        config = self._config
        # What both network sinks take: their memory bound, their spool, the egress rules.
        spooling: dict[str, Any] = {
            "queue_max": config.webhook_queue_records,
            "spool": self._spool(stream_id, index, epoch),
            "egress": self.egress,
        }
        if isinstance(body, MqttSinkBody):
            return MqttSink(
                body.url,
                topic=body.topic_for(stream_id, name),
                qos=body.qos,
                username=body.username,
                password=body.password,
                tls=body.tls,
                timeout_s=body.timeout_s,
                events_only=body.events_only,
                **spooling,
            )
        if isinstance(body, WebhookSinkBody):
            return WebhookSink(
                body.url,
                headers=body.headers,
                timeout_s=body.timeout_s,
                batch_size=body.batch_size,
                display_url=redact(body.url),
                **spooling,
            )
        return JsonlSink(self._results_path(body.path), body.rotate_bytes)

    def spool_dir(self, stream_id: int, index: int) -> Path:
        return self._data_dir / "spool" / f"stream-{stream_id}-sink-{index}"

    def _spool(self, stream_id: int, index: int, epoch: int | None) -> RecordSpool:
        max_bytes = self._config.spool_max_bytes
        if self._spool_db is None:
            return DiskSpool(self.spool_dir(stream_id, index), max_bytes)
        if epoch is None:
            raise RuntimeError(f"stream {stream_id}: in cluster mode a stream runs only under its lease")
        return DatabaseSpool(self._spool_db, SpoolKey(stream_id, index), epoch, max_bytes)

    def _results_path(self, path_text: str) -> Path:
        """A sink's path as given: absolute, or relative to the first result root (not yet checked)."""
        path = Path(path_text)
        return path if path.is_absolute() or not self._result_roots else self._result_roots[0] / path

    def anchored(self, body: StreamBody) -> StreamBody:
        """Cluster mode: the body as stored, its relative JSONL paths made absolute under this node's first
        result root, so that a node whose roots are listed in another order writes the same file."""
        if not self.cluster or not self._result_roots:
            return body
        sinks = [
            sink.model_copy(update={"path": str(self._results_path(sink.path))})
            if isinstance(sink, JsonlSinkBody)
            else sink
            for sink in body.sinks
        ]
        return body.model_copy(update={"sinks": sinks})

    def jsonl_path(self, path_text: str) -> Path:
        """The file a JSONL sink writes: under a result root (never a media root), and either new or a
        results file streamd wrote. Blocking (resolves links, reads the file's end): call in a thread."""
        path = self._results_path(path_text)
        roots = self._result_roots
        # pathlib already drops "." parts; ".." is refused outright rather than resolved. A link may not
        # lead out of the roots either.
        if ".." in path.parts or not any(path.resolve().is_relative_to(root.resolve()) for root in roots):
            raise InvalidRequestError(self._outside_roots(path_text), code="invalid_sink")
        check_existing(path)
        return path

    def _outside_roots(self, path_text: str) -> str:
        if not self._result_roots:
            return (
                f"jsonl path {path_text!r} cannot be written in cluster mode: no shared results root is "
                "configured. A stream may move to another node, so its JSONL file must be on a directory "
                "every node mounts at the same path (a ReadWriteMany volume): set storage.result_roots "
                "to it, or use a webhook or MQTT sink"
            )
        where = (
            f"jsonl path {path_text!r} must be relative (under {self._result_roots[0]}) or inside a "
            "result root (storage.result_roots)"
        )
        if self.cluster:
            return (
                f"{where}; in cluster mode only those shared roots, not <data_dir>/results (this node's "
                "own disk: the stream may move to another node); media roots are never written to"
            )
        return f"{where}; media roots are never written to"
