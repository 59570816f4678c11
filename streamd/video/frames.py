"""Decoded frames as they travel from a decoder thread to a stream's pipeline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Frame:
    pixels: np.ndarray  # uint8 HxWx3 BGR
    frame_index: int  # position among the stream's decoded frames, counting across reconnects and loops
    pts_s: float  # stream time
    captured_ts: float  # wall clock when decoded (epoch seconds)
    decoded_s: float  # time.monotonic() when decoded, for latency


@dataclass(frozen=True, slots=True)
class SourceEvent:
    """What a decoder thread tells its stream: connected, ended, failed (with a reason), reconnecting."""

    kind: str  # "connected" | "ended" | "failed" | "reconnecting" | "decode_error" | "fps_cap"
    message: str = ""
    count: int = 1
