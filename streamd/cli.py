"""Command line: `streamd serve` runs the daemon, `streamd check-config` validates a configuration,
`streamd migrate` brings the database to this version's schema, `streamd demo` serves a demo,
`streamd models` builds and registers pretrained models."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from streamd.errors import ConfigError, DatabaseUnusableError
from streamd.settings import Settings, is_loopback, load

logger = logging.getLogger("streamd")

EXIT_DATABASE = 3  # the database cannot be opened, written or trusted (2: bad configuration)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        settings = load(args.config, os.environ, _overrides(args))
        if args.command == "check-config":
            return _check_config(settings)
        if args.command == "migrate":
            return _migrate(settings)
        if args.command == "demo":
            return _demo(settings, args.synthetic)
        if args.command == "models":
            return _models(settings, args)
        return _serve(settings)
    except ConfigError as exc:
        print(f"streamd: {exc.message}", file=sys.stderr)
        return 2
    except DatabaseUnusableError as exc:
        print(f"streamd: {exc.message}", file=sys.stderr)
        return EXIT_DATABASE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamd", description="Streaming video inference daemon.")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the daemon")
    check = commands.add_parser("check-config", help="validate the configuration and print it")
    migrate = commands.add_parser(
        "migrate", help="migrate the database to this streamd's schema (serve also does it at start)"
    )
    demo = commands.add_parser(
        "demo", help="serve, and set up a demo network, chain and stream over a video it makes"
    )
    demo.add_argument(
        "--synthetic", action="store_true", help="the colour demo, without the pretrained models"
    )
    models = commands.add_parser("models", help="list or install the pretrained models (faces, emotions)")
    actions = models.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="the available pretrained models, their licences and cache")
    install = actions.add_parser("install", help="build the models and register them with a running daemon")
    install.add_argument("names", choices=("faces", "emotions", "all"), help="which model(s)")
    install.add_argument("--url", help="the daemon's address (default: http://<server.host>:<server.port>)")
    for sub in (serve, check, migrate, demo, listing, install):
        sub.add_argument("--config", type=Path, help="TOML file (default: config/streamd.toml if present)")
        sub.add_argument("--host", help="bind address (server.host)")
        sub.add_argument("--port", type=int, help="port (server.port)")
        sub.add_argument("--data-dir", type=Path, help="data directory (storage.data_dir)")
        sub.add_argument("--log-format", choices=("text", "json"), help="log line format (logging.format)")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    return {
        "server": {"host": args.host, "port": args.port},
        "storage": {"data_dir": args.data_dir},
        "logging": {"format": args.log_format},
    }


def _check_config(settings: Settings) -> int:
    settings.check_bind_allowed()
    print(settings.model_dump_json(indent=2))
    print("configuration is valid", file=sys.stderr)
    return 0


def _migrate(settings: Settings) -> int:
    import asyncio

    from streamd.logs import setup_logging
    from streamd.store.db import Database

    setup_logging(settings.logging)
    db = Database(settings.database_path, settings.database_url)

    async def migrate() -> None:
        await db.open()
        await db.close()

    asyncio.run(migrate())
    assert db.migration is not None
    before, after = db.migration.before or "(empty)", db.migration.after
    state = "already at" if before == after else f"migrated from {before} to"
    print(f"database {db.where}: {state} revision {after}", file=sys.stderr)
    return 0


def _demo(settings: Settings, synthetic: bool) -> int:
    from streamd.demo import run_demo
    from streamd.logs import setup_logging

    settings.check_bind_allowed()
    setup_logging(settings.logging)
    return run_demo(settings, synthetic=synthetic)


def _models(settings: Settings, args: argparse.Namespace) -> int:
    from streamd.models.command import install_models, list_models

    if args.action == "list":
        return list_models(settings)
    return install_models(settings, args.names, args.url)


def _serve(settings: Settings) -> int:
    from aiohttp import web

    from streamd.app import build_app
    from streamd.logs import setup_logging

    settings.check_bind_allowed()
    setup_logging(settings.logging)
    if not settings.auth.api_keys:
        logger.warning(
            "no API key configured: authentication is off, so streamd only binds to loopback (%s). "
            "Set auth.api_keys or STREAMD_AUTH__API_KEYS to serve other hosts.",
            settings.server.host,
        )
    assert settings.auth.api_keys or is_loopback(settings.server.host)
    logger.info("data directory: %s", settings.storage.data_dir)
    web.run_app(
        build_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        access_log=None,
        shutdown_timeout=settings.server.shutdown_timeout_s,
        print=lambda _msg: logger.info(
            "streamd listening on http://%s:%d/", settings.server.host, settings.server.port
        ),
    )
    return 0
