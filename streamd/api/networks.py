"""`/v0.7/networks`: register (multipart), list, retrieve, patch, delete; public networks by slug.

Handlers run on the loop; uploads stream to disk through worker threads (in cluster mode then into
PostgreSQL, streamd.store.blobs) and deployment runs on the deploy thread (streamd.inference.deployment).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from streamd.api.context import Services, services
from streamd.api.formdata import decode_leaves, structured_field, unflatten
from streamd.api.http import (
    int_id,
    json_response,
    no_content,
    page_params,
    paginated,
    read_json_object,
    validate,
)
from streamd.api.uploads import read_upload
from streamd.errors import InvalidRequestError, NotFoundError
from streamd.networks.files import check_file_set
from streamd.networks.meanfile import load_mean
from streamd.networks.public import PublicNetwork
from streamd.networks.spec import NetworkPatch, NetworkSpec, Preprocessing

CREATE_FIELDS = ("name", "description", "metadata", "framework", "preprocessing", "postprocessings")
MUTABLE_FIELDS = ("name", "description", "metadata")
READ_ONLY_FIELDS = (
    "id",
    "framework",
    "preprocessing",
    "postprocessings",
    "task_id",
    "create_date",
    "update_date",
)


def is_create_field(part_name: str) -> bool:
    """Whether a multipart part is a field of the network (top-level or flattened), not a file."""
    return any(part_name == name or part_name.startswith((f"{name}.", f"{name}[")) for name in CREATE_FIELDS)


async def create_network(request: web.Request) -> web.Response:
    svc = services(request)
    loop = asyncio.get_running_loop()
    staged = await loop.run_in_executor(None, svc.networks.new_staging_dir)
    try:
        record = await _register(request, svc, staged)
    except BaseException as exc:
        cleanup = loop.run_in_executor(None, svc.networks.discard_staged, staged)
        if not isinstance(exc, asyncio.CancelledError):
            await cleanup
        raise
    svc.deployer.start(record)
    return json_response(record.to_api(), status=201)


async def _register(request: web.Request, svc: Services, staged: Path) -> Any:
    server = svc.settings.server
    upload = await read_upload(
        request, staged, is_create_field, server.upload_max_bytes, server.json_max_bytes
    )
    spec = network_spec(upload.fields)
    check_file_set(upload.files, spec.preprocessing)
    await asyncio.get_running_loop().run_in_executor(None, _check_mean_files, staged, spec.preprocessing)
    return await svc.networks.create(spec, upload.files, staged)


def network_spec(fields: dict[str, str]) -> NetworkSpec:
    """Build the spec from text fields, in the curl form (JSON text) or the official client's form."""
    form = unflatten(fields)
    unknown = sorted(set(form) - set(CREATE_FIELDS))
    if unknown:
        raise InvalidRequestError(
            f"unknown field {', '.join(unknown)}; accepted fields: {', '.join(CREATE_FIELDS)} and file parts",
            code="invalid_field",
        )
    data: dict[str, Any] = {key: form[key] for key in ("name", "description", "framework") if key in form}
    if "preprocessing" in form:
        data["preprocessing"] = structured_field(form, "preprocessing")
    for free_form in ("metadata", "postprocessings"):
        if free_form in form:
            value = form[free_form]
            # JSON text keeps its types; flattened leaves are all text and get them back by decoding.
            data[free_form] = (
                structured_field(form, free_form) if isinstance(value, str) else decode_leaves(value)
            )
    return validate(NetworkSpec, data, "network")


def _check_mean_files(staged: Path, preprocessing: Preprocessing) -> None:
    for item in preprocessing.inputs:
        if item.image.mean_file is not None:
            load_mean(staged / item.image.mean_file, item.image.dimension_order)


async def list_networks(request: web.Request) -> web.Response:
    offset, limit = page_params(request)
    count, records = await services(request).networks.page(offset, limit)
    return paginated(request, count, offset, limit, [record.to_api() for record in records])


async def get_network(request: web.Request) -> web.Response:
    record = await services(request).networks.get(int_id(request, "network_id", "network"))
    return json_response(record.to_api())


async def patch_network(request: web.Request) -> web.Response:
    network_id = int_id(request, "network_id", "network")
    body = await read_json_object(request, "the body must be a JSON object of fields to change")
    for key in body:
        if key in READ_ONLY_FIELDS:
            raise InvalidRequestError(
                f"field {key!r} cannot be changed once the network exists; only "
                f"{', '.join(MUTABLE_FIELDS)} can. Register a new network instead.",
                code="immutable_field",
            )
    patch = validate(NetworkPatch, body, "network update")
    svc = services(request)
    record = await svc.networks.update(network_id, patch)
    svc.runtime.retune(record)
    return json_response(record.to_api())


async def delete_network(request: web.Request) -> web.Response:
    svc = services(request)
    network_id = int_id(request, "network_id", "network")
    record = await svc.networks.get(network_id)
    await svc.networks.delete(network_id)
    await svc.runtime.unload(network_id)
    if not record.deployed:
        await svc.tasks.finish(
            record.task_id, "error", error=f"network {network_id} was deleted before its deployment finished"
        )
    return no_content()


async def list_public_networks(request: web.Request) -> web.Response:
    offset, limit = page_params(request)
    catalogue = list(services(request).public_networks.values())
    page = catalogue[offset : offset + limit]
    return paginated(request, len(catalogue), offset, limit, [entry.to_api() for entry in page])


def public_network(request: web.Request) -> PublicNetwork:
    """The public network the path's slug names; 404 if none."""
    slug = request.match_info["slug"]
    entry = services(request).public_networks.get(slug)
    if entry is None:
        raise NotFoundError(
            f"public network {slug!r} does not exist; GET /v0.7/networks/public lists them",
            code="network_not_found",
        )
    return entry


async def get_public_network(request: web.Request) -> web.Response:
    return json_response(public_network(request).to_api())
