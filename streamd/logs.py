"""Logging set-up: plain text lines by default, JSON lines with `--log-format json`."""

from __future__ import annotations

import logging
import sys

import orjson

from streamd.settings import LoggingConfig

# Passed with `extra=` by the API (request ids) and the streams (stream ids); JSON lines carry them as fields.
CONTEXT_FIELDS = ("request_id", "stream_id", "network_id", "method", "path", "status", "duration_ms")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": record.created,
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def setup_logging(config: LoggingConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level)
    # TensorFlow's C++ start-up chatter is noise for operators.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
