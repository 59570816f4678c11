"""`streamd models list|install`: build the catalogue's models here, register them over HTTP.

Runs in the CLI process: the builds (TensorFlow, pip) happen before its own event loop starts, so the
daemon's loop only ever sees HTTP requests.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp

from streamd.models import catalogue, registration
from streamd.settings import Settings


def progress(line: str) -> None:
    print(f"streamd: {line}", file=sys.stderr, flush=True)


def list_models(settings: Settings) -> int:
    missing = catalogue.missing_packages()
    for model in catalogue.CATALOGUE.values():
        cached = catalogue.models_dir(settings.storage.data_dir) / model.name
        built = ", ".join(sorted(p.name for p in cached.iterdir() if p.is_dir())) if cached.is_dir() else ""
        print(
            f"{model.name:9} {model.kind:15} {model.title}\n"
            f"{'':9} labels: {', '.join(model.labels)}\n"
            f"{'':9} licence: {model.licence}\n"
            f"{'':9} built: {built or 'not yet'} (cache {cached})"
        )
    if missing:
        print(f"\nmissing packages: {', '.join(missing)}; install them with pip install 'streamd[models]'")
    return 0


def build_all(names: str, data_dir: Path) -> list[catalogue.BuiltModel]:
    """Blocking: every selected model built (or taken from the cache)."""
    missing = catalogue.missing_packages()
    if missing:
        raise catalogue.ModelsUnavailableError(
            f"the pretrained models need {', '.join(missing)}: pip install 'streamd[models]' "
            "(or bash scripts/setup)"
        )
    return [catalogue.ensure_built(model, data_dir, progress) for model in catalogue.select(names)]


async def install_all(url: str, headers: dict[str, str], built: list[catalogue.BuiltModel]) -> None:
    async with aiohttp.ClientSession(url, headers=headers) as http:
        for model in built:
            progress(f"registering {model.model.name} with {url}")
            print(await registration.install(http, model), flush=True)


def install_models(settings: Settings, names: str, url: str | None) -> int:
    try:
        built = build_all(names, settings.storage.data_dir)
    except (ValueError, catalogue.ModelsUnavailableError, catalogue.ModelBuildError) as exc:
        print(f"streamd: {exc}", file=sys.stderr)
        return 2
    base = url or f"http://{settings.server.host}:{settings.server.port}"
    headers = {"X-API-KEY": settings.auth.api_keys[0]} if settings.auth.api_keys else {}
    try:
        asyncio.run(install_all(base, headers, built))
    except aiohttp.ClientConnectionError as exc:
        print(
            f"streamd: cannot reach the daemon at {base} ({exc}); start it with streamd serve",
            file=sys.stderr,
        )
        return 1
    except registration.ApiError as exc:
        print(f"streamd: {exc}", file=sys.stderr)
        return 1
    return 0
