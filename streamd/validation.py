"""The one formatter of pydantic validation errors, worded for its reader: an API client (request
bodies, chains) or an operator (configuration). Pure, usable from any thread."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError
from pydantic_core import ErrorDetails


@dataclass(frozen=True, slots=True)
class Wording:
    """How errors are written: paths, messages, which values are quoted, how errors are joined."""

    json_paths: bool = True  # `inputs[0].image`; False: `inputs.0.image`, the TOML/env key
    plain: bool = True  # "unknown field" for extra keys and no "Value error, " prefix; False: pydantic's
    quote_literals: bool = True  # `..., got 'X'` after a literal mismatch
    quote_values: bool = False  # ` (got X)` after every error
    skip_item_echoes: bool = True  # drop a sequence's "too short" that only echoes its items' errors
    separator: str = "; "


SECRET_FIELDS = frozenset({"database_url"})  # values never echoed: they may hold a password

REQUEST = Wording()
CHAIN = Wording(quote_literals=False, skip_item_echoes=False)
CONFIG = Wording(
    json_paths=False,
    plain=False,
    quote_literals=False,
    quote_values=True,
    skip_item_echoes=False,
    separator="\n  ",  # one indented line per error, under the caller's first line
)


def describe_errors(exc: ValidationError, wording: Wording = REQUEST) -> str:
    """Every error of `exc` as `where: what`, naming the field (and the value, as `wording` says)."""
    parts = []
    for error in exc.errors(include_url=False):
        if wording.skip_item_echoes and _follows_item_errors(error):
            continue
        parts.append(f"{_where(error['loc'], wording.json_paths)}: {_message(error, wording)}")
    return wording.separator.join(parts)


def _where(loc: tuple[int | str, ...], json_paths: bool) -> str:
    if not json_paths:
        return ".".join(str(part) for part in loc)
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".") or "body"


def _message(error: ErrorDetails, wording: Wording) -> str:
    message = error["msg"]
    if wording.plain:
        message = (
            "unknown field" if error["type"] == "extra_forbidden" else message.removeprefix("Value error, ")
        )
    if wording.quote_literals and error["type"] == "literal_error":
        message = f"{message}, got {error.get('input')!r}"
    if wording.quote_values:
        secret = any(str(part) in SECRET_FIELDS for part in error["loc"])
        message = (
            f"{message} (got {'(hidden: it may hold a password)' if secret else repr(error.get('input'))})"
        )
    return message


def _follows_item_errors(error: ErrorDetails) -> bool:
    """pydantic adds "should have at least N items after validation, not 0" to a sequence whose items
    failed: the items' own errors say what is wrong, and the sequence was long enough."""
    given, ctx = error.get("input"), error.get("ctx") or {}
    return (
        error["type"] == "too_short"
        and isinstance(given, list | tuple)
        and len(given) >= ctx.get("min_length", 0)
    )
