"""Request middleware: request ids and access logs, errors as JSON, API-key auth.

The error middleware is the only place that turns exceptions into responses; handlers never catch
to build error bodies themselves. Runs on the event loop.
"""

from __future__ import annotations

import errno
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from streamd.api.context import services
from streamd.api.http import json_response
from streamd.errors import (
    ClientDisconnectedError,
    RequestTimeoutError,
    StreamdError,
    UnauthorizedError,
)
from streamd.logs import printable

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("streamd.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Probes and scrapers must work without a key; everything else is the API.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
MAX_REQUEST_ID = 128

_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
}

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


# DeepDetect's codes for errors that carry none of their own, on the DeepDetect-compatible /chain routes.
_DD_CODES = {400: 1006, 404: 1002, 409: 1008, 500: 1007}


def error_response(status: int, code: str, message: str, dd_code: int | None = None) -> web.Response:
    """The JSON error body every failure answers with (plus DeepDetect's envelope when `dd_code` is set)."""
    body: dict[str, object] = {"error": message, "code": code}
    if dd_code is not None:
        # DeepDetect's envelope beside ours, so DeepDetect clients read it too.
        body["status"] = {
            "code": status,
            "msg": _REASONS.get(status, "Error"),
            "dd_code": dd_code,
            "dd_msg": message,
        }
        body["head"] = {"method": "/chain"}
    return json_response(body, status=status)


_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    408: "RequestTimeout",
    409: "Conflict",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    500: "InternalError",
    503: "Unavailable",
    507: "InsufficientStorage",
}


def _dd_code(request: web.Request, exc: Exception, status: int) -> int | None:
    code = getattr(exc, "dd_code", None)
    if code is None and (request.path.startswith("/chain/") or request.path.rstrip("/").endswith("/run")):
        code = _DD_CODES.get(status, 1006 if status < 500 else 1007)
    return code


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Escaped once here: the id goes into log lines and back out in a response header.
    """Request id (`X-Request-ID`), access log line and request metrics."""
    request_id = printable(request.headers.get("X-Request-ID", ""))[:MAX_REQUEST_ID] or uuid.uuid4().hex[:16]
    started = time.monotonic()
    response = await handler(request)
    elapsed = time.monotonic() - started
    response.headers["X-Request-ID"] = request_id
    resource = request.match_info.route.resource
    route = resource.canonical.rstrip("/") or "/" if resource is not None else "unmatched"
    metrics = services(request).metrics
    if metrics is not None:
        metrics.http_requests.labels(route, request.method, str(response.status)).inc()
        metrics.http_duration.labels(route, request.method).observe(elapsed)
    path = printable(request.rel_url.path)  # '%0a' in a URL is a newline in the decoded path
    access_logger.info(
        "%s %s %d %.1fms request_id=%s",
        request.method,
        path,
        response.status,
        elapsed * 1000,
        request_id,
        extra={
            "request_id": request_id,
            "method": request.method,
            "path": path,
            "status": response.status,
            "duration_ms": round(elapsed * 1000, 2),
        },
    )
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place where exceptions become JSON error answers; handlers do not catch."""
    try:
        return await handler(request)
    except StreamdError as exc:
        response = error_response(
            exc.http_status, exc.code, exc.message, _dd_code(request, exc, exc.http_status)
        )
        if isinstance(exc, RequestTimeoutError | ClientDisconnectedError):
            # The rest of the body is not coming: close rather than let aiohttp wait to drain it.
            response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        response = error_response(
            exc.status, code, _http_message(request, exc), _dd_code(request, exc, exc.status)
        )
        if isinstance(exc, web.HTTPMethodNotAllowed):
            response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))  # RFC 9110 15.5.6
        return response
    except OSError as exc:
        if exc.errno not in DISK_FULL_ERRNOS:
            raise
        # A full disk is the operator's to fix, not a bug: say so (the handler cleaned up after itself).
        logger.warning("%s %s: %s", request.method, printable(request.rel_url.path), exc)
        message = f"the disk is full ({exc.strerror}); free space on the data directory's disk and retry"
        return error_response(507, "insufficient_storage", message, _dd_code(request, exc, 507))
    except Exception as exc:  # supervision boundary: one broken request must never take the daemon down
        logger.exception("unhandled error in %s %s", request.method, printable(request.rel_url.path))
        message = "internal error; the daemon log has the details"
        return error_response(500, "internal_error", message, _dd_code(request, exc, 500))


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no such endpoint: {request.method} {request.rel_url.path}; GET /openapi.json lists them"
    if exc.status == 405:
        allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
        return f"{request.method} is not allowed on {request.rel_url.path}; allowed: {allowed}"
    if exc.status == 413:
        return (
            "the request body is larger than server.json_max_bytes; send files as multipart uploads "
            "or raise the limit"
        )
    return exc.reason


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`X-API-KEY` checked against `auth.api_keys` (the page and snapshots take `?api_key=`)."""
    keys = services(request).settings.auth.api_keys
    # Every route also answers with a trailing slash, and so must the exemption.
    if keys and request.path not in OPEN_PATHS and request.path.removesuffix("/") not in OPEN_PATHS:
        given = request.headers.get("X-API-KEY")
        if (
            not given
            and request.method in ("GET", "HEAD")
            and (request.path == "/" or request.path.endswith("/snapshot.jpg"))
        ):
            # A browser cannot send headers for <img> tags: the HTML page passes ?api_key= instead.
            given = request.query.get("api_key")
        if not given:
            raise UnauthorizedError("authentication required: send your key in the X-API-KEY header")
        # aiohttp decodes header bytes that are not UTF-8 as surrogates; surrogateescape gets the bytes back.
        given_bytes = given.encode("utf-8", "surrogateescape")
        if not any(hmac.compare_digest(given_bytes, key.encode()) for key in keys):
            raise UnauthorizedError("the X-API-KEY header holds an unknown key; check the key you were given")
    return await handler(request)


MIDDLEWARES = (access_middleware, error_middleware, auth_middleware)
