"""Zones and lines of one stream: which tracked detections are in which named polygon, and which
tracks crossed which named line, in which direction. Pure and synchronous; one stream's frames go
through its counters in order, on one thread at a time.

Direction of a line: with the frame's y axis pointing down, the side of a line on the right of its
arrow start → end (as drawn on screen) is "in": moving onto it is an "in" crossing, leaving it "out".
For a line drawn top → bottom, "in" is moving right → left; drawn left → right, "in" is moving down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

Point = tuple[float, float]
Segment = tuple[Point, Point]
Anchor = Literal["bottom_center", "center"]
Direction = Literal["in", "out"]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, description="Unique name, used in records and events.")
    normalized: bool = Field(
        False, description="Points are fractions of the frame's width and height (0..1), not pixels."
    )
    if TYPE_CHECKING:  # each shape declares its own field (a polygon's list, a line's pair)
        points: Sequence[Point]

    @model_validator(mode="after")
    def _normalized_points_in_range(self) -> _Shape:
        if self.normalized and any(not (0 <= c <= 1) for point in self.points for c in point):
            raise ValueError(f"{self.name!r}: normalized points must lie in 0..1, got {list(self.points)}")
        return self

    def pixels(self, width: int, height: int) -> np.ndarray:
        """The points in frame pixels, float64 [P, 2]."""
        points = np.asarray(self.points, np.float64)
        return points * (width, height) if self.normalized else points


class ZoneConfig(_Shape):
    """A named polygon; a detection is in it when its anchor point is inside or on the edge."""

    points: list[Point] = Field(min_length=3, description="Vertices (x, y) in order, at least 3.")


class LineConfig(_Shape):
    """A named segment start → end; tracks whose anchor crosses it are counted by direction."""

    points: tuple[Point, Point] = Field(description="Start and end (x, y); they set the direction.")

    @model_validator(mode="after")
    def _distinct_ends(self) -> LineConfig:
        if self.points[0] == self.points[1]:
            raise ValueError(f"line {self.name!r}: start and end are the same point {self.points[0]}")
        return self


class SceneConfig(BaseModel):
    """A stream's zones and lines, and how a detection's box is reduced to one point."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    zones: list[ZoneConfig] = Field(default_factory=list, description="Named polygons for occupancy.")
    lines: list[LineConfig] = Field(default_factory=list, description="Named lines for crossing counts.")
    anchor: Anchor = Field(
        "bottom_center",
        description="Point of a box that must be in a zone or cross a line: where an object touches the "
        "ground (bottom_center, as supervision does) or the box's centre.",
    )
    min_crossing_frames: int = Field(
        1,
        ge=1,
        description="Updates a track's anchor must stay on the new side of a line before the crossing "
        "counts (filters jitter on the line).",
    )
    forget_after_s: float = Field(
        5.0,
        gt=0,
        description="A track unseen this long (stream time) is forgotten: its next crossing "
        "needs a fresh side.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> SceneConfig:
        for kind, shapes in (("zone", self.zones), ("line", self.lines)):
            names = [shape.name for shape in shapes]
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                raise ValueError(f"{kind} names must be unique; repeated: {', '.join(duplicates)}")
        return self


@dataclass(frozen=True, slots=True)
class TrackedDetection:
    """One detection of a frame, as the counters need it."""

    track_id: int | None  # None: not tracked (counts for occupancy, never crosses a line)
    category: str  # class name
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in frame pixels


@dataclass(frozen=True, slots=True)
class LineCrossing:
    """A track's anchor crossed a line."""

    line: str
    track_id: int
    category: str
    direction: Direction

    def to_json(self) -> dict[str, object]:
        return {
            "type": "line_crossed",
            "line": self.line,
            "track_id": self.track_id,
            "class": self.category,
            "direction": self.direction,
        }


@dataclass(frozen=True, slots=True)
class ZoneOccupancy:
    """Zones of one frame: per detection (input order) the names of the zones holding it, and per zone
    the count of detections by class (every configured zone present, classes only when counted)."""

    memberships: tuple[tuple[str, ...], ...]
    counts: dict[str, dict[str, int]]


def anchor_points(boxes: np.ndarray, anchor: Anchor) -> np.ndarray:
    """[N,4] xyxy boxes → [N,2] anchor points."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x = (boxes[:, 0] + boxes[:, 2]) / 2
    y = boxes[:, 3] if anchor == "bottom_center" else (boxes[:, 1] + boxes[:, 3]) / 2
    return np.stack([x, y], axis=1)


class ZoneCounter:
    """Occupancy of a stream's zones, frame by frame (stateless between frames)."""

    def __init__(self, config: SceneConfig, width: int, height: int) -> None:
        self.anchor = config.anchor
        self._zones = [(zone.name, zone.pixels(width, height).astype(np.float32)) for zone in config.zones]

    def update(self, detections: Sequence[TrackedDetection]) -> ZoneOccupancy:
        points = anchor_points(np.array([d.box for d in detections]), self.anchor)
        inside: list[list[str]] = [[] for _ in detections]
        counts: dict[str, dict[str, int]] = {}
        for name, polygon in self._zones:
            per_class: dict[str, int] = {}
            for index, (detection, point) in enumerate(zip(detections, points, strict=True)):
                if cv2.pointPolygonTest(polygon, (float(point[0]), float(point[1])), False) >= 0:
                    inside[index].append(name)
                    per_class[detection.category] = per_class.get(detection.category, 0) + 1
            counts[name] = per_class
        return ZoneOccupancy(tuple(tuple(names) for names in inside), counts)


@dataclass(slots=True)
class _Side:
    """Where one track stands relative to one line."""

    settled: int  # +1 "in" side, -1 "out" side
    last_point: Point  # last anchor off the line
    pending: int = 0  # side the anchor moved to but has not stayed on long enough (0: none)
    pending_frames: int = 0
    pending_crossed: bool = False  # the move onto the pending side went through the segment


class LineCounter:
    """Crossings of a stream's lines by tracks, and their running totals per line, class and direction.
    `reset()` after a reconnect gap, together with the tracker."""

    def __init__(self, config: SceneConfig, width: int, height: int) -> None:
        self.config = config
        self._lines: list[tuple[str, Segment]] = []
        for line in config.lines:
            (ax, ay), (bx, by) = line.pixels(width, height).tolist()
            self._lines.append((line.name, ((ax, ay), (bx, by))))
        # line → class → {"in": n, "out": n}, since the counter was made (reset keeps them)
        self.totals: dict[str, dict[str, dict[str, int]]] = {name: {} for name, _ in self._lines}
        self.reset()

    def reset(self) -> None:
        """Forget where tracks stood (totals are kept: they count since the stream started)."""
        self._sides: dict[tuple[str, int], _Side] = {}
        self._last_seen_s: dict[int, float] = {}

    def update(self, detections: Sequence[TrackedDetection], pts_s: float) -> list[LineCrossing]:
        """Feed one frame's tracked detections at stream time `pts_s`; returns the crossings it saw."""
        tracked = [d for d in detections if d.track_id is not None]
        points = anchor_points(np.array([d.box for d in tracked]), self.config.anchor)
        crossings = []
        for detection, point in zip(tracked, points, strict=True):
            track_id = detection.track_id
            assert track_id is not None
            self._last_seen_s[track_id] = pts_s
            for name, ends in self._lines:
                direction = self._step(name, ends, track_id, (float(point[0]), float(point[1])))
                if direction is not None:
                    crossings.append(LineCrossing(name, track_id, detection.category, direction))
                    by_class = self.totals[name].setdefault(detection.category, {"in": 0, "out": 0})
                    by_class[direction] += 1
        self._forget(pts_s)
        return crossings

    def _step(self, line: str, ends: Segment, track_id: int, point: Point) -> Direction | None:
        side = _side_of(ends, point)
        if side == 0:  # on the line: wait until the anchor leaves it
            return None
        state = self._sides.get((line, track_id))
        if state is None:
            self._sides[(line, track_id)] = _Side(side, point)
            return None
        previous, state.last_point = state.last_point, point
        if side == state.settled:
            state.pending = 0
            return None
        if side != state.pending:
            state.pending, state.pending_frames = side, 0
            state.pending_crossed = _segments_intersect(previous, point, ends)
        state.pending_frames += 1
        if state.pending_frames < self.config.min_crossing_frames:
            return None
        state.settled, state.pending = side, 0
        if not state.pending_crossed:  # went round an end of the line
            return None
        return "in" if side > 0 else "out"

    def _forget(self, now_s: float) -> None:
        horizon = now_s - self.config.forget_after_s
        gone = [track_id for track_id, seen in self._last_seen_s.items() if seen < horizon]
        for track_id in gone:
            del self._last_seen_s[track_id]
            for name, _ in self._lines:
                self._sides.pop((name, track_id), None)


def _cross(ends: Segment, point: Point) -> float:
    (ax, ay), (bx, by) = ends
    return (bx - ax) * (point[1] - ay) - (by - ay) * (point[0] - ax)


def _side_of(ends: Segment, point: Point) -> int:
    """+1 on the "in" side (right of start → end on screen, y down), -1 on the other, 0 on the line."""
    value = _cross(ends, point)
    return (value > 0) - (value < 0)


def _segments_intersect(p: Point, q: Point, ends: Segment) -> bool:
    """Whether the anchor's move p → q meets the line's segment (touching an end counts)."""
    move = (p, q)
    return _cross(move, ends[0]) * _cross(move, ends[1]) <= 0 and _cross(ends, p) * _cross(ends, q) <= 0
