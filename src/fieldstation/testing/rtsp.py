"""A real RTSP camera for tests and benchmarks: GStreamer's RTSP server in a child process.

:class:`RtspCamera` runs ``/usr/bin/python3`` (the system interpreter, which has GStreamer's
Python bindings: ``python3-gst-1.0``, ``gir1.2-gst-rtsp-server-1.0``) with a small server
script serving ``videotestsrc`` (a moving ball by default, live: one frame per 1/fps s) as
H.264 (``x264enc`` ultrafast, zerolatency, a keyframe every second) at
``rtsp://127.0.0.1:<port>/<path>``. :meth:`RtspCamera.start` returns once the server answers an
RTSP ``OPTIONS`` request; :meth:`stop` (SIGTERM) and :meth:`kill` (SIGKILL) take the camera
away, and :meth:`start` brings it back on the same port::

    with RtspCamera(width=320, height=240, fps=25) as camera:
        ...  # record camera.url
        camera.stop()  # the camera is gone
        camera.start()  # back
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from fieldstation.testing.broker import free_port

__all__ = ["GSTREAMER_PYTHON", "RtspCamera", "RtspUnavailable", "rtsp_available"]

GSTREAMER_PYTHON = os.environ.get("FIELDSTATION_GST_PYTHON", "/usr/bin/python3")
"""The interpreter with GStreamer's bindings (``FIELDSTATION_GST_PYTHON`` overrides it)."""

_SERVER = r"""
import signal, sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer

port, path, width, height, fps, pattern = sys.argv[1:7]
Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    f"( videotestsrc is-live=true pattern={pattern} "
    f"! video/x-raw,width={width},height={height},framerate={fps}/1 "
    f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} "
    f"! rtph264pay name=pay0 pt=96 config-interval=1 )"
)
factory.set_shared(True)
server.get_mount_points().add_factory("/" + path, factory)
if server.attach(None) == 0:
    sys.exit("cannot listen on port " + port)
loop = GLib.MainLoop()
GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
print("ready", flush=True)
loop.run()
"""


class RtspUnavailable(RuntimeError):
    """GStreamer's RTSP server cannot run here (the bindings are not installed)."""


def rtsp_available(python: str = GSTREAMER_PYTHON) -> str | None:
    """None when ``python`` can run the server, else why not (for a skip message)."""
    if not Path(python).exists():
        return f"{python} does not exist"
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
        "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
        "assert Gst.ElementFactory.find('x264enc'), 'no x264enc (gstreamer1.0-plugins-ugly)'"
    )
    try:
        done = subprocess.run(
            [python, "-c", probe], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError) as error:
        return str(error)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return f"GStreamer RTSP server unavailable: {last}"
    return None


class RtspCamera:
    """GStreamer's RTSP server serving ``videotestsrc`` as H.264 (see the module docstring).

    ``width`` x ``height`` pixels at ``fps`` frames per second, ``pattern`` a videotestsrc
    pattern (``ball``, ``smpte``, ...), on ``127.0.0.1:port`` (a free port by default) at
    ``/path``. Raises :class:`RtspUnavailable` from :meth:`start` when the server does not
    answer within ``timeout`` seconds (its stderr is quoted).
    """

    def __init__(
        self,
        *,
        width: int = 320,
        height: int = 240,
        fps: int = 25,
        pattern: str = "ball",
        port: int | None = None,
        path: str = "camera",
        python: str = GSTREAMER_PYTHON,
    ) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.pattern = pattern
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.path = path
        self.python = python
        self.process: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def url(self) -> str:
        """``rtsp://127.0.0.1:<port>/<path>``."""
        return f"rtsp://{self.host}:{self.port}/{self.path}"

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def answers(self, timeout: float = 1.0) -> bool:
        """True when the server answers an RTSP ``OPTIONS`` request with ``200 OK``."""
        request = f"OPTIONS {self.url} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode()
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
                sock.sendall(request)
                reply = sock.recv(1024)
        except OSError:
            return False
        return reply.startswith(b"RTSP/1.0 200")

    def start(self, timeout: float = 30.0) -> RtspCamera:
        """Start the server and wait until it answers (at most ``timeout`` seconds)."""
        if self.running:
            return self
        self._close_log()
        # stderr to a file, not a pipe nobody reads (a full pipe would stall the server)
        self._log = tempfile.NamedTemporaryFile(prefix="fieldstation-rtsp-", suffix=".log")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                self.python,
                "-c",
                _SERVER,
                str(self.port),
                self.path,
                str(self.width),
                str(self.height),
                str(self.fps),
                self.pattern,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self.answers(timeout=0.5):
                return self
            time.sleep(0.05)  # polling for the server's readiness (the event we wait for)
        self.kill()
        stderr = Path(self._log.name).read_bytes() if self._log is not None else b""
        self._close_log()
        raise RtspUnavailable(
            f"the RTSP server did not answer on {self.url} within {timeout:g} s: "
            f"{stderr.decode(errors='replace')[-2000:]}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, SIGKILL after ``timeout`` s): the camera is gone."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL)."""
        self._signal(signal.SIGKILL, 10.0)

    def _signal(self, signum: int, timeout: float) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signum)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _close_log(self) -> None:
        log, self._log = self._log, None
        if log is not None:
            with contextlib.suppress(OSError):
                log.close()

    def __enter__(self) -> RtspCamera:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
        self._close_log()
