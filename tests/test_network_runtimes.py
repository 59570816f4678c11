"""Every kind of SavedModel TF 2.x writes deploys, runs a test batch at deployment and answers like the
framework that exported it; one that cannot run is refused at deployment."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from streamd.networks.warmup import warm_sizes
from tests.conftest import create_network, metric_sample, network_form, preprocessing_for, wait_task
from tests.factories.models import ModelFiles, build_keras_classifier, build_tf1_unrunnable
from tests.test_inference import CLASSES_SPEC, create_json, data_uri, error_of, png, run_task
from tests.test_network_errors import assert_clean

COLOURS = [(255, 0, 0), (0, 128, 255), (40, 200, 90)]


def _keras(how: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(how, files, the Keras model's own probabilities for COLOURS at pixel_scaling 1)."""
    files, model = build_keras_classifier(tmp_path_factory.mktemp("models") / how, how=how)
    # streamd feeds BGR by default: channel 0 of the input is the colour's first (blue) value.
    batch = np.stack([np.full((8, 8, 3), colour, np.float32) / 255 for colour in COLOURS])
    return how, files, np.asarray(model(batch))


@pytest.fixture(scope="session", params=["save", "export"])
def keras_export(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _keras(request.param, tmp_path_factory)


@pytest.fixture(scope="session")
def keras_saved(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Only `tf.saved_model.save`: the export that runs as functions (model.export() runs in a session,
    where every graph tensor can be fetched and the placeholders are the inputs)."""
    return _keras("save", tmp_path_factory)


async def deploy_keras(client: TestClient, files: ModelFiles) -> tuple[dict[str, Any], dict[str, Any]]:
    network = await create_network(
        client, network_form(files, preprocessing=preprocessing_for(files, pixel_scaling=1.0))
    )
    return network, await wait_task(client, network["task_id"])


async def test_keras_savedmodels_deploy_and_infer_as_keras_does(
    client: TestClient, keras_export: Any
) -> None:
    how, files, expected = keras_export
    network, task = await deploy_keras(client, files)
    assert task["status"] == "success", task
    # The TF1 loader restores model.export()'s variables but not tf.saved_model.save's object-based ones.
    assert task["data"]["runtime"] == {"save": "function", "export": "session"}[how]
    assert task["data"]["frozen_graph"] is (how == "export")  # what follows then runs frozen
    assert task["data"]["inputs"] == [{"tensor_name": files.input_tensor, "shape": [None, 8, 8, 3]}]
    assert task["data"]["probed_outputs"] == [files.output_tensor]
    assert task["data"]["warmed_batch_sizes"] == [1, 2, 4, 8, 16, 32]

    async def infer(colour: tuple[int, int, int]) -> dict[str, Any]:
        body = {
            "inputs": [{"image": {"source": data_uri(png(colour))}}],
            "output_tensors": [files.output_tensor],
        }
        return await run_task(client, f"/v0.7/networks/{network['id']}/inference", json=body)

    tasks = await asyncio.gather(*(infer(colour) for colour in COLOURS))
    for task, probs in zip(tasks, expected, strict=True):
        assert task["status"] == "success", task
        [tensor] = task["data"]["tensors"]
        assert (tensor["name"], tensor["shape"]) == (files.output_tensor, [3])
        np.testing.assert_allclose(tensor["data"], probs, atol=1e-5)


async def test_signature_output_names_serve_recognition_versions(
    client: TestClient, keras_export: Any
) -> None:
    _how, files, expected = keras_export
    network, _task = await deploy_keras(client, files)
    spec = await create_json(client, "/v0.7/recognition/specs", CLASSES_SPEC)
    post = {"classification": {"output_tensor": files.output_tensor, "thresholds": [0.0, 0.0, 0.0]}}
    version = await create_json(
        client,
        "/v0.7/recognition/versions",
        {"spec_id": spec["id"], "network_id": network["id"], "post_processings": [post]},
    )
    body = {"inputs": [{"image": {"source": data_uri(png(COLOURS[1]))}}]}
    task = await run_task(client, f"/v0.7/recognition/versions/{version['id']}/inference", json=body)
    predicted = task["data"]["outputs"][0]["labels"]["predicted"]
    scores = {p["label_id"]: p["score"] for p in predicted}
    assert list(scores) == [[10, 20, 30][i] for i in np.argsort(-expected[1])]  # best first
    np.testing.assert_allclose([scores[10], scores[20], scores[30]], expected[1], atol=1e-5)


async def test_tensors_outside_the_signatures_are_named_when_the_network_runs_as_functions(
    client: TestClient, keras_saved: Any
) -> None:
    _how, files, _expected = keras_saved
    network, _task = await deploy_keras(client, files)
    body = {"inputs": [{"image": {"source": data_uri(png((1, 2, 3)))}}], "output_tensors": ["dense/kernel"]}
    response = await client.post(f"/v0.7/networks/{network['id']}/inference", json=body)
    assert await error_of(response, 400, "unknown_tensor") == (
        f"tensor 'dense/kernel' is not an output of the signatures of network-{network['id']} that its "
        f"inputs feed; they are: {files.output_tensor}"
    )


@pytest.fixture(scope="session")
def unrunnable_model(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    return build_tf1_unrunnable(tmp_path_factory.mktemp("models") / "unrunnable")


async def test_a_network_that_cannot_run_fails_its_deployment_and_is_removed(
    client: TestClient, unrunnable_model: ModelFiles
) -> None:
    network = await create_network(client, network_form(unrunnable_model))
    task = await wait_task(client, network["task_id"])
    assert task["status"] == "error"
    assert task["error"] == (
        f"network {network['id']} was not deployed and has been removed: a test batch of 1 mid-grey "
        "image(s) failed for prob:0: session.run failed at node 'MatMul/ReadVariableOp': "
        "FailedPreconditionError: Could not find variable unsaved_weights. This could mean that the "
        "variable has been deleted. In TF1, it can also mean the variable is uninitialized. Debug info: "
        "container=localhost, status error message=Container localhost does not exist. (Could not find "
        "resource: localhost/unsaved_weights)"
    )
    assert (await client.get(f"/v0.7/networks/{network['id']}")).status == 404
    await assert_clean(client)
    assert await metric_sample(client, "streamd_network_deployments_total", outcome="error") == 1


async def test_deployment_warms_the_sizes_of_a_tuned_batcher(
    client: TestClient, tf1_model: ModelFiles
) -> None:
    fields = {"metadata": '{"streamd": {"max_batch_size": 12}}'}
    network = await create_network(client, network_form(tf1_model, fields=fields))
    task = await wait_task(client, network["task_id"])
    assert (task["data"]["probed_outputs"], task["data"]["warmed_batch_sizes"]) == (
        ["prob:0"],
        [1, 2, 4, 8, 12],
    )
    unbatched = {**preprocessing_for(tf1_model), "batched_output": False}
    network = await create_network(client, network_form(tf1_model, preprocessing=unbatched))
    task = await wait_task(client, network["task_id"])
    assert task["data"]["warmed_batch_sizes"] == [1]


def test_warmed_sizes_are_one_the_powers_of_two_and_the_maximum() -> None:
    assert [warm_sizes(n) for n in (1, 2, 3, 32, 48)] == [
        [1],
        [1, 2],
        [1, 2, 3],
        [1, 2, 4, 8, 16, 32],
        [1, 2, 4, 8, 16, 32, 48],
    ]


async def test_a_function_network_fed_by_a_name_outside_its_signatures_is_refused_with_their_inputs(
    client: TestClient, keras_saved: Any
) -> None:
    _how, files, _expected = keras_saved
    preprocessing = preprocessing_for(files)
    preprocessing["inputs"][0]["tensor_name"] = "inputs"  # the Keras input's name, not the signature's
    network = await create_network(
        client, network_form(None, preprocessing=preprocessing, files=files.contents)
    )
    task = await wait_task(client, network["task_id"])
    assert task["error"] == (
        f"network {network['id']} was not deployed and has been removed: preprocessing.inputs[0].tensor_name "
        f"'inputs' is not an input of the SavedModel's signatures; they are: {files.input_tensor}"
    )
    await assert_clean(client)
