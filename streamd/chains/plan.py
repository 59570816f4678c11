"""Validation of a chain's calls into a tree of service and action nodes (`ChainPlan`).

Rules (docs/design.md): ids default as in DeepDetect (a service's id is its index, an action's the
action counter); without `parent_id` an action applies to the last service (or filter) before it and a
service to the last crop/rotate before it, else it is a root on the whole image. Services hang under
crop or rotate; crop, filter, rotate and draw_bbox hang under a service or a filter. Pure, and linear
in the number of calls (bounded by the caller, chains.max_calls) times the depth (chains.max_depth), so
a hostile body costs milliseconds; the API runs it in a worker thread all the same.
"""

from __future__ import annotations

from pydantic import ValidationError

from streamd.chains.results import RESERVED_KEYS
from streamd.chains.spec import (
    ACTION_PARAMS,
    BOX_ACTIONS,
    DD_ACTION_PARAMS,
    DD_CHAIN_ACTION_BAD_REQUEST,
    DD_SERVICE_BAD_REQUEST,
    DD_SERVICE_INPUT_BAD_REQUEST,
    IMAGE_ACTIONS,
    ROTATIONS,
    ActionNode,
    ChainBody,
    ChainCall,
    ChainError,
    ChainPlan,
    Resolver,
    ServiceNode,
    ServiceParams,
)
from streamd.validation import CHAIN, describe_errors

DEFAULT_MAX_DEPTH = 32


def build_plan(
    body: ChainBody, resolve: Resolver, *, require_data: bool, max_depth: int = DEFAULT_MAX_DEPTH
) -> ChainPlan:
    """Check the whole chain before anything runs and build its tree; every error is a ChainError
    naming the call. Pure and blocking: called in a worker thread."""
    calls = body.calls
    _check_kinds(calls)
    ids = _assign_ids(calls)
    parents = _assign_parents(calls, ids)
    _check_depths(parents, ids, max_depth)
    nodes = [_node(index, call, ids[index], resolve) for index, call in enumerate(calls)]
    roots: list[ServiceNode] = []
    for index, (node, parent) in enumerate(zip(nodes, parents, strict=True)):
        if parent is None:
            assert isinstance(node, ServiceNode)  # _assign_parents: an action always has a parent
            roots.append(node)
            continue
        _check_edge(index, parent, nodes, parents)
        above = nodes[parent]
        if isinstance(above, ServiceNode):
            assert isinstance(node, ActionNode)  # _check_edge: a service hangs under an action only
            above.children.append(node)
        else:
            above.children.append(node)
    _check_collisions(nodes, parents)
    data = _data(calls, require_data)
    return ChainPlan(roots=tuple(roots), data=data)


def _where(index: int, call_id: str | None = None) -> str:
    return f"call {index}" + (f" (id {call_id!r})" if call_id else "")


def _check_kinds(calls: list[ChainCall]) -> None:
    for index, call in enumerate(calls):
        if call.service and call.action:
            raise ChainError(
                f"{_where(index, call.id)} has both 'service' and 'action'; split it into two calls",
                dd_code=DD_SERVICE_BAD_REQUEST,
            )
        if not call.service and not call.action:
            raise ChainError(
                f"{_where(index, call.id)} has neither 'service' nor 'action'", dd_code=DD_SERVICE_BAD_REQUEST
            )
    if calls[0].action is not None:
        raise ChainError(
            "call 0 is an action; a chain starts with a service that runs on the input images",
            dd_code=DD_SERVICE_BAD_REQUEST,
        )


def _assign_ids(calls: list[ChainCall]) -> list[str]:
    """Explicit ids, else DeepDetect's defaults (service: its index; action: the action counter), renamed
    when a default would clash with an id already taken (DeepDetect keeps the two kinds apart)."""
    explicit = {call.id for call in calls if call.id}
    ids: list[str] = []
    taken: dict[str, int] = {}
    actions = 0
    for index, call in enumerate(calls):
        if call.id:
            call_id = call.id
            if call_id in taken:
                raise ChainError(
                    f"{_where(index)}: id {call_id!r} is already used by call {taken[call_id]}; "
                    "ids must be unique",
                    dd_code=DD_SERVICE_BAD_REQUEST,
                )
        else:
            call_id = str(index) if call.service else str(actions)
            if call_id in explicit or call_id in taken:
                call_id = f"call-{index}" if call.service else f"action-{actions}"
        if call.action:
            actions += 1
        ids.append(call_id)
        taken[call_id] = index
    return ids


def _action_type(call: ChainCall) -> str | None:
    return None if call.action is None else str(call.action.get("type"))


def _assign_parents(calls: list[ChainCall], ids: list[str]) -> list[int | None]:
    by_id = {call_id: index for index, call_id in enumerate(ids)}
    parents: list[int | None] = []
    last_result: int | None = None  # the last service (or filter): where an action applies by default
    last_images: int | None = None  # the last crop/rotate: where a service takes its images by default
    for index, call in enumerate(calls):
        if call.parent_id is not None:
            if call.parent_id not in by_id:
                known = ", ".join(ids[:20]) + (", ..." if len(ids) > 20 else "")
                raise ChainError(
                    f"{_where(index, call.id)}: parent_id {call.parent_id!r} names no call; known ids: "
                    f"{known}",
                    dd_code=DD_SERVICE_INPUT_BAD_REQUEST,
                )
            parents.append(by_id[call.parent_id])
        elif index == 0:
            parents.append(None)
        elif call.action is not None:  # DeepDetect: an action applies to the last service run (or filter)
            parents.append(last_result)
        else:  # DeepDetect: a service feeds on the last action's images; none yet → a root
            parents.append(last_images)
        if call.service is not None or _action_type(call) == "filter":
            last_result = index
        elif _action_type(call) in IMAGE_ACTIONS:
            last_images = index
    return parents


def _check_depths(parents: list[int | None], ids: list[str], max_depth: int) -> None:
    """A tree (no call is its own ancestor) at most `max_depth` calls deep; each call is walked once."""
    depth: list[int] = [-1] * len(parents)
    for start in range(len(parents)):
        path: list[int] = []
        on_path: set[int] = set()
        current: int | None = start
        while current is not None and depth[current] < 0:
            if current in on_path:
                raise ChainError(
                    f"call {start} (id {ids[start]!r}) is its own ancestor through parent_id; "
                    "a chain is a tree",
                    dd_code=DD_SERVICE_BAD_REQUEST,
                )
            path.append(current)
            on_path.add(current)
            current = parents[current]
        level = 0 if current is None else depth[current] + 1
        for node in reversed(path):
            depth[node] = level
            level += 1
        if level > max_depth:
            raise ChainError(
                f"call {start} (id {ids[start]!r}) is nested {level} calls deep; a chain may be at most "
                f"{max_depth} deep (chains.max_depth)",
                dd_code=DD_SERVICE_BAD_REQUEST,
            )


def _service_node(index: int, call: ChainCall, call_id: str, resolve: Resolver) -> ServiceNode:
    try:
        params = ServiceParams.model_validate(call.parameters or {})
    except ValidationError as exc:
        raise ChainError(
            f"{_where(index, call_id)} parameters: {describe_errors(exc, CHAIN)}",
            dd_code=DD_SERVICE_BAD_REQUEST,
        ) from None
    output = params.output
    if output.search or output.index or output.build_index or output.search_nn is not None:
        raise ChainError(
            f"{_where(index, call_id)}: similarity search (output.search, search_nn, index, build_index) "
            "is not supported: streamd has no similarity index; remove those parameters",
            dd_code=DD_SERVICE_BAD_REQUEST,
        )
    service = resolve(call.service or "")
    if output.ctc and (service.has_boxes or len(service.post_processings) != 1):
        raise ChainError(
            f"{_where(index, call_id)}: output.ctc decodes one sequence of label scores; service "
            f"{service.name!r} must be a classifier with one output",
            dd_code=DD_SERVICE_BAD_REQUEST,
        )
    if output.image and params.extract_layer is None:
        raise ChainError(
            f"{_where(index, call_id)}: output.image returns a layer as an image; name it with "
            'mllib.extract_layer (a tensor of the graph, or "last" for the version\'s output)',
            dd_code=DD_SERVICE_BAD_REQUEST,
        )
    if output.track is not None and (not service.has_boxes or not output.bbox or params.extract_layer):
        raise ChainError(
            f"{_where(index, call_id)}: output.track follows boxes across a stream's frames; service "
            f"{service.name!r} must be a detector (roi BBOX) with output.bbox on",
            dd_code=DD_SERVICE_BAD_REQUEST,
        )
    return ServiceNode(call_id, index, service, output, params.extract_layer)


def _node(index: int, call: ChainCall, call_id: str, resolve: Resolver) -> ServiceNode | ActionNode:
    if call.service is not None:
        return _service_node(index, call, call_id, resolve)
    action = dict(call.action or {})
    kind = action.pop("type", None)
    if kind not in ACTION_PARAMS:
        raise ChainError(
            f"{_where(index, call_id)}: unknown action type {kind!r}; supported: {', '.join(ACTION_PARAMS)}",
            dd_code=DD_CHAIN_ACTION_BAD_REQUEST,
        )
    nested = action.pop("parameters", None) or {}
    if not isinstance(nested, dict):
        raise ChainError(
            f"{_where(index, call_id)}: action.parameters must be an object",
            dd_code=DD_CHAIN_ACTION_BAD_REQUEST,
        )
    model = ACTION_PARAMS[kind]
    given = {
        key: value
        for key, value in {**action, **nested}.items()
        if key in model.model_fields or key not in DD_ACTION_PARAMS  # DeepDetect's shared, unused here
    }
    try:
        params = model.model_validate(given)
    except ValidationError as exc:
        raise ChainError(
            f"{_where(index, call_id)} {kind} action: {describe_errors(exc, CHAIN)}",
            dd_code=DD_CHAIN_ACTION_BAD_REQUEST,
        ) from None
    save_path: str = getattr(params, "save_path", "")
    if save_path and (save_path.startswith("/") or ".." in save_path):
        raise ChainError(
            f"{_where(index, call_id)}: save_path must be relative, without '..' (it lives under "
            "the data directory)",
            dd_code=DD_CHAIN_ACTION_BAD_REQUEST,
        )
    if getattr(params, "generate_mask", False):
        raise ChainError(
            f"{_where(index, call_id)}: crop generate_mask makes masks for a segmentation child; streamd "
            "has no segmentation output to fill them, so generate_mask is not supported",
            dd_code=DD_CHAIN_ACTION_BAD_REQUEST,
        )
    return ActionNode(call_id, index, kind, params)


def _service_of(
    node_index: int, nodes: list[ServiceNode | ActionNode], parents: list[int | None]
) -> ServiceNode:
    """The service whose detections an action works on (through filters)."""
    current: int | None = node_index
    while current is not None and not isinstance(nodes[current], ServiceNode):
        current = parents[current]
    assert current is not None
    node = nodes[current]
    assert isinstance(node, ServiceNode)
    return node


def _check_edge(
    index: int, parent: int, nodes: list[ServiceNode | ActionNode], parents: list[int | None]
) -> None:
    node, above = nodes[index], nodes[parent]
    if isinstance(node, ServiceNode):
        if not (isinstance(above, ActionNode) and above.kind in IMAGE_ACTIONS):
            raise ChainError(
                f"{_where(index, node.call_id)}: a service takes its images from a crop or rotate action, "
                f"not from {_describe_node(above)}; set parent_id to such an action",
                dd_code=DD_SERVICE_INPUT_BAD_REQUEST,
            )
        return
    assert isinstance(node, ActionNode)
    if isinstance(above, ActionNode) and above.kind != "filter":
        raise ChainError(
            f"{_where(index, node.call_id)}: a {node.kind} action applies to a service's results "
            f"(or a filter's), not to {_describe_node(above)}",
            dd_code=DD_CHAIN_ACTION_BAD_REQUEST,
        )
    service = _service_of(parent, nodes, parents).service
    if node.kind in BOX_ACTIONS and not service.has_boxes:
        raise ChainError(
            f"{_where(index, node.call_id)}: {node.kind} needs boxes, but service {service.name!r} is a "
            "classifier (its spec has no roi BBOX output)",
            dd_code=DD_CHAIN_ACTION_BAD_REQUEST,
        )
    if node.kind == "recompose" and not _pastes_back(
        service_node := _service_of(parent, nodes, parents), nodes, parents
    ):
        raise ChainError(
            f"{_where(index, node.call_id)}: recompose pastes images back where they were cropped; it "
            "follows a service that runs on a crop's images with output.image, not "
            f"{_describe_node(service_node)}",
            dd_code=DD_CHAIN_ACTION_BAD_REQUEST,
        )
    if node.kind == "rotate" and (service.has_boxes or not set(service.label_names) <= set(ROTATIONS)):
        raise ChainError(
            f"{_where(index, node.call_id)}: rotate follows an orientation classifier whose labels are "
            f"{', '.join(ROTATIONS)}; service {service.name!r} has labels {', '.join(service.label_names)}",
            dd_code=DD_CHAIN_ACTION_BAD_REQUEST,
        )


def _pastes_back(
    service: ServiceNode, nodes: list[ServiceNode | ActionNode], parents: list[int | None]
) -> bool:
    above = parents[service.index]
    node = None if above is None else nodes[above]
    return isinstance(node, ActionNode) and node.kind == "crop" and service.output.image


def _describe_node(node: ServiceNode | ActionNode) -> str:
    if isinstance(node, ServiceNode):
        return f"service call {node.call_id!r}"
    return f"{node.kind} action {node.call_id!r}"


def _input_slot(
    index: int, nodes: list[ServiceNode | ActionNode], parents: list[int | None], known: dict[int, str]
) -> str:
    """Which result object a node's images nest their results in (memoised in `known`: linear overall)."""
    if index in known:
        return known[index]
    node, parent = nodes[index], parents[index]
    if parent is None:
        slot = "image"
    elif isinstance(node, ServiceNode):
        above = nodes[parent]
        assert isinstance(above, ActionNode)
        # A crop's images are its own result objects; a rotate's are its parent's images, turned.
        slot = f"crop:{above.call_id}" if above.kind == "crop" else _input_slot(parent, nodes, parents, known)
    else:
        slot = _input_slot(_service_of(index, nodes, parents).index, nodes, parents, known)
    known[index] = slot
    return slot


def _check_collisions(nodes: list[ServiceNode | ActionNode], parents: list[int | None]) -> None:
    written: dict[tuple[str, str], int] = {}
    slots: dict[int, str] = {}
    first_root = True
    for index, node in enumerate(nodes):
        if isinstance(node, ServiceNode):
            if parents[index] is None and first_root:
                key = "classes"  # the first root's output is the prediction's own; it nests nowhere
                first_root = False
            else:
                key = node.service.name
                _check_reserved(index, node, key)
        elif node.kind == "draw_bbox":
            key = node.call_id
            _check_reserved(index, node, key)
        elif node.kind == "recompose":  # writes in the images the crop above its service was cut from
            _check_reserved(index, node, node.call_id)
            crop = parents[_service_of(index, nodes, parents).index]
            assert crop is not None
            slot = (_input_slot(_service_of(crop, nodes, parents).index, nodes, parents, slots), node.call_id)
            if slot in written:
                raise ChainError(
                    f"calls {written[slot]} and {index} would both write {node.call_id!r} in the same result "
                    "object; give them different ids",
                    dd_code=DD_SERVICE_BAD_REQUEST,
                )
            written[slot] = index
            continue
        else:
            continue
        slot = (_input_slot(index, nodes, parents, slots), key)
        if slot in written:
            raise ChainError(
                f"calls {written[slot]} and {index} would both write {key!r} in the same result object; "
                "siblings nest under their service name (or action id): use different services or ids",
                dd_code=DD_SERVICE_BAD_REQUEST,
            )
        written[slot] = index


def _check_reserved(index: int, node: ServiceNode | ActionNode, key: str) -> None:
    """A result nested under `cat`, `bbox`, `classes`... would overwrite that field of its parent."""
    if key in RESERVED_KEYS:
        what = "service" if isinstance(node, ServiceNode) else "action id"
        raise ChainError(
            f"call {index}: its results would nest under {what} {key!r}, a field of DeepDetect's result "
            f"objects ({', '.join(sorted(RESERVED_KEYS))}); give the call another id or use another "
            "service name",
            dd_code=DD_SERVICE_BAD_REQUEST,
        )


def _data(calls: list[ChainCall], require_data: bool) -> tuple[str, ...]:
    for index, call in enumerate(calls[1:], start=1):
        if call.data:
            raise ChainError(
                f"call {index}: only the first call takes 'data'; later calls get images from actions",
                dd_code=DD_SERVICE_BAD_REQUEST,
            )
    data = tuple(calls[0].data or ())
    if require_data and not data:
        raise ChainError(
            'the first call needs "data": a list of images (data URIs, media paths or URLs)',
            dd_code=DD_SERVICE_INPUT_BAD_REQUEST,
        )
    return data
