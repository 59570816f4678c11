"""Starts and kills the real RTSP server (`rtsp_server.py`, run with the system Python where GStreamer's
`gi` bindings live) for the stream tests and the fault benchmark."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

SERVER = Path(__file__).parent / "rtsp_server.py"
RED_CAMERA = (
    "( videotestsrc is-live=true pattern=solid-color foreground-color=0xffff0000 ! "
    "video/x-raw,width=160,height=96,framerate=30/1 ! "
    "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! rtph264pay name=pay0 pt=96 )"
)


class RtspServer:
    def __init__(self, port: int, launch: str = RED_CAMERA) -> None:
        """`launch`: the gst-launch pipeline of the mount (a test pattern by default; it can play a file)."""
        self.port = port
        self.launch = launch
        self.url = f"rtsp://127.0.0.1:{port}/cam"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["/usr/bin/python3", str(SERVER), str(self.port), "/cam", self.launch],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("the RTSP server did not start; are gstreamer1.0-rtsp and python3-gi installed?")

    def signal(self, sig: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)
        if sig == signal.SIGKILL:
            self.process.wait(10)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
