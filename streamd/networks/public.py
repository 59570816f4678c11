"""Public networks and public recognition specs: installed by the operator in `networks.public_dir`,
served read-only by slug.

Layout: `<public_dir>/<slug>/network.json` (name, description, metadata, framework, preprocessing,
postprocessings, and optionally `recognition {outputs, post_processings}`) beside the SavedModel files,
as an upload would store them. A network with `recognition` is also the public spec of the same slug.
Scanned once at start (blocking file reads: call from a worker thread); a broken entry is logged and
skipped, never fatal.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamd.errors import StreamdError
from streamd.networks.files import check_file_set
from streamd.networks.recognition import PostProcessing, SpecOutput, check_pairing, effective_posts
from streamd.networks.spec import NetworkSpec, Preprocessing

logger = logging.getLogger(__name__)

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,99}$")


class PublicRecognition(BaseModel):
    """`recognition` in network.json: the public spec's outputs and how to read them from the network."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    outputs: tuple[SpecOutput, ...] = Field(min_length=1)
    post_processings: tuple[PostProcessing, ...] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class PublicNetwork:
    """A network installed by the operator under `networks.public_dir`, served by slug."""

    slug: str
    spec: NetworkSpec
    directory: Path
    create_date: str
    recognition: PublicRecognition | None = None  # thresholds written out

    @property
    def metadata(self) -> dict[str, Any]:
        return self.spec.metadata

    @property
    def preprocessing(self) -> Preprocessing:
        return self.spec.preprocessing

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

    def spec_to_api(self, *, with_outputs: bool = True) -> dict[str, Any]:
        """The public recognition spec. Like Deepomatic's, it has no `current_version_id`: its version
        is the operator's, not a resource of the API."""
        assert self.recognition is not None
        data: dict[str, Any] = {
            "id": self.slug,
            "name": self.spec.name,
            "description": self.spec.description,
            "metadata": self.spec.metadata,
            "create_date": self.create_date,
            "update_date": self.create_date,
        }
        if with_outputs:
            data["outputs"] = [output.model_dump() for output in self.recognition.outputs]
        return data


def load_public_networks(directory: Path | None) -> dict[str, PublicNetwork]:
    """Scan `networks.public_dir` once: the valid entries by slug (broken ones are logged, skipped)."""
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
    document = orjson.loads(manifest.read_bytes())
    recognition = None
    if isinstance(document, dict) and "recognition" in document:
        recognition = _recognition(document.pop("recognition"))
    spec = NetworkSpec.model_validate(document)
    names = [path.name for path in entry.iterdir() if path.is_file() and path.name != "network.json"]
    variables = entry / "variables"
    if variables.is_dir():
        names += [path.name for path in variables.iterdir() if path.is_file()]
    check_file_set(names, spec.preprocessing)
    created = datetime.fromtimestamp(manifest.stat().st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return PublicNetwork(entry.name, spec, entry, created, recognition)


def _recognition(data: Any) -> PublicRecognition:
    recognition = PublicRecognition.model_validate(data)
    try:
        check_pairing(recognition.post_processings, recognition.outputs, "recognition.outputs")
    except ValueError as exc:
        raise StreamdError(f"recognition: {exc}") from None
    posts = effective_posts(recognition.post_processings, recognition.outputs)
    return recognition.model_copy(update={"post_processings": posts})
