"""Object tracking for one stream's detections of one service, with Roboflow's ByteTrack (`trackers`).
Pure CPU and synchronous; one stream's frames go through its `Tracker` in order, on one thread at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import supervision as sv
from trackers import ByteTrackTracker

from streamd.analytics.config import TrackConfig

_LIBRARY_FPS = 30.0  # `trackers` counts lost_track_buffer in frames at 30 fps

__all__ = ["TrackConfig", "Tracker"]


class Tracker:
    """Track ids for one stream and one service. Ids are positive, unique for the life of the
    `Tracker` and never reused, even after `reset()`."""

    def __init__(self, config: TrackConfig) -> None:
        self.config = config
        self._next_id = 1
        self.reset()

    def reset(self) -> None:
        """Drop every track (after a reconnect gap or a seek): later detections start new ids."""
        self._trackers: dict[str, ByteTrackTracker] = {}
        self._ids: dict[tuple[str, int], int] = {}  # (class key, library id) → our id

    def update(
        self,
        boxes: np.ndarray,
        scores: np.ndarray,
        classes: Sequence[str],
        pts_s: float | None = None,
    ) -> list[int | None]:
        """Feed one frame's detections, return a track id per detection, in the input order.

        `boxes` [N,4] xmin, ymin, xmax, ymax in frame pixels; `scores` [N]; `classes` N class names.
        Give every processed frame, even with no detections (tracks age by calls, or by `pts_s` when
        given: stream seconds, increasing; frames skipped by a motion gate then count as elapsed
        time). A detection gets None when no confirmed track holds it: a track younger than
        `min_consecutive_frames`, or a low-score detection that matched no track."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = np.asarray(scores, np.float32).reshape(-1)
        if len(boxes) != len(scores) or len(boxes) != len(classes):
            raise ValueError(f"{len(boxes)} boxes, {len(scores)} scores, {len(classes)} classes: not aligned")
        keys = list(classes) if self.config.class_aware else [""] * len(classes)
        for key in keys:
            if key not in self._trackers:
                self._trackers[key] = self._library_tracker()
        out: list[int | None] = [None] * len(boxes)
        key_array = np.array(keys, dtype=object)
        for key, tracker in list(self._trackers.items()):
            chosen = np.flatnonzero(key_array == key)
            detections = sv.Detections(xyxy=boxes[chosen], confidence=scores[chosen], data={"index": chosen})
            tracked = tracker.update(detections, timestamp=pts_s)
            library_ids = tracked.tracker_id
            assert library_ids is not None  # ByteTrack gives every detection an id, -1 when untracked
            for index, library_id in zip(tracked.data.get("index", ()), library_ids, strict=True):
                if library_id >= 0:
                    out[int(index)] = self._public_id(key, int(library_id))
            self._forget_dead(key, tracker)
        return out

    @property
    def active_tracks(self) -> int:
        """Confirmed tracks alive now (matched recently, or coasting within lost_track_s)."""
        return len(self._ids)

    def _forget_dead(self, key: str, tracker: ByteTrackTracker) -> None:
        alive = {(key, t.tracker_id) for t in tracker.tracks if t.tracker_id >= 0}
        for dead in [k for k in self._ids if k[0] == key and k not in alive]:
            del self._ids[dead]
        if not tracker.tracks:  # a class gone from the scene costs nothing per frame
            del self._trackers[key]

    def _public_id(self, key: str, library_id: int) -> int:
        track_id = self._ids.get((key, library_id))
        if track_id is None:
            track_id = self._ids[(key, library_id)] = self._next_id
            self._next_id += 1
        return track_id

    def _library_tracker(self) -> ByteTrackTracker:
        config = self.config
        return ByteTrackTracker(
            lost_track_buffer=round(config.lost_track_s * _LIBRARY_FPS),
            frame_rate=config.frame_rate,
            track_activation_threshold=config.activation_threshold,
            minimum_consecutive_frames=config.min_consecutive_frames,
            minimum_iou_threshold=config.min_iou,
            high_conf_det_threshold=config.high_score_threshold,
        )
