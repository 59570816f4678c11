"""`/v0.7/streams`: attach a chain to a camera or a video file, watch its state, pause, resume, delete."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from streamd.api.context import Services, services
from streamd.api.http import int_id, json_response, no_content, page_params, paginated, read_json, validate
from streamd.errors import NotFoundError
from streamd.streams.bodies import MqttSinkBody, StreamBody, WebhookSinkBody
from streamd.streams.pipeline import StreamPipeline
from streamd.video.source import redact


def stream_object(svc: Services, pipeline: StreamPipeline) -> dict[str, Any]:
    """A stream as the API shows it: its definition with secrets redacted, then its status."""
    body = svc.streams.bodies[pipeline.stream_id]
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
        "id": pipeline.stream_id,
        "name": pipeline.name,
        "source": {"uri": redact(body.source.uri), "options": body.source.options.model_dump()},
        "chain": pipeline.chain_name,
        "fps": body.fps,
        "drop_policy": body.drop_policy,
        "sinks_config": sinks,
        **({"motion": body.motion.model_dump()} if body.motion is not None else {}),
        **({"scene": body.scene.model_dump()} if body.scene is not None else {}),
        **pipeline.status().to_api(),
    }


async def create_stream(request: web.Request) -> web.Response:
    svc = services(request)
    body = validate(StreamBody, await read_json(request), "stream")
    plan, chain_name = await svc.chain_catalogue.stream_plan(body.chain)
    pipeline = await svc.streams.create(body, plan, chain_name)
    return json_response(stream_object(svc, pipeline), status=201)


async def list_streams(request: web.Request) -> web.Response:
    svc = services(request)
    offset, limit = page_params(request)
    pipelines = svc.streams.all()
    return paginated(
        request,
        len(pipelines),
        offset,
        limit,
        [stream_object(svc, p) for p in pipelines[offset : offset + limit]],
    )


async def get_stream(request: web.Request) -> web.Response:
    svc = services(request)
    return json_response(stream_object(svc, svc.streams.get(int_id(request, "stream_id", "stream"))))


async def pause_stream(request: web.Request) -> web.Response:
    svc = services(request)
    return json_response(stream_object(svc, await svc.streams.pause(int_id(request, "stream_id", "stream"))))


async def resume_stream(request: web.Request) -> web.Response:
    svc = services(request)
    return json_response(stream_object(svc, await svc.streams.resume(int_id(request, "stream_id", "stream"))))


async def delete_stream(request: web.Request) -> web.Response:
    await services(request).streams.delete(int_id(request, "stream_id", "stream"))
    return no_content()


async def stream_snapshot(request: web.Request) -> web.Response:
    """The latest processed frame as a JPEG, with the chain's boxes and labels drawn."""
    from streamd.streams.snapshot import render

    pipeline = services(request).streams.get(int_id(request, "stream_id", "stream"))
    if pipeline.latest is None:
        raise NotFoundError(f"stream {pipeline.stream_id} has processed no frame yet", code="no_snapshot")
    pixels, prediction = pipeline.latest
    jpeg = await asyncio.to_thread(render, pixels, prediction)
    return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"})
