"""End to end: the real daemon process, the official deepomatic-api client, crashes and restarts."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from deepomatic.api.client import Client
from deepomatic.api.exceptions import ClientError, TaskError
from deepomatic.api.inputs import ImageInput

from tests.factories.daemon import Daemon, register_colour_chain
from tests.factories.models import ModelFiles
from tests.factories.videos import encode_h264

pytestmark = pytest.mark.slow

API_KEY = "test-key"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path / "data", env={"STREAMD_AUTH__API_KEYS": API_KEY}).start()
    yield daemon
    assert daemon.stop() == 0, daemon.log()


def official_client(daemon: Daemon) -> Client:
    return Client(api_key=API_KEY, host=daemon.url)


def test_official_client_create_wait_list_retrieve_update_delete(
    daemon: Daemon, tf1_model: ModelFiles
) -> None:
    client = official_client(daemon)
    preprocessing = {
        "inputs": [
            {
                "tensor_name": "input",
                "image": {
                    "dimension_order": "NHWC",
                    "target_size": "8x8",
                    "resize_type": "SQUASH",
                    "mean_file": "mean.npy",
                    "color_channels": "BGR",
                    "pixel_scaling": 2.0,
                    "data_type": "FLOAT32",
                },
            }
        ],
        "batched_output": True,
    }
    mean = tf1_model.directory.parent / "client-mean.npy"
    np.save(mean, np.ones((1, 1, 3)), allow_pickle=False)
    files = {name: open(path, "rb") for name, path in _files(tf1_model).items()}  # noqa: SIM115
    files["mean.npy"] = open(mean, "rb")  # noqa: SIM115
    try:
        network = client.Network.create(
            name="My first network",
            description="from the official client",
            metadata={"author": "me", "epochs": 3},
            framework="tensorflow-1.x",
            preprocessing=preprocessing,
            files=files,
        )
    finally:
        for handle in files.values():
            handle.close()
    network_id = network["id"]
    assert isinstance(network_id, int)
    assert network["preprocessing"]["inputs"][0]["image"]["pixel_scaling"] == 2.0
    assert network["preprocessing"]["batched_output"] is True
    assert network["metadata"] == {"author": "me", "epochs": 3}

    task = client.Task.retrieve(network["task_id"]).wait()
    assert task["status"] == "success"
    assert task["data"]["inputs"] == [{"tensor_name": "input:0", "shape": [None, 8, 8, 3]}]

    listed = list(client.Network.list())
    assert [n["id"] for n in listed] == [network_id]
    assert client.Network.list().count() == 1

    fetched = client.Network.retrieve(network_id)
    assert fetched["name"] == "My first network"
    fetched.update(name="renamed", description="new description")
    assert client.Network.retrieve(network_id)["name"] == "renamed"
    assert client.Network.retrieve(network_id)["description"] == "new description"

    (pending, success, error) = client.Task.batch_wait(tasks=[client.Task.retrieve(network["task_id"])])
    assert (len(pending), len(success), len(error)) == (0, 1, 0)

    client.Network.retrieve(network_id).delete()
    with pytest.raises(ClientError) as raised:
        client.Network.retrieve(network_id).refresh()
    assert raised.value.response.status_code == 404
    assert raised.value.response.json()["code"] == "network_not_found"


def test_official_client_sees_a_failed_deployment_as_task_error(
    daemon: Daemon, tf1_model: ModelFiles
) -> None:
    client = official_client(daemon)
    files = {"saved_model.pb": b"not a graph"}
    network = client.Network.create(
        name="broken",
        framework="tensorflow-1.x",
        preprocessing={"inputs": [{"tensor_name": "input", "image": {"target_size": "8x8"}}]},
        files=files,
    )
    with pytest.raises(TaskError) as raised:
        client.Task.retrieve(network["task_id"]).wait()
    assert "is not a TensorFlow SavedModel" in raised.value.task["error"]
    assert client.Network.list().count() == 0


def test_official_client_pages_through_many_networks(daemon: Daemon, tf1_model: ModelFiles) -> None:
    client = official_client(daemon)
    created = []
    for index in range(5):
        created.append(
            client.Network.create(
                name=f"n{index}",
                framework="tensorflow-1.x",
                preprocessing={"inputs": [{"tensor_name": "input:0", "image": {"target_size": "8x8"}}]},
                files=dict(tf1_model.contents),
            )["id"]
        )
    assert [n["id"] for n in client.Network.list(limit=2)] == created


def test_official_client_lists_public_networks(tmp_path: Path, tf1_model: ModelFiles) -> None:
    public = tmp_path / "public"
    entry = public / "tiny-classifier"
    (entry / "variables").mkdir(parents=True)
    for name, content in tf1_model.contents.items():
        (entry / ("variables/" + name if name.startswith("variables.") else name)).write_bytes(content)
    (entry / "network.json").write_text(
        json.dumps(
            {
                "name": "Tiny classifier",
                "framework": "tensorflow-1.x",
                "preprocessing": {"inputs": [{"tensor_name": "input", "image": {"target_size": "8x8"}}]},
            }
        )
    )
    (public / "Broken Entry").mkdir()
    daemon = Daemon(
        tmp_path / "data",
        env={"STREAMD_AUTH__API_KEYS": API_KEY, "STREAMD_NETWORKS__PUBLIC_DIR": str(public)},
    ).start()
    try:
        client = official_client(daemon)
        listed = list(client.Network.list(public=True))
        assert [n["id"] for n in listed] == ["tiny-classifier"]
        assert client.Network.retrieve("tiny-classifier")["name"] == "Tiny classifier"
        with pytest.raises(ClientError) as raised:
            client.Network.retrieve("nope").refresh()
        assert raised.value.response.status_code == 404
        assert "skipping public network" in daemon.log()
    finally:
        assert daemon.stop() == 0


def _files(model: ModelFiles) -> dict[str, Path]:
    return {p.name: p for p in sorted(model.directory.rglob("*")) if p.is_file()}


def test_kill_during_upload_leaves_a_consistent_store(tmp_path: Path, tf1_model: ModelFiles) -> None:
    daemon = Daemon(tmp_path / "data").start()
    boundary = "streamdtestboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\ncrash\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="variables.data-00000-of-00001"; '
        f'filename="v"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode() + bytes(3 * 1024 * 1024)
    with socket.create_connection(("127.0.0.1", daemon.port)) as sock:
        request_head = (
            "POST /v0.7/networks HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(head) + 50 * 1024 * 1024}\r\n\r\n"
        )
        sock.sendall(request_head.encode() + head)
        staged = daemon.data_dir / "tmp"
        deadline = time.monotonic() + 30
        while not any(staged.rglob("variables.data-*")):
            assert time.monotonic() < deadline, "upload never reached the disk"
            time.sleep(0.05)
        daemon.kill()
    assert any(staged.rglob("variables.data-*"))

    daemon.start()
    try:
        assert not staged.exists() or not any(staged.iterdir())
        assert daemon.get("/v0.7/networks")[1]["count"] == 0
        assert daemon.get("/info")[1]["counts"] == {"networks": 0, "public_networks": 0, "pending_tasks": 0}
    finally:
        assert daemon.stop() == 0


def test_official_client_inference_on_network_spec_and_version(daemon: Daemon, tf1_model: ModelFiles) -> None:
    client = official_client(daemon)
    network = client.Network.create(
        name="colours",
        framework="tensorflow-1.x",
        files=dict(tf1_model.contents),
        preprocessing={
            "inputs": [{"tensor_name": "input", "image": {"target_size": "8x8", "pixel_scaling": 1.0}}],
            "batched_output": True,
        },
    )
    client.Task.retrieve(network["task_id"]).wait()
    blue = cv2.imencode(".png", np.full((8, 16, 3), (255, 0, 0), dtype=np.uint8))[1].tobytes()

    tensors = network.inference(
        inputs=[ImageInput(blue, encoding="binary")], output_tensors=["prob", "pooled"]
    )
    np.testing.assert_array_equal(tensors["pooled"], [1.0, 0.0, 0.0])
    assert tensors["prob"].shape == (3,) and int(np.argmax(tensors["prob"])) == 0
    tensors = network.inference(
        inputs=[ImageInput(base64.b64encode(blue), encoding="base64")], output_tensors=["pooled"]
    )
    np.testing.assert_array_equal(tensors["pooled"], [1.0, 0.0, 0.0])

    spec = client.RecognitionSpec.create(
        name="colours",
        outputs=[
            {
                "labels": {
                    "roi": "NONE",
                    "labels": [
                        {"id": 1, "name": "blue"},
                        {"id": 2, "name": "green"},
                        {"id": 3, "name": "red"},
                    ],
                }
            }
        ],
    )
    version = client.RecognitionVersion.create(
        spec_id=spec["id"],
        network_id=network["id"],
        post_processings=[{"classification": {"output_tensor": "prob", "thresholds": [0.5, 0.5, 0.5]}}],
    )
    assert client.RecognitionSpec.retrieve(spec["id"])["current_version_id"] == version["id"]
    for resource in (spec, version):
        result = resource.inference(
            inputs=[ImageInput(blue, encoding="binary")], show_discarded=True, max_predictions=2
        )
        labels = result["outputs"][0]["labels"]
        assert [p["label_name"] for p in labels["predicted"]] == ["blue"]
        assert len(labels["discarded"]) == 1
    assert [v["id"] for v in spec.versions()] == [version["id"]]

    with pytest.raises(ClientError) as raised:
        spec.inference(inputs=[])
    assert raised.value.response.status_code == 400
    assert "error" in raised.value.response.json()


def test_streams_resume_after_kill_9(tmp_path: Path, tf1_model: ModelFiles) -> None:
    import requests

    encode_h264(tmp_path / "data" / "media" / "loop.mp4", frames=60)
    daemon = Daemon(tmp_path / "data").start()
    register_colour_chain(daemon, tf1_model)
    http = requests.Session()
    api = daemon.url + "v0.7"
    stream = http.post(
        f"{api}/streams",
        json={
            "name": "door",
            "source": {"uri": "loop.mp4", "options": {"loop": True, "realtime": True}},
            "chain": "whole",
            "sinks": [{"type": "jsonl", "path": "door.jsonl"}],
        },
        timeout=30,
    ).json()

    def processed() -> int:
        return daemon.get(f"/v0.7/streams/{stream['id']}")[1]["frames"]["processed"]

    deadline = time.monotonic() + 30
    while processed() < 10:
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.1)
    daemon.kill()
    results = tmp_path / "data" / "results" / "door.jsonl"
    before = results.read_bytes().splitlines()

    daemon.start()
    try:
        deadline = time.monotonic() + 30
        while (status := daemon.get(f"/v0.7/streams/{stream['id']}")[1]).get("frames", {}).get(
            "processed", 0
        ) < 10:
            assert time.monotonic() < deadline, daemon.log()
            time.sleep(0.1)
        assert status["state"] == "running" and status["name"] == "door"
        after = results.read_bytes().splitlines()
        assert after[: len(before)] == before and len(after) > len(before)
        assert all(json.loads(line)["stream_id"] == stream["id"] for line in after)
    finally:
        assert daemon.stop() == 0


def test_sigterm_flushes_every_record_and_logs_json(tmp_path: Path, tf1_model: ModelFiles) -> None:
    import requests

    encode_h264(tmp_path / "data" / "media" / "loop.mp4", frames=60)
    daemon = Daemon(tmp_path / "data", args=("--log-format", "json")).start()
    register_colour_chain(daemon, tf1_model)
    stream = requests.post(
        daemon.url + "v0.7/streams",
        json={
            "name": "yard",
            "source": {"uri": "rtsp://admin:hunter2@127.0.0.1:1/x"},
            "chain": "whole",
            "sinks": [{"type": "jsonl", "path": "yard.jsonl"}],
        },
        timeout=30,
    ).json()
    looping = requests.post(
        daemon.url + "v0.7/streams",
        json={
            "name": "door",
            "source": {"uri": "loop.mp4", "options": {"loop": True}},
            "chain": "whole",
            "sinks": [{"type": "jsonl", "path": "door.jsonl"}],
        },
        timeout=30,
    ).json()
    deadline = time.monotonic() + 30
    while daemon.get(f"/v0.7/streams/{looping['id']}")[1]["frames"]["processed"] < 50:
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.05)
    assert daemon.stop() == 0  # SIGTERM

    lines = (tmp_path / "data" / "results" / "door.jsonl").read_bytes().splitlines()
    indices = [json.loads(line)["frame_index"] for line in lines]
    assert indices == list(range(len(indices))) and len(indices) >= 50  # nothing processed was lost
    log = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
    assert log, daemon.log()[-2000:]
    access = [entry for entry in log if entry["logger"] == "streamd.access"]
    assert access and all(len(entry["request_id"]) == 16 and entry["status"] for entry in access)
    assert any(entry.get("stream_id") == stream["id"] for entry in log)
    assert "hunter2" not in daemon.log()
