"""The one error tree of streamd: every error a person can see carries an HTTP status and a stable code.

Pure module, usable from any thread. The API middleware turns these into JSON bodies
`{"error": <message>, "code": <code>}`; the core never imports aiohttp.web.
"""

from __future__ import annotations


class StreamdError(Exception):
    """Base of every error that is reported to a user. `message` says what is wrong and what to do."""

    http_status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidRequestError(StreamdError):
    http_status = 400
    code = "invalid_request"


class UnauthorizedError(StreamdError):
    http_status = 401
    code = "unauthorized"


class NotFoundError(StreamdError):
    http_status = 404
    code = "not_found"


class MethodNotAllowedError(StreamdError):
    http_status = 405
    code = "method_not_allowed"


class RequestTimeoutError(StreamdError):
    """The client stopped sending its request body (server.read_timeout_s)."""

    http_status = 408
    code = "request_timeout"


class ClientDisconnectedError(StreamdError):
    """The client closed the connection before its body was read. Nobody receives the answer: its
    status, 499 (nginx's convention), shows only in the access log and the metrics."""

    http_status = 499
    code = "client_disconnected"


class ConflictError(StreamdError):
    http_status = 409
    code = "conflict"


class PayloadTooLargeError(StreamdError):
    http_status = 413
    code = "payload_too_large"


class UnsupportedMediaTypeError(StreamdError):
    http_status = 415
    code = "unsupported_media_type"


class UnavailableError(StreamdError):
    http_status = 503
    code = "unavailable"


class ConfigError(StreamdError):
    """A configuration file or environment override is invalid; raised before anything starts."""

    code = "invalid_config"


class ModelLoadError(StreamdError):
    """A SavedModel could not be loaded or does not match its preprocessing (ends a task in error)."""

    http_status = 400
    code = "model_load_failed"


class InsufficientStorageError(StreamdError):
    """The disk (or the database on it) is full: 507, nothing partial left behind."""

    http_status = 507
    code = "insufficient_storage"


class CorruptDataError(StreamdError):
    """Stored content failed its integrity check (a network file whose sha256 is not the one recorded):
    it is never used, and nothing is left in place."""

    code = "corrupt_data"


class DatabaseUnusableError(StreamdError):
    """The database file cannot be opened, written or trusted at start: the daemon exits (code 3)."""

    code = "database_unusable"
