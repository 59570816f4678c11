"""Rebuilding the official client's DRF-flattened multipart keys into nested JSON."""

from __future__ import annotations

import pytest

from streamd.api.formdata import decode_leaves, parse_key, structured_field, unflatten
from streamd.api.networks import network_spec
from streamd.errors import InvalidRequestError


def test_parse_key_splits_names_and_indices() -> None:
    assert parse_key("preprocessing.inputs[0]image.pixel_scaling") == [
        "preprocessing",
        "inputs",
        0,
        "image",
        "pixel_scaling",
    ]
    assert parse_key("preprocessing.inputs[1]constant.shape[0]") == [
        "preprocessing",
        "inputs",
        1,
        "constant",
        "shape",
        0,
    ]
    assert parse_key("name") == ["name"]


@pytest.mark.parametrize("key", ["", ".a", "a.", "a..b", "[0]a", "a[x]"])
def test_parse_key_rejects_malformed_keys(key: str) -> None:
    with pytest.raises(InvalidRequestError):
        parse_key(key)


def test_unflatten_rebuilds_nested_lists_and_dicts() -> None:
    fields = {
        "preprocessing.inputs[1]tensor_name": "b",
        "preprocessing.inputs[0]tensor_name": "a",
        "preprocessing.inputs[0]image.target_size": "8x8",
        "preprocessing.batched_output": "False",
        "name": "n",
    }
    assert unflatten(fields) == {
        "preprocessing": {
            "inputs": [{"tensor_name": "a", "image": {"target_size": "8x8"}}, {"tensor_name": "b"}],
            "batched_output": "False",
        },
        "name": "n",
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"a[1]": "x"}, "skip index 0"),
        ({"a": "x", "a.b": "y"}, "conflicts"),
        ({"a.b": "y", "a[0]": "x"}, "conflicts"),
    ],
)
def test_unflatten_rejects_gaps_and_conflicts(fields: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        unflatten(fields)


def test_decode_leaves_restores_json_and_python_literals() -> None:
    assert decode_leaves(
        {"a": "1", "b": "2.5", "c": "True", "d": "None", "e": "text", "f": ["false", "x y"]}
    ) == {
        "a": 1,
        "b": 2.5,
        "c": True,
        "d": None,
        "e": "text",
        "f": [False, "x y"],
    }


def test_structured_field_reads_json_text_and_explains_bad_json() -> None:
    assert structured_field({"m": '{"a": "1"}'}, "m") == {"a": "1"}
    with pytest.raises(InvalidRequestError, match="field 'm' is not valid JSON"):
        structured_field({"m": "{oops"}, "m")


def test_curl_and_client_forms_give_the_same_spec() -> None:
    curl = network_spec(
        {
            "name": "n",
            "framework": "tensorflow-1.x",
            "metadata": '{"a": "1"}',
            "preprocessing": '{"inputs": [{"tensor_name": "x", "image": {"target_size": "224", '
            '"pixel_scaling": 2.0, "color_channels": "RGB"}}], "batched_output": false}',
        }
    )
    client = network_spec(
        {
            "name": "n",
            "framework": "tensorflow-1.x",
            "metadata.a": '"1"',
            "preprocessing.inputs[0]tensor_name": "x",
            "preprocessing.inputs[0]image.target_size": "224",
            "preprocessing.inputs[0]image.pixel_scaling": "2.0",
            "preprocessing.inputs[0]image.color_channels": "RGB",
            "preprocessing.batched_output": "False",
        }
    )
    assert curl == client
    assert curl.preprocessing.batched_output is False
    assert curl.preprocessing.inputs[0].image.size_wh == (224, 224)
    assert curl.metadata == {"a": "1"}
