"""DeepDetect's service listing: `GET /services/{name}` and the `head.services` list of `/info`, built from
recognition specs (a DeepDetect service is a streamd recognition spec run with its current version)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streamd.api.context import services
from streamd.api.http import json_response
from streamd.chains.spec import DD_SERVICE_NOT_FOUND, ChainError
from streamd.store.recognition import RecognitionRepository, SpecRecord

MAX_LISTED = 1000  # /info lists at most this many services (DeepDetect has no paging either)


def service_info(spec: SpecRecord) -> dict[str, Any]:
    """DeepDetect's short service description (its `/info` entries)."""
    boxes = any(output.labels.roi == "BBOX" for output in spec.output_specs)
    return {
        "name": spec.name,
        "description": spec.description,
        "mllib": "tensorflow",
        "mltype": "detection" if boxes else "classification",
        "type": "supervised",
        "predict": spec.current_version_id is not None,
        "training": False,
    }


async def service_list(recognition: RecognitionRepository) -> list[dict[str, Any]]:
    """DeepDetect's service list: one entry per recognition spec (the first `MAX_LISTED`)."""
    _, specs = await recognition.specs(0, MAX_LISTED)
    return [service_info(spec) for spec in specs]


async def get_service(request: web.Request) -> web.Response:
    """DeepDetect's `GET /services/{name}`: the service's description and its labels."""
    name = request.match_info["name"]
    specs = await services(request).recognition.specs_named(name)
    if not specs:
        raise ChainError(
            f"service {name[:100]!r} does not exist: a service is a recognition spec's name "
            "(GET /info lists them)",
            dd_code=DD_SERVICE_NOT_FOUND,
            http_status=404,
            code="service_not_found",
        )
    spec = specs[0]
    labels = [label.name for output in spec.output_specs for label in output.labels.labels]
    body = {
        **service_info(spec),
        "labels": labels,
        "jobs": [],
        "repository": f"recognition/specs/{spec.spec_id}",
    }
    return json_response(
        {
            "status": {"code": 200, "msg": "OK"},
            "head": {"method": f"/services/{name}"},
            "body": body,
        }
    )
