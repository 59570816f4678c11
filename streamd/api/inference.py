"""Inference requests (Deepomatic v0.7): body parsing shared by every inference endpoint, and raw
tensor inference on a network (`POST /v0.7/networks/{id}/inference`, and `/networks/public/{slug}/...`).

Bodies come as JSON, or as multipart when the official client sends files (its keys are flattened
like `inputs[0]image.source`). Sources are fetched and decoded before the task is created, so an image
that does not decode is a 400, not a failed task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web

from streamd.api.body import refuse_large_body
from streamd.api.context import Services, services
from streamd.api.formdata import unflatten
from streamd.api.http import int_id, json_response, read_json, validate
from streamd.api.networks import public_network
from streamd.api.uploads import form_parts, read_field_bytes, read_text_field, reject_repeated_field
from streamd.errors import ConflictError, InvalidRequestError, PayloadTooLargeError
from streamd.inference.bodies import InferenceBody
from streamd.inference.executor import InferenceItem
from streamd.inference.runtime import LoadedNetwork
from streamd.inference.sources import crop_bbox, load_source
from streamd.store.networks import NetworkRecord


@dataclass(frozen=True, slots=True)
class DecodedInput:
    """One input image of an inference request, decoded and cropped, with where it sat in the original."""

    frame: np.ndarray  # BGR, cropped to the input's bbox if any
    offset_x: int  # where the crop starts in the image as sent
    offset_y: int
    width: int  # size of the image as sent
    height: int


async def read_inference_body(request: web.Request, svc: Services) -> InferenceBody:
    """The inference request, JSON or the client's flattened multipart form, validated."""
    if request.content_type == "multipart/form-data":
        refuse_large_body(request, svc.settings.server.json_max_bytes, "server.json_max_bytes")
        raw: Any = unflatten(await _multipart_fields(request, svc.settings.server.json_max_bytes))
    else:
        raw = await read_json(request)
    if not isinstance(raw, dict):
        raise InvalidRequestError("the body must be a JSON object with an 'inputs' list", code="invalid_json")
    return validate(InferenceBody, raw, "inference request")


async def _multipart_fields(request: web.Request, max_bytes: int) -> dict[str, Any]:
    """All parts in memory (bounded): text for plain fields, bytes for file parts."""
    fields: dict[str, Any] = {}
    total = 0
    async for part in form_parts(request):
        assert part.name is not None  # form_parts checked it
        reject_repeated_field(part.name, fields)
        if part.filename is not None:
            fields[part.name] = await read_field_bytes(request, part, part.name)
            total += len(fields[part.name])
        else:
            fields[part.name], size = await read_text_field(request, part, part.name)
            total += size
        if total > max_bytes:
            raise PayloadTooLargeError(f"the request is larger than server.json_max_bytes={max_bytes}")
    return fields


async def decode_inputs(body: InferenceBody, svc: Services, expected: int) -> list[DecodedInput]:
    """Fetch, decode and crop each input (a 400 before any task exists); `expected` inputs, in order."""
    if len(body.inputs) != expected:
        raise InvalidRequestError(
            f"the network takes {expected} input(s) but the request has {len(body.inputs)}; send one "
            "input per preprocessing input, in order",
            code="invalid_field",
        )
    decoded = []
    for index, item in enumerate(body.inputs):
        where = f"inputs[{index}].image.source"
        frame = await load_source(item.image.source, where, svc.settings.inference, svc.settings.media_roots)
        height, width = frame.shape[:2]
        offset_x = offset_y = 0
        if item.image.bbox is not None:
            box = item.image.bbox
            frame = crop_bbox(frame, box.model_dump(), f"inputs[{index}].image.bbox")
            offset_x, offset_y = int(np.floor(box.xmin * width)), int(np.floor(box.ymin * height))
        decoded.append(DecodedInput(frame, offset_x, offset_y, width, height))
    return decoded


async def ready_network(svc: Services, network_id: int) -> tuple[NetworkRecord, LoadedNetwork]:
    """A deployed network, loaded; a 409 naming the task while it still deploys."""
    record = await svc.networks.get(network_id)
    if not record.deployed:
        raise ConflictError(
            f"network {network_id} is still deploying; wait for task {record.task_id} to succeed",
            code="network_not_ready",
        )
    return record, await svc.runtime.network(network_id)


async def network_inference(request: web.Request) -> web.Response:
    svc = services(request)
    record, loaded = await ready_network(svc, int_id(request, "network_id", "network"))
    return await _raw_inference(request, svc, loaded, len(record.preprocessing.inputs))


async def public_network_inference(request: web.Request) -> web.Response:
    svc = services(request)
    entry = public_network(request)
    loaded = await svc.runtime.public(entry)
    return await _raw_inference(request, svc, loaded, len(entry.preprocessing.inputs))


async def _raw_inference(
    request: web.Request, svc: Services, loaded: LoadedNetwork, input_count: int
) -> web.Response:
    body = await read_inference_body(request, svc)
    if not body.output_tensors:
        raise InvalidRequestError(
            'output_tensors is required: name the tensors to read, e.g. ["prob"] (any tensor of the graph)',
            code="invalid_field",
        )
    fetches = loaded.executor.check_fetches(body.output_tensors)
    inputs = await decode_inputs(body, svc, input_count)
    item = InferenceItem(tuple(decoded.frame for decoded in inputs), fetches)
    requested = dict(zip(fetches, body.output_tensors, strict=True))

    async def work() -> dict[str, Any]:
        output = await loaded.infer(item)
        return {
            "tensors": [
                {
                    "name": requested[name],
                    "shape": list(array.shape),
                    "data": np.asarray(array).ravel().tolist(),
                }
                for name, array in output.tensors.items()
            ]
        }

    return json_response({"task_id": await svc.jobs.start(work)})
