"""DeepDetect's output parameters in chains, with exact values: ctc, extract_layer, bbox, nms_threshold,
confidence_threshold 0, draw_bbox vals, crop-relative boxes. Scene and services as in test_chains.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from tests.factories.models import ModelFiles, build_tf1_sequence
from tests.test_chains import (  # noqa: F401  (fixtures)
    BOX0,
    BOX1,
    data_uri,
    deploy_service,
    post_json,
    scene,
    services,
)


@pytest.fixture(scope="session")
def sequence_model(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    return build_tf1_sequence(tmp_path_factory.mktemp("models") / "sequence")


async def run(client: TestClient, calls: list[dict[str, Any]]) -> dict[str, Any]:
    body = await post_json(client, "/chain/out", {"chain": {"calls": calls}}, status=200)
    [prediction] = body["body"]["predictions"]
    return prediction


async def test_ctc_decodes_the_best_path_with_blanks_and_repeats_merged(
    client: TestClient, sequence_model: ModelFiles
) -> None:
    sequence = {"classification": {"output_tensor": "seq", "thresholds": [0.5] * 4}}
    await deploy_service(client, sequence_model, "ocr", ["_", "b", "g", "r"], sequence, boxes=False)
    frame = np.zeros((8, 8, 3), dtype=np.uint8)  # columns: b b _ b g g r _
    for column, colour in enumerate([(255, 0, 0)] * 2 + [(0, 0, 0)] + [(255, 0, 0)] + [(0, 255, 0)] * 2):
        frame[:, column] = colour
    frame[:, 6] = (0, 0, 255)
    output = {"ctc": True, "blank_label": 0}
    prediction = await run(
        client, [{"service": "ocr", "data": [data_uri(frame)], "parameters": {"output": output}}]
    )
    [text] = prediction["classes"]
    step_on = np.exp(4.0) / (np.exp(4.0) + np.exp(0.5) + 2)  # a coloured column: its label
    step_off = np.exp(0.5) / (np.exp(0.5) + 3)  # a black column: blank
    assert text == {"cat": "bbgr", "prob": pytest.approx(step_on**6 * step_off**2), "last": True}


@pytest.mark.usefixtures("services")
async def test_extract_layer_returns_the_layer_as_vals(client: TestClient) -> None:
    prediction = await run(
        client,
        [
            {
                "service": "colours",
                "data": [data_uri(scene())],
                "parameters": {"mllib": {"extract_layer": "pooled"}},
            }
        ],
    )
    # pooled = the mean colour of the frame squashed to the classifier's 8x8 (pixel_scaling 1): 9 of its
    # 64 pixels blue, 9 red, 46 green
    assert set(prediction) == {"uri", "vals"}
    assert prediction["vals"] == pytest.approx([9 / 64, 46 / 64, 9 / 64], abs=1e-6)


@pytest.mark.usefixtures("services")
async def test_bbox_false_omits_boxes_and_threshold_zero_keeps_what_the_version_discards(
    client: TestClient,
) -> None:
    calls = [
        {
            "service": "things",
            "data": [data_uri(scene(blue=False))],
            "parameters": {"output": {"bbox": False}},
        }
    ]
    prediction = await run(client, calls)
    assert prediction["classes"] == [{"cat": "car", "prob": pytest.approx(0.84), "last": True}]
    calls[0]["parameters"] = {"output": {"confidence_threshold": 0}}
    # blue is 0: box 0 and box 2 score 0 and are padding (DeepDetect drops score 0 too); only the car
    assert [c["cat"] for c in (await run(client, calls))["classes"]] == ["car"]


@pytest.mark.usefixtures("services")
async def test_nms_threshold_replaces_the_versions(client: TestClient) -> None:
    calls: list[dict[str, Any]] = [
        {"service": "things", "data": [data_uri(scene())], "parameters": {"output": {"nms_threshold": 0.9}}}
    ]
    # boxes 0 and 2 overlap with IoU ~0.82: at 0.45 one goes, at 0.9 both stay
    assert [c["cat"] for c in (await run(client, calls))["classes"]] == ["car", "person", "person"]


@pytest.mark.usefixtures("services")
async def test_draw_bbox_returns_deepdetect_vals_that_reshape_to_the_image(client: TestClient) -> None:
    calls = [
        {"service": "things", "data": [data_uri(scene())]},
        {"id": "img_bbox", "action": {"type": "draw_bbox", "parameters": {"output_images": True}}},
    ]
    prediction = await run(client, calls)
    drawn = np.array(prediction["img_bbox"]["vals"], dtype=np.uint8).reshape((40, 80, 3))  # chaindetect.py
    assert len(prediction["img_bbox"]["vals"]) == 40 * 80 * 3
    assert (drawn[12, 24] == scene()[12, 24]).all() and not (drawn[4, 8:40] == scene()[4, 8:40]).all()


@pytest.mark.usefixtures("services")
async def test_bbox_coordinates_input_gives_deepdetects_crop_relative_boxes(client: TestClient) -> None:
    calls: list[dict[str, Any]] = [
        {
            "service": "things",
            "data": [data_uri(scene(red=False))],
            "parameters": {"output": {"best_bbox": 1}},
        },
        {"id": "crop", "action": {"type": "crop"}},
        {"parent_id": "crop", "service": "things", "parameters": {"output": {"bbox_coordinates": "input"}}},
    ]
    [car] = (await run(client, calls))["classes"]
    [inner] = car["things"]["classes"]
    # the 32x16 car crop at (40, 20): box 1 of the crop is x 16..28.8, y 8..14.4 in the crop's pixels
    assert inner["bbox"] == pytest.approx({"xmin": 16.0, "ymin": 8.0, "xmax": 28.8, "ymax": 14.4}, abs=1e-4)


@pytest.mark.usefixtures("services")
async def test_shared_action_parameters_are_accepted_but_generate_mask_and_unknown_names_are_refused(
    client: TestClient,
) -> None:
    root = {"service": "things", "data": [data_uri(scene())]}
    crop = {"type": "crop", "parameters": {"thickness": 3, "classes": ["car"], "chip_size": 150}}
    assert (await run(client, [root, {"action": crop}]))["classes"]
    for parameters, fragment in (({"generate_mask": True}, "generate_mask"), ({"paddding": 1}, "paddding")):
        response = await client.post(
            "/chain/x",
            json={"chain": {"calls": [root, {"action": {"type": "crop", "parameters": parameters}}]}},
        )
        answer = await response.json()
        assert response.status == 400 and answer["status"]["dd_code"] == 1012 and fragment in answer["error"]
