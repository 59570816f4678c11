"""A real RTSP server (GStreamer's gst-rtsp-server from Debian) serving one mount, for stream tests.

Run with the system Python, where `gi` lives: `/usr/bin/python3 rtsp_server.py PORT MOUNT LAUNCH`.
It serves until killed; tests start and kill it by pid (SIGKILL to die, SIGSTOP to freeze).
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    port, mount, launch = sys.argv[1], sys.argv[2], sys.argv[3]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)
    server.get_mount_points().add_factory(mount, factory)
    server.attach(None)
    print(f"rtsp://127.0.0.1:{port}{mount}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
