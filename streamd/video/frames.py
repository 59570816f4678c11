"""Decoded yuv420p frames kept planar (the frame types themselves are in streamd.entities)."""

from __future__ import annotations

import cv2
import numpy as np

_VIDEO_TO_FULL_RANGE = np.clip(np.round((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)


class I420Frame:
    """A decoded yuv420p frame kept in FFmpeg's planar layout (1.5 bytes a pixel instead of 3).

    BGR is made only when something needs the whole frame (a crop, a drawing, a snapshot) and then
    kept. A network's input is resized straight from the planes and converted at its own size, which
    skips converting the pixels the resize throws away (docs/design.md, Streams). Satisfies
    `streamd.entities.LazyImage`.
    """

    __slots__ = ("_bgr", "height", "planes", "width")

    def __init__(self, planes: np.ndarray, width: int, height: int) -> None:
        if width % 2 or height % 2 or planes.shape != (height * 3 // 2, width):
            raise ValueError(f"not an I420 image of {width}x{height}: planes of shape {planes.shape}")
        self.planes = planes  # (height * 3 / 2, width) uint8: Y, then U, then V, each packed
        self.width = width
        self.height = height
        self._bgr: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.height, self.width, 3

    def bgr(self) -> np.ndarray:
        """uint8 HxWx3 BGR, converted once (a race converts twice, harmlessly)."""
        if self._bgr is None:
            self._bgr = cv2.cvtColor(self.planes, cv2.COLOR_YUV2BGR_I420)
        return self._bgr

    def gray(self) -> np.ndarray:
        """uint8 HxWx1 luma straight from the Y plane, expanded from video range (16-235) as the BGR
        conversion does; BT.601's chroma terms cancel in BGR → GRAY, so this matches it within a level."""
        return cv2.LUT(self.planes[: self.height], _VIDEO_TO_FULL_RANGE)[:, :, None]

    def resized_bgr(self, width: int, height: int) -> np.ndarray:
        """Bilinear resize to `width` x `height` BGR, from the planes when the BGR frame is not made."""
        if self._bgr is not None:
            return cv2.resize(self._bgr, (width, height), interpolation=cv2.INTER_LINEAR)
        even_w, even_h = width + width % 2, height + height % 2  # I420 needs even sizes
        w, h = self.width, self.height
        flat = self.planes.reshape(-1)
        chroma = (h // 2) * (w // 2)
        u = flat[w * h : w * h + chroma].reshape(h // 2, w // 2)
        v = flat[w * h + chroma :].reshape(h // 2, w // 2)
        out = np.empty((even_h * 3 // 2, even_w), np.uint8)
        out_flat = out.reshape(-1)
        out_chroma = (even_h // 2) * (even_w // 2)
        out[:even_h] = cv2.resize(self.planes[:h], (even_w, even_h), interpolation=cv2.INTER_LINEAR)
        for index, plane in enumerate((u, v)):
            start = even_w * even_h + index * out_chroma
            out_flat[start : start + out_chroma] = cv2.resize(
                plane, (even_w // 2, even_h // 2), interpolation=cv2.INTER_LINEAR
            ).reshape(-1)
        image = cv2.cvtColor(out, cv2.COLOR_YUV2BGR_I420)
        if (even_w, even_h) != (width, height):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        return image
