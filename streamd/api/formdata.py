"""Rebuilds nested JSON from multipart form fields, as the official deepomatic-api client flattens it.

The client sends `preprocessing.inputs[0]image.pixel_scaling = "2.0"` (DRF style: `.` before dict keys,
`[i]` for list items, no dot after `]`), every value as text. curl users send `preprocessing='{json}'`.
Both forms end up as the same nested structure. Pure functions, no I/O.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import orjson

from streamd.errors import InvalidRequestError

_TOKEN = re.compile(r"\[(\d+)\]|([^.\[\]]+)")
# No real spec nests deeper than a few levels; deep nesting only costs recursion (and orjson refuses to
# write past 254 levels), so it is refused before anything recurses over it.
MAX_NESTING = 32


def parse_key(key: str) -> list[str | int]:
    """`a.b[0]c` → ['a', 'b', 0, 'c']; raises on anything else."""
    tokens: list[str | int] = []
    pos = 0
    while pos < len(key):
        if key[pos] == "." and tokens and pos + 1 < len(key):
            pos += 1
        match = _TOKEN.match(key, pos)
        if match is None:
            raise InvalidRequestError(
                f"form field name {key!r} is not a valid nested key", code="invalid_field"
            )
        index, name = match.groups()
        tokens.append(int(index) if index is not None else name)
        pos = match.end()
        if len(tokens) > MAX_NESTING:
            depth = len(tokens) + len(_TOKEN.findall(key, pos))
            raise InvalidRequestError(
                f"form field name {_short(key)} is nested {depth} levels deep; at most {MAX_NESTING} "
                "levels are accepted",
                code="invalid_field",
            )
    if not tokens or not isinstance(tokens[0], str):
        raise InvalidRequestError(f"form field name {key!r} is not a valid nested key", code="invalid_field")
    return tokens


def _short(text: str, limit: int = 80) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def check_nesting(value: Any, what: str) -> Any:
    """Refuse JSON values nested deeper than MAX_NESTING (iteratively: the check must not recurse)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > MAX_NESTING:
                    raise InvalidRequestError(
                        f"{what} is nested more than {MAX_NESTING} levels deep; flatten it",
                        code="invalid_field",
                    )
                stack.append((child, depth + 1))
    return value


def unflatten(fields: dict[str, Any]) -> dict[str, Any]:
    """Turn `{"a.b[0]c": "1", "d": "x"}` into `{"a": {"b": [{"c": "1"}]}, "d": "x"}`."""
    root: dict[str, Any] = {}
    for key, value in fields.items():
        tokens = parse_key(key)
        node: Any = root
        for token, following in itertools.pairwise(tokens):
            child = _child(node, token, key)
            if child is None:
                child = [] if isinstance(following, int) else {}
                _assign(node, token, child, key)
            elif isinstance(child, str) or isinstance(child, list) != isinstance(following, int):
                raise InvalidRequestError(
                    f"form field {key!r} conflicts with another field of the same name", code="invalid_field"
                )
            node = child
        if _child(node, tokens[-1], key) is not None:
            raise InvalidRequestError(f"form field {key!r} is given twice", code="invalid_field")
        _assign(node, tokens[-1], value, key)
    _check_lists(root, "")
    return root


def _child(node: Any, token: str | int, key: str) -> Any:
    if isinstance(node, dict):
        if isinstance(token, int):
            raise InvalidRequestError(f"form field {key!r} indexes an object", code="invalid_field")
        return node.get(token)
    if not isinstance(token, int):
        raise InvalidRequestError(f"form field {key!r} names a key of a list", code="invalid_field")
    return node[token] if token < len(node) else None


def _assign(node: Any, token: str | int, value: Any, key: str) -> None:
    if isinstance(node, dict):
        node[token] = value
        return
    assert isinstance(token, int)
    if token > 10_000:
        raise InvalidRequestError(f"form field {key!r} has an index that is too large", code="invalid_field")
    node.extend([None] * (token + 1 - len(node)))
    node[token] = value


def _check_lists(node: Any, path: str) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _check_lists(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            if value is None:
                raise InvalidRequestError(
                    f"form fields for {path} skip index {index}; list items must be numbered from 0 "
                    "without gaps",
                    code="invalid_field",
                )
            _check_lists(value, f"{path}[{index}]")


def decode_leaves(node: Any) -> Any:
    """Give free-form text leaves their JSON types back: "1" → 1, "True" → True, "x" stays "x".

    Used for `metadata` and `postprocessings`, which have no schema to coerce by. The client writes
    Python literals (`True`, `False`, `None`), so those are read too.
    """
    if isinstance(node, dict):
        return {key: decode_leaves(value) for key, value in node.items()}
    if isinstance(node, list):
        return [decode_leaves(value) for value in node]
    if not isinstance(node, str):
        return node
    python_literals = {"True": True, "False": False, "None": None}
    if node in python_literals:
        return python_literals[node]
    try:
        return check_nesting(orjson.loads(node), "a form field's JSON value")
    except orjson.JSONDecodeError:
        return node


def structured_field(form: dict[str, Any], name: str) -> Any:
    """A nested field given either as JSON text (curl) or as flattened keys (official client)."""
    value = form.get(name)
    if not isinstance(value, str):
        return value
    try:
        return check_nesting(orjson.loads(value), f"field {name!r}")
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"field {name!r} is not valid JSON ({exc}); send it as a JSON object, e.g. -F {name}='{{...}}'",
            code="invalid_field",
        ) from None
