"""Chains end to end with real TF models whose outputs are known: nesting, trees, actions, stored chains.

The frame is 80x40: the detector (input 40x80, so no resize) always proposes the same boxes and scores
them by the colour fractions of the frame; box 0 (x 8..40, y 4..20) is painted blue and box 1
(x 40..72, y 20..36) red on green, so crops classify as blue and red.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from streamd.api.context import SERVICES
from tests.conftest import create_network, network_form, preprocessing_for, wait_task
from tests.factories.models import ModelFiles, build_tf1_classifier, classifier_weights

BLUE, GREEN, RED = (255, 0, 0), (0, 255, 0), (0, 0, 255)
BOX0 = {"xmin": 8.0, "ymin": 4.0, "xmax": 40.0, "ymax": 20.0}
BOX1 = {"xmin": 40.0, "ymin": 20.0, "xmax": 72.0, "ymax": 36.0}


@pytest.fixture(scope="session")
def orientation_model(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    return build_tf1_classifier(tmp_path_factory.mktemp("models") / "orientation", classes=4)


def scene(*, blue: bool = True, red: bool = True, background: tuple[int, int, int] = GREEN) -> np.ndarray:
    frame = np.empty((40, 80, 3), dtype=np.uint8)
    frame[:] = background
    if blue:
        frame[4:20, 8:40] = BLUE
    if red:
        frame[20:36, 40:72] = RED
    return frame


def data_uri(frame: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(cv2.imencode(".png", frame)[1].tobytes()).decode()


def prob(pooled: list[float], classes: int = 3) -> np.ndarray:
    logits = np.array(pooled) @ classifier_weights(3, classes)
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()


async def post_json(client: TestClient, path: str, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    response = await client.post(path, json=body)
    data = await response.json()
    assert response.status == status, data
    return data


async def deploy_service(
    client: TestClient,
    model: ModelFiles,
    name: str,
    labels: list[str],
    post: dict[str, Any],
    *,
    boxes: bool,
    image: dict[str, Any] | None = None,
) -> int:
    preprocessing = preprocessing_for(model, pixel_scaling=1.0, **(image or {}))
    network = await create_network(client, network_form(model, preprocessing=preprocessing, name=name))
    assert (await wait_task(client, network["task_id"]))["status"] == "success"
    spec = await post_json(
        client,
        "/v0.7/recognition/specs",
        {
            "name": name,
            "outputs": [
                {
                    "labels": {
                        "roi": "BBOX" if boxes else "NONE",
                        "labels": [{"id": i + 1, "name": n} for i, n in enumerate(labels)],
                    }
                }
            ],
        },
    )
    await post_json(
        client,
        "/v0.7/recognition/versions",
        {"spec_id": spec["id"], "network_id": network["id"], "post_processings": [post]},
    )
    return network["id"]


DETECTION = {
    "detection": {
        "thresholds": [0.1, 0.1],
        "nms_threshold": 0.45,
        "direct_output": {
            "boxes_tensor": "detection_boxes",
            "scores_tensor": "detection_scores",
            "classes_tensor": "detection_classes",
        },
    }
}
CLASSIFICATION = {"classification": {"output_tensor": "prob", "thresholds": [0.5, 0.5, 0.5]}}


async def deploy_things_and_colours(
    client: TestClient, wide_detector: ModelFiles, tf1_model: ModelFiles
) -> dict[str, int]:
    """Services `things` (the wide detector: person, car) and `colours` (blue, green, red): network ids."""
    return {
        "things": await deploy_service(
            client,
            wide_detector,
            "things",
            ["person", "car"],
            DETECTION,
            boxes=True,
            image={"target_size": "80x40"},
        ),
        "colours": await deploy_service(
            client, tf1_model, "colours", ["blue", "green", "red"], CLASSIFICATION, boxes=False
        ),
    }


@pytest.fixture
async def services(client: TestClient, wide_detector: ModelFiles, tf1_model: ModelFiles) -> dict[str, int]:
    return await deploy_things_and_colours(client, wide_detector, tf1_model)


def seed_chain(frame: np.ndarray, crop_action: dict[str, Any]) -> dict[str, Any]:
    """The seed page's faces-crop-age_real example with our services."""
    return {
        "chain": {
            "calls": [
                {
                    "parameters": {
                        "input": {"connector": "image", "keep_orig": True},
                        "mllib": {"gpu": True},
                        "output": {"bbox": True, "confidence_threshold": 0.1},
                    },
                    "service": "things",
                    "data": [data_uri(frame)],
                },
                {"id": "crop", "action": crop_action},
                {
                    "parent_id": "crop",
                    "parameters": {
                        "input": {"connector": "image", "keep_orig": True},
                        "output": {"confidence_threshold": 0.01, "best": 1},
                    },
                    "service": "colours",
                },
            ]
        }
    }


@pytest.mark.parametrize(
    "crop_action",
    [
        {"type": "crop", "parameters": {"padding_ratio": 0.0, "save_crops": False}},  # DeepDetect's code form
        {"type": "crop", "padding_ratio": 0.0, "save_crop": False},  # the seed page's form
    ],
    ids=["deepdetect-form", "seed-form"],
)
async def test_seed_example_nests_classifier_results_in_each_detection(
    client: TestClient, services: dict[str, int], crop_action: dict[str, Any]
) -> None:
    response = await client.put("/chain/faces-crop-age_real", json=seed_chain(scene(), crop_action))
    body = await response.json()
    assert response.status == 200, body
    assert body["status"] == {"code": 200, "msg": "OK"}
    assert body["head"]["method"] == "/chain" and body["head"]["time"] >= 0
    [prediction] = body["body"]["predictions"]
    assert prediction["uri"] == "0"  # DeepDetect names an inline image by its index
    car, person = prediction["classes"]
    # Scores are the colour fractions of the frame: green 0.68 (car), blue 0.16 (person).
    assert (car["cat"], car["prob"], car["bbox"]) == (
        "car",
        pytest.approx(0.68, abs=1e-6),
        pytest.approx(BOX1),
    )
    assert (person["cat"], person["prob"], person["bbox"]) == (
        "person",
        pytest.approx(0.16, abs=1e-6),
        pytest.approx(BOX0),
    )
    assert person["last"] is True and "last" not in car
    assert car["colours"] == {
        "classes": [{"cat": "red", "prob": pytest.approx(prob([0, 0, 1])[2]), "last": True}]
    }
    assert person["colours"] == {
        "classes": [{"cat": "blue", "prob": pytest.approx(prob([1, 0, 0])[0]), "last": True}]
    }


async def test_all_crops_of_a_level_go_to_the_child_network_as_one_batch(
    client: TestClient, services: dict[str, int]
) -> None:
    response = await client.post("/chain/x", json=seed_chain(scene(), {"type": "crop"}))
    assert response.status == 200
    stats = client.app[SERVICES].runtime.loaded[services["colours"]].batcher.stats
    assert stats.batch_sizes == {2: 1}


async def test_three_level_tree_reports_every_box_in_frame_pixels(
    client: TestClient, services: dict[str, int]
) -> None:
    chain = {
        "chain": {
            "calls": [
                {"id": "detect", "service": "things", "data": [data_uri(scene(red=False))]},
                {"id": "crop1", "parent_id": "detect", "action": {"type": "crop"}},
                {"id": "detect2", "parent_id": "crop1", "service": "things"},
                {"id": "crop2", "parent_id": "detect2", "action": {"type": "crop"}},
                {"id": "classify", "parent_id": "crop2", "service": "colours"},
            ]
        }
    }
    body = await post_json(client, "/chain/deep", chain, status=200)
    [prediction] = body["body"]["predictions"]
    car, person = prediction["classes"]  # green 0.84 > blue 0.16
    assert person["bbox"] == pytest.approx(BOX0)
    # The blue crop is all blue: the detector finds box 0 in it (score 1), box 1 scores 0 and is dropped.
    [inner] = person["things"]["classes"]
    assert (inner["cat"], inner["prob"]) == ("person", 1.0)
    # Box 0 of a 32x16 crop at (8, 4): x 8 + 3.2 .. 8 + 16, y 4 + 1.6 .. 4 + 8.
    assert inner["bbox"] == pytest.approx({"xmin": 11.2, "ymin": 5.6, "xmax": 24.0, "ymax": 12.0}, abs=1e-4)
    assert [c["cat"] for c in inner["colours"]["classes"]] == ["blue"]
    # The car box covers green only: inside it the detector finds a car (score 1) whose crop is green.
    [inner_car] = car["things"]["classes"]
    assert inner_car["cat"] == "car" and [c["cat"] for c in inner_car["colours"]["classes"]] == ["green"]


async def test_branches_and_several_roots(
    client: TestClient, services: dict[str, int], tf1_model: ModelFiles
) -> None:
    classification = {"classification": {"output_tensor": "prob", "thresholds": [0.0, 0.0, 0.0]}}
    await deploy_service(client, tf1_model, "palette", ["b", "g", "r"], classification, boxes=False)
    chain = {
        "chain": {
            "calls": [
                {"id": "detect", "service": "things", "data": [data_uri(scene())]},
                {"id": "scene", "service": "colours"},  # a second root: runs on the whole frame
                {"id": "crop", "parent_id": "detect", "action": {"type": "crop"}},
                {"id": "a", "parent_id": "crop", "service": "colours"},
                {"id": "b", "parent_id": "crop", "service": "palette", "parameters": {"output": {"best": 2}}},
            ]
        }
    }
    response = await client.put("/v0.7/chains/branches", json=chain)
    assert response.status == 201
    assert (await response.json())["name"] == "branches"
    result = await post_json(client, "/v0.7/chains/branches/run", {"data": [data_uri(scene())]}, status=200)
    [prediction] = result["body"]["predictions"]
    assert [c["cat"] for c in prediction["colours"]["classes"]] == [
        "green"
    ]  # the whole frame is mostly green
    for detection, colour in zip(prediction["classes"], ("red", "blue"), strict=True):
        assert [c["cat"] for c in detection["colours"]["classes"]] == [colour]
        assert detection["palette"]["classes"][0]["cat"] == colour[0]
        assert len(detection["palette"]["classes"]) == 2


async def test_no_detections_yield_empty_classes_and_run_no_children(
    client: TestClient, services: dict[str, int]
) -> None:
    black = np.zeros((40, 80, 3), dtype=np.uint8)
    body = await post_json(client, "/chain/empty", seed_chain(black, {"type": "crop"}), status=200)
    assert body["body"]["predictions"] == [{"uri": "0", "classes": []}]
    assert services["colours"] not in client.app[SERVICES].runtime.loaded or (
        client.app[SERVICES].runtime.loaded[services["colours"]].batcher.stats.items == 0
    )


async def test_filter_keeps_listed_classes_in_the_parent_output_too(
    client: TestClient, services: dict[str, int]
) -> None:
    for spelling in (
        {"type": "filter", "parameters": {"classes": ["person"]}},
        {"type": "filter", "classnames": ["person"]},
    ):
        chain = {
            "chain": {
                "calls": [
                    {"service": "things", "data": [data_uri(scene())]},
                    {"id": "keep", "action": spelling},
                    {"id": "crop", "action": {"type": "crop"}},
                    {"parent_id": "crop", "service": "colours"},
                ]
            }
        }
        body = await post_json(client, "/chain/filtered", chain, status=200)
        [prediction] = body["body"]["predictions"]
        assert [c["cat"] for c in prediction["classes"]] == ["person"]
        assert prediction["classes"][0]["last"] is True
        assert [c["cat"] for c in prediction["classes"][0]["colours"]["classes"]] == ["blue"]


async def test_a_filter_beside_a_crop_filters_the_output_and_the_crop_sees_every_box(
    client: TestClient, services: dict[str, int]
) -> None:
    """Siblings under one service: the crop runs on every box (it got them before any filter), the filter
    narrows what the parent shows. Once a 500: the filter rewrote the list the crop was reading."""
    chain = {
        "chain": {
            "calls": [
                {"id": "detect", "service": "things", "data": [data_uri(scene())]},
                {"id": "crop", "parent_id": "detect", "action": {"type": "crop"}},
                {"parent_id": "crop", "service": "colours"},
                {"id": "keep", "parent_id": "detect", "action": {"type": "filter", "classes": ["car"]}},
                {
                    "id": "draw",
                    "parent_id": "keep",
                    "action": {"type": "draw_bbox", "output_images": True, "output_format": "jpeg"},
                },
            ]
        }
    }
    for _ in range(3):
        response = await client.post("/chain/siblings", json=chain)
        assert response.status == 200, await response.text()
        [prediction] = (await response.json())["body"]["predictions"]
        assert list(prediction) == ["uri", "classes", "draw"]  # nested results in call order
        [car] = prediction["classes"]
        assert (car["cat"], car["last"]) == ("car", True)
        assert car["bbox"] == pytest.approx(BOX1)
        assert [c["cat"] for c in car["colours"]["classes"]] == ["red"]
        assert list(car) == ["cat", "prob", "bbox", "last", "colours"]


async def test_a_service_named_like_a_result_field_cannot_nest(
    client: TestClient, services: dict[str, int], tf1_model: ModelFiles
) -> None:
    classification = {"classification": {"output_tensor": "prob", "thresholds": [0.5, 0.5, 0.5]}}
    await deploy_service(client, tf1_model, "prob", ["blue", "green", "red"], classification, boxes=False)
    calls = [CALL, {"id": "crop", "action": {"type": "crop"}}, {"parent_id": "crop", "service": "prob"}]
    response = await client.post("/chain/bad", json={"chain": {"calls": calls}})
    body = await response.json()
    assert response.status == 400, body
    assert "would nest under service 'prob', a field of DeepDetect's result objects" in body["error"]
    # As the chain's first service its classes are the prediction itself: nothing is overwritten.
    ok = await client.post(
        "/chain/ok", json={"chain": {"calls": [{**CALL, "service": "prob", "data": [data_uri(scene())]}]}}
    )
    assert ok.status == 200, await ok.text()


async def test_rotate_turns_crops_by_the_orientation_class_and_maps_boxes_back(
    client: TestClient, services: dict[str, int], orientation_model: ModelFiles, wide_detector: ModelFiles
) -> None:
    # The orientation classifier has 4 classes; class 3 ("270") wins on blue (weight 7 on channel 0).
    classification = {"classification": {"output_tensor": "prob", "thresholds": [0.5] * 4}}
    await deploy_service(
        client, orientation_model, "orientation", ["0", "90", "180", "270"], classification, boxes=False
    )
    chain = {
        "chain": {
            "calls": [
                {
                    "id": "detect",
                    "service": "things",
                    "data": [data_uri(scene(red=False))],
                    "parameters": {"output": {"best_bbox": 1}},
                },
                {"id": "crop", "action": {"type": "crop"}},
                {"id": "orient", "parent_id": "crop", "service": "orientation"},
                {
                    "id": "turn",
                    "parent_id": "orient",
                    "action": {"type": "rotate", "parameters": {"orientation": "absolute"}},
                },
                {"id": "again", "parent_id": "turn", "service": "things"},
            ]
        }
    }
    body = await post_json(client, "/chain/rotate", chain, status=200)
    [prediction] = body["body"]["predictions"]
    [first] = prediction["classes"]  # best_bbox 1: the best box only (car: green 0.84)
    assert first["cat"] == "car"
    assert [c["cat"] for c in first["orientation"]["classes"]] == ["90"]  # green: class 1 (weight 5) → "90"
    # The 32x16 green crop at (40, 20), turned 90° clockwise (16 wide, 32 high): box 1 of the turned crop
    # (x 8..14.4, y 16..28.8) maps back to the crop as x = y', y = 16 - x', then to the frame.
    [turned] = first["things"]["classes"]
    assert turned["cat"] == "car"
    assert turned["bbox"] == pytest.approx(
        {"xmin": 40 + 16.0, "ymin": 20 + 16 - 14.4, "xmax": 40 + 28.8, "ymax": 20 + 16 - 8.0}, abs=1e-4
    )


async def test_draw_bbox_returns_the_drawn_frame_under_the_action_id(
    client: TestClient, services: dict[str, int]
) -> None:
    chain = {
        "chain": {
            "calls": [
                {"service": "things", "data": [data_uri(scene())]},
                {
                    "id": "drawn",
                    "action": {
                        "type": "draw_bbox",
                        "parameters": {"output_images": True, "thickness": 1, "output_format": "jpeg"},
                    },
                },
            ]
        }
    }
    body = await post_json(client, "/chain/draw", chain, status=200)
    [prediction] = body["body"]["predictions"]
    jpeg = base64.b64decode(prediction["drawn"]["images"][0])
    drawn = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert drawn.shape == (40, 80, 3)
    original = scene()
    # The box edges changed colour; the middle of the blue box did not.
    assert np.abs(drawn[4, 8:40].astype(int) - original[4, 8:40]).max() > 60
    assert np.abs(drawn[12, 24].astype(int) - original[12, 24]).max() < 40


async def test_save_crops_writes_pngs_under_the_data_dir(
    client: TestClient, services: dict[str, int]
) -> None:
    await post_json(
        client,
        "/chain/save",
        seed_chain(scene(), {"type": "crop", "parameters": {"save_crops": True, "save_path": "faces"}}),
        status=200,
    )
    directory = client.app[SERVICES].settings.storage.data_dir / "chains" / "faces"

    def saved() -> list[tuple[str, tuple[int, ...]]]:
        return sorted((p.name, cv2.imread(str(p)).shape) for p in directory.iterdir())

    import asyncio

    assert await asyncio.to_thread(saved) == [
        ("crop_image0_0.png", (16, 32, 3)),
        ("crop_image0_1.png", (16, 32, 3)),
    ]


CALL = {"service": "things", "data": ["data:image/png;base64,AAAA"]}
INVALID = [
    ("unknown parent", [CALL, {"parent_id": "nope", "action": {"type": "crop"}}], 400, 1005, "names no call"),
    (
        "duplicate id",
        [{**CALL, "id": "a"}, {"id": "a", "action": {"type": "crop"}}],
        400,
        1006,
        "already used",
    ),
    (
        "cycle",
        [
            CALL,
            {"id": "x", "parent_id": "y", "action": {"type": "crop"}},
            {"id": "y", "parent_id": "x", "action": {"type": "filter", "classes": ["a"]}},
        ],
        400,
        1006,
        "its own ancestor",
    ),
    ("both", [{**CALL, "action": {"type": "crop"}}], 400, 1006, "has both 'service' and 'action'"),
    ("neither", [CALL, {"id": "z"}], 400, 1006, "has neither"),
    (
        "first is action",
        [{"action": {"type": "crop"}, "data": CALL["data"]}],
        400,
        1006,
        "starts with a service",
    ),
    ("unknown action", [CALL, {"action": {"type": "blur"}}], 400, 1012, "unknown action type 'blur'"),
    (
        "unknown action parameter",
        [CALL, {"action": {"type": "crop", "padding": 1}}],
        400,
        1012,
        "padding: unknown field",
    ),
    ("unknown service", [{**CALL, "service": "ghost"}], 404, 1002, "service 'ghost' does not exist"),
    (
        "service under a filter",
        [
            CALL,
            {"id": "f", "action": {"type": "filter", "classes": ["car"]}},
            {"parent_id": "f", "service": "colours"},
        ],
        400,
        1005,
        "takes its images from a crop or rotate action",
    ),
    (
        "crop under a classifier",
        [{**CALL, "service": "colours"}, {"action": {"type": "crop"}}],
        400,
        1012,
        "crop needs boxes",
    ),
    (
        "siblings under one key",
        [
            CALL,
            {"id": "c", "action": {"type": "crop"}},
            {"parent_id": "c", "service": "colours"},
            {"parent_id": "c", "service": "colours"},
        ],
        400,
        1006,
        "would both write 'colours'",
    ),
    (
        "unknown output parameter",
        [{**CALL, "parameters": {"output": {"confidence": 0.5}}}],
        400,
        1006,
        "output.confidence: unknown field",
    ),
    ("no data", [{"service": "things"}], 400, 1005, 'needs "data"'),
    (
        "reserved action id",
        [CALL, {"id": "bbox", "action": {"type": "draw_bbox"}}],
        400,
        1006,
        "would nest under action id 'bbox', a field of DeepDetect's result objects",
    ),
    (
        "too many calls",
        [CALL] + [{"action": {"type": "filter", "classes": ["car"]}}] * 20_000,
        400,
        1006,
        "the chain has 20001 calls; at most 256 are allowed (chains.max_calls)",
    ),
    (
        "too deep",
        [CALL] + [{"action": {"type": "crop"}}, {"service": "things"}] * 20,
        400,
        1006,
        "is nested 33 calls deep; a chain may be at most 32 deep (chains.max_depth)",
    ),
]


@pytest.mark.parametrize(
    ("case", "calls", "status", "dd_code", "fragment"), INVALID, ids=[c[0] for c in INVALID]
)
async def test_invalid_chains_are_rejected_before_anything_runs(
    client: TestClient,
    services: dict[str, int],
    case: str,
    calls: list[Any],
    status: int,
    dd_code: int,
    fragment: str,
) -> None:
    response = await client.post("/chain/bad", json={"chain": {"calls": calls}})
    body = await response.json()
    assert response.status == status, body
    assert body["status"]["code"] == status and body["status"]["dd_code"] == dd_code, body
    assert fragment in body["error"] and body["status"]["dd_msg"] == body["error"]
    assert client.app[SERVICES].runtime.loaded[services["things"]].batcher.stats.items == 0


async def test_a_spec_without_current_version_cannot_serve(
    client: TestClient, services: dict[str, int]
) -> None:
    await post_json(
        client,
        "/v0.7/recognition/specs",
        {"name": "empty", "outputs": [{"labels": {"labels": [{"id": 1, "name": "x"}]}}]},
    )
    response = await client.put("/v0.7/chains/c", json={"calls": [{"service": "empty"}]})
    body = await response.json()
    assert response.status == 400 and "has no current version" in body["error"]


async def test_stored_chains_lifecycle(client: TestClient, services: dict[str, int]) -> None:
    chain = {
        "chain": {
            "calls": [
                {"service": "things"},
                {"id": "crop", "action": {"type": "crop"}},
                {"parent_id": "crop", "service": "colours"},
            ]
        }
    }
    response = await client.put("/v0.7/chains/people", json=chain)
    assert response.status == 201
    assert (await client.put("/v0.7/chains/people/", json=chain)).status == 200  # replaced
    stored = await (await client.get("/v0.7/chains/people")).json()
    assert stored["chain"]["calls"][1] == {"id": "crop", "action": {"type": "crop"}}
    listed = await (await client.get("/v0.7/chains")).json()
    assert [c["name"] for c in listed["results"]] == ["people"]
    result = await post_json(client, "/v0.7/chains/people/run", {"data": [data_uri(scene())]}, status=200)
    assert [c["cat"] for c in result["body"]["predictions"][0]["classes"]] == ["car", "person"]
    bad = await client.put("/v0.7/chains/broken", json={"calls": [{"action": {"type": "crop"}}]})
    assert bad.status == 400
    assert (await client.get("/v0.7/chains/broken")).status == 404
    assert (await client.delete("/v0.7/chains/people")).status == 204
    response = await client.post("/v0.7/chains/people/run", json={"data": [data_uri(scene())]})
    assert response.status == 404 and (await response.json())["code"] == "chain_not_found"


def test_saved_file_stem_ignores_data_uris(tmp_path: Path) -> None:
    from streamd.chains.runner import _stem

    assert _stem("data:image/png;base64,xx", 3) == "image3"
    assert _stem("/media/cam 1/frame.jpg", 0) == "frame"


def test_a_wide_chain_of_twenty_thousand_calls_is_planned_in_one_pass() -> None:
    """Ids, default parents, cycles, depths and collisions are checked in linear time: one detector with
    19,999 filters under it (the quadratic version took 13 s on 20,000 calls)."""
    from streamd.chains.plan import build_plan
    from streamd.chains.spec import ResolvedService, parse_body

    things = ResolvedService("things", 1, 1, 1, True, ("car",), (), ())
    calls = [{"id": "d", "service": "things"}] + [
        {"id": f"f{index}", "parent_id": "d", "action": {"type": "filter", "classes": ["car"]}}
        for index in range(19_999)
    ]
    plan = build_plan(parse_body({"calls": calls}), lambda name: things, require_data=False)
    [root] = plan.roots
    assert [child.call_id for child in root.children] == [f"f{index}" for index in range(19_999)]
