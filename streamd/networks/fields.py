"""Bounded text fields shared by the stored resources (networks, recognition specs): storage must not
grow by whatever a client sends, so names, descriptions and metadata have length limits (400 past them)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, Field

NAME_MAX_CHARS = 255
DESCRIPTION_MAX_CHARS = 10_000
METADATA_MAX_BYTES = 64 * 1024


def _bounded_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    size = len(orjson.dumps(metadata))
    if size > METADATA_MAX_BYTES:
        raise ValueError(f"metadata is {size} bytes as JSON; at most {METADATA_MAX_BYTES} are stored")
    return metadata


Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX_CHARS)]
Description = Annotated[str, Field(max_length=DESCRIPTION_MAX_CHARS)]
Metadata = Annotated[dict[str, Any], AfterValidator(_bounded_metadata)]
