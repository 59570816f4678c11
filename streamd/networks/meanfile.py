"""Mean files: numpy `.npy` (allow_pickle=False) and Caffe `BlobProto` (`.binaryproto`, `.proto.bin`).

Both load into a float32 array in the network's un-batched input layout (e.g. HWC for NHWC), ready to
broadcast against one preprocessed image. Pure CPU and file work: call from a worker thread.
The BlobProto reader decodes the protobuf wire format directly, so Caffe is not needed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from streamd.errors import InvalidRequestError

# BlobProto field numbers (caffe.proto): num=1 channels=2 height=3 width=4 data=5 diff=6 shape=7 double_data=8
_LEGACY_DIMS = {1: 0, 2: 1, 3: 2, 4: 3}
# Transpose from Caffe's CHW to each un-batched layout.
_FROM_CHW = {"NCHW": (0, 1, 2), "NCWH": (0, 2, 1), "NHWC": (1, 2, 0), "NWHC": (2, 1, 0)}


class MeanFileError(InvalidRequestError):
    code = "invalid_mean_file"


def load_mean(path: Path, dimension_order: str) -> np.ndarray:
    """Read a mean file into the un-batched layout of `dimension_order` (float32)."""
    name = path.name
    if name.endswith(".npy"):
        mean = _load_npy(path)
    elif name.endswith((".binaryproto", ".proto.bin")):
        mean = np.transpose(_load_blobproto(path), _FROM_CHW[dimension_order])
    else:
        raise MeanFileError(
            f"mean file {name!r}: unsupported extension; use .npy, .binaryproto or .proto.bin"
        )
    if not np.all(np.isfinite(mean)):
        raise MeanFileError(f"mean file {name!r} contains NaN or infinite values")
    return mean


def _load_npy(path: Path) -> np.ndarray:
    try:
        _check_npy_size(path)
        loaded: object = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise MeanFileError(
            f"mean file {path.name!r} is not a numpy array saved with np.save(..., allow_pickle=False): {exc}"
        ) from None
    if not isinstance(loaded, np.ndarray):  # np.load returns an array for the .npy format checked above
        raise MeanFileError(f"mean file {path.name!r} must hold a numeric array, found {type(loaded)}")
    if loaded.dtype.kind not in "fiu":
        raise MeanFileError(f"mean file {path.name!r} must hold a numeric array, found dtype {loaded.dtype}")
    array: np.ndarray = loaded[0] if loaded.ndim == 4 and loaded.shape[0] == 1 else loaded
    if array.ndim > 3:
        raise MeanFileError(
            f"mean file {path.name!r} has shape {array.shape}; expected at most 3 dimensions "
            "(the input layout without the batch dimension, e.g. (1, 1, 3) for HWC)"
        )
    return array.astype(np.float32)


def _check_npy_size(path: Path) -> None:
    """Refuse a header that declares more data than the file holds: np.load would allocate it first
    (a 200-byte file can claim 112 GiB) and fail with MemoryError, or take the memory."""
    with path.open("rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:  # 3.0 is only written for structured dtypes, which are not means
            raise ValueError(f"unsupported .npy format version {version}")
        held = path.stat().st_size - fh.tell()
    if dtype.hasobject:
        return  # np.load refuses it (allow_pickle=False) with the better message
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared > held:
        raise MeanFileError(
            f"mean file {path.name!r} declares shape {tuple(shape)} of {dtype} ({declared} bytes) but holds "
            f"{held} bytes of data; save it again with np.save"
        )


def _load_blobproto(path: Path) -> np.ndarray:
    """Decode a Caffe BlobProto into a (C, H, W) array."""
    blob = path.read_bytes()
    legacy = [0, 0, 0, 0]
    shape: list[int] = []
    floats: list[float] = []
    try:
        for field, wire, value in _fields(blob):
            if field in _LEGACY_DIMS and wire == 0:
                legacy[_LEGACY_DIMS[field]] = int(value)
            elif field == 5:
                floats.extend(_floats(value, wire, "<f", 4))
            elif field == 8:
                floats.extend(_floats(value, wire, "<d", 8))
            elif field == 7 and wire == 2 and isinstance(value, bytes):
                shape = _blob_shape(value)
    except (IndexError, struct.error, ValueError) as exc:
        raise MeanFileError(f"mean file {path.name!r} is not a Caffe BlobProto: {exc}") from None
    dims = shape or [d for d in legacy if d] or []
    if not floats or not dims or int(np.prod(dims)) != len(floats):
        raise MeanFileError(
            f"mean file {path.name!r} is not a usable Caffe BlobProto: shape {dims} "
            f"does not match {len(floats)} values"
        )
    array = np.asarray(floats, dtype=np.float32).reshape(dims)
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 1:
        array = array.reshape(-1, 1, 1)
    if array.ndim != 3:
        raise MeanFileError(f"mean file {path.name!r}: expected a (1, C, H, W) blob, found shape {dims}")
    return array


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value) where value is an int or the raw bytes of a field."""
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        field, wire = tag >> 3, tag & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated message")
        yield field, wire, value


def _blob_shape(data: bytes) -> list[int]:
    """BlobShape: `repeated int64 dim = 1`, packed or not."""
    dims: list[int] = []
    for field, wire, value in _fields(data):
        if field == 1 and wire == 2 and isinstance(value, bytes):
            dims.extend(_packed_varints(value))
        elif field == 1 and wire == 0:
            dims.append(int(value))
    return dims


def _packed_varints(data: bytes) -> list[int]:
    values, pos = [], 0
    while pos < len(data):
        value, pos = _varint(data, pos)
        values.append(value)
    return values


def _floats(value: bytes | int, wire: int, fmt: str, size: int) -> list[float]:
    if not isinstance(value, bytes) or (wire == 2 and len(value) % size):
        raise ValueError("malformed float field")
    return [item[0] for item in struct.iter_unpack(fmt, value)]
