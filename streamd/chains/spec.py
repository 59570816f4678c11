"""Chain definitions (DeepDetect's `/chain` format) and their validation into an executable tree.

Both spellings of actions are read: DeepDetect's code form (`action.parameters.{...}`, filter `classes`,
`save_crops`) and the seed page's form (parameters beside `type`, `classnames`, `save_crop`). The whole
tree is checked before anything runs; every error names the call and the fix and carries DeepDetect's
`dd_code`. Pure: services are resolved through a callback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streamd.analytics.config import TrackConfig
from streamd.errors import StreamdError
from streamd.networks.recognition import PostProcessing, SpecOutput
from streamd.validation import CHAIN, describe_errors

# DeepDetect error codes (src/jsonapi.cc)
DD_SERVICE_NOT_FOUND = 1002
DD_SERVICE_INPUT_BAD_REQUEST = 1005
DD_SERVICE_BAD_REQUEST = 1006
DD_CHAIN_ACTION_BAD_REQUEST = 1012

IMAGE_ACTIONS = ("crop", "rotate")  # actions whose output feeds services
BOX_ACTIONS = ("crop", "draw_bbox")  # actions that need boxes from their parent
ROTATIONS = ("0", "90", "180", "270")


class ChainError(StreamdError):
    """A chain that cannot run as written; `dd_code` is DeepDetect's code for the same error."""

    def __init__(
        self, message: str, *, dd_code: int, http_status: int = 400, code: str = "invalid_chain"
    ) -> None:
        super().__init__(message, code=code)
        self.dd_code = dd_code
        self.http_status = http_status


class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# DeepDetect's actions share one flat parameter object (src/dto/chain.hpp `ChainActionParams`), so a
# body may carry any of these on any action (ut-chain.cc sends `padding_ratio` to draw_bbox); an action
# ignores those it does not use, as DeepDetect does. Unknown names are still errors.
DD_ACTION_PARAMS = frozenset(
    {
        "output_images", "to_rgb", "to_bgr", "save_path", "save_img", "fixed_width", "fixed_height",
        "min_width", "min_height", "force_square", "padding_ratio", "save_crops", "generate_mask",
        "orientation", "thickness", "write_cat", "write_prob", "classes", "chip_size", "custom",
    }
)  # fmt: skip


class CropParams(_Params):
    padding_ratio: float = Field(0.0, ge=0.0, le=10.0)
    fixed_width: int = Field(0, ge=0)
    fixed_height: int = Field(0, ge=0)
    min_width: int = Field(0, ge=0)
    min_height: int = Field(0, ge=0)
    force_square: bool = False
    save_crops: bool = False
    save_path: str = ""
    generate_mask: bool = False  # needs a segmentation child: refused by the plan (no such output yet)

    @model_validator(mode="before")
    @classmethod
    def _seed_spelling(cls, data: Any) -> Any:
        if isinstance(data, dict) and "save_crop" in data:
            data = {**data, "save_crops": data["save_crop"]}
            del data["save_crop"]
        return data


class FilterParams(_Params):
    classes: tuple[str, ...] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _seed_spelling(cls, data: Any) -> Any:
        if isinstance(data, dict) and "classnames" in data:
            data = {**data, "classes": data["classnames"]}
            del data["classnames"]
        return data


class RotateParams(_Params):
    orientation: Literal["relative", "absolute"] = "relative"


class DrawParams(_Params):
    thickness: int = Field(2, ge=1, le=50)
    write_cat: bool = True
    write_prob: bool = False
    output_images: bool = False
    # DeepDetect returns the drawn image as `vals` (H·W·3 BGR bytes as numbers); `jpeg` is streamd's
    # smaller form: `images: [base64 JPEG]`.
    output_format: Literal["vals", "jpeg"] = "vals"
    save_img: bool = False
    save_path: str = ""


class RecomposeParams(_Params):
    save_img: bool = False
    save_path: str = ""


ACTION_PARAMS: dict[str, type[_Params]] = {
    "crop": CropParams,
    "filter": FilterParams,
    "rotate": RotateParams,
    "draw_bbox": DrawParams,
    "recompose": RecomposeParams,
}


class OutputParams(_Params):
    """DeepDetect's output connector parameters (src/dto/output_connector.hpp). Those that only apply to
    /predict, to training or to other backends are accepted and ignored, as DeepDetect ignores them in
    a chain; `search`/`index` need a similarity index streamd does not have (refused by the plan)."""

    confidence_threshold: float | None = Field(None, ge=0.0, le=1.0)
    best: int = Field(1, ge=-1)
    best_bbox: int = Field(-1, ge=-1)
    bbox: bool = True  # DeepDetect's default is false; streamd returns boxes unless told not to
    nms_threshold: float | None = Field(None, ge=0.0, le=1.0)
    top_k: int = Field(-1, ge=-1)
    ctc: bool = False
    blank_label: int = Field(-1, ge=-1)
    image: bool = False
    # streamd: boxes of services below a crop/rotate in original-frame pixels ("frame", the default), or
    # in the pixels of the image the service ran on ("input", DeepDetect's crop-relative coordinates).
    bbox_coordinates: Literal["frame", "input"] = "frame"
    # streamd: on a stream, give this detector's boxes track ids (ByteTrack); ignored by /chain.
    track: TrackConfig | None = None
    search: bool = False
    search_nn: int | None = None
    index: bool = False
    build_index: bool = False
    nprobe: int | None = None
    # accepted, no effect in a chain (DeepDetect: /predict-only, training-only or other backends)
    store_config: bool = False
    regression: bool = False
    logits: bool = False
    confidences: list[str] | None = None
    keypoints: bool = False
    measure: list[str] | None = None
    template: Any = None
    network: Any = None
    encoding: str | None = None
    multibox_rois: bool = False


class ServiceParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    input: dict[str, Any] = Field(
        default_factory=dict
    )  # keep_orig, connector...: accepted, crops use originals
    mllib: dict[str, Any] = Field(default_factory=dict)  # extract_layer is read; gpu, net...: ignored
    output: OutputParams = Field(default_factory=OutputParams)

    @property
    def extract_layer(self) -> str | None:
        layer = self.mllib.get("extract_layer")
        return layer if isinstance(layer, str) and layer else None


class ChainCall(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str | None = Field(None, min_length=1)
    parent_id: str | None = Field(None, min_length=1)
    service: str | None = Field(None, min_length=1)
    action: dict[str, Any] | None = None
    parameters: dict[str, Any] | None = None
    data: list[str] | None = None
    index_uris: list[str] | None = None  # DeepDetect: names for a similarity index; no index here
    meta_uris: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_parent(cls, data: Any) -> Any:
        # DeepDetect's own bodies send `"parent_id": ""` for "no parent" (issue #691).
        if isinstance(data, dict) and data.get("parent_id") == "":
            data = {key: value for key, value in data.items() if key != "parent_id"}
        return data


class ChainBody(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")  # DeepDetect ignores other keys too
    calls: list[ChainCall] = Field(min_length=1)


class ChainRunBody(BaseModel):
    """`POST /v0.7/chains/{name}/run`: the images to run a stored chain on."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    data: list[str] = Field(min_length=1, description="Images: data URIs, media paths or URLs.")


@dataclass(frozen=True, slots=True)
class ResolvedService:
    """What a chain needs to know of a service (a recognition spec's current version)."""

    name: str
    spec_id: int
    version_id: int
    network_id: int
    has_boxes: bool
    label_names: tuple[str, ...]
    post_processings: tuple[PostProcessing, ...]
    outputs: tuple[SpecOutput, ...]


@dataclass(slots=True)
class ServiceNode:
    """A call of a service in a plan, with the calls that take its output."""

    call_id: str
    index: int
    service: ResolvedService
    output: OutputParams
    extract_layer: str | None = None
    children: list[ActionNode] = field(default_factory=list)


@dataclass(slots=True)
class ActionNode:
    """A call of an action (crop, rotate, draw...) in a plan, with the calls that take its output."""

    call_id: str
    index: int
    kind: str
    params: Any
    children: list[ServiceNode | ActionNode] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ChainPlan:
    """A checked chain, ready to run: its root service calls and the images its body named (if any)."""

    roots: tuple[ServiceNode, ...]
    data: tuple[str, ...]

    def services(self) -> list[ResolvedService]:
        """Every service the plan calls, depth first."""
        found: list[ResolvedService] = []

        def walk(node: ServiceNode | ActionNode) -> None:
            if isinstance(node, ServiceNode):
                found.append(node.service)
            for child in node.children:
                walk(child)

        for root in self.roots:
            walk(root)
        return found


Resolver = Callable[[str], ResolvedService]


def parse_body(body: Any, max_calls: int | None = None) -> ChainBody:
    """`{"chain": {"calls": [...]}}` (DeepDetect) or `{"calls": [...]}`, at most `max_calls` calls
    (counted before validating them, so a huge body costs nothing)."""
    if isinstance(body, dict) and isinstance(body.get("chain"), dict):
        body = body["chain"]
    calls = body.get("calls") if isinstance(body, dict) else None
    if max_calls is not None and isinstance(calls, list) and len(calls) > max_calls:
        raise ChainError(
            f"the chain has {len(calls)} calls; at most {max_calls} are allowed (chains.max_calls)",
            dd_code=DD_SERVICE_BAD_REQUEST,
        )
    try:
        return ChainBody.model_validate(body)
    except ValidationError as exc:
        raise ChainError(
            f"invalid chain: {describe_errors(exc, CHAIN)}", dd_code=DD_SERVICE_BAD_REQUEST
        ) from None
