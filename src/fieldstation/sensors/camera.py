"""The ``ffmpeg`` capture behind the ``video`` sensor plugin (imports numpy; decision 0071).

One ``ffmpeg`` child process per open sensor decodes the source and writes raw RGB frames
(``-f rawvideo -pix_fmt rgb24``, scaled to ``width`` x ``height``, constant ``fps`` through
``-r fps -vsync cfr``: FFmpeg duplicates or drops frames to hold the rate) on its stdout. A
reader thread cuts stdout into frames and puts them in a bounded queue; another thread reads
ffmpeg's ``-progress`` report on stderr (``dup_frames``, ``drop_frames``) and keeps the last
error lines for messages.

- **Not live** (``lavfi:`` graphs, files): the reader thread waits when the queue is full
  (ffmpeg then waits on the pipe: nothing is lost), and :meth:`VideoSensor.read` releases frame
  *k* when ``(k + 1) / fps`` seconds have passed on the injected clock since ``open()``
  (:class:`~fieldstation.sensors.pacing.Pacer`; on a ``VirtualClock`` at CPU speed); its capture
  time is stream time, ``open time + k / fps``.
- **Live** (V4L2 devices, RTSP/HTTP cameras): frames come on the camera's time; the capture
  time of frame *k* is the clock's time when frame 0 reached the reader, ``+ k / fps``. A full
  queue drops the frame and counts it (the running index still advances, so the recorder sees
  the jump and starts a new session, decision record 0023).

ffmpeg ending on a live source (camera unplugged, RTSP server down, no frame for ``timeout``
seconds) raises :class:`~fieldstation.sensors.base.DeviceError` (the recorder reopens later);
a non-live source ending cleanly ends the stream (``read()`` returns None); one that gives no
frame at all (a lavfi graph or a file that does not decode) is a configuration error (not
retried); ffmpeg failing after frames (killed) is a ``DeviceError``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import re
import subprocess
import threading
import time
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import IO, Any

import numpy as np

from fieldstation.clock import Clock, SystemClock
from fieldstation.sensors.base import (
    Block,
    DeviceError,
    SensorHealth,
    StreamDescription,
    config_error,
)
from fieldstation.sensors.pacing import Pacer, frame_time
from fieldstation.sensors.video import VideoConfig, ffmpeg_executable, source_kind

__all__ = ["VideoSensor", "capture_command", "ffmpeg_major_version", "video_description"]

log = logging.getLogger(__name__)

_END = object()
"""Put in the queue by the reader thread when ffmpeg's stdout ends."""
_STOP_WAIT = 5.0
"""Seconds ffmpeg gets to exit after SIGTERM (and after its stdout ended) before SIGKILL."""
_PROGRESS = re.compile(
    r"^(frame|fps|stream_\d+_\d+_q|bitrate|total_size|out_time(?:_us|_ms)?|dup_frames"
    r"|drop_frames|speed|progress)=(.*)$"
)
"""A line of ffmpeg's ``-progress`` report (``key=value``)."""


def video_description(config: VideoConfig) -> StreamDescription:
    """The stream of ``config``: video at ``fps`` Hz, frames ``(height, width, 3)`` uint8 RGB,
    chunks H.264 in Matroska with ``crf`` and ``preset``."""
    return StreamDescription(
        media="video",
        rate=int(config.fps),
        shape=(int(config.height), int(config.width), 3),
        dtype="uint8",
        format=config.format,
        codec="h264",
        options={"crf": int(config.crf), "preset": config.preset},
    )


@cache
def ffmpeg_major_version(executable: str) -> int:
    """Major version of the ffmpeg at ``executable`` (``ffmpeg -version``); 0 when unknown
    (a git build)."""
    try:
        out = subprocess.run(
            [executable, "-hide_banner", "-version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    match = re.match(r"ffmpeg version n?(\d+)\.", out)
    return int(match.group(1)) if match else 0


def capture_command(config: VideoConfig, executable: str = "ffmpeg") -> list[str]:
    """The ffmpeg command line capturing ``config.source`` as raw RGB on stdout.

    Network sources use TCP for RTSP and a socket timeout of ``config.timeout`` seconds (RTSP
    ``-timeout``, ``-stimeout`` before FFmpeg 5; ``-rw_timeout`` for HTTP), and no frame-rate
    probing (``-fpsprobesize 0``: FFmpeg would otherwise read 20 frames before the first one
    comes out, then deliver them at once)."""
    source = config.source
    kind = source_kind(source)
    cmd = [executable, "-nostdin", "-hide_banner", "-loglevel", "error", "-nostats"]
    cmd += ["-progress", "pipe:2"]
    cmd += list(config.input_options)
    micros = str(int(config.timeout * 1_000_000))
    if kind == "lavfi":
        cmd += ["-f", "lavfi", "-i", source[len("lavfi:") :]]
    elif kind == "device":
        cmd += ["-f", "v4l2", "-i", source]
    elif kind == "network":
        if source.lower().startswith(("rtsp://", "rtsps://")):
            old = 0 < ffmpeg_major_version(executable) < 5
            cmd += ["-rtsp_transport", "tcp", "-stimeout" if old else "-timeout", micros]
        else:
            cmd += ["-rw_timeout", micros]
        # no frame-rate probing (20 frames by default: they would arrive as one burst, late;
        # the output rate is ours anyway)
        cmd += ["-fpsprobesize", "0", "-i", source]
    else:
        if config.loop:
            cmd += ["-stream_loop", "-1"]
        cmd += ["-i", str(Path(source).expanduser())]
    cmd += ["-map", "0:v:0", "-an", "-sn", "-dn"]
    cmd += ["-vf", f"scale={config.width}:{config.height}", "-pix_fmt", "rgb24"]
    cmd += ["-r", str(config.fps), "-vsync", "cfr", "-f", "rawvideo", "pipe:1"]
    return cmd


class VideoSensor:
    """Frames of ``config.source`` through an ffmpeg child process (see the module docstring).

    The stream: ``fps`` (rate, Hz; also ``sample_rate``), frames ``(height, width, 3)`` uint8
    RGB (``shape``), one
    frame per :class:`Block`. ``live`` sources are timed by the camera, others paced on
    ``clock`` (default the system clock). Raises
    :class:`~fieldstation.sensors.base.SensorConfigurationError` when ffmpeg is not installed
    or a file source does not exist.
    """

    def __init__(self, config: VideoConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.fps = int(config.fps)
        self.sample_rate = self.fps
        self.shape = (int(config.height), int(config.width), 3)
        self.dtype = "uint8"
        self.kind = source_kind(config.source)
        self.live = config.live
        executable = ffmpeg_executable()
        if executable is None:
            raise config_error(
                f"sensor {config.name}: the ffmpeg binary is not installed; "
                "install it (apt-get install ffmpeg)"
            )
        self.executable = executable
        if self.kind == "file":
            path = Path(config.source).expanduser()
            if not path.is_file():
                raise config_error(
                    f"source: video file {path} does not exist or is not a file; fix 'source'"
                )
        self._process: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=config.queue_frames)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pacer = Pacer(self.clock, self.fps)
        self._anchor: datetime | None = None
        self._first_frame = threading.Event()
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._progress: dict[str, str] = {}
        self._open = False
        self._ended = False
        self._captured = 0  # frames read from ffmpeg since open()
        self._delivered = 0  # frames handed out since open()
        self._dropped = 0  # frames dropped by the full queue (live), running total
        self._dup_total = 0  # ffmpeg's duplicated frames of earlier opens
        self._drop_total = 0
        self._error: str | None = None

    # --- protocol ---
    def describe(self) -> StreamDescription:
        """Video at ``fps`` Hz, frames ``(height, width, 3)`` uint8, H.264 in Matroska."""
        return video_description(self.config)

    def open(self) -> None:
        """Start ffmpeg on the source; the running frame index restarts at 0 and the queue is
        cleared (the counters in ``health()`` keep running). Raises :class:`DeviceError` when
        ffmpeg cannot be started (a failing source is reported by :meth:`read`)."""
        self.close()
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=self.config.queue_frames)
        self._first_frame = threading.Event()
        self._stderr.clear()
        self._progress = {}
        self._anchor = None
        self._captured = self._delivered = 0
        self._ended = False
        self._error = None
        command = capture_command(self.config, self.executable)
        log.debug("video sensor %s: %s", self.config.name, " ".join(command))
        try:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
                # its own process group: a Ctrl-C meant for the station does not kill it
                # before the recorder closes it (close() stops it)
                process_group=0,
            )
        except OSError as error:
            self._error = str(error)
            raise DeviceError(f"cannot start ffmpeg for {self.config.source}: {error}") from None
        assert self._process.stdout is not None and self._process.stderr is not None
        self._threads = [
            threading.Thread(
                target=self._pump,
                args=(self._process.stdout, self._queue, self._stop),
                name=f"video-{self.config.name}",
                daemon=True,
            ),
            threading.Thread(
                target=self._watch,
                args=(self._process.stderr,),
                name=f"video-{self.config.name}-log",
                daemon=True,
            ),
        ]
        for thread in self._threads:
            thread.start()
        self._pacer.start()
        self._open = True

    def read(self) -> Block | None:
        """The next frame as a :class:`Block` of shape ``(1, height, width, 3)`` uint8.

        Not live: released once ``(k + 1) / fps`` seconds have passed on the clock since
        ``open()`` (capture time ``open time + k / fps``); None when the source has ended (a
        file without ``loop``, a lavfi graph with a duration). Live: waits for the camera's
        next frame (capture time: arrival of frame 0 + ``k / fps``); a jump in ``start_frame``
        means frames were dropped by the full queue.

        Raises :class:`DeviceError` when ffmpeg ends on a live source, or no frame comes for
        ``timeout`` seconds, or when ffmpeg fails on a non-live source after giving frames; a
        :class:`~fieldstation.sensors.base.SensorConfigurationError` when a non-live source
        gives no frame at all (a bad lavfi graph, a file that does not decode);
        ``RuntimeError`` before :meth:`open`.
        """
        if not self._open:
            raise RuntimeError("read() before open()")
        if self._ended:
            return self._end()
        if not self.live:
            self._pacer.wait_until(self._delivered + 1)
        deadline = time.monotonic() + self.config.timeout
        while True:
            try:
                item = self._queue.get(timeout=0.25)
            except queue.Empty:
                if self.live and time.monotonic() > deadline:
                    self._error = f"no frame for {self.config.timeout:g} s"
                    raise DeviceError(
                        f"camera {self.config.source} sent no frame for "
                        f"{self.config.timeout:g} s{self._stderr_tail()}"
                    ) from None
                continue
            if item is _END:
                self._ended = True
                return self._end()
            index, frame = item
            self._delivered = index + 1
            if self.live:
                assert self._anchor is not None
                captured = frame_time(self._anchor, index, self.fps)
            else:
                captured = self._pacer.captured_at(index)
            return Block(frame[np.newaxis], index, captured)

    def close(self) -> None:
        """Stop ffmpeg (SIGTERM, SIGKILL after 5 s) and reap it, join the reader threads
        (idempotent; never leaves a zombie)."""
        self._open = False
        self._stop.set()
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
            self._reap(process)
        for thread in self._threads:
            thread.join(timeout=10.0)
        self._threads = []
        if process is not None:
            for pipe in (process.stdout, process.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
            self._dup_total += self._count("dup_frames")
            self._drop_total += self._count("drop_frames")
            self._progress = {}

    def health(self) -> SensorHealth:
        """State, frames handed out since ``open()``, frames dropped by the full queue
        (``overflows`` = ``lost_frames``, running totals) and in ``details``: ``captured``
        (frames read from ffmpeg since open), ``dup`` and ``drop`` (frames FFmpeg duplicated
        or dropped to hold ``fps``, running totals), ``source``, ``live``."""
        state = "error" if self._error else ("open" if self._open else "closed")
        with self._lock:
            dropped = self._dropped
        return SensorHealth(
            state=state,
            frames=self._delivered,
            overflows=dropped,
            lost_frames=dropped,
            error=self._error,
            details={
                "captured": self._captured,
                "dup": self._dup_total + self._count("dup_frames"),
                "drop": self._drop_total + self._count("drop_frames"),
                "source": self.config.source,
                "live": self.live,
            },
        )

    # --- internals ---
    def _pump(self, stdout: IO[bytes], frames: queue.Queue[Any], stop: threading.Event) -> None:
        """Reader thread: cut ffmpeg's stdout into frames and queue ``(index, frame)``."""
        size = self.config.frame_bytes
        index = 0
        try:
            while not stop.is_set():
                data = _read_exactly(stdout, size)
                if data is None:
                    break
                frame = np.frombuffer(data, dtype=np.uint8).reshape(self.shape)
                if index == 0:
                    self._anchor = self.clock.now()
                    self._first_frame.set()
                self._captured = index + 1
                if self.live:
                    try:
                        frames.put_nowait((index, frame))
                    except queue.Full:
                        with self._lock:
                            self._dropped += 1
                        if self._dropped in (1, 10, 100) or self._dropped % 1000 == 0:
                            log.warning(
                                "video sensor %s: queue full, %d frame(s) dropped so far",
                                self.config.name,
                                self._dropped,
                            )
                else:
                    _put(frames, (index, frame), stop)
                index += 1
            if stop.is_set():
                # close(): drain stdout so that ffmpeg, maybe blocked writing a frame, sees
                # its SIGTERM and exits (EOF ends this)
                while stdout.read(1 << 16):
                    pass
        except (OSError, ValueError) as error:  # the pipe closed under us
            log.debug("video sensor %s: reader stops: %s", self.config.name, error)
        _put(frames, _END, stop)

    def _watch(self, stderr: IO[bytes]) -> None:
        """Log thread: parse ffmpeg's ``-progress`` lines, keep the other lines (errors)."""
        try:
            for raw in iter(stderr.readline, b""):
                line = raw.decode("utf-8", errors="replace").strip()
                match = _PROGRESS.match(line)
                if match:
                    self._progress[match.group(1)] = match.group(2)
                elif line:
                    self._stderr.append(line)
        except (OSError, ValueError):
            pass

    def _count(self, key: str) -> int:
        try:
            return int(self._progress.get(key, "0"))
        except ValueError:
            return 0

    def _stderr_tail(self) -> str:
        lines = [line for line in list(self._stderr)[-3:] if line]
        return (": " + " / ".join(lines)) if lines else ""

    def _reap(self, process: subprocess.Popen[bytes]) -> int:
        try:
            return process.wait(_STOP_WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def _end(self) -> Block | None:
        """ffmpeg's stdout ended: reap it and tell why (None, DeviceError, config error)."""
        process = self._process
        code = self._reap(process) if process is not None else 0
        for thread in self._threads:
            thread.join(timeout=10.0)
        detail = self._stderr_tail()
        if self.live:
            self._error = f"ffmpeg exited with {code}{detail}"
            raise DeviceError(
                f"camera {self.config.source} stopped after {self._captured} frame(s) "
                f"(ffmpeg exit status {code}){detail}"
            )
        if code != 0 and self._captured > 0:  # it worked until something killed it: retry
            self._error = f"ffmpeg exited with {code}{detail}"
            raise DeviceError(
                f"video source {self.config.source} failed after {self._captured} frame(s) "
                f"(ffmpeg exit status {code}){detail}"
            )
        if code != 0 or self._captured == 0:
            self._error = f"ffmpeg exited with {code}{detail}"
            raise config_error(
                f"source: {self.config.source} gives no frame (ffmpeg exit status {code})"
                f"{detail}; fix 'source'"
            )
        return None


def _read_exactly(stream: IO[bytes], size: int) -> bytearray | None:
    """``size`` bytes from ``stream`` (a new writable buffer), or None at the end (a partial
    frame is dropped)."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            return None
        got += n
    return buffer


def _put(frames: queue.Queue[Any], item: Any, stop: threading.Event) -> None:
    """Put ``item``, waiting while the queue is full, unless ``stop`` is set."""
    while not stop.is_set():
        try:
            frames.put(item, timeout=0.25)
            return
        except queue.Full:
            continue
