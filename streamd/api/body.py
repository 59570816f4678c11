"""Reading request bodies on the loop: every wait for the client's next bytes is bounded by
`server.read_timeout_s`, sizes are refused from `Content-Length` before anything is read, and a client
that went away is told apart from a bug (it is not an error of ours to log)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from aiohttp import web

from streamd.api.context import services
from streamd.errors import ClientDisconnectedError, PayloadTooLargeError, RequestTimeoutError

T = TypeVar("T")


async def read_step(request: web.Request, step: Awaitable[T]) -> T:
    """One await on the body (a chunk, a part, the whole of a small body), bounded in time."""
    timeout_s = services(request).settings.server.read_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            return await step
    except TimeoutError:
        raise RequestTimeoutError(
            f"the client sent nothing for {timeout_s} s (server.read_timeout_s) before the request body "
            "was complete; send the whole body without pausing"
        ) from None
    # aiohttp fails pending reads with ConnectionResetError when the peer closes, and later ones with
    # RuntimeError('Connection closed.'); either is a bug of ours only if the client is still there.
    except (ConnectionError, RuntimeError, ValueError):
        if client_gone(request):
            raise ClientDisconnectedError(
                "the client closed the connection before sending its whole body"
            ) from None
        raise


def client_gone(request: web.Request) -> bool:
    """Whether the client closed its connection (a handler then stops working for it)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def refuse_large_body(request: web.Request, max_bytes: int, setting: str) -> None:
    """413 from Content-Length alone, before waiting for (and buffering) any of the body."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise PayloadTooLargeError(
            f"the request body ({length} bytes) is larger than {setting}={max_bytes}; "
            + (
                "raise that setting to register bigger models"
                if setting == "server.upload_max_bytes"
                else "send files as multipart uploads or raise the limit"
            )
        )
