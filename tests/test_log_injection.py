"""What a client sends cannot forge log lines: control characters in paths, request ids and messages are
escaped, in the access log records themselves and in the daemon's text and JSON lines."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestClient

from streamd.logs import JsonFormatter, TextFormatter, printable
from tests.factories.daemon import Daemon
from tests.factories.rawhttp import raw_request

FORGED_PATH = b"/v0.7/nothing%0a2026-01-01%2000:00:00,000%20INFO%20streamd.access:%20forged%0d"


def test_printable_escapes_controls_separators_and_undecodable_bytes_once() -> None:
    escaped = printable("a\nb\rc\x1b[31m\x7f\x85\u2028\\d\udcff ok é")
    assert escaped == "a\\x0ab\\x0dc\\x1b[31m\\x7f\\x85\\u2028\\d\\xff ok é"
    assert printable(escaped) == escaped


async def test_access_log_records_escape_path_and_request_id(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    head = b"GET " + FORGED_PATH + b" HTTP/1.1\r\nHost: x\r\nX-Request-ID: id\tx\xff"
    with caplog.at_level(logging.INFO, logger="streamd.access"):
        response = await raw_request(client.server.port, head)
    assert response.status == 404
    assert response.headers["x-request-id"] == "id\\x09x\\xff"
    [record] = [r for r in caplog.records if r.name == "streamd.access"]
    line = record.getMessage()
    assert line == (
        "GET /v0.7/nothing\\x0a2026-01-01 00:00:00,000 INFO streamd.access: forged\\x0d 404 "
        f"{line.split()[-2]} request_id=id\\x09x\\xff"
    )
    assert record.path == "/v0.7/nothing\\x0a2026-01-01 00:00:00,000 INFO streamd.access: forged\\x0d"
    assert record.request_id == "id\\x09x\\xff"


def make_record(message: str) -> logging.LogRecord:
    return logging.LogRecord("streamd.test", logging.WARNING, __file__, 1, "%s", (message,), None)


def test_formatters_escape_messages_from_any_logger() -> None:
    text = TextFormatter("%(levelname)s %(message)s").format(make_record("bad\nINFO forged"))
    assert text == "WARNING bad\\x0aINFO forged"
    line = JsonFormatter().format(make_record("bad\udcff\nx"))  # a lone surrogate used to crash orjson
    assert orjson.loads(line)["message"] == "bad\\xff\\x0ax"


def send_raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.slow
@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_daemon_log_has_one_line_per_request(tmp_path: Path, log_format: str) -> None:
    daemon = Daemon(tmp_path / "data", args=("--log-format", log_format))
    await asyncio.to_thread(daemon.start)
    try:
        request = (
            b"GET "
            + FORGED_PATH
            + b" HTTP/1.1\r\nHost: x\r\nX-Request-ID: r\xffq\r\nConnection: close\r\n\r\n"
        )
        answer = await asyncio.to_thread(send_raw, daemon.port, request)
        assert answer.startswith(b"HTTP/1.1 404 ")
    finally:
        await asyncio.to_thread(daemon.stop)
    lines = (await asyncio.to_thread(daemon.log)).splitlines()
    assert not [line for line in lines if "forged" in line and "/v0.7/nothing" not in line], lines
    [access] = [line for line in lines if "/v0.7/nothing" in line]
    if log_format == "json":
        entry = orjson.loads(access)
        assert entry["path"] == "/v0.7/nothing\\x0a2026-01-01 00:00:00,000 INFO streamd.access: forged\\x0d"
        assert entry["request_id"] == "r\\xffq"
    else:
        assert access.endswith(" 404 " + access.split(" 404 ")[1])
        assert "request_id=r\\xffq" in access
