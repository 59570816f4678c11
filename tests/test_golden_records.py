"""Records and /chain answers are byte-identical to the ones recorded before the typed-results refactor.

A fixed chain (two roots, detect → crop → classify, a filter) over a fixed H.264 video (80x40: a blue
square moving right, a red one moving left, over green) and over one fixed picture; the JSONL lines and
the response bodies are compared byte for byte with `tests/golden/`, after removing only what depends on
the clock (`latency_s`, `captured_ts`, the answer's `head.time`) and writing the temporary media
directory `<media>`. (Without `parent_id`, the second `things` call hangs under the crop: DeepDetect's
rule.) Batches are of one item so float sums cannot depend on how frames met in a batch, and the
graphs run on TensorFlow, not TensorFlow Lite. (Recorded before the typed results, the stream's lines
were the same bytes; in one /chain answer two siblings came in the order they finished, now always in
call order.)

To record the golden files again (only when a change of output is intended, and said in the commit):
`STREAMD_WRITE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden_records.py`.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import av
import numpy as np
import orjson
import pytest
from aiohttp.test_utils import TestClient

from streamd.app import build_app
from streamd.settings import Settings
from tests.conftest import make_settings, wait_until
from tests.factories.models import ModelFiles
from tests.test_chains import BLUE, GREEN, RED, data_uri, deploy_things_and_colours, scene

GOLDEN = Path(__file__).parent / "golden"
WRITE = os.environ.get("STREAMD_WRITE_GOLDEN") == "1"
CLOCK_FIELDS = ("latency_s", "captured_ts")

CALLS: list[dict[str, Any]] = [
    {"id": "detect", "service": "things", "parameters": {"output": {"confidence_threshold": 0.05}}},
    {"id": "crop", "parent_id": "detect", "action": {"type": "crop", "parameters": {"padding_ratio": 0.1}}},
    {
        "id": "classify",
        "parent_id": "crop",
        "service": "colours",
        "parameters": {"output": {"confidence_threshold": 0.01, "best": 2}},
    },
    {
        "id": "again",
        "service": "things",
        "parameters": {"output": {"confidence_threshold": 0.3, "bbox": False}},
    },
    {"id": "cars", "parent_id": "again", "action": {"type": "filter", "parameters": {"classes": ["car"]}}},
]


def moving_scene(index: int) -> np.ndarray:
    frame = np.empty((40, 80, 3), dtype=np.uint8)
    frame[:] = GREEN
    x = (index * 2) % 48
    frame[4:20, x : x + 32] = BLUE
    frame[20:36, 48 - x : 80 - x] = RED
    return frame


def encode_scenes(path: Path, frames: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("h264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 80, 40, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": "threads=1"}
        for index in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(moving_scene(index), format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def without_clock(line: bytes, media: Path) -> bytes:
    """The record without its clock fields, the temporary media directory written `<media>`."""
    record = orjson.loads(line.replace(str(media).encode(), b"<media>"))
    for field in CLOCK_FIELDS:
        assert field in record
        del record[field]
    return orjson.dumps(record)


def compare(name: str, lines: list[bytes]) -> None:
    path = GOLDEN / name
    if WRITE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_bytes(b"\n".join(lines) + b"\n")
    expected = path.read_bytes().splitlines()
    assert len(lines) == len(expected)
    for index, (line, golden) in enumerate(zip(lines, expected, strict=True)):
        assert line == golden, f"{name} line {index} differs"


@pytest.fixture
def golden_settings(tmp_path: Path) -> Settings:
    media = encode_scenes(tmp_path / "media" / "scenes.mp4", frames=24).parent
    # The golden floats are TensorFlow's: TensorFlow Lite's (inference.lite_graphs, on by default)
    # differ in the last bits, within the probe's tolerance (tests/test_lite.py compares the two).
    return make_settings(
        tmp_path / "data",
        storage={"media_roots": [str(media)]},
        inference={"max_batch_size": 1, "lite_graphs": False},
    )


@pytest.fixture
async def golden_client(aiohttp_client: Any, golden_settings: Settings) -> TestClient:
    settings = golden_settings
    return await aiohttp_client(build_app(settings))


async def test_stream_records_are_byte_identical_to_the_golden_ones(
    golden_client: TestClient, wide_detector: ModelFiles, tf1_model: ModelFiles, tmp_path: Path
) -> None:
    client = golden_client
    await deploy_things_and_colours(client, wide_detector, tf1_model)
    response = await client.put("/v0.7/chains/golden", json={"calls": CALLS})
    assert response.status == 201, await response.json()
    body = {
        "name": "golden",
        "source": {"uri": str(tmp_path / "media" / "scenes.mp4")},
        "chain": "golden",
        "sinks": [{"type": "jsonl", "path": "golden.jsonl"}],
    }
    response = await client.post("/v0.7/streams", json=body)
    stream = await response.json()
    assert response.status == 201, stream

    async def finished() -> dict[str, Any] | None:
        status = await (await client.get(f"/v0.7/streams/{stream['id']}")).json()
        return status if status["state"] == "finished" else None

    status = await wait_until(finished, 60)
    assert status["frames"]["processed"] == 24
    raw = await asyncio.to_thread((tmp_path / "data" / "results" / "golden.jsonl").read_bytes)
    lines = [without_clock(line, tmp_path / "media") for line in raw.splitlines()]
    await asyncio.to_thread(compare, "stream.jsonl", lines)


async def test_chain_answers_are_byte_identical_to_the_golden_ones(
    golden_client: TestClient, wide_detector: ModelFiles, tf1_model: ModelFiles
) -> None:
    client = golden_client
    await deploy_things_and_colours(client, wide_detector, tf1_model)
    answers = []
    for picture in (scene(), scene(red=False), moving_scene(7)):
        calls = [dict(call) for call in CALLS]
        calls[0] = {**calls[0], "data": [data_uri(picture)]}
        draw = {"id": "draw", "parent_id": "detect", "action": {"type": "draw_bbox"}}
        response = await client.post("/chain/golden", json={"chain": {"calls": [*calls, draw]}})
        assert response.status == 200, await response.json()
        answer = orjson.loads(await response.read())
        answer["head"].pop("time", None)  # milliseconds taken
        answers.append(orjson.dumps(answer))
    await asyncio.to_thread(compare, "chain.jsonl", answers)
