"""`/v0.7/tasks`: deployment and inference outcomes, one by id or several by `task_ids`."""

from __future__ import annotations

import re

from aiohttp import web

from streamd.api.context import services
from streamd.api.http import MAX_PAGE_SIZE, int_id, json_response, page_params, paginated
from streamd.errors import InvalidRequestError

_TASK_ID = re.compile(r"[1-9][0-9]{0,18}")
# Described in /openapi.json; read by _task_ids below.
TASK_IDS = {
    "name": "task_ids",
    "in": "query",
    "required": False,
    "style": "form",
    "explode": True,
    "description": "Only these tasks: task_ids=1&task_ids=2 (the official client) or task_ids=1,2.",
    "schema": {"type": "array", "items": {"type": "integer", "minimum": 1}},
}


async def get_task(request: web.Request) -> web.Response:
    record = await services(request).tasks.get(int_id(request, "task_id", "task"))
    return json_response(record.to_api())


async def list_tasks(request: web.Request) -> web.Response:
    offset, limit = page_params(request)
    task_ids = _task_ids(request)
    count, records = await services(request).tasks.page(task_ids, offset, limit)
    return paginated(request, count, offset, limit, [record.to_api() for record in records])


def _task_ids(request: web.Request) -> list[int] | None:
    """`task_ids=1&task_ids=2` (the official client) or `task_ids=1,2`."""
    raw = request.query.getall("task_ids", [])
    if not raw:
        return None
    ids = []
    for value in raw:
        for part in value.split(","):
            if not _TASK_ID.fullmatch(part):
                raise InvalidRequestError(
                    f"task_ids must be positive integers, got {part[:40]!r}", code="invalid_query"
                )
            ids.append(int(part))
    if len(ids) > MAX_PAGE_SIZE:
        raise InvalidRequestError(f"at most {MAX_PAGE_SIZE} task_ids per request", code="invalid_query")
    return ids
