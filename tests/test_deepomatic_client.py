"""The official deepomatic-api client against a real daemon, doing what its own tests
(`tests/test_client.py` of deepomatic-client-python) do: public specs listed, retrieved and run from a
URL, a file, binary and base64; a private spec made from a public spec's outputs with a version without
thresholds; 20 tasks waited on together; a 400 for empty inputs; raw inference on a public network."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from deepomatic.api.client import Client
from deepomatic.api.exceptions import ClientError
from deepomatic.api.inputs import ImageInput

from tests.factories.daemon import Daemon
from tests.factories.models import ModelFiles
from tests.factories.public import COLOUR_LABELS, colour_manifest, install_public
from tests.test_inference import png, softmax

pytestmark = pytest.mark.slow

API_KEY = "test-key"
IMAGE = png((255, 64, 0))  # BGR: the tiny classifier's logits are (4, 5 * 64 / 255, 0)
PROBS = softmax(np.array([4.0, 5.0 * 64 / 255, 0.0]))  # 0.924, 0.059, 0.017


class _ImageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(IMAGE)))
        self.end_headers()
        self.wfile.write(IMAGE)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def image_url() -> Iterator[str]:
    """The image the client's tests fetch from static.deepomatic.com, served on 127.0.0.1."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    thread = threading.Thread(target=server.serve_forever, name="test-image-server", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/dog1.png"
    server.shutdown()
    thread.join()
    server.server_close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, tf1_model: ModelFiles) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("client")
    install_public(root / "public", "colours", tf1_model, colour_manifest())  # default thresholds
    install_public(root / "public", "raw-only", tf1_model, colour_manifest(recognition=False))
    env = {
        "STREAMD_AUTH__API_KEYS": API_KEY,
        "STREAMD_NETWORKS__PUBLIC_DIR": str(root / "public"),
        "STREAMD_INFERENCE__ALLOW_URL_SOURCES": "true",
    }
    daemon = Daemon(root / "data", env=env).start()
    yield daemon
    assert daemon.stop() == 0, daemon.log()


@pytest.fixture
def client(daemon: Daemon) -> Client:
    return Client(api_key=API_KEY, host=daemon.url)


def labels_of(result: dict[str, Any]) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    labels = result["outputs"][0]["labels"]
    return (
        [(p["label_name"], p["threshold"]) for p in labels["predicted"]],
        [(p["label_name"], p["threshold"]) for p in labels["discarded"]],
    )


def test_official_client_lists_and_retrieves_public_specs(client: Client) -> None:
    specs = client.RecognitionSpec.list(public=True)
    assert specs.count() == 1
    for spec in specs:
        assert spec["id"] == "colours"
        assert {"name", "description", "update_date"} <= set(spec.data())
    result = client.RecognitionSpec.list(public=True).data()
    assert (result["count"], len(result["results"])) == (1, 1)

    spec = client.RecognitionSpec.retrieve("colours")
    assert (spec["id"], spec["name"], spec["description"]) == ("colours", "Colours", "blue, green or red")
    assert spec["outputs"] == [{"labels": {"roi": "NONE", "exclusive": False, "labels": COLOUR_LABELS}}]


def test_official_client_infers_on_a_public_spec_from_url_file_binary_and_base64(
    client: Client, image_url: str, tmp_path: Path
) -> None:
    spec = client.RecognitionSpec.retrieve("colours")
    first = spec.inference(inputs=[ImageInput(image_url)], show_discarded=True, max_predictions=3)
    assert labels_of(first) == ([("blue", 0.025), ("green", 0.025)], [("red", 0.025)])
    scores = [p["score"] for key in ("predicted", "discarded") for p in first["outputs"][0]["labels"][key]]
    assert scores == pytest.approx(list(PROBS), rel=1e-5)

    path = tmp_path / "dog1.png"
    path.write_bytes(IMAGE)
    with path.open("rb") as handle:
        assert spec.inference(inputs=[ImageInput(handle)], show_discarded=True, max_predictions=3) == first
    binary = ImageInput(IMAGE, encoding="binary")
    assert spec.inference(inputs=[binary], show_discarded=True, max_predictions=3) == first
    encoded = ImageInput(base64.b64encode(IMAGE), encoding="base64")
    assert spec.inference(inputs=[encoded], show_discarded=True, max_predictions=3) == first


def test_official_client_makes_a_spec_from_public_outputs_and_a_version_without_thresholds(
    client: Client, tf1_model: ModelFiles, image_url: str
) -> None:
    network = client.Network.create(
        name="My first network",
        framework="tensorflow-1.x",
        preprocessing={
            "inputs": [{"tensor_name": "input", "image": {"target_size": "8x8", "pixel_scaling": 1.0}}],
            "batched_output": True,
        },
        files=dict(tf1_model.contents),
    )
    network.update(description="I had forgotten the description")
    outputs = client.RecognitionSpec.retrieve("colours")["outputs"]
    spec = client.RecognitionSpec.create(name="My recognition model", outputs=outputs)
    version = client.RecognitionVersion.create(
        network_id=network["id"],
        spec_id=spec["id"],
        post_processings=[{"classification": {"output_tensor": "prob"}}],
    )
    data = version.data()
    assert data["network_id"] == network["id"]
    assert data["post_processings"] == [
        {"classification": {"output_tensor": "prob", "thresholds": [0.025, 0.025, 0.025]}}
    ]
    client.Task.retrieve(network["task_id"]).wait()

    result = spec.inference(inputs=[ImageInput(image_url)], show_discarded=False, max_predictions=3)
    assert labels_of(result) == ([("blue", 0.025), ("green", 0.025)], [])
    box = {"xmin": 0.1, "ymin": 0.1, "xmax": 0.9, "ymax": 0.9}
    result = version.inference(
        inputs=[ImageInput(image_url, bbox=box)], show_discarded=True, max_predictions=3
    )
    assert labels_of(result) == ([("blue", 0.025), ("green", 0.025)], [("red", 0.025)])
    assert spec.versions().count() == 1

    task = spec.inference(inputs=[ImageInput(image_url)], return_task=True, wait_task=False)
    tasks = list(client.Task.list(task_ids=[task.pk]))
    assert [t.pk for t in tasks] == [task.pk]
    assert tasks[0]["status"] in ("pending", "success") and tasks[0]["error"] is None
    tasks[0].wait()
    assert tasks[0]["status"] == "success"
    assert labels_of(tasks[0]["data"]) == ([("blue", 0.025), ("green", 0.025)], [])


def test_official_client_batch_waits_twenty_public_spec_inferences(client: Client, image_url: str) -> None:
    spec = client.RecognitionSpec.retrieve("colours")
    tasks = [
        spec.inference(inputs=[ImageInput(image_url)], return_task=True, wait_task=False) for _ in range(20)
    ]
    pending, success, error = client.Task.batch_wait(tasks=tasks, timeout=30)
    assert (len(pending), len(error)) == (0, 0)
    assert [position for position, _ in success] == list(range(20))
    for position, task in success:
        assert task.pk == tasks[position].pk
        assert labels_of(task["data"]) == ([("blue", 0.025), ("green", 0.025)], [])


def test_official_client_gets_a_400_for_empty_inputs_on_a_public_spec(client: Client) -> None:
    with pytest.raises(ClientError) as raised:
        client.RecognitionSpec.retrieve("colours").inference(inputs=[])
    assert raised.value.status_code == 400
    assert raised.value.json()["code"] == "invalid_field"


def test_official_client_runs_raw_inference_on_a_public_network(client: Client) -> None:
    network = client.Network.retrieve("raw-only")
    tensors = network.inference(inputs=[ImageInput(IMAGE, encoding="binary")], output_tensors=["pooled"])
    np.testing.assert_allclose(tensors["pooled"], [1.0, 64 / 255, 0.0], rtol=1e-6)
