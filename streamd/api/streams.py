"""`/v0.7/streams`: attach a chain to a camera or a video file, watch its state, pause, resume, delete."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from streamd.api.cluster import owner_snapshot, remote_fields, set_remote_desired, shared_record
from streamd.api.context import Services, services
from streamd.api.http import int_id, json_response, no_content, page_params, paginated, read_json, validate
from streamd.errors import NotFoundError
from streamd.store.streams import StreamRecord
from streamd.streams.bodies import MqttSinkBody, StreamBody, WebhookSinkBody
from streamd.streams.pipeline import StreamPipeline
from streamd.video.source import redact


def stream_object(svc: Services, pipeline: StreamPipeline) -> dict[str, Any]:
    """A stream as the API shows it: its definition with secrets redacted, then its status."""
    status = pipeline.status().to_api()
    if svc.cluster is not None:
        epoch = pipeline.lease[0] if pipeline.lease is not None else None
        status.update(node=svc.cluster.info.node_id, epoch=epoch, status_age_s=0.0)
    body = svc.streams.bodies[pipeline.stream_id]
    return _object(pipeline.stream_id, pipeline.name, pipeline.chain_name, body, status)


def _remote_object(record: StreamRecord) -> dict[str, Any]:
    body, chain, status = remote_fields(record)
    return _object(record.stream_id, record.name, chain, body, status)


def _object(
    stream_id: int, name: str, chain: str, body: StreamBody, status: dict[str, Any]
) -> dict[str, Any]:
    sinks = []
    for sink in body.sinks:
        data = sink.model_dump()
        if isinstance(sink, WebhookSinkBody):
            data["url"] = redact(sink.url)
            data["headers"] = {key: "***" for key in sink.headers}
        elif isinstance(sink, MqttSinkBody):
            data["url"] = redact(sink.url)
            if sink.password is not None:
                data["password"] = "***"
        sinks.append(data)
    return {
        "id": stream_id,
        "name": name,
        "source": {"uri": redact(body.source.uri), "options": body.source.options.model_dump()},
        "chain": chain,
        "fps": body.fps,
        "drop_policy": body.drop_policy,
        "sinks_config": sinks,
        **({"motion": body.motion.model_dump()} if body.motion is not None else {}),
        **({"scene": body.scene.model_dump()} if body.scene is not None else {}),
        **status,
    }


async def create_stream(request: web.Request) -> web.Response:
    svc = services(request)
    body = validate(StreamBody, await read_json(request), "stream")
    plan, chain_name = await svc.chain_catalogue.stream_plan(body.chain)
    pipeline = await svc.streams.create(body, plan, chain_name)
    if isinstance(pipeline, int):  # cluster mode, this node full: stored, for another node to claim
        return json_response(_remote_object(await shared_record(svc, pipeline)), status=201)
    return json_response(stream_object(svc, pipeline), status=201)


async def list_streams(request: web.Request) -> web.Response:
    svc = services(request)
    offset, limit = page_params(request)
    if svc.cluster is not None:  # every node lists every stream: the rows are the truth
        records = await svc.cluster.store.shared()
        return paginated(
            request,
            len(records),
            offset,
            limit,
            [await _view(svc, record) for record in records[offset : offset + limit]],
        )
    pipelines = svc.streams.all()
    return paginated(
        request,
        len(pipelines),
        offset,
        limit,
        [stream_object(svc, p) for p in pipelines[offset : offset + limit]],
    )


async def _view(svc: Services, record: StreamRecord) -> dict[str, Any]:
    if record.stream_id in svc.streams.bodies:
        return stream_object(svc, svc.streams.get(record.stream_id))
    return _remote_object(record)


async def get_stream(request: web.Request) -> web.Response:
    svc = services(request)
    stream_id = int_id(request, "stream_id", "stream")
    if svc.cluster is not None:
        return json_response(await _view(svc, await shared_record(svc, stream_id)))
    return json_response(stream_object(svc, svc.streams.get(stream_id)))


async def _set_desired(request: web.Request, desired: str) -> web.Response:
    svc = services(request)
    stream_id = int_id(request, "stream_id", "stream")
    if svc.cluster is not None and stream_id not in svc.streams.bodies:
        await set_remote_desired(svc, await shared_record(svc, stream_id), desired)
        return json_response(_remote_object(await shared_record(svc, stream_id)))
    change = svc.streams.pause if desired == "paused" else svc.streams.resume
    return json_response(stream_object(svc, await change(stream_id)))


async def pause_stream(request: web.Request) -> web.Response:
    return await _set_desired(request, "paused")


async def resume_stream(request: web.Request) -> web.Response:
    return await _set_desired(request, "running")


async def delete_stream(request: web.Request) -> web.Response:
    svc = services(request)
    stream_id = int_id(request, "stream_id", "stream")
    if svc.cluster is not None and stream_id not in svc.streams.bodies:
        # Another node runs it (or none does): the row goes; its owner stops it and removes its
        # spools at its next renewal.
        await shared_record(svc, stream_id)
        await svc.cluster.store.delete(stream_id)
        return no_content()
    await svc.streams.delete(stream_id)
    return no_content()


async def stream_snapshot(request: web.Request) -> web.Response:
    """The latest processed frame as a JPEG, with the chain's boxes and labels drawn."""
    from streamd.streams.snapshot import render

    svc = services(request)
    stream_id = int_id(request, "stream_id", "stream")
    if svc.cluster is not None and stream_id not in svc.streams.bodies:
        return await owner_snapshot(request, svc, stream_id)
    pipeline = svc.streams.get(stream_id)
    if pipeline.latest is None:
        raise NotFoundError(f"stream {pipeline.stream_id} has processed no frame yet", code="no_snapshot")
    pixels, prediction = pipeline.latest
    jpeg = await asyncio.to_thread(render, pixels, prediction)
    return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"})
