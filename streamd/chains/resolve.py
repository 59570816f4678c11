"""Resolving a chain's service names: a service is a recognition spec, run with its current version."""

from __future__ import annotations

from collections.abc import Iterable

from streamd.chains.spec import (
    DD_SERVICE_BAD_REQUEST,
    DD_SERVICE_NOT_FOUND,
    ChainBody,
    ChainError,
    ResolvedService,
    Resolver,
)
from streamd.store.networks import NetworkRepository
from streamd.store.recognition import RecognitionRepository


async def resolver_for(
    body: ChainBody, recognition: RecognitionRepository, networks: NetworkRepository
) -> Resolver:
    """Look every service of the chain up once (async), then hand the plan builder a plain lookup."""
    resolved = {name: await _resolve(name, recognition, networks) for name in _names(body)}

    def resolve(name: str) -> ResolvedService:
        outcome = resolved[name]
        if isinstance(outcome, ChainError):
            raise outcome
        return outcome

    return resolve


def _names(body: ChainBody) -> Iterable[str]:
    return dict.fromkeys(call.service for call in body.calls if call.service)


async def _resolve(
    name: str, recognition: RecognitionRepository, networks: NetworkRepository
) -> ResolvedService | ChainError:
    specs = await recognition.specs_named(name)
    if not specs:
        return ChainError(
            f"service {name!r} does not exist: a chain's service is the name of a recognition spec "
            "(GET /v0.7/recognition/specs lists them)",
            dd_code=DD_SERVICE_NOT_FOUND,
            http_status=404,
            code="service_not_found",
        )
    if len(specs) > 1:
        ids = ", ".join(str(spec.spec_id) for spec in specs)
        return ChainError(
            f"service {name!r} is ambiguous: recognition specs {ids} share that name; rename one",
            dd_code=DD_SERVICE_BAD_REQUEST,
        )
    spec = specs[0]
    if spec.current_version_id is None:
        return ChainError(
            f"service {name!r} (recognition spec {spec.spec_id}) has no current version; create a "
            "recognition version for it",
            dd_code=DD_SERVICE_BAD_REQUEST,
            code="no_current_version",
        )
    version = await recognition.version(spec.current_version_id)
    network = await networks.get(version.network_id)
    if not network.deployed:
        return ChainError(
            f"service {name!r} runs on network {network.network_id}, which is still deploying; wait for task "
            f"{network.task_id}",
            dd_code=DD_SERVICE_BAD_REQUEST,
            http_status=409,
            code="network_not_ready",
        )
    outputs = spec.output_specs
    return ResolvedService(
        name=name,
        spec_id=spec.spec_id,
        version_id=version.version_id,
        network_id=version.network_id,
        has_boxes=any(output.labels.roi == "BBOX" for output in outputs),
        label_names=tuple(label.name for output in outputs for label in output.labels.labels),
        post_processings=version.post_processing_specs,
        outputs=outputs,
    )
