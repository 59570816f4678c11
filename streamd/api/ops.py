"""Operational endpoints: liveness, readiness, daemon information."""

from __future__ import annotations

import platform

from aiohttp import web

from streamd import __version__
from streamd.api.context import services
from streamd.api.http import json_response
from streamd.api.services import service_list
from streamd.errors import NotFoundError, UnavailableError


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: started, and the database takes writes (a tiny one, each probe). About the daemon only: a
    failing sink shows in its stream's status (`degraded`), not here."""
    svc = services(request)
    if not svc.ready:
        raise UnavailableError(
            "streamd is still starting (opening the store, resuming deployments)", code="not_ready"
        )
    problem = await svc.db.probe_write()
    if problem is not None:
        raise UnavailableError(f"the database cannot be written: {problem}", code="database_unwritable")
    if svc.cluster is not None and not svc.cluster.healthy:
        raise UnavailableError(
            f"this node cannot renew its stream leases: {svc.cluster.error or 'no renewal in time'}",
            code="cluster_leases_lost",
        )
    return json_response({"status": "ready"})


async def info(request: web.Request) -> web.Response:
    svc = services(request)
    return json_response(
        {
            "name": "streamd",
            "version": __version__,
            "python_version": platform.python_version(),
            "tensorflow_version": svc.tensorflow_version,
            "api_version": "v0.7",
            "auth": "api_key" if svc.settings.auth.api_keys else "none (loopback only)",
            "counts": {
                "networks": await svc.networks.count(),
                "public_networks": len(svc.public_networks),
                "pending_tasks": await svc.tasks.count_pending(),
            },
            # DeepDetect's /info, which its tooling reads to list services before anything else.
            "head": {
                "method": "/info",
                "version": __version__,
                "services": await service_list(svc.recognition),
            },
        }
    )


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format (the one response that is not JSON)."""
    from prometheus_client import CONTENT_TYPE_LATEST

    metrics = services(request).metrics
    if metrics is None:
        raise NotFoundError(
            "metrics are disabled on this daemon (metrics.enabled = false)", code="metrics_disabled"
        )
    body = await metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
