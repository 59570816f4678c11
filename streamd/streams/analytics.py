"""A stream's analytics after its chain, frame by frame in emission order: track ids for the detectors
whose `output.track` asks for them, the zones holding each counted detection, line crossings as events.

Counted detections are those of the tracked calls (or, when no call is tracked, the first service's
boxes: zone occupancy needs no tracks, line crossings do). State lives as long as the stream's pipeline:
pause and resume keep it, a reconnect resets tracks and line sides (a gap breaks every track), a
daemon restart starts afresh. Runs on the loop (a millisecond or two a frame: bench/analytics.py); the
tracking library is imported only by a stream that tracks.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from streamd.analytics.config import TrackConfig
from streamd.analytics.zones import LineCounter, SceneConfig, TrackedDetection, ZoneCounter
from streamd.chains.results import Classes, Detection, Nested, Output, Prediction
from streamd.chains.spec import ActionNode, ChainPlan, ServiceNode
from streamd.entities import AnalyticsStatus
from streamd.errors import InvalidRequestError

if TYPE_CHECKING:
    from streamd.analytics.tracking import Tracker


def tracked_calls(plan: ChainPlan) -> dict[str, TrackConfig]:
    """The chain's calls whose boxes are tracked, by call id."""
    return {node.call_id: node.output.track for node in _services(plan) if node.output.track is not None}


def check_scene(plan: ChainPlan, scene: SceneConfig | None) -> None:
    """A stream's zones need boxes to place, its lines tracks to count: refuse what cannot work."""
    if scene is None:
        return
    if scene.lines and not tracked_calls(plan):
        raise InvalidRequestError(
            "scene.lines count tracks crossing them: give a detector of the chain "
            '"parameters": {"output": {"track": {}}}',
            code="invalid_stream",
        )
    if scene.zones and not tracked_calls(plan) and not (plan.roots and plan.roots[0].service.has_boxes):
        raise InvalidRequestError(
            "scene.zones hold boxes: the chain's first service must be a detector, or a detector of the "
            'chain tracked ("output": {"track": {}})',
            code="invalid_stream",
        )


@dataclass(frozen=True, slots=True)
class Analysed:
    """A frame's prediction with its track ids filled in, and the events it caused."""

    prediction: Prediction
    events: tuple[dict[str, Any], ...]  # line crossings, in the record's `events`


class StreamAnalytics:
    """One stream's tracking, zones and lines, applied to each prediction in emission order (on the loop)."""

    def __init__(self, plan: ChainPlan, scene: SceneConfig | None) -> None:
        self._tracked = tracked_calls(plan)
        self._counted = frozenset(self._tracked) or (
            frozenset({plan.roots[0].call_id}) if plan.roots and scene is not None else frozenset()
        )
        self._scene = scene
        self._trackers: dict[str, Tracker] = {}
        self._zones: ZoneCounter | None = None
        self._lines: LineCounter | None = None
        self._size: tuple[int, int] | None = None
        self._zone_names = [zone.name for zone in scene.zones] if scene is not None else []
        self._occupancy: dict[str, dict[str, int]] = {zone: {} for zone in self._zone_names}

    @property
    def enabled(self) -> bool:
        """Whether the chain tracks anything or the stream has a scene."""
        return bool(self._tracked) or self._scene is not None

    @property
    def has_lines(self) -> bool:
        """Whether the scene has lines, whose crossings make events."""
        return self._scene is not None and bool(self._scene.lines)

    async def prepare(self) -> None:
        """Import the tracking library off the loop (over a second), before the first frame needs it."""
        if self._tracked:
            await asyncio.to_thread(importlib.import_module, "streamd.analytics.tracking")

    def reset(self) -> None:
        """After a reconnect: every track ends, and a line's crossing needs a fresh side."""
        for tracker in self._trackers.values():
            tracker.reset()
        if self._lines is not None:
            self._lines.reset()

    def apply(self, prediction: Prediction, pts_s: float, width: int, height: int) -> Analysed:
        """Track, place in zones and count crossings for one frame's prediction."""
        self._prepare(width, height)
        events: list[dict[str, Any]] = []
        occupancy: dict[str, dict[str, int]] = {zone: {} for zone in self._zone_names}
        output = self._output(prediction.output, pts_s, events, occupancy)
        nested = self._nested(prediction.nested, pts_s, events, occupancy)
        if self._zones is not None:
            for zone, counts in self._occupancy.items():  # a class seen before reads 0, not absent
                for cat in counts:
                    occupancy[zone].setdefault(cat, 0)
            self._occupancy = occupancy
        return Analysed(replace(prediction, output=output, nested=nested), tuple(events))

    def status(self) -> AnalyticsStatus:
        """Active tracks, zone occupancy and line totals, for the stream's status."""
        lines = self._lines.totals if self._lines is not None else {}
        return AnalyticsStatus(
            tracks=sum(tracker.active_tracks for tracker in self._trackers.values()),
            zones={zone: dict(counts) for zone, counts in self._occupancy.items()},
            lines={line: {cat: dict(sides) for cat, sides in by.items()} for line, by in lines.items()},
        )

    # -- the tree ------------------------------------------------------------------------------------
    def _prepare(self, width: int, height: int) -> None:
        if self._size == (width, height):
            return
        self._size = (width, height)
        if self._scene is not None:  # zones and lines in normalised coordinates follow the frame size
            self._zones = ZoneCounter(self._scene, width, height) if self._scene.zones else None
            totals = self._lines.totals if self._lines is not None else None
            self._lines = LineCounter(self._scene, width, height) if self._scene.lines else None
            if self._lines is not None and totals is not None:
                self._lines.totals = totals
        if self._tracked and not self._trackers:
            from streamd.analytics.tracking import Tracker  # supervision and scipy: only when tracking

            self._trackers = {call: Tracker(config) for call, config in self._tracked.items()}

    def _nested(
        self, nested: Nested, pts_s: float, events: list[dict[str, Any]], occupancy: dict[str, dict[str, int]]
    ) -> Nested:
        if not nested:
            return nested
        return tuple((key, self._output(output, pts_s, events, occupancy)) for key, output in nested)

    def _output(
        self, output: Output, pts_s: float, events: list[dict[str, Any]], occupancy: dict[str, dict[str, int]]
    ) -> Output:
        if not isinstance(output, Classes):
            return output
        detections = tuple(
            replace(d, nested=self._nested(d.nested, pts_s, events, occupancy)) if d.nested else d
            for d in output.classes
        )
        if output.call_id in self._counted:
            detections = self._count(output.call_id, detections, pts_s, events, occupancy)
        return replace(output, classes=detections)

    def _count(
        self,
        call_id: str,
        detections: tuple[Detection, ...],
        pts_s: float,
        events: list[dict[str, Any]],
        occupancy: dict[str, dict[str, int]],
    ) -> tuple[Detection, ...]:
        boxed = [index for index, d in enumerate(detections) if d.box is not None]
        boxes = np.array([_xyxy(detections[i]) for i in boxed], np.float32).reshape(-1, 4)
        ids: list[int | None] = [None] * len(boxed)
        tracker = self._trackers.get(call_id)
        if tracker is not None:
            scores = np.array([detections[i].prob for i in boxed], np.float32)
            ids = tracker.update(boxes, scores, [detections[i].cat for i in boxed], pts_s)
        counted = [
            TrackedDetection(track_id, detections[i].cat, (xmin, ymin, xmax, ymax))
            for i, track_id, (xmin, ymin, xmax, ymax) in zip(boxed, ids, boxes.tolist(), strict=True)
        ]
        zones: tuple[tuple[str, ...], ...] = tuple(() for _ in boxed)
        if self._zones is not None:
            found = self._zones.update(counted)
            zones = found.memberships
            for zone, counts in found.counts.items():
                merged = occupancy.setdefault(zone, {})
                for cat, count in counts.items():
                    merged[cat] = merged.get(cat, 0) + count
        if self._lines is not None:
            events.extend(crossing.to_json() for crossing in self._lines.update(counted, pts_s))
        out = list(detections)
        for position, index in enumerate(boxed):
            out[index] = replace(
                detections[index],
                track_id=ids[position],
                zones=zones[position] if self._zones is not None else None,
            )
        return tuple(out)


def _xyxy(detection: Detection) -> tuple[float, float, float, float]:
    box = detection.box
    assert box is not None
    return box.xmin, box.ymin, box.xmax, box.ymax


def _services(plan: ChainPlan) -> Iterator[ServiceNode]:
    stack: list[ServiceNode | ActionNode] = list(plan.roots)
    while stack:
        node = stack.pop()
        if isinstance(node, ServiceNode):
            yield node
        stack.extend(node.children)
