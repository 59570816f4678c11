"""Cluster mode views: streams owned by other nodes (from the status row their owner publishes) and
`GET /v0.7/cluster`. Loop code; the SQL runs on the database threads."""

from __future__ import annotations

import functools
from typing import Any

import aiohttp
from aiohttp import web

from streamd.api.context import Services, services
from streamd.api.http import json_response
from streamd.chains.catalogue import INLINE
from streamd.cluster.leases import node_address
from streamd.errors import NotFoundError, UnavailableError
from streamd.store.streams import StreamRecord
from streamd.streams.bodies import StreamBody
from streamd.streams.state import StreamStateError

ENDED = ("finished", "error")
SNAPSHOT_TIMEOUT_S = 5.0
PROXIED = "X-Streamd-Proxied"  # set on a forwarded request: it is answered locally, never forwarded


def remote_state(record: StreamRecord) -> str:
    """What a stream this node does not run is doing, as far as the database knows."""
    if record.desired in ENDED:
        return record.desired
    if record.owner is None:
        return "unassigned"  # waiting for a node with room to claim it
    status = record.status or {}
    return str(status.get("state", "starting"))


def remote_fields(record: StreamRecord) -> tuple[StreamBody, str, dict[str, Any]]:
    """Its body, chain name and status fields, marked with the owner and the status age."""
    body = StreamBody.model_validate(record.definition)
    chain = body.chain if isinstance(body.chain, str) else INLINE
    status = {
        **(record.status or {}),
        "state": remote_state(record),
        "node": record.owner,
        "epoch": record.epoch,
        "status_age_s": record.status_age_s,
    }
    return body, chain, status


async def shared_record(svc: Services, stream_id: int) -> StreamRecord:
    assert svc.cluster is not None
    records = await svc.cluster.store.shared(stream_id)
    if not records:
        raise NotFoundError(f"stream {stream_id} does not exist", code="stream_not_found")
    return records[0]


async def owner_snapshot(request: web.Request, svc: Services, stream_id: int) -> web.Response:
    """The snapshot of a stream another node runs, fetched from that node (its advertised address,
    the caller's API key passed on): any node answers for any stream's picture too."""
    assert svc.cluster is not None
    record = await shared_record(svc, stream_id)
    if record.owner is None:
        raise NotFoundError(
            f"stream {stream_id} is {remote_state(record)}: no node runs it", code="no_snapshot"
        )
    if record.owner == svc.cluster.info.node_id or PROXIED in request.headers:
        # Claimed here but not started yet (or being handed over), or a forwarded request reaching
        # a node that no longer runs it: answering beats forwarding a request in a loop.
        raise UnavailableError(
            f"stream {stream_id} is starting or moving on node {record.owner}; retry in a moment",
            code="stream_moving",
        )
    address = await svc.db.run(functools.partial(node_address, node_id=record.owner))
    if address is None:
        raise UnavailableError(
            f"stream {stream_id}'s node {record.owner} is not registered", code="owner_unknown"
        )
    headers = {key: request.headers[key] for key in ("X-API-KEY",) if key in request.headers}
    headers[PROXIED] = svc.cluster.info.node_id
    url = f"{address.rstrip('/')}/v0.7/streams/{stream_id}/snapshot.jpg"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SNAPSHOT_TIMEOUT_S)) as http,
            http.get(url, headers=headers, params=request.query) as answer,
        ):
            body = await answer.read()
            content_type = answer.content_type
            status = answer.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UnavailableError(
            f"stream {stream_id} runs on node {record.owner}, which did not answer at {address} "
            f"({type(exc).__name__}); retry, or ask that node",
            code="owner_unreachable",
        ) from None
    headers = {"Cache-Control": "no-store", "X-Streamd-Node": record.owner}
    return web.Response(status=status, body=body, content_type=content_type, headers=headers)


async def set_remote_desired(svc: Services, record: StreamRecord, desired: str) -> None:
    """Pause or resume a stream another node runs: the row changes, its owner follows at its next
    renewal (within lease_ttl_s / 3)."""
    assert svc.cluster is not None
    allowed = "running" if desired == "paused" else "paused"
    if record.desired != allowed:
        verb = "pause" if desired == "paused" else "resume"
        raise StreamStateError(
            f"cannot {verb} stream {record.stream_id} while it is {remote_state(record)} (on node "
            f"{record.owner or 'none'}); {verb} is allowed when it is {allowed}"
        )
    await svc.cluster.store.set_desired(record.stream_id, desired)


async def cluster_status(request: web.Request) -> web.Response:
    svc = services(request)
    if svc.cluster is None:  # one daemon, one SQLite file: no nodes to list
        return json_response(
            {"cluster": False, "node": None, "lease_ttl_s": None, "nodes": [], "unassigned": []}
        )
    nodes = await svc.cluster.view()
    records = await svc.cluster.store.shared()
    return json_response(
        {
            "cluster": True,
            "node": svc.cluster.info.node_id,
            "lease_ttl_s": svc.cluster.info.ttl_s,
            "nodes": nodes,
            "unassigned": [r.stream_id for r in records if r.owner is None and r.desired not in ENDED],
        }
    )
