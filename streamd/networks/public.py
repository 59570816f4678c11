"""Public networks: installed by the operator in `networks.public_dir`, served read-only by slug.

Layout: `<public_dir>/<slug>/network.json` (name, description, metadata, framework, preprocessing,
postprocessings) beside the SavedModel files, as an upload would store them. Scanned once at start
(blocking file reads: call from a worker thread); a broken entry is logged and skipped, never fatal.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from streamd.errors import StreamdError
from streamd.networks.files import check_file_set
from streamd.networks.spec import NetworkSpec

logger = logging.getLogger(__name__)

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,99}$")


@dataclass(frozen=True, slots=True)
class PublicNetwork:
    slug: str
    spec: NetworkSpec
    directory: Path
    create_date: str

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.slug,
            "name": self.spec.name,
            "description": self.spec.description,
            "metadata": self.spec.metadata,
            "framework": self.spec.framework,
            "preprocessing": self.spec.preprocessing.model_dump(),
            "postprocessings": list(self.spec.postprocessings),
            "task_id": None,
            "create_date": self.create_date,
            "update_date": self.create_date,
        }


def load_public_networks(directory: Path | None) -> dict[str, PublicNetwork]:
    if directory is None:
        return {}
    if not directory.is_dir():
        logger.warning("networks.public_dir %s is not a directory; no public networks", directory)
        return {}
    catalogue = {}
    for entry in sorted(directory.iterdir()):
        if not entry.is_dir():
            continue
        try:
            catalogue[entry.name] = _load_entry(entry)
        except (StreamdError, ValidationError, OSError, orjson.JSONDecodeError) as exc:
            logger.warning("skipping public network %s: %s", entry, exc)
    logger.info("%d public network(s) from %s", len(catalogue), directory)
    return catalogue


def _load_entry(entry: Path) -> PublicNetwork:
    if not _SLUG.match(entry.name):
        raise StreamdError(f"directory name {entry.name!r} is not a slug (lowercase letters, digits, -_.)")
    manifest = entry / "network.json"
    spec = NetworkSpec.model_validate(orjson.loads(manifest.read_bytes()))
    names = [path.name for path in entry.iterdir() if path.is_file() and path.name != "network.json"]
    variables = entry / "variables"
    if variables.is_dir():
        names += [path.name for path in variables.iterdir() if path.is_file()]
    check_file_set(names, spec.preprocessing)
    created = datetime.fromtimestamp(manifest.stat().st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return PublicNetwork(entry.name, spec, entry, created)
