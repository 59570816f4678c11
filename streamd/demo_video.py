"""The demo's video, made from real photographs: faces moving, scaled, several at once, and none.

scikit-image's bundled photos (offline): the astronaut (public-domain NASA portrait, one face) is
pasted at known places over the coffee photo. `placements(frame_index)` says where each copy goes, so
tests can tell where the faces must be found. Blocking (pixels, H.264): a worker thread or before the
event loop starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, FPS = 640, 480, 30
SECONDS = 8
PORTRAIT = (0, 0, 512, 512)  # the whole astronaut photo
HEAD = (120, 10, 330, 220)  # a square around her head, in the photo's pixels


@dataclass(frozen=True, slots=True)
class Placement:
    """A square `source` region of the astronaut photo drawn `size` pixels wide at (`x`, `y`)."""

    source: tuple[int, int, int, int]
    x: int
    y: int
    size: int
    mirrored: bool = False

    def map_box(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """A box `(xmin, ymin, xmax, ymax)` in the photo → where it lands in the frame."""
        x0, y0, x1, _ = self.source
        k = self.size / (x1 - x0)
        xs = [(box[0] - x0) * k, (box[2] - x0) * k]
        if self.mirrored:
            xs = [self.size - xs[1], self.size - xs[0]]
        return (self.x + xs[0], self.y + (box[1] - y0) * k, self.x + xs[1], self.y + (box[3] - y0) * k)


def _slide(t: float, start: int, end: int) -> int:
    return round(start + (end - start) * t)


def placements(frame_index: int) -> list[Placement]:
    """Where the faces are in frame `frame_index` of one play (8 s at 30 fps)."""
    second, t = divmod((frame_index % (SECONDS * FPS)) / FPS, 2.0)
    t /= 2.0
    if second == 0:  # the portrait crossing the frame
        return [Placement(PORTRAIT, _slide(t, 0, WIDTH - 300), 90, 300)]
    if second == 1:  # three heads of different sizes, one mirrored, moving apart
        return [
            Placement(HEAD, _slide(t, 20, 0), 60, 120),
            Placement(HEAD, _slide(t, 200, 240), _slide(t, 200, 240), 170, mirrored=True),
            Placement(HEAD, _slide(t, 420, 460), 40, 160),
        ]
    if second == 2:  # nobody
        return []
    return [
        Placement(PORTRAIT, (WIDTH - size) // 2, (HEIGHT - size) // 2, size) for size in [_slide(t, 200, 460)]
    ]


def render(frame_index: int, astronaut: np.ndarray, background: np.ndarray) -> np.ndarray:
    """One RGB frame: the background panned a little, the placements pasted on it."""
    import cv2

    shift = (frame_index * 2) % (background.shape[1] - WIDTH)
    frame = background[:HEIGHT, shift : shift + WIDTH].copy()
    for place in placements(frame_index):
        x0, y0, x1, y1 = place.source
        patch = cv2.resize(astronaut[y0:y1, x0:x1], (place.size, place.size), interpolation=cv2.INTER_AREA)
        if place.mirrored:
            patch = patch[:, ::-1]
        frame[place.y : place.y + place.size, place.x : place.x + place.size] = patch
    return frame


def encode_faces_video(path: Path) -> None:
    """640x480 H.264 at 30 fps, 8 s: 0-2 s one portrait moving, 2-4 s three faces, 4-6 s none, 6-8 s a
    portrait growing."""
    import av
    import cv2
    from skimage import data

    astronaut = data.astronaut()
    background = cv2.resize(data.coffee(), (WIDTH + 160, HEIGHT), interpolation=cv2.INTER_AREA)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.mp4")
    with av.open(str(partial), "w") as container:
        stream = container.add_stream("h264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for index in range(SECONDS * FPS):
            frame = av.VideoFrame.from_ndarray(render(index, astronaut, background), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    partial.rename(path)
