"""Malformed client input found by the QA campaign: each one a clear 4xx JSON error, never a 500."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from streamd.app import build_app
from streamd.settings import Settings
from tests.conftest import make_settings, network_form, preprocessing_for
from tests.factories.models import ModelFiles
from tests.factories.rawhttp import raw_request
from tests.test_inference import CLASSES_SPEC, create_json, deploy, png
from tests.test_network_errors import assert_clean, assert_error


@pytest.fixture(params=[True, False], ids=["keys configured", "no keys"])
def maybe_keyed_settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    keys = {"auth": {"api_keys": ["k1"]}} if request.param else {}
    return make_settings(tmp_path / "data", **keys)


async def test_api_key_that_is_not_utf8_is_an_unknown_key(
    aiohttp_client: Any, maybe_keyed_settings: Settings
) -> None:
    client = await aiohttp_client(build_app(maybe_keyed_settings))
    keyed = bool(maybe_keyed_settings.auth.api_keys)
    head = b"GET /v0.7/networks HTTP/1.1\r\nHost: x\r\nX-API-KEY: k\xff\xfe1"
    response = await raw_request(client.server.port, head)
    if keyed:
        assert response.status == 401, response.body
        assert response.json() == {
            "error": "the X-API-KEY header holds an unknown key; check the key you were given",
            "code": "unauthorized",
        }
    else:
        assert response.status == 200, response.body


def multipart(fields: list[tuple[str, bytes, str]], boundary: str = "b0undary") -> tuple[bytes, str]:
    """A multipart/form-data body from (name, value, content type) with bytes left as they are; an
    image/* part is a file part."""
    out = bytearray()
    for name, value, content_type in fields:
        filename = f'; filename="{name}"' if content_type.startswith("image/") else ""
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n'.encode()
        out += f"Content-Type: {content_type}\r\n\r\n".encode() + value + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


BAD_TEXT = [
    ("invalid utf-8", b"caf\xe9", "text/plain", "form field 'name' is not valid utf-8 text"),
    (
        "unknown charset",
        b"cafe",
        "text/plain; charset=klingon",
        "form field 'name' has unknown charset 'klingon'",
    ),
]


@pytest.mark.parametrize(("case", "value", "content_type", "message"), BAD_TEXT, ids=[c[0] for c in BAD_TEXT])
async def test_network_upload_field_that_does_not_decode_is_a_400(
    client: TestClient, case: str, value: bytes, content_type: str, message: str
) -> None:
    body, form_type = multipart(
        [("framework", b"tensorflow-1.x", "text/plain"), ("name", value, content_type)]
    )
    response = await client.post("/v0.7/networks", data=body, headers={"Content-Type": form_type})
    await assert_error(response, 400, "invalid_encoding", message)
    await assert_clean(client)


@pytest.mark.parametrize(("case", "value", "content_type", "message"), BAD_TEXT, ids=[c[0] for c in BAD_TEXT])
async def test_multipart_inference_field_that_does_not_decode_is_a_400(
    client: TestClient, tf1_model: ModelFiles, case: str, value: bytes, content_type: str, message: str
) -> None:
    network = await deploy(client, tf1_model)
    spec = await create_json(client, "/v0.7/recognition/specs", CLASSES_SPEC)
    classification = {"classification": {"output_tensor": "prob", "thresholds": [0.5, 0.5, 0.5]}}
    version = await create_json(
        client,
        "/v0.7/recognition/versions",
        {"spec_id": spec["id"], "network_id": network["id"], "post_processings": [classification]},
    )
    for path, field in (
        (f"/v0.7/networks/{network['id']}/inference", "output_tensors[0]"),
        (f"/v0.7/recognition/versions/{version['id']}/inference", "show_discarded"),
        (f"/v0.7/recognition/specs/{spec['id']}/inference", "show_discarded"),
    ):
        body, form_type = multipart(
            [("inputs[0]image.source", png((0, 0, 255)), "image/png"), (field, value, content_type)]
        )
        response = await client.post(path, data=body, headers={"Content-Type": form_type})
        await assert_error(response, 400, "invalid_encoding", message.replace("'name'", repr(field)))


async def test_form_field_nested_too_deep_is_a_400(client: TestClient, tf1_model: ModelFiles) -> None:
    deep = "metadata" + ".a" * 2000
    response = await client.post("/v0.7/networks", data=network_form(tf1_model, fields={deep: "1"}))
    await assert_error(
        response, 400, "invalid_field", "is nested 2001 levels deep; at most 32 levels are accepted"
    )
    await assert_clean(client)
    network = await deploy(client, tf1_model)
    form = FormData()
    form.add_field("inputs[0]image.source", png((0, 0, 255)), filename="x.png")
    form.add_field("output_tensors" + "[0]" * 2000, "prob")
    response = await client.post(f"/v0.7/networks/{network['id']}/inference", data=form)
    await assert_error(response, 400, "invalid_field", "at most 32 levels are accepted")


def npy_claiming(shape: tuple[int, ...]) -> bytes:
    """A real .npy header for float32 `shape`, followed by only 12 bytes of data."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return b"\x93NUMPY\x01\x00" + header.getvalue()[8:] + struct.pack("<3f", 1, 2, 3)


async def test_mean_file_whose_header_claims_more_than_it_holds_is_a_400(
    client: TestClient, tf1_model: ModelFiles
) -> None:
    preprocessing = preprocessing_for(tf1_model, mean_file="mean.npy")
    claimed = (1, 173_000, 173_000, 1)  # 112 GiB of float32
    form = network_form(tf1_model, preprocessing=preprocessing, files={"mean.npy": npy_claiming(claimed)})
    response = await client.post("/v0.7/networks", data=form)
    await assert_error(
        response,
        400,
        "invalid_mean_file",
        "mean file 'mean.npy' declares shape (1, 173000, 173000, 1) of float32 (119716000000 bytes) "
        "but holds 12 bytes of data",
    )
    await assert_clean(client)


@pytest.mark.parametrize("refresh", ["²", "1" * 5000, "-1", "3601", "x"])
async def test_status_page_refresh_that_is_not_a_small_integer_is_a_400(
    client: TestClient, refresh: str
) -> None:
    response = await client.get("/", params={"refresh": refresh})
    await assert_error(
        response, 400, "invalid_query", "query parameter refresh=", "must be an integer from 0 to 3600"
    )


async def test_status_page_refresh_in_bounds_is_used(client: TestClient) -> None:
    response = await client.get("/", params={"refresh": "7"})
    assert response.status == 200
    assert '<meta http-equiv="refresh" content="7">' in await response.text()


async def test_json_nested_too_deep_is_a_400(client: TestClient, tf1_model: ModelFiles) -> None:
    deep: Any = 1
    for _ in range(300):  # orjson reads 1024 levels but writes only 254: this used to fail on storing
        deep = {"a": deep}
    network = await deploy(client, tf1_model)
    response = await client.patch(f"/v0.7/networks/{network['id']}", json={"metadata": deep})
    await assert_error(response, 400, "invalid_field", "the request body is nested more than 32 levels deep")


async def test_multipart_without_boundary_or_with_unknown_transfer_encoding_is_a_400(
    client: TestClient,
) -> None:
    response = await client.post("/v0.7/networks", data=b"x", headers={"Content-Type": "multipart/form-data"})
    await assert_error(response, 400, "invalid_multipart", "the multipart body cannot be read", "boundary")
    body = (
        b'--b\r\nContent-Disposition: form-data; name="name"\r\nContent-Transfer-Encoding: rot13\r\n\r\n'
        b"x\r\n--b--\r\n"
    )
    response = await client.post(
        "/v0.7/networks", data=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    await assert_error(response, 400, "invalid_encoding", "form field 'name' cannot be decoded", "rot13")
    await assert_clean(client)
