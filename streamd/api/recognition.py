"""`/v0.7/recognition`: specs (what outputs mean), versions (spec + network + post-processings), and
inference on a spec's current version or on a given version; public specs by slug (read-only, from
`networks.public_dir`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streamd.api.context import Services, services
from streamd.api.http import (
    int_id,
    json_response,
    no_content,
    page_params,
    paginated,
    read_json_object,
    validate,
)
from streamd.api.inference import decode_inputs, read_inference_body, ready_network
from streamd.errors import ConflictError, InvalidRequestError, NotFoundError
from streamd.inference.executor import InferenceItem
from streamd.inference.runtime import LoadedNetwork
from streamd.networks.postprocessing import Hypothesis, decode, select, to_deepomatic
from streamd.networks.public import PublicNetwork
from streamd.networks.recognition import (
    PostProcessing,
    RecognitionSpecCreate,
    RecognitionSpecPatch,
    RecognitionVersionCreate,
    SpecOutput,
)


async def create_spec(request: web.Request) -> web.Response:
    spec = validate(RecognitionSpecCreate, await read_json_object(request), "recognition spec")
    record = await services(request).recognition.create_spec(spec)
    return json_response(record.to_api(), status=201)


async def list_specs(request: web.Request) -> web.Response:
    offset, limit = page_params(request)
    count, records = await services(request).recognition.specs(offset, limit)
    return paginated(request, count, offset, limit, [r.to_api(with_outputs=False) for r in records])


async def get_spec(request: web.Request) -> web.Response:
    record = await services(request).recognition.spec(int_id(request, "spec_id", "recognition spec"))
    return json_response(record.to_api())


async def patch_spec(request: web.Request) -> web.Response:
    svc = services(request)
    spec_id = int_id(request, "spec_id", "recognition spec")
    body = await read_json_object(request)
    if "outputs" in body:
        raise InvalidRequestError(
            "field 'outputs' cannot be changed once the spec exists; create a new spec instead",
            code="immutable_field",
        )
    patch = validate(RecognitionSpecPatch, body, "recognition spec update")
    changes = patch.model_dump(exclude_unset=True)
    if changes.get("current_version_id") is not None:
        version = await svc.recognition.version_or_none(changes["current_version_id"])
        if version is None or version.spec_id != spec_id:
            raise InvalidRequestError(
                f"current_version_id {changes['current_version_id']} is not a version of spec {spec_id}; "
                f"GET /v0.7/recognition/specs/{spec_id}/versions lists them",
                code="invalid_field",
            )
    record = await svc.recognition.update_spec(spec_id, changes)
    return json_response(record.to_api())


async def delete_spec(request: web.Request) -> web.Response:
    await services(request).recognition.delete_spec(int_id(request, "spec_id", "recognition spec"))
    return no_content()


async def list_spec_versions(request: web.Request) -> web.Response:
    svc = services(request)
    spec_id = int_id(request, "spec_id", "recognition spec")
    await svc.recognition.spec(spec_id)
    offset, limit = page_params(request)
    count, records = await svc.recognition.versions(spec_id, offset, limit)
    return paginated(request, count, offset, limit, [r.to_api() for r in records])


async def create_version(request: web.Request) -> web.Response:
    svc = services(request)
    version = validate(RecognitionVersionCreate, await read_json_object(request), "recognition version")
    try:
        spec = await svc.recognition.spec(version.spec_id)
        network = await svc.networks.get(version.network_id)
    except NotFoundError as exc:
        raise InvalidRequestError(exc.message, code="invalid_field") from None
    try:
        version.check_against(spec.output_specs)
    except ValueError as exc:
        raise InvalidRequestError(str(exc), code="invalid_field") from None
    version = version.with_default_thresholds(spec.output_specs)
    if network.deployed:  # a network still deploying is checked when it is first used
        loaded = await svc.runtime.network(network.network_id)
        for post in version.post_processings:
            loaded.executor.check_fetches(post.tensors())
    record = await svc.recognition.create_version(version)
    return json_response(record.to_api(), status=201)


async def list_versions(request: web.Request) -> web.Response:
    offset, limit = page_params(request)
    count, records = await services(request).recognition.versions(None, offset, limit)
    return paginated(request, count, offset, limit, [r.to_api() for r in records])


async def get_version(request: web.Request) -> web.Response:
    record = await services(request).recognition.version(int_id(request, "version_id", "recognition version"))
    return json_response(record.to_api())


async def delete_version(request: web.Request) -> web.Response:
    await services(request).recognition.delete_version(int_id(request, "version_id", "recognition version"))
    return no_content()


async def spec_inference(request: web.Request) -> web.Response:
    svc = services(request)
    spec = await svc.recognition.spec(int_id(request, "spec_id", "recognition spec"))
    if spec.current_version_id is None:
        raise ConflictError(
            f"recognition spec {spec.spec_id} has no current version (none was created, or it was deleted "
            "with its network); create a version, or PATCH current_version_id to an existing one",
            code="no_current_version",
        )
    version = await svc.recognition.version(spec.current_version_id)
    record, loaded = await ready_network(svc, version.network_id)
    inputs = len(record.preprocessing.inputs)
    return await _recognize(request, svc, loaded, inputs, version.post_processing_specs, spec.output_specs)


async def version_inference(request: web.Request) -> web.Response:
    svc = services(request)
    version = await svc.recognition.version(int_id(request, "version_id", "recognition version"))
    spec = await svc.recognition.spec(version.spec_id)
    record, loaded = await ready_network(svc, version.network_id)
    inputs = len(record.preprocessing.inputs)
    return await _recognize(request, svc, loaded, inputs, version.post_processing_specs, spec.output_specs)


def _public_spec(request: web.Request) -> PublicNetwork:
    slug = request.match_info["slug"]
    entry = services(request).public_networks.get(slug)
    if entry is None or entry.recognition is None:
        raise NotFoundError(
            f"public recognition spec {slug!r} does not exist; GET /v0.7/recognition/public lists them",
            code="spec_not_found",
        )
    return entry


async def list_public_specs(request: web.Request) -> web.Response:
    offset, limit = page_params(request)
    catalogue = [entry for entry in services(request).public_networks.values() if entry.recognition]
    page = [entry.spec_to_api(with_outputs=False) for entry in catalogue[offset : offset + limit]]
    return paginated(request, len(catalogue), offset, limit, page)


async def get_public_spec(request: web.Request) -> web.Response:
    return json_response(_public_spec(request).spec_to_api())


async def public_spec_inference(request: web.Request) -> web.Response:
    svc = services(request)
    entry = _public_spec(request)
    assert entry.recognition is not None
    loaded = await svc.runtime.public(entry)
    posts, outputs = entry.recognition.post_processings, entry.recognition.outputs
    return await _recognize(request, svc, loaded, len(entry.preprocessing.inputs), posts, outputs)


async def _recognize(
    request: web.Request,
    svc: Services,
    loaded: LoadedNetwork,
    input_count: int,
    posts: tuple[PostProcessing, ...],
    outputs: tuple[SpecOutput, ...],
) -> web.Response:
    body = await read_inference_body(request, svc)
    fetches = loaded.executor.check_fetches([name for post in posts for name in post.tensors()])
    inputs = await decode_inputs(body, svc, input_count)
    first = inputs[0]

    def finish(tensors: Any, transforms: Any) -> list[list[Hypothesis]]:  # on the network's thread
        return [
            decode(post, output.labels, tensors, transforms[0])
            for post, output in zip(posts, outputs, strict=True)
        ]

    item = InferenceItem(tuple(decoded.frame for decoded in inputs), fetches, finish)

    async def work() -> dict[str, Any]:
        output = await loaded.infer(item)
        results = []
        for hypotheses in output.finished:
            chosen = select(hypotheses, body.show_discarded, body.max_predictions)
            results.append(to_deepomatic(chosen, first.width, first.height, first.offset_x, first.offset_y))
        return {"outputs": results}

    return json_response({"task_id": await svc.jobs.start(work)})
