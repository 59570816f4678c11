"""Image sources of inference requests → decoded BGR frames.

Accepted: uploaded bytes (multipart), `data:image/...;base64,` and `;binary,` URIs, raw base64 (what
DeepDetect's Python client sends with `use_base64=True`), local files under the configured media roots
(`file:///abs`, an absolute path, or a path relative to the daemon's working directory, as DeepDetect
resolves them), and http(s) URLs only when `inference.allow_url_sources` is on (bounded in size and
time). Errors quote at most `QUOTE_CHARS` of a source. Decoding and file reads run in worker threads;
fetching runs on the loop with aiohttp.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp
import cv2
import numpy as np

from streamd.errors import InvalidRequestError, PayloadTooLargeError
from streamd.settings import InferenceConfig


class SourceError(InvalidRequestError):
    code = "invalid_source"


QUOTE_CHARS = 80  # a source quoted in an error: a 97 KB base64 payload must not come back in it
_BASE64 = re.compile(rb"[A-Za-z0-9+/\r\n]+={0,2}")


def quote(source: str) -> str:
    """`source` for an error message, cut to QUOTE_CHARS characters."""
    if len(source) <= QUOTE_CHARS:
        return repr(source)
    return f"{source[:QUOTE_CHARS]!r}... ({len(source)} characters)"


def is_inline(source: str | bytes) -> bool:
    """Whether a source carries its image itself (bytes, a data URI, raw base64) rather than naming it:
    DeepDetect reports such an image's `uri` as its index."""
    if isinstance(source, bytes) or source.startswith("data:"):
        return True
    return not source.startswith(("http://", "https://", "file://", "/")) and _looks_base64(source)


def _looks_base64(source: str) -> bool:
    # A file name can look like base64 ("abc"), but an encoded image is dozens of bytes at least and has
    # no '.', which nearly every image path has; an existing file still wins (read_local).
    encoded = source.encode("ascii", "replace")
    return len(source) >= 32 and "." not in source and _BASE64.fullmatch(encoded) is not None


async def load_source(
    source: str | bytes, where: str, config: InferenceConfig, media_roots: Sequence[Path]
) -> np.ndarray:
    """Resolve and decode one image source; `where` names it in errors (e.g. `inputs[0].image.source`)."""
    data = await fetch_source(source, where, config, media_roots)
    return await asyncio.to_thread(decode_image, data, where)


async def fetch_source(
    source: str | bytes, where: str, config: InferenceConfig, media_roots: Sequence[Path]
) -> bytes:
    if isinstance(source, bytes):
        return source
    if source.startswith("data:"):
        return parse_data_uri(source, where)
    if source.startswith(("http://", "https://")):
        if not config.allow_url_sources:
            raise SourceError(
                f"{where}: URL sources are disabled on this daemon; send the image inline (data URI or "
                "multipart file) or ask the operator to set inference.allow_url_sources"
            )
        return await _fetch_url(source, where, config)
    return await asyncio.to_thread(read_local, source, where, media_roots)


def read_local(source: str, where: str, media_roots: Sequence[Path]) -> bytes:
    """Blocking: resolve a local path (links and '..' included) and read it if inside a media root; a
    relative name that is no file and looks like base64 is DeepDetect's raw base64 image."""
    if _looks_base64(source) and not source.startswith(("file://", "/")) and not _is_file(source):
        try:
            return base64.b64decode(source, validate=False)
        except (binascii.Error, ValueError):
            raise SourceError(f"{where}: {quote(source)} is neither a file nor valid base64") from None
    path = local_path(source, where, media_roots)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SourceError(f"{where}: cannot read {quote(str(path))}: {exc.strerror}") from None


def _is_file(name: str) -> bool:
    try:
        return Path(name).is_file()
    except OSError:  # a 97 KB base64 string is no file name (ENAMETOOLONG)
        return False


def parse_data_uri(uri: str, where: str) -> bytes:
    header, sep, payload = uri.partition(",")
    if not sep or not header.startswith("data:"):
        raise SourceError(f"{where}: a data URI looks like data:image/jpeg;base64,<data>")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise SourceError(f"{where}: the base64 payload of the data URI is not valid base64") from None
    if header.endswith(";binary"):
        return payload.encode("latin-1")
    raise SourceError(f"{where}: data URIs must be ';base64,' or ';binary,' encoded")


def local_path(source: str, where: str, media_roots: Sequence[Path]) -> Path:
    """A local file, allowed only inside a media root (after resolving links and '..'). A relative path
    is resolved against the daemon's working directory, as DeepDetect does, then confined the same way.
    Blocking (it reads the working directory and follows links)."""
    raw = unquote(urlsplit(source).path) if source.startswith("file://") else source
    if "\x00" in raw:
        raise SourceError(f"{where}: {quote(source)} is not a path (it contains a NUL character)")
    resolved = Path(raw).resolve()
    if not any(resolved.is_relative_to(root) for root in media_roots):
        roots = ", ".join(str(root) for root in media_roots) or "none configured"
        raise SourceError(
            f"{where}: {quote(source)} (resolved to {quote(str(resolved))}) is outside the media roots "
            f"({roots}); copy it there, configure storage.media_roots, or send the image inline (a data "
            "URI or base64)"
        )
    return resolved


async def _fetch_url(url: str, where: str, config: InferenceConfig) -> bytes:
    timeout = aiohttp.ClientTimeout(total=config.url_timeout_s)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
            if response.status != 200:
                raise SourceError(f"{where}: fetching {url} answered HTTP {response.status}")
            body = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > config.url_max_bytes:
                    raise PayloadTooLargeError(
                        f"{where}: {url} is larger than inference.url_max_bytes={config.url_max_bytes}"
                    )
            return bytes(body)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise SourceError(f"{where}: fetching {url} failed: {type(exc).__name__} {exc}") from None


def decode_image(data: bytes, where: str) -> np.ndarray:
    """Encoded image bytes → uint8 HxWx3 BGR (grey and alpha images are converted)."""
    if not data:
        raise SourceError(f"{where}: the image is empty")
    frame = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if frame is None:
        raise SourceError(f"{where}: the data could not be decoded as an image (JPEG, PNG, BMP, WebP, ...)")
    return frame


def crop_bbox(frame: np.ndarray, bbox: dict[str, float], where: str) -> np.ndarray:
    """Crop by a box normalized to the image (origin top-left), as Deepomatic's `bbox` input."""
    height, width = frame.shape[:2]
    xmin, ymin, xmax, ymax = (bbox[k] for k in ("xmin", "ymin", "xmax", "ymax"))
    if not (0.0 <= xmin < xmax <= 1.0 and 0.0 <= ymin < ymax <= 1.0):
        raise SourceError(
            f"{where}: bbox must satisfy 0 <= xmin < xmax <= 1 and 0 <= ymin < ymax <= 1, got {bbox}"
        )
    x0, x1 = int(np.floor(xmin * width)), max(int(np.ceil(xmax * width)), int(np.floor(xmin * width)) + 1)
    y0, y1 = int(np.floor(ymin * height)), max(int(np.ceil(ymax * height)), int(np.floor(ymin * height)) + 1)
    return np.ascontiguousarray(frame[y0:y1, x0:x1])
