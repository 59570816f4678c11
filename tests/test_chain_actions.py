"""Crop geometry, rotations and box mapping of chain actions, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from streamd.chains import actions
from streamd.chains.spec import CropParams


def crop(box: tuple[float, float, float, float], **params: object) -> tuple[int, int, int, int] | None:
    return actions.crop_region(box, 100, 50, CropParams.model_validate(params))


def test_plain_crop_takes_the_box_rounded_outwards() -> None:
    assert crop((10.2, 5.7, 30.5, 20.0)) == (10, 5, 31, 20)


def test_padding_ratio_grows_each_side_by_the_ratio_of_the_box_size() -> None:
    assert crop((20, 10, 40, 30), padding_ratio=0.25) == (15, 5, 45, 35)


def test_boxes_are_clipped_to_the_image_and_boxes_outside_are_skipped() -> None:
    assert crop((-10, -5, 20, 10)) == (0, 0, 20, 10)
    assert crop((90, 40, 130, 70)) == (90, 40, 100, 50)
    assert crop((120, 10, 140, 20)) is None


def test_fixed_size_is_centred_on_the_box_and_shifted_inside() -> None:
    assert crop((40, 20, 50, 30), fixed_width=20, fixed_height=10) == (35, 20, 55, 30)
    assert crop((0, 0, 10, 10), fixed_width=30, fixed_height=30) == (0, 0, 30, 30)
    assert crop((95, 45, 100, 50), fixed_width=30, fixed_height=30) == (70, 20, 100, 50)


def test_min_size_applies_only_to_smaller_boxes() -> None:
    assert crop((40, 20, 50, 30), min_width=20, min_height=4) == (35, 20, 55, 30)
    assert crop((10, 10, 60, 40), min_width=20, min_height=20) == (10, 10, 60, 40)


def test_force_square_uses_the_longer_side() -> None:
    assert crop((40, 20, 60, 30), force_square=True) == (40, 15, 60, 35)


@pytest.mark.parametrize("angle", [0, 90, 180, 270])
def test_rotation_affine_maps_rotated_pixels_back_to_the_source(angle: int) -> None:
    source = np.arange(6 * 4, dtype=np.uint8).reshape(4, 6)  # 6 wide, 4 high
    turned, back = actions.rotate(source, angle)
    assert turned.shape == ((6, 4) if angle in (90, 270) else (4, 6))
    for y in range(turned.shape[0]):
        for x in range(turned.shape[1]):
            # Pixel centres: (x + 0.5, y + 0.5) in the turned image lands on a source pixel centre.
            sx, sy = back @ np.array([x + 0.5, y + 0.5, 1.0])
            assert turned[y, x] == source[int(sy), int(sx)]


def test_relative_orientation_undoes_the_detected_angle() -> None:
    assert actions.rotation_angle("90", "relative") == 270
    assert actions.rotation_angle("90", "absolute") == 90
    assert actions.rotation_angle("0", "relative") == 0


def test_boxes_map_through_composed_affines() -> None:
    crop_to_frame = actions.translation(40, 20)
    _, turned_to_crop = actions.rotate(np.zeros((16, 32), np.uint8), 90)
    box = actions.map_box(actions.compose(crop_to_frame, turned_to_crop), (8.0, 16.0, 14.4, 28.8))
    assert box == pytest.approx((56.0, 21.6, 68.8, 28.0))
