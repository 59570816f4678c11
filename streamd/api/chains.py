"""Chains over HTTP: DeepDetect's `PUT|POST /chain/{name}` (run once), and streamd's stored chains
under `/v0.7/chains` (validate and store, list, retrieve, delete, run on data)."""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from streamd.api.body import read_step, refuse_large_body
from streamd.api.context import Services, services
from streamd.api.formdata import check_nesting
from streamd.api.http import json_response, no_content, page_params, paginated, read_json
from streamd.chains.results import predictions_json
from streamd.chains.spec import (
    DD_SERVICE_BAD_REQUEST,
    DD_SERVICE_INPUT_BAD_REQUEST,
    ChainError,
    ChainPlan,
    ChainRunBody,
)
from streamd.errors import ConflictError, InvalidRequestError
from streamd.inference.sources import is_inline, load_source

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


def chain_name(request: web.Request) -> str:
    """The `{name}` of a stored chain's route, checked (a 400 names the allowed characters)."""
    name = request.match_info["name"]
    if not _NAME.match(name):
        raise InvalidRequestError(
            f"chain name {name!r} must be 1-100 letters, digits, '_', '-' or '.', starting with a letter "
            "or digit",
            code="invalid_field",
        )
    return name


async def read_chain_body(request: web.Request) -> Any:
    """A `/chain/{name}` body, whatever its Content-Type: DeepDetect parses it as JSON regardless, and
    its own documentation sends `curl -X PUT ... -d '{...}'` (form-urlencoded). Same size and time
    bounds as every JSON body."""
    refuse_large_body(request, services(request).settings.server.json_max_bytes, "server.json_max_bytes")
    raw = await read_step(request, request.read())
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ChainError(
            f"the request body is not valid JSON: {exc}", dd_code=DD_SERVICE_BAD_REQUEST, code="invalid_json"
        ) from None
    return check_nesting(data, "the request body")


async def execute(svc: Services, plan: ChainPlan, data: tuple[str, ...] | list[str]) -> web.Response:
    """Run a plan once on the given images and answer in DeepDetect's `/chain` format."""
    started = time.monotonic()
    frames = []
    for index, source in enumerate(data):
        frames.append(
            await load_source(source, f"data[{index}]", svc.settings.inference, svc.settings.media_roots)
        )
    # DeepDetect names an inline image (base64) by its index in `data`; echoing megabytes helps nobody.
    uris = [str(index) if is_inline(source) else source for index, source in enumerate(data)]
    predictions = await svc.chains_runner.run(plan, frames, uris)
    return json_response(
        {
            "status": {"code": 200, "msg": "OK"},
            "head": {"method": "/chain", "time": round((time.monotonic() - started) * 1000.0, 1)},
            "body": {"predictions": predictions_json(predictions)},
        }
    )


async def run_chain(request: web.Request) -> web.Response:
    """DeepDetect's `/chain/{name}`: the name only labels the run; nothing is stored."""
    svc = services(request)
    _, plan = await svc.chain_catalogue.plan(await read_chain_body(request), require_data=True)
    return await execute(svc, plan, plan.data)


async def put_chain(request: web.Request) -> web.Response:
    svc = services(request)
    name = chain_name(request)
    body, _ = await svc.chain_catalogue.plan(await read_json(request), require_data=False)
    record, created = await svc.chains.put(
        name, {"calls": [c.model_dump(exclude_none=True) for c in body.calls]}
    )
    return json_response(record.to_api(), status=201 if created else 200)


async def list_chains(request: web.Request) -> web.Response:
    offset, limit = page_params(request)
    count, records = await services(request).chains.page(offset, limit)
    return paginated(request, count, offset, limit, [record.to_api() for record in records])


async def get_chain(request: web.Request) -> web.Response:
    return json_response((await services(request).chains.get(chain_name(request))).to_api())


async def delete_chain(request: web.Request) -> web.Response:
    svc = services(request)
    name = chain_name(request)
    users = svc.streams.uses_chain(name)
    if users:
        raise ConflictError(
            f"chain {name!r} is used by stream(s) {', '.join(map(str, users))}; delete those streams first",
            code="chain_in_use",
        )
    await svc.chains.delete(name)
    return no_content()


async def run_stored_chain(request: web.Request) -> web.Response:
    svc = services(request)
    record = await svc.chains.get(chain_name(request))
    try:
        body = ChainRunBody.model_validate(await read_json(request))
    except ValidationError:
        raise ChainError(
            'the body needs "data": a list of images (data URIs, media paths or URLs)',
            dd_code=DD_SERVICE_INPUT_BAD_REQUEST,
        ) from None
    _, plan = await svc.chain_catalogue.plan(record.definition, require_data=False)
    return await execute(svc, plan, body.data)
