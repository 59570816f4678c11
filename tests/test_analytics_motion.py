"""The motion gate on real H.264 frames decoded with PyAV, held as streamd holds them (I420 planes)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from streamd.analytics.motion import MotionConfig, MotionGate, y_plane
from streamd.video.frames import I420Frame
from tests.factories.squares import (
    HEIGHT,
    MOTION_FRAMES,
    MOTION_SCENE_FRAMES,
    WIDTH,
    decode_i420,
    encode_motion,
    motion_frame,
)


@pytest.fixture(scope="module")
def motion_scene(tmp_path_factory: pytest.TempPathFactory) -> list[I420Frame]:
    video = encode_motion(tmp_path_factory.mktemp("motion") / "motion.mp4")
    return [I420Frame(planes, WIDTH, HEIGHT) for planes in decode_i420(video)]


def run_gate(frames: list[I420Frame], config: MotionConfig) -> tuple[list[int], list[int]]:
    gate = MotionGate(config, WIDTH, HEIGHT)
    results = [gate.update(y_plane(frame)) for frame in frames]
    moved = [index for index, result in enumerate(results) if result.moved]
    opened = [index for index, result in enumerate(results) if result.gate_open]
    return moved, opened


def test_y_plane_is_a_view_of_the_i420_buffer_without_conversion(motion_scene: list[I420Frame]) -> None:
    frame = motion_scene[0]
    luma = y_plane(frame)
    assert luma.shape == (HEIGHT, WIDTH)
    assert np.shares_memory(luma, frame.planes)
    assert np.array_equal(luma, frame.planes[:HEIGHT])


def test_y_plane_of_a_bgr_frame_is_its_grey_conversion() -> None:
    bgr = motion_frame(0)
    assert np.array_equal(y_plane(bgr), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))


def test_gate_sees_motion_exactly_on_the_moving_frames_and_holds_two_more(
    motion_scene: list[I420Frame],
) -> None:
    assert len(motion_scene) == MOTION_SCENE_FRAMES
    moved, opened = run_gate(motion_scene, MotionConfig())
    # Frame 0 becomes the background (counted as motion: nothing is known about the scene yet).
    assert moved == [0, *range(20, 30)]
    assert list(MOTION_FRAMES) == list(range(20, 30))
    assert opened == [0, 1, 2, *range(20, 32)]


def test_gate_without_hold_and_without_contrast_stretch(motion_scene: list[I420Frame]) -> None:
    moved, opened = run_gate(motion_scene, MotionConfig(hold_frames=0, improve_contrast=False))
    assert moved == opened == [0, *range(20, 30)]


def test_motion_boxes_follow_the_moving_square_in_frame_pixels(motion_scene: list[I420Frame]) -> None:
    gate = MotionGate(MotionConfig(), WIDTH, HEIGHT)
    results = [gate.update(y_plane(frame)) for frame in motion_scene[:25]]
    # The square is 24x24 at x = 40 + 8 k, y = 100..124 on frame 20 + k; the box covers it, plus the
    # blur and dilation (a few pixels), and where it was on the background (frame 20 has no trail).
    for index in (20, 24):
        (box,) = results[index].boxes
        x = 40 + 8 * (index - 20)
        assert box[0] <= x and box[2] >= x + 24 and box[1] <= 100 and box[3] >= 124
        assert box[2] - box[0] <= 24 + 12 and box[3] - box[1] <= 24 + 12
    assert 0.01 < results[20].changed_fraction < 0.03
    assert results[19].boxes == () and results[19].changed_fraction == 0.0


def test_a_change_of_most_of_the_frame_recalibrates_the_background() -> None:
    gate = MotionGate(MotionConfig(hold_frames=0), WIDTH, HEIGHT)
    dark = np.full((HEIGHT, WIDTH), 40, np.uint8)
    first, still = gate.update(dark), gate.update(dark)
    lit = gate.update(np.full((HEIGHT, WIDTH), 200, np.uint8))
    after = gate.update(np.full((HEIGHT, WIDTH), 200, np.uint8))
    assert (first.moved, first.recalibrated) == (True, True)
    assert (still.moved, still.recalibrated, still.gate_open) == (False, False, False)
    assert (lit.moved, lit.recalibrated, lit.boxes, lit.changed_fraction) == (True, True, (), 1.0)
    assert (after.moved, after.changed_fraction) == (False, 0.0)


def test_reset_makes_the_next_frame_the_background_again() -> None:
    gate = MotionGate(MotionConfig(hold_frames=0), WIDTH, HEIGHT)
    luma = np.full((HEIGHT, WIDTH), 90, np.uint8)
    assert [gate.update(luma).moved for _ in range(3)] == [True, False, False]
    gate.reset()
    assert [gate.update(luma).recalibrated for _ in range(2)] == [True, False]


def test_lasting_motion_settles_into_the_background() -> None:
    gate = MotionGate(
        MotionConfig(hold_frames=0, settle_frames=5, alpha=0.5, improve_contrast=False), 160, 96
    )
    empty = np.full((96, 160), 100, np.uint8)
    parked = empty.copy()
    parked[40:60, 60:90] = 220  # a car arrives and stays
    moved = [gate.update(frame).moved for frame in [empty, *[parked] * 12]]
    # Motion from its arrival (frames 1-5 differ by 120); from the 5th motion frame on it is blended
    # in (alpha 0.5): frame 6 differs by 60, frame 7 by 30, which is not above the threshold.
    assert moved == [True, *[True] * 6, *[False] * 6]


def test_gate_rejects_a_frame_of_another_size() -> None:
    gate = MotionGate(MotionConfig(), WIDTH, HEIGHT)
    with pytest.raises(ValueError, match=r"luma of shape \(96, 160\) given to a gate for 320x192"):
        gate.update(np.zeros((96, 160), np.uint8))


def test_motion_config_forbids_unknown_fields_and_checks_bounds() -> None:
    with pytest.raises(ValidationError, match="extra_forbidden"):
        MotionConfig.model_validate({"treshold": 20})
    with pytest.raises(ValidationError, match="less than or equal to 255"):
        MotionConfig(threshold=300)
    assert MotionConfig().model_dump() == {
        "threshold": 30,
        "contour_area": 10,
        "frame_height": 100,
        "alpha": 0.02,
        "improve_contrast": True,
        "settle_frames": 30,
        "recalibrate_fraction": 0.9,
        "hold_frames": 2,
        "emit_still": True,
    }
