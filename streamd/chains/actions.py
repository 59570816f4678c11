"""Chain actions on pixels: crop geometry, right-angle rotation, box drawing, JPEG encoding.

Every image in a chain carries a 2x3 affine `to_frame` (image pixels → original frame pixels), so boxes
found on a crop or a rotated image are reported in the original frame. Pure numpy/cv2; the runner
calls the heavier ones (drawing, encoding, saving) from worker threads.
"""

from __future__ import annotations

import math
import zlib

import cv2
import numpy as np

from streamd.chains.spec import CropParams, DrawParams

IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """`outer ∘ inner` for 2x3 affines: first inner, then outer."""
    product: np.ndarray = np.vstack([outer, [0, 0, 1]]) @ np.vstack([inner, [0, 0, 1]])
    return product[:2]


def translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])


def map_box(affine: np.ndarray, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """The axis-aligned box around the image of `box` (xmin, ymin, xmax, ymax) under `affine`."""
    xmin, ymin, xmax, ymax = box
    corners = np.array([[xmin, ymin, 1], [xmax, ymin, 1], [xmin, ymax, 1], [xmax, ymax, 1]], dtype=np.float64)
    mapped = corners @ affine.T
    return (
        float(mapped[:, 0].min()),
        float(mapped[:, 1].min()),
        float(mapped[:, 0].max()),
        float(mapped[:, 1].max()),
    )


def crop_region(
    box: tuple[float, float, float, float], width: int, height: int, params: CropParams
) -> tuple[int, int, int, int] | None:
    """Integer crop (x0, y0, x1, y1) for a box, DeepDetect's rules: padding, square, fixed or minimum size
    centred on the box and shifted to stay inside the image, then clipped; None if it misses the image."""
    xmin, ymin, xmax, ymax = box
    box_w, box_h = xmax - xmin, ymax - ymin
    xmin, xmax = xmin - box_w * params.padding_ratio, xmax + box_w * params.padding_ratio
    ymin, ymax = ymin - box_h * params.padding_ratio, ymax + box_h * params.padding_ratio
    if params.force_square:
        side = max(xmax - xmin, ymax - ymin)
        xmin, xmax = _centred((xmin + xmax) / 2, side)
        ymin, ymax = _centred((ymin + ymax) / 2, side)
    target_w = params.fixed_width or (params.min_width if xmax - xmin < params.min_width else 0)
    target_h = params.fixed_height or (params.min_height if ymax - ymin < params.min_height else 0)
    if target_w:
        xmin, xmax = _shift_inside(*_centred((xmin + xmax) / 2, target_w), width)
    if target_h:
        ymin, ymax = _shift_inside(*_centred((ymin + ymax) / 2, target_h), height)
    x0, y0 = max(0, math.floor(xmin)), max(0, math.floor(ymin))
    x1, y1 = min(width, math.ceil(xmax)), min(height, math.ceil(ymax))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def _centred(centre: float, size: float) -> tuple[float, float]:
    return centre - size / 2, centre + size / 2


def _shift_inside(low: float, high: float, limit: int) -> tuple[float, float]:
    if high - low >= limit:
        return 0.0, float(limit)
    if low < 0:
        return 0.0, high - low
    if high > limit:
        return limit - (high - low), float(limit)
    return low, high


def rotation_angle(label: str, orientation: str) -> int:
    """Clockwise degrees to turn an image whose orientation classifier answered `label`.

    The label says by how much the content is turned clockwise: `relative` undoes it, `absolute`
    applies it."""
    angle = int(label) % 360
    return (360 - angle) % 360 if orientation == "relative" else angle


def rotate(pixels: np.ndarray, clockwise: int) -> tuple[np.ndarray, np.ndarray]:
    """Turn by a right angle; returns the image and the affine from rotated pixels to source pixels."""
    height, width = pixels.shape[:2]
    if clockwise == 90:
        return np.ascontiguousarray(np.rot90(pixels, k=-1)), np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, height]])
    if clockwise == 180:
        return np.ascontiguousarray(pixels[::-1, ::-1]), np.array([[-1.0, 0.0, width], [0.0, -1.0, height]])
    if clockwise == 270:
        return np.ascontiguousarray(np.rot90(pixels, k=1)), np.array([[0.0, -1.0, width], [1.0, 0.0, 0.0]])
    return pixels, IDENTITY.copy()


def colour_of(category: str) -> tuple[int, int, int]:
    """A stable BGR colour per category (DeepDetect hashes `cat` too)."""
    value = zlib.crc32(category.encode())
    return (64 + value % 192, 64 + (value >> 8) % 192, 64 + (value >> 16) % 192)


def draw_boxes(
    pixels: np.ndarray,
    boxes: list[tuple[float, float, float, float]],
    labels: list[tuple[str, float]],
    params: DrawParams,
) -> np.ndarray:
    canvas = pixels.copy()
    for (xmin, ymin, xmax, ymax), (category, prob) in zip(boxes, labels, strict=True):
        colour = colour_of(category)
        top_left, bottom_right = (round(xmin), round(ymin)), (round(xmax), round(ymax))
        cv2.rectangle(canvas, top_left, bottom_right, colour, params.thickness)
        text = " ".join(
            part
            for part in (category if params.write_cat else "", f"{prob:.2f}" if params.write_prob else "")
            if part
        )
        if text:
            cv2.putText(
                canvas,
                text,
                (top_left[0], max(10, top_left[1] - 4)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.4,
                colour,
                1,
                cv2.LINE_AA,
            )
    return canvas


def paste_back(
    pixels: np.ndarray, pieces: list[tuple[tuple[int, int, int, int] | None, np.ndarray]]
) -> np.ndarray:
    """A copy of `pixels` with each piece resized into its region (x0, y0, x1, y1)."""
    canvas = pixels.copy()
    for region, piece in pieces:
        if region is None:
            continue
        x0, y0, x1, y1 = region
        canvas[y0:y1, x0:x1] = cv2.resize(piece, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    return canvas


def encode_png(pixels: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise ValueError("PNG encoding failed")
    return encoded.tobytes()


def encode_jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return encoded.tobytes()
