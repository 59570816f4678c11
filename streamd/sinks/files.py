"""Whole-record appends for the sinks' files (JSONL results, webhook spools). Blocking: worker threads.

Files are opened unbuffered, so a record counted as written is in the file and a record counted as
lost is not (a buffered writer would keep a failed write's bytes and write them later, after they had
been counted as dropped). A write that fails part-way, on a full disk, is cut back: the file holds
whole lines or nothing of the batch, never half a record that a tailing reader would see.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO


def open_append(path: Path) -> BinaryIO:
    """The file for appending, unbuffered; created if missing."""
    return path.open("a+b", buffering=0)


def append_whole(handle: BinaryIO, data: bytes) -> None:
    """Append all of `data` or nothing (OSError, the file back at its size before)."""
    start = handle.seek(0, os.SEEK_END)
    view = memoryview(data)
    try:
        while view:
            written = handle.write(view)
            if not written:
                raise OSError(28, "No space left on device (short write)")
            view = view[written:]
    except OSError:
        handle.truncate(start)
        raise


def last_newline_end(handle: BinaryIO, size: int, chunk_bytes: int = 65536) -> int:
    """Offset just past the last b"\\n" (0 if none): where whole lines end."""
    position = size
    while position > 0:
        start = max(0, position - chunk_bytes)
        handle.seek(start)
        found = handle.read(position - start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        position = start
    return 0
