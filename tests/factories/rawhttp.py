"""Raw HTTP/1.1 over a socket to 127.0.0.1, for requests aiohttp's client refuses to send (bytes that are
not UTF-8 in headers, control characters in paths, bodies cut short). Async: runs on the test's loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return orjson.loads(self.body)


async def raw_request(port: int, head: bytes, body: bytes = b"", timeout_s: float = 10.0) -> RawResponse:
    """Send `head` (request line and headers, without the blank line) and `body`; read the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.rstrip(b"\r\n") + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        async with asyncio.timeout(timeout_s):
            # By Content-Length, not to EOF: the server may keep the connection to drain the request body.
            head_bytes = await reader.readuntil(b"\r\n\r\n")
            response = parse_response(head_bytes)
            length = int(response.headers.get("content-length", "0"))
            body = await reader.readexactly(length)
    finally:
        writer.close()
    return RawResponse(response.status, response.headers, body)


def parse_response(data: bytes) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(int(lines[0].split()[1]), headers, body)
