"""Tracking with ByteTrack over the square detector's outputs on real decoded H.264 frames."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from streamd.analytics.tracking import TrackConfig, Tracker
from tests.factories.squares import (
    BLUE_Y,
    CROSSING_FRAMES,
    RED_Y,
    SIDE,
    SquareDetections,
    blue_x,
    build_square_detector,
    decode_i420,
    encode_crossing,
    red_x,
    run_square_detector,
)


@pytest.fixture(scope="module")
def detections(tmp_path_factory: pytest.TempPathFactory) -> list[SquareDetections]:
    root = tmp_path_factory.mktemp("squares")
    model = build_square_detector(root / "detector")
    return run_square_detector(model, decode_i420(encode_crossing(root / "crossing.mp4")))


def test_square_detector_finds_each_square_exactly(detections: list[SquareDetections]) -> None:
    assert len(detections) == CROSSING_FRAMES
    for index in (0, 18, 24, 35):
        found = detections[index]
        assert found.classes == ("red", "blue")
        assert found.scores.tolist() == [1.0, 1.0]
        assert np.round(found.boxes, 3).tolist() == [
            [red_x(index), RED_Y, red_x(index) + SIDE, RED_Y + SIDE],
            [blue_x(index), BLUE_Y, blue_x(index) + SIDE, BLUE_Y + SIDE],
        ]


def track(tracker: Tracker, frames: list[SquareDetections], start_s: float = 0.0) -> list[list[int | None]]:
    return [
        tracker.update(found.boxes, found.scores, found.classes, pts_s=start_s + index / 30)
        for index, found in enumerate(frames)
    ]


def test_squares_keep_stable_distinct_ids_across_the_video(detections: list[SquareDetections]) -> None:
    ids = track(Tracker(TrackConfig()), detections)
    # A track gets its id once matched min_consecutive_frames (2) frames in a row.
    assert ids == [[None, None], *[[1, 2]] * (CROSSING_FRAMES - 1)]


def test_class_agnostic_tracking_keeps_the_squares_apart_too(detections: list[SquareDetections]) -> None:
    ids = track(Tracker(TrackConfig(class_aware=False, min_consecutive_frames=1)), detections)
    # Even with min_consecutive_frames=1 a track is confirmed on its first match, the second frame.
    assert ids == [[None, None], *[[1, 2]] * (CROSSING_FRAMES - 1)]


def test_ids_follow_the_input_order(detections: list[SquareDetections]) -> None:
    tracker = Tracker(TrackConfig())
    track(tracker, detections[:5])
    found = detections[5]
    assert tracker.update(found.boxes[::-1], found.scores[::-1], found.classes[::-1], pts_s=5 / 30) == [2, 1]


def test_reset_gives_new_ids_never_reused(detections: list[SquareDetections]) -> None:
    tracker = Tracker(TrackConfig())
    assert track(tracker, detections[:3])[-1] == [1, 2]
    assert tracker.active_tracks == 2
    tracker.reset()
    assert tracker.active_tracks == 0
    assert track(tracker, detections[3:6], start_s=0.1) == [[None, None], [3, 4], [3, 4]]


def test_a_track_lost_longer_than_lost_track_s_comes_back_with_a_new_id() -> None:
    tracker = Tracker(TrackConfig(lost_track_s=0.5, min_consecutive_frames=1))
    box, score = np.array([[10.0, 10.0, 50.0, 50.0]]), np.array([0.9])
    assert tracker.update(box, score, ["red"], pts_s=0.0) == [None]
    assert tracker.update(box, score, ["red"], pts_s=0.1) == [1]
    assert tracker.update(box, score, ["red"], pts_s=0.5) == [1]  # 0.4 s unseen: the same track
    assert tracker.update(np.zeros((0, 4)), np.zeros(0), [], pts_s=0.6) == []
    assert tracker.update(box, score, ["red"], pts_s=1.1) == [None]  # 0.6 s unseen: a new track
    assert tracker.update(box, score, ["red"], pts_s=1.2) == [2]


def test_low_scores_never_start_a_track_and_nothing_is_left_active() -> None:
    tracker = Tracker(TrackConfig(min_consecutive_frames=1))
    box = np.array([[10.0, 10.0, 50.0, 50.0]])
    assert [tracker.update(box, np.array([0.5]), ["red"]) for _ in range(3)] == [[None]] * 3
    assert tracker.active_tracks == 0


def test_tracker_rejects_misaligned_inputs() -> None:
    with pytest.raises(ValueError, match="2 boxes, 1 scores, 2 classes: not aligned"):
        Tracker(TrackConfig()).update(np.zeros((2, 4)), np.zeros(1), ["a", "b"])


def test_track_config_forbids_unknown_fields_and_other_types() -> None:
    with pytest.raises(ValidationError, match="extra_forbidden"):
        TrackConfig.model_validate({"lost_track_buffer": 30})
    with pytest.raises(ValidationError, match="'bytetrack'"):
        TrackConfig.model_validate({"type": "sort"})
