"""Mean files: .npy and Caffe BlobProto, read into the network's un-batched input layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from streamd.networks.meanfile import MeanFileError, load_mean


def _blobproto_class() -> type:
    """caffe.BlobProto built from its field list with protobuf's own machinery (not our decoder)."""
    file = descriptor_pb2.FileDescriptorProto(name="caffe_test.proto", package="caffe_test", syntax="proto2")
    shape = file.message_type.add(name="BlobShape")
    shape.field.add(name="dim", number=1, type=3, label=3, options=descriptor_pb2.FieldOptions(packed=True))
    blob = file.message_type.add(name="BlobProto")
    for name, number in (("num", 1), ("channels", 2), ("height", 3), ("width", 4)):
        blob.field.add(name=name, number=number, type=5, label=1)
    blob.field.add(name="data", number=5, type=2, label=3, options=descriptor_pb2.FieldOptions(packed=True))
    blob.field.add(name="shape", number=7, type=11, label=1, type_name=".caffe_test.BlobShape")
    blob.field.add(
        name="double_data", number=8, type=1, label=3, options=descriptor_pb2.FieldOptions(packed=True)
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("caffe_test.BlobProto"))


BlobProto = _blobproto_class()


def encode_blobproto(chw: np.ndarray, *, legacy: bool = True, double: bool = False) -> bytes:
    blob = BlobProto()
    if legacy:
        blob.num, (blob.channels, blob.height, blob.width) = 1, chw.shape
    else:
        blob.shape.dim.extend([1, *chw.shape])
    (blob.double_data if double else blob.data).extend(chw.ravel().tolist())
    return blob.SerializeToString()


CHW = np.arange(3 * 2 * 4, dtype=np.float32).reshape(3, 2, 4)  # C=3, H=2, W=4


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("NCHW", CHW),
        ("NHWC", CHW.transpose(1, 2, 0)),
        ("NWHC", CHW.transpose(2, 1, 0)),
        ("NCWH", CHW.transpose(0, 2, 1)),
    ],
)
@pytest.mark.parametrize("form", ["legacy", "shape", "double"])
def test_blobproto_is_read_into_the_input_layout(
    tmp_path: Path, order: str, expected: np.ndarray, form: str
) -> None:
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(encode_blobproto(CHW, legacy=form == "legacy", double=form == "double"))
    mean = load_mean(path, order)
    assert mean.dtype == np.float32
    np.testing.assert_array_equal(mean, expected)


def test_proto_bin_extension_is_a_blobproto(tmp_path: Path) -> None:
    path = tmp_path / "mean.proto.bin"
    path.write_bytes(encode_blobproto(np.array([[[1.0]], [[2.0]], [[3.0]]], dtype=np.float32)))
    np.testing.assert_array_equal(load_mean(path, "NHWC"), [[[1.0, 2.0, 3.0]]])


def test_npy_mean_keeps_its_layout_and_drops_a_unit_batch(tmp_path: Path) -> None:
    path = tmp_path / "mean.npy"
    np.save(path, np.ones((1, 1, 1, 3), dtype=np.float64) * 0.25, allow_pickle=False)
    mean = load_mean(path, "NHWC")
    assert mean.shape == (1, 1, 3)
    assert mean.dtype == np.float32
    np.testing.assert_array_equal(mean, np.full((1, 1, 3), 0.25))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("mean.npy", b"not numpy", "is not a numpy array"),
        ("mean.binaryproto", b"\xff\xff\xff", "is not a Caffe BlobProto"),
        ("mean.binaryproto", b"", "is not a usable Caffe BlobProto"),
    ],
)
def test_broken_mean_files_are_rejected_with_a_reason(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MeanFileError, match=message):
        load_mean(path, "NHWC")


def test_npy_of_strings_and_nan_are_rejected(tmp_path: Path) -> None:
    strings = tmp_path / "s.npy"
    np.save(strings, np.array(["a", "b"]), allow_pickle=False)
    with pytest.raises(MeanFileError, match="numeric array"):
        load_mean(strings, "NHWC")
    nan = tmp_path / "n.npy"
    np.save(nan, np.array([np.nan, 1.0, 2.0]), allow_pickle=False)
    with pytest.raises(MeanFileError, match="NaN"):
        load_mean(nan, "NHWC")
