"""Small HTTP helpers shared by the handlers: JSON responses, JSON bodies, ids and pagination."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from streamd.api.body import read_step, refuse_large_body
from streamd.api.context import services
from streamd.api.formdata import check_nesting
from streamd.errors import InvalidRequestError, NotFoundError, UnsupportedMediaTypeError
from streamd.validation import describe_errors

ModelT = TypeVar("ModelT", bound=BaseModel)

_INTEGER = re.compile(r"-?[0-9]{1,19}")
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON answer, serialised by orjson (NumPy values included)."""
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        content_type="application/json",
    )


def no_content() -> web.Response:
    return web.Response(status=204, content_type="application/json")


# What aiohttp reports when no Content-Type is given is application/octet-stream.
_JSON_TYPES = frozenset({"application/json", "application/octet-stream"})


def _declared_json(content_type: str) -> bool:
    return content_type in _JSON_TYPES or content_type.endswith("+json")


def _not_json(content_type: str) -> UnsupportedMediaTypeError:
    return UnsupportedMediaTypeError(
        f"this endpoint takes a JSON object as its body; got Content-Type {content_type!r} and a body that "
        "is not one. Send JSON with 'Content-Type: application/json' (curl: -H 'Content-Type: "
        "application/json'), or multipart/form-data (curl -F) where an endpoint takes files"
    )


async def read_json(request: web.Request) -> Any:
    """The body as JSON. A body that parses as a JSON object is taken whatever its declared type:
    `curl -d '{...}'` labels it application/x-www-form-urlencoded. Under another declared type, a body
    that is not a JSON object is a 415; under a JSON type, invalid JSON is a 400."""
    content_type = request.content_type
    if content_type == "multipart/form-data":  # never JSON: refuse before reading a possibly large body
        raise _not_json(content_type)
    refuse_large_body(request, services(request).settings.server.json_max_bytes, "server.json_max_bytes")
    body = await read_step(request, request.read())
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if not _declared_json(content_type):
            raise _not_json(content_type) from None
        raise InvalidRequestError(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not _declared_json(content_type) and not isinstance(data, dict):
        raise _not_json(content_type)
    return check_nesting(data, "the request body")


async def read_json_object(
    request: web.Request, message: str = "the body must be a JSON object"
) -> dict[str, Any]:
    """The body as a JSON object; anything else is a 400 with `message`."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidRequestError(message, code="invalid_json")
    return body


def validate(model: type[ModelT], data: Any, what: str) -> ModelT:
    """Validate `data` with a pydantic model; errors name every offending field and its value."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequestError(f"invalid {what}: {describe_errors(exc)}", code="invalid_field") from None


def int_id(request: web.Request, name: str, what: str) -> int:
    """An integer id from the path; anything else is a 404, like an id that does not exist."""
    raw = request.match_info[name]
    try:
        value = int(raw)
    except ValueError:
        raise NotFoundError(f"{what} {raw!r} does not exist: {what} ids are integers") from None
    if value < 1 or value > 2**63 - 1:
        raise NotFoundError(f"{what} {raw!r} does not exist")
    return value


@dataclass(frozen=True, slots=True)
class QueryInt:
    """An integer query parameter: read by `query_int` and described in /openapi.json from the same
    object, so the document states the bounds the handler enforces."""

    name: str
    default: int
    low: int
    high: int
    description: str

    def openapi(self) -> dict[str, Any]:
        """This parameter as an OpenAPI parameter object."""
        schema = {"type": "integer", "minimum": self.low, "maximum": self.high, "default": self.default}
        return {
            "name": self.name,
            "in": "query",
            "required": False,
            "description": self.description,
            "schema": schema,
        }


OFFSET = QueryInt("offset", 0, 0, 2**62, "Items to skip (LimitOffset pagination).")
LIMIT = QueryInt("limit", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE, "Items per page.")
PAGE_PARAMS = (OFFSET, LIMIT)


def page_params(request: web.Request) -> tuple[int, int]:
    """`offset` and `limit` of a LimitOffset page, checked against their bounds."""
    return query_int(request, OFFSET), query_int(request, LIMIT)


def query_int(request: web.Request, param: QueryInt) -> int:
    """The parameter's value, its default when absent; out of bounds or not an integer is a 400."""
    name, low, high = param.name, param.low, param.high
    raw = request.query.get(name)
    if raw is None or raw == "":
        return param.default
    # ASCII digits only, and few of them: int() also takes '٣', '1_000' and ' 1 ', and converting
    # thousands of digits costs CPU on the loop before failing.
    value = int(raw) if _INTEGER.fullmatch(raw) else None
    if value is None or not low <= value <= high:
        raise InvalidRequestError(
            f"query parameter {name}={raw[:40]!r} must be an integer from {low} to {high}",
            code="invalid_query",
        )
    return value


def paginated(
    request: web.Request, count: int, offset: int, limit: int, results: Sequence[Any]
) -> web.Response:
    """DRF LimitOffset page; `next`/`previous` are absolute URLs (the official client follows them as is)."""
    next_url = previous_url = None
    if offset + limit < count:
        next_url = str(request.url.update_query(offset=offset + limit, limit=limit))
    if offset > 0:
        previous_url = str(request.url.update_query(offset=max(0, offset - limit), limit=limit))
    return json_response(
        {"count": count, "next": next_url, "previous": previous_url, "results": list(results)}
    )
