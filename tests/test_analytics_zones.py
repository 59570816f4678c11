"""Zones and line counts: on tracked squares from real decoded frames, and on hand-built tracks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streamd.analytics.tracking import TrackConfig, Tracker
from streamd.analytics.zones import (
    LineConfig,
    LineCounter,
    LineCrossing,
    SceneConfig,
    TrackedDetection,
    ZoneConfig,
    ZoneCounter,
)
from tests.factories.squares import (
    BLUE_CROSSES_AT,
    HEIGHT,
    LINE_X,
    RED_CROSSES_AT,
    WIDTH,
    SquareDetections,
    build_square_detector,
    decode_i420,
    encode_crossing,
    run_square_detector,
)

HALVES = [
    ZoneConfig(name="left", points=[(0, 0), (0.5, 0), (0.5, 1), (0, 1)], normalized=True),
    ZoneConfig(name="right", points=[(160, 0), (320, 0), (320, 192), (160, 192)]),
]
MIDDLE = LineConfig(name="middle", points=((LINE_X, 0), (LINE_X, HEIGHT)))  # drawn top → bottom


@pytest.fixture(scope="module")
def tracked_frames(tmp_path_factory: pytest.TempPathFactory) -> list[list[TrackedDetection]]:
    """The crossing scene's squares, detected by the TF detector and tracked by ByteTrack."""
    root = tmp_path_factory.mktemp("squares")
    found: list[SquareDetections] = run_square_detector(
        build_square_detector(root / "detector"), decode_i420(encode_crossing(root / "crossing.mp4"))
    )
    tracker = Tracker(TrackConfig())
    frames = []
    for index, detections in enumerate(found):
        ids = tracker.update(detections.boxes, detections.scores, detections.classes, pts_s=index / 30)
        frames.append(
            [
                TrackedDetection(track_id, category, tuple(box))
                for track_id, category, box in zip(
                    ids, detections.classes, detections.boxes.tolist(), strict=True
                )
            ]
        )
    return frames


def test_line_counts_each_square_once_at_its_crossing_frame(
    tracked_frames: list[list[TrackedDetection]],
) -> None:
    counter = LineCounter(SceneConfig(lines=[MIDDLE]), WIDTH, HEIGHT)
    events = {
        index: [crossing.to_json() for crossing in counter.update(frame, pts_s=index / 30)]
        for index, frame in enumerate(tracked_frames)
    }
    assert {index: found for index, found in events.items() if found} == {
        RED_CROSSES_AT: [
            {"type": "line_crossed", "line": "middle", "track_id": 1, "class": "red", "direction": "out"}
        ],
        BLUE_CROSSES_AT: [
            {"type": "line_crossed", "line": "middle", "track_id": 2, "class": "blue", "direction": "in"}
        ],
    }
    assert (RED_CROSSES_AT, BLUE_CROSSES_AT) == (18, 24)
    assert counter.totals == {"middle": {"red": {"in": 0, "out": 1}, "blue": {"in": 1, "out": 0}}}


def test_zone_occupancy_follows_the_squares_across_the_halves(
    tracked_frames: list[list[TrackedDetection]],
) -> None:
    counter = ZoneCounter(SceneConfig(zones=HALVES), WIDTH, HEIGHT)
    first, at_18, last = (counter.update(tracked_frames[i]) for i in (0, 18, 35))
    assert first.memberships == (("left",), ("right",))  # red, blue
    assert first.counts == {"left": {"red": 1}, "right": {"blue": 1}}
    assert at_18.counts == {"left": {}, "right": {"red": 1, "blue": 1}}
    assert last.counts == {"left": {"blue": 1}, "right": {"red": 1}}
    assert last.memberships == (("right",), ("left",))


def detection(track_id: int | None, x: float, y: float, category: str = "car") -> TrackedDetection:
    """A 20x10 box whose bottom centre is (x, y)."""
    return TrackedDetection(track_id, category, (x - 10, y - 10, x + 10, y))


def crossings(
    counter: LineCounter, path: list[tuple[float, float]], track_id: int = 7
) -> list[tuple[int, str]]:
    found = []
    for index, (x, y) in enumerate(path):
        found += [(index, c.direction) for c in counter.update([detection(track_id, x, y)], pts_s=index / 10)]
    return found


def horizontal_line(**scene: object) -> LineCounter:
    line = LineConfig(name="door", points=((100, 50), (200, 50)))  # drawn left → right: "in" is downwards
    return LineCounter(SceneConfig(lines=[line], **scene), 300, 100)


def test_jitter_counts_in_and_out_without_hysteresis_and_once_with_it() -> None:
    path = [(150, 40), (150, 55), (150, 45), (150, 56), (150, 60), (150, 70)]
    assert crossings(horizontal_line(), path) == [(1, "in"), (2, "out"), (3, "in")]
    assert crossings(horizontal_line(min_crossing_frames=2), path) == [(4, "in")]


def test_going_round_the_end_of_a_line_is_not_a_crossing() -> None:
    counter = horizontal_line()
    assert crossings(counter, [(250, 40), (250, 60), (150, 60), (150, 40)]) == [(3, "out")]
    assert counter.totals == {"door": {"car": {"in": 0, "out": 1}}}


def test_a_point_on_the_line_waits_for_the_side_it_leaves_to() -> None:
    assert crossings(horizontal_line(), [(150, 40), (150, 50), (150, 50), (150, 60)]) == [(3, "in")]
    assert crossings(horizontal_line(), [(150, 40), (150, 50), (150, 40)]) == []


def test_untracked_detections_never_cross_but_count_in_zones() -> None:
    scene = SceneConfig(zones=[ZoneConfig(name="all", points=[(0, 0), (300, 0), (300, 100)])], lines=[])
    lines = horizontal_line()
    assert lines.update([detection(None, 150, 40)], 0.0) == []
    assert lines.update([detection(None, 150, 60)], 0.1) == []
    occupancy = ZoneCounter(scene, 300, 100).update([detection(None, 250, 20), detection(None, 20, 90)])
    assert occupancy.memberships == (("all",), ())
    assert occupancy.counts == {"all": {"car": 1}}


def test_anchor_center_uses_the_middle_of_the_box() -> None:
    zone = ZoneConfig(name="top", points=[(0, 0), (100, 0), (100, 50), (0, 50)])
    box = TrackedDetection(1, "person", (40, 30, 60, 60))  # centre y 45, bottom 60
    assert ZoneCounter(SceneConfig(zones=[zone]), 100, 100).update([box]).memberships == ((),)
    center = SceneConfig(zones=[zone], anchor="center")
    assert ZoneCounter(center, 100, 100).update([box]).memberships == (("top",),)


def test_a_track_unseen_for_forget_after_s_starts_from_a_fresh_side() -> None:
    counter = horizontal_line(forget_after_s=1.0)
    assert counter.update([detection(7, 150, 40)], 0.0) == []
    assert counter.update([detection(8, 10, 10)], 2.0) == []  # track 7 forgotten here
    assert counter.update([detection(7, 150, 60)], 2.1) == []
    assert counter.update([detection(7, 150, 40)], 2.2) == [LineCrossing("door", 7, "car", "out")]


def test_reset_forgets_sides_and_keeps_totals() -> None:
    counter = horizontal_line()
    assert crossings(counter, [(150, 40), (150, 60)]) == [(1, "in")]
    counter.reset()
    assert crossings(counter, [(150, 40), (150, 60)], track_id=9) == [(1, "in")]
    assert counter.update([detection(7, 150, 40)], 0.5) == []  # 7's side was forgotten
    assert counter.totals == {"door": {"car": {"in": 2, "out": 0}}}


def test_scene_config_validation_names_the_problem() -> None:
    with pytest.raises(ValidationError, match="at least 3 items"):
        ZoneConfig(name="z", points=[(0, 0), (1, 1)])
    with pytest.raises(ValidationError, match="start and end are the same point"):
        LineConfig(name="l", points=((5, 5), (5, 5)))
    with pytest.raises(ValidationError, match=r"normalized points must lie in 0\.\.1"):
        ZoneConfig(name="z", points=[(0, 0), (2, 0), (0, 1)], normalized=True)
    with pytest.raises(ValidationError, match="zone names must be unique; repeated: a"):
        SceneConfig(zones=[ZoneConfig(name="a", points=[(0, 0), (1, 0), (0, 1)])] * 2)
    with pytest.raises(ValidationError, match="extra_forbidden"):
        SceneConfig.model_validate({"zones": [], "polygons": []})
    line = SceneConfig.model_validate(
        {"lines": [{"name": "gate", "points": [[0, 0.5], [1, 0.5]], "normalized": True}]}
    )
    assert LineCounter(line, 640, 480)._lines == [("gate", ((0.0, 240.0), (640.0, 240.0)))]
