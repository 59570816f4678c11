"""Logging set-up: plain text lines by default, JSON lines with `--log-format json`; and `printable`, which
every formatter applies so that what a client sent can never start a log line of its own."""

from __future__ import annotations

import logging
import re
import sys

import orjson

from streamd.settings import LoggingConfig

# Passed with `extra=` by the API (request ids) and the streams (stream ids); JSON lines carry them as fields.
CONTEXT_FIELDS = ("request_id", "stream_id", "network_id", "method", "path", "status", "duration_ms")

# C0 and C1 controls, DEL, Unicode line/paragraph separators, lone surrogates (aiohttp's surrogateescape
# for bytes that are not UTF-8, which orjson cannot write). Backslashes stay as they are, so escaping twice
# (the access log escapes its fields, the formatter the whole message) changes nothing.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def printable(text: str) -> str:
    r"""`text` on one line: '\n' → '\x0a', an undecodable byte 0xff → '\xff'."""
    return _UNPRINTABLE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape's stand-in for the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class TextFormatter(logging.Formatter):
    """The message is escaped. A traceback (exc_info) keeps its lines to stay readable: an exception
    message quoting client input could still break one, which is why handlers raise StreamdErrors
    (logged by nobody) for client mistakes."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": record.created,
            "level": record.levelname,
            "logger": record.name,
            "message": printable(record.getMessage()),
        }
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = printable(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def setup_logging(config: LoggingConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level)
    # TensorFlow's C++ start-up chatter is noise for operators.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
