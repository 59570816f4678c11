"""Preprocessing, option by option, against hand-computed arrays."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from streamd.networks.preprocessing import convert_colour, preprocess, resize, to_input_batch
from streamd.networks.spec import ImagePreprocessing
from streamd.video.frames import I420Frame
from streamd.video.source import to_image
from tests.factories.videos import COLOURS, encode_h264


def spec(**fields: object) -> ImagePreprocessing:
    return ImagePreprocessing.model_validate({"target_size": "2x2", "color_channels": "BGR", **fields})


def grey_rows(values: list[int], height: int) -> np.ndarray:
    """A BGR frame whose columns have the given values in all three channels."""
    row = np.array(values, dtype=np.uint8)
    return np.repeat(np.repeat(row[None, :, None], height, axis=0), 3, axis=2)


def test_colour_conversion_reorders_or_weighs_channels() -> None:
    bgr = np.array([[[10, 20, 30]]], dtype=np.uint8)
    np.testing.assert_array_equal(convert_colour(bgr, "BGR", "BGR"), [[[10, 20, 30]]])
    np.testing.assert_array_equal(convert_colour(bgr, "BGR", "RGB"), [[[30, 20, 10]]])
    np.testing.assert_array_equal(convert_colour(bgr[:, :, ::-1], "RGB", "BGR"), [[[10, 20, 30]]])
    # ITU-R BT.601 luma: 0.299 R + 0.587 G + 0.114 B = 8.97 + 11.74 + 1.14 = 21.85 → 22
    np.testing.assert_array_equal(convert_colour(bgr, "BGR", "GRAY"), [[[22]]])
    np.testing.assert_array_equal(convert_colour(bgr[:, :, ::-1], "RGB", "GRAY"), [[[22]]])


def test_squash_resizes_to_the_exact_size() -> None:
    frame = grey_rows([0, 10, 20, 30], height=2)  # 4 wide, 2 high
    image, transform = resize(frame, spec(target_size="2x1", resize_type="SQUASH"))
    np.testing.assert_array_equal(image[:, :, 0], [[5, 25]])  # bilinear halving averages pairs
    assert (transform.scale_x, transform.scale_y, transform.offset_x, transform.offset_y) == (0.5, 0.5, 0, 0)


def test_crop_scales_the_smaller_side_then_centre_crops() -> None:
    frame = grey_rows([0, 10, 20, 30], height=2)
    image, transform = resize(frame, spec(target_size="2x2", resize_type="CROP"))
    np.testing.assert_array_equal(image[:, :, 0], [[10, 20], [10, 20]])
    assert (transform.scale_x, transform.offset_x, transform.offset_y) == (1.0, -1, 0)


def test_fill_scales_the_larger_side_then_pads_centred_with_white() -> None:
    frame = grey_rows([0, 10, 20, 30], height=2)
    image, transform = resize(frame, spec(target_size="4x4", resize_type="FILL"))
    np.testing.assert_array_equal(
        image[:, :, 0], [[255, 255, 255, 255], [0, 10, 20, 30], [0, 10, 20, 30], [255, 255, 255, 255]]
    )
    assert (transform.offset_x, transform.offset_y, transform.scale_x) == (0, 1, 1.0)


def test_network_resize_keeps_the_ratio_with_the_largest_side_n() -> None:
    frame = grey_rows([0, 10, 20, 30], height=2)
    image, transform = resize(frame, spec(target_size="2", resize_type="NETWORK"))
    np.testing.assert_array_equal(image[:, :, 0], [[5, 25]])
    assert (transform.input_width, transform.input_height) == (2, 1)


def test_target_size_n_means_square_for_fixed_resizes() -> None:
    assert spec(target_size="7").size_wh == (7, 7)
    assert spec(target_size="7", resize_type="NETWORK").size_wh is None
    network = spec(target_size="7", resize_type="NETWORK", dimension_order="NCHW")
    assert network.input_shape() == (3, None, None)


def test_scaling_and_mean_apply_in_scaled_units() -> None:
    image = np.array([[[0, 51, 255]]], dtype=np.uint8)  # one pixel, BGR
    mean = np.array([[[1.0, 0.0, 0.5]]], dtype=np.float32)
    batch = to_input_batch([image], spec(target_size="1x1", pixel_scaling=2.0), mean)
    # x * 2 / 255 - mean: [0 - 1, 0.4 - 0, 2 - 0.5]
    np.testing.assert_allclose(batch, [[[[-1.0, 0.4, 1.5]]]], rtol=1e-6)
    assert batch.dtype == np.float32


def test_default_scaling_is_identity_and_uint8_feeds_raw_pixels() -> None:
    image = np.array([[[0, 51, 255]]], dtype=np.uint8)
    floats = to_input_batch([image], spec(target_size="1x1"), None)
    np.testing.assert_array_equal(floats, [[[[0.0, 51.0, 255.0]]]])
    raw = to_input_batch([image], spec(target_size="1x1", data_type="UINT8"), None)
    assert raw.dtype == np.uint8
    np.testing.assert_array_equal(raw, [[[[0, 51, 255]]]])


@pytest.mark.parametrize(
    ("order", "shape", "value_at"),
    [
        ("NHWC", (1, 2, 3, 3), lambda b, h, w, c: b[0, h, w, c]),
        ("NCHW", (1, 3, 2, 3), lambda b, h, w, c: b[0, c, h, w]),
        ("NCWH", (1, 3, 3, 2), lambda b, h, w, c: b[0, c, w, h]),
        ("NWHC", (1, 3, 2, 3), lambda b, h, w, c: b[0, w, h, c]),
    ],
)
def test_layouts_place_every_pixel(order: str, shape: tuple[int, ...], value_at: object) -> None:
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)  # H=2, W=3, C=3
    batch = to_input_batch([image], spec(target_size="3x2", dimension_order=order), None)
    assert batch.shape == shape
    assert batch.flags["C_CONTIGUOUS"]
    for h in range(2):
        for w in range(3):
            for c in range(3):
                assert value_at(batch, h, w, c) == image[h, w, c]


def test_mean_in_chw_layout_broadcasts_per_channel() -> None:
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    mean = np.array([10.0, 20.0, 30.0], dtype=np.float32).reshape(3, 1, 1)
    batch = to_input_batch([image], spec(dimension_order="NCHW"), mean)
    np.testing.assert_array_equal(batch[0, :, 0, 0], [90.0, 80.0, 70.0])


@pytest.mark.parametrize("resize_type", ["SQUASH", "CROP", "FILL", "NETWORK"])
def test_boxes_map_back_to_frame_pixels(resize_type: str) -> None:
    frame = np.zeros((60, 100, 3), dtype=np.uint8)  # 100 wide, 60 high
    target = "50" if resize_type == "NETWORK" else "40x40"
    (batch, [transform]) = preprocess([frame], spec(target_size=target, resize_type=resize_type))
    box_frame = np.array([30.0, 20.0, 60.0, 50.0])  # xmin, ymin, xmax, ymax inside the visible area
    # Forward: frame → network input pixels → normalized [ymin, xmin, ymax, xmax].
    x_in = box_frame[[0, 2]] * transform.scale_x + transform.offset_x
    y_in = box_frame[[1, 3]] * transform.scale_y + transform.offset_y
    normalized = [
        y_in[0] / transform.input_height,
        x_in[0] / transform.input_width,
        y_in[1] / transform.input_height,
        x_in[1] / transform.input_width,
    ]
    np.testing.assert_allclose(transform.to_frame(np.array(normalized))[0], box_frame, atol=1e-9)
    assert batch.shape[1:3] == (transform.input_height, transform.input_width)


def test_boxes_outside_the_frame_are_clipped() -> None:
    frame = np.zeros((10, 20, 3), dtype=np.uint8)
    _, [transform] = preprocess([frame], spec(target_size="20x10"))
    np.testing.assert_allclose(transform.to_frame(np.array([-0.5, -0.1, 2.0, 0.5])), [[0.0, 0.0, 10.0, 10.0]])


def smooth_frame(width: int, height: int) -> np.ndarray:
    """A BGR frame of gradients and flat blocks (what a camera sees at this scale, not noise)."""
    ys, xs = np.mgrid[0:height, 0:width]
    frame = np.stack([xs * 255 // width, ys * 255 // height, (xs + ys) * 255 // (width + height)], axis=2)
    frame[height // 4 : height // 2, width // 4 : width // 2] = (30, 200, 90)
    return frame.astype(np.uint8)


def test_a_planar_frame_converts_once_and_resizes_from_its_planes() -> None:
    bgr = smooth_frame(320, 180)
    planes = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    frame = I420Frame(planes, 320, 180)
    assert frame.shape == (180, 320, 3)
    # Resized before any conversion, at even and odd sizes, it matches converting then resizing within
    # a level or two; only pixels on a sharp colour edge differ more (chroma is resized at half
    # resolution, so its edge may land half a pixel away).
    reference = cv2.cvtColor(planes, cv2.COLOR_YUV2BGR_I420)
    for width, height in ((224, 224), (101, 57), (64, 36)):
        resized = frame.resized_bgr(width, height)
        expected = cv2.resize(reference, (width, height), interpolation=cv2.INTER_LINEAR)
        assert resized.shape == (height, width, 3) and resized.dtype == np.uint8
        difference = np.abs(resized.astype(int) - expected.astype(int))
        assert difference.mean() < 2.5 and np.percentile(difference, 99) <= 24, difference.mean()
    # GRAY comes from the Y plane alone, within a level of converting to BGR and then to GRAY.
    luma = frame.gray()
    assert luma.shape == (180, 320, 1)
    expected_luma = cv2.cvtColor(reference, cv2.COLOR_BGR2GRAY)
    assert np.abs(luma[:, :, 0].astype(int) - expected_luma.astype(int)).max() <= 1
    assert frame._bgr is None  # nothing so far needed the whole frame in BGR
    whole = frame.bgr()
    np.testing.assert_array_equal(whole, reference)
    assert frame.bgr() is whole  # kept, not converted again
    with pytest.raises(ValueError, match="not an I420 image of 321x180"):
        I420Frame(planes, 321, 180)


@pytest.mark.parametrize("resize_type", ["SQUASH", "FILL", "CROP", "NETWORK"])
def test_preprocessing_a_planar_frame_matches_its_bgr_pixels(resize_type: str) -> None:
    bgr = smooth_frame(320, 180)
    planes = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    options = spec(target_size="64" if resize_type == "NETWORK" else "64x48", resize_type=resize_type)
    for colours in ("RGB", "GRAY"):
        chosen = options.model_copy(update={"color_channels": colours})
        batch, transforms = preprocess([I420Frame(planes, 320, 180)], chosen)
        expected, expected_transforms = preprocess([cv2.cvtColor(planes, cv2.COLOR_YUV2BGR_I420)], chosen)
        assert batch.shape == expected.shape and transforms == expected_transforms
        assert np.abs(batch - expected).mean() < 2.5


def test_decoded_h264_frames_stay_planar_and_convert_like_ffmpeg(tmp_path: Path) -> None:
    video = encode_h264(tmp_path / "colours.mp4", frames=3, width=160, height=96)
    with av.open(str(video)) as container:
        for index, decoded in enumerate(container.decode(video=0)):
            image = to_image(decoded)
            assert isinstance(image, I420Frame) and image.shape == (96, 160, 3)
            assert image.planes.nbytes == 160 * 96 * 3 // 2  # half of what BGR takes
            ffmpeg = decoded.to_ndarray(format="bgr24").astype(int)
            assert np.abs(image.bgr().astype(int) - ffmpeg).mean() < 3
            # Each frame is one pure colour: the planar resize keeps it.
            centre = image.resized_bgr(16, 12)[6, 8].astype(int)
            assert np.abs(centre - COLOURS[index]).max() < 12, (index, centre)
    # Other pixel formats become BGR arrays at once.
    rgb = av.VideoFrame.from_ndarray(np.zeros((4, 6, 3), np.uint8), format="rgb24")
    assert isinstance(to_image(rgb), np.ndarray) and to_image(rgb).shape == (4, 6, 3)
