"""The recorder's live tap: the blocks it records, published to live viewers (decision 0093).

Each recorder binds one ZeroMQ ``XPUB`` socket at ``ipc://<home>/run/live-<sensor>.sock``
(:func:`tap_address`) and calls :meth:`LiveTap.publish` once per block it reads. The tap:

- **costs nearly nothing without viewers**: the ``XPUB`` socket tells it when the first viewer
  subscribes and the last one leaves; while nobody listens ``publish`` checks one socket flag
  and returns, nothing is copied or encoded;
- **never blocks the recorder**: messages go out with ``NOBLOCK`` into per-viewer queues of at
  most :data:`SEND_HWM` messages (ZeroMQ's high-water mark); a viewer that does not read loses
  the newest messages once its queue (plus the kernel's socket buffer and its own
  :data:`RECEIVE_HWM`) is full, so memory stays bounded whatever it does; any error of the tap
  is logged once and turns it off, it never reaches the recorder;
- **sends bounded data**: audio and fast readings as float32 ``(frames, channels)`` scaled to
  ±1.0 full scale (:func:`fieldstation.recording.levels.to_float`), at most the last
  :data:`MAX_FRAMES` frames of a block; video as the block's last frame encoded as a JPEG
  (Pillow, at most :data:`VIDEO_MAX_WIDTH` pixels wide), at most ``video_fps`` per second.

A message is two frames: a JSON header (``v``, ``media``, ``rate``, ``captured_at``: the
capture time of the first frame sent, ``start_frame``, ``shape``, ``dtype``) and the payload
(raw little-endian float32, or JPEG bytes). No pickle on the wire.

Read it with :class:`LiveSubscriber` (``with LiveSubscriber(home, "mic") as live:
block = live.receive(1.0)``), the web app's live view and ``fieldstation live`` do.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import zmq

from fieldstation.home import StationHome
from fieldstation.recording.levels import to_float
from fieldstation.sensors.base import Block, StreamDescription

__all__ = [
    "MAX_FRAMES",
    "RECEIVE_HWM",
    "SEND_HWM",
    "LiveBlock",
    "LiveSubscriber",
    "LiveTap",
    "TapError",
    "tap_address",
]

log = logging.getLogger(__name__)

SEND_HWM = 8
"""Messages queued at the tap for each viewer before newer ones are dropped for it."""
RECEIVE_HWM = 8
"""Messages a :class:`LiveSubscriber` queues before the tap's queue for it fills."""
MAX_FRAMES = 16384
"""Most frames of one audio/readings block sent (the last ones): 0.34 s at 48 kHz, 43 ms at
384 kHz; 64 KiB of float32 per channel."""
VIDEO_MAX_WIDTH = 640
"""Width (pixels) live JPEG frames are scaled down to when the camera's are wider."""
VIDEO_FPS = 2.0
"""Default most live JPEG frames per second."""
JPEG_QUALITY = 75
"""Pillow JPEG quality of live frames."""
WIRE_VERSION = 1
"""``v`` of the message header; a subscriber refuses others."""
_IPC_PATH_MAX = 100
"""Longest ipc socket path used as is (``sun_path`` holds 107 bytes on Linux)."""


class TapError(RuntimeError):
    """A live message cannot be read (another wire version, a damaged header)."""


def tap_address(home: StationHome | Path, sensor: str) -> str:
    """The ZeroMQ address of ``sensor``'s live tap in station home ``home``:
    ``ipc://<home>/run/live-<sensor>.sock``, or, when that path is too long for a Unix socket,
    a name in the temporary folder derived from it (the same for the tap and its readers)."""
    run = home.run if isinstance(home, StationHome) else StationHome(Path(home)).run
    path = run / f"live-{sensor}.sock"
    if len(str(path)) > _IPC_PATH_MAX:
        digest = hashlib.sha256(str(path.absolute()).encode()).hexdigest()[:24]
        path = Path(tempfile.gettempdir()) / f"fieldstation-live-{digest}.sock"
    return f"ipc://{path}"


@dataclass(frozen=True)
class LiveBlock:
    """One live message of a sensor.

    ``media``: ``audio``, ``video`` or ``readings``; ``rate``: frames per second of the
    stream (Hz); ``captured_at``: aware UTC capture time of ``data``'s first frame (of the
    JPEG's frame for video); ``start_frame``: its index in the sensor's stream; ``data``:
    float32 ``(frames, channels)`` scaled to ±1.0 full scale (audio, readings; empty for
    video); ``jpeg``: the JPEG bytes of a video frame (None otherwise)."""

    media: str
    rate: int
    captured_at: datetime
    start_frame: int
    data: np.ndarray
    jpeg: bytes | None = None


class LiveTap:
    """The publishing side, owned by one recorder (build with :meth:`open`)."""

    def __init__(
        self,
        address: str,
        stream: StreamDescription,
        video_fps: float = VIDEO_FPS,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        """Bind an ``XPUB`` socket at ``address`` for ``stream``. Raises ``zmq.ZMQError`` when
        it cannot be bound (use :meth:`open`, which turns that into a disabled tap)."""
        self.address = address
        self.stream = stream
        self.video_fps = video_fps
        self.published = 0
        """Messages sent (to at least one viewer)."""
        self.skipped = 0
        """Blocks not sent: nobody listening, or a video frame within ``1/video_fps`` s."""
        self._context = context or zmq.Context.instance()  # one I/O thread per process
        self._socket: zmq.Socket[Any] | None = None
        self._listening = False
        self._next_frame_at = 0.0
        self._socket = self._bind()

    def _bind(self) -> zmq.Socket[Any]:
        socket = self._context.socket(zmq.XPUB)
        try:
            socket.setsockopt(zmq.SNDHWM, SEND_HWM)
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.SNDTIMEO, 0)
            if self.address.startswith("ipc://"):
                Path(self.address[len("ipc://") :]).parent.mkdir(parents=True, exist_ok=True)
            socket.bind(self.address)
        except BaseException:
            socket.close(0)
            raise
        return socket

    @classmethod
    def open(
        cls, home: StationHome, sensor: str, stream: StreamDescription, video_fps: float = VIDEO_FPS
    ) -> LiveTap | None:
        """The tap of ``sensor`` in ``home``, or None (logged) when it cannot be bound: the
        recorder then records without a live view."""
        address = tap_address(home, sensor)
        try:
            return cls(address, stream, video_fps)
        except (zmq.ZMQError, OSError) as error:
            log.warning("sensor %s: no live view (%s cannot be bound: %s)", sensor, address, error)
            return None

    @property
    def listening(self) -> bool:
        """True while at least one viewer subscribes (read from the socket without waiting)."""
        socket = self._socket
        if socket is None:
            return False
        while int(socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            message = socket.recv(zmq.NOBLOCK)
            if message[:1] == b"\x01":
                self._listening = True
            elif message[:1] == b"\x00":
                self._listening = False
        return self._listening

    def publish(self, block: Block) -> None:
        """Send ``block`` to the viewers, if any (module docstring); never blocks, never
        raises: a failure is logged and turns the tap off."""
        try:
            if not self.listening:
                self.skipped += 1
                return
            message = self._message(block)
            if message is None:
                self.skipped += 1
                return
            assert self._socket is not None
            self._socket.send_multipart(message, flags=zmq.NOBLOCK)
            self.published += 1
        except zmq.Again:  # a full queue (XPUB drops on its own; kept for safety)
            self.skipped += 1
        except Exception as error:  # the live view must never cost a recording
            log.warning("live tap %s failed and is turned off: %s", self.address, error)
            self.close()

    def _message(self, block: Block) -> list[bytes] | None:
        header: dict[str, Any] = {
            "v": WIRE_VERSION,
            "media": self.stream.media,
            "rate": int(self.stream.rate),
        }
        if self.stream.media == "video":
            now = time.monotonic()
            if now < self._next_frame_at or not len(block.data):
                return None
            self._next_frame_at = now + 1.0 / self.video_fps
            last = block.frames - 1
            payload = _jpeg(np.asarray(block.data[last]))
            header.update(
                captured_at=_frame_time(block, last, self.stream.rate).isoformat(),
                start_frame=block.start_frame + last,
                shape=[0, 0],
                dtype="jpeg",
            )
            return [json.dumps(header).encode(), payload]
        skip = max(0, block.frames - MAX_FRAMES)
        samples = np.ascontiguousarray(to_float(block.data[skip:]), dtype="<f4")
        header.update(
            captured_at=_frame_time(block, skip, self.stream.rate).isoformat(),
            start_frame=block.start_frame + skip,
            shape=list(samples.shape),
            dtype="<f4",
        )
        return [json.dumps(header).encode(), samples.tobytes()]

    def close(self) -> None:
        """Unbind and close the socket (idempotent); later publishes do nothing."""
        socket, self._socket = self._socket, None
        if socket is not None:
            socket.close(0)
        self._listening = False


def _frame_time(block: Block, index: int, rate: int) -> datetime:
    return block.captured_at + timedelta(microseconds=round(index * 1_000_000 / rate))


def _jpeg(frame: np.ndarray) -> bytes:
    """JPEG bytes of an RGB frame ``(height, width, 3)`` uint8 (grey ``(height, width)``),
    scaled down to :data:`VIDEO_MAX_WIDTH` pixels wide."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(frame))
    if image.width > VIDEO_MAX_WIDTH:
        height = max(1, round(image.height * VIDEO_MAX_WIDTH / image.width))
        image = image.resize((VIDEO_MAX_WIDTH, height), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


class LiveSubscriber:
    """A reader of one sensor's live tap: ``with LiveSubscriber(home, "mic") as live:
    block = live.receive(timeout=1.0)``.

    It may connect before the recorder runs (ZeroMQ reconnects on its own) and keeps at most
    :data:`RECEIVE_HWM` messages; a reader that falls behind loses messages, never the
    recorder's time. Not thread-safe: one thread per subscriber."""

    def __init__(self, home: StationHome | Path, sensor: str) -> None:
        self.address = tap_address(home, sensor)
        self.sensor = sensor
        context: zmq.Context[Any] = zmq.Context.instance()
        self._socket: zmq.Socket[Any] | None = context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RECONNECT_IVL, 100)
        self._socket.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        self._socket.connect(self.address)
        self._socket.setsockopt(zmq.SUBSCRIBE, b"")

    def __enter__(self) -> LiveSubscriber:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def receive(self, timeout: float | None = None) -> LiveBlock | None:
        """The next live block, waiting at most ``timeout`` seconds (None: forever); None when
        none came in time. Raises :class:`TapError` for a message it cannot read and
        ``RuntimeError`` once closed."""
        socket = self._socket
        if socket is None:
            raise RuntimeError("the live subscriber is closed")
        wait = None if timeout is None else max(0, round(timeout * 1000))
        if not socket.poll(wait, zmq.POLLIN):
            return None
        parts = socket.recv_multipart(zmq.NOBLOCK)
        return decode(parts)

    def latest(self, timeout: float | None = None) -> LiveBlock | None:
        """Like :meth:`receive`, but skips what is queued to return the newest block."""
        block = self.receive(timeout)
        while block is not None:
            newer = self.receive(0)
            if newer is None:
                break
            block = newer
        return block

    def close(self) -> None:
        """Disconnect (idempotent)."""
        socket, self._socket = self._socket, None
        if socket is not None:
            socket.close(0)


def decode(parts: list[bytes]) -> LiveBlock:
    """The :class:`LiveBlock` of a two-frame tap message; raises :class:`TapError`."""
    if len(parts) != 2:
        raise TapError(f"a live message has 2 frames, not {len(parts)}")
    try:
        header = json.loads(parts[0])
        if header.get("v") != WIRE_VERSION:
            raise TapError(
                f"live message version {header.get('v')!r}, this reader knows {WIRE_VERSION}: "
                "run the same fieldstation release as the recorder"
            )
        captured_at = datetime.fromisoformat(header["captured_at"])
        media = str(header["media"])
        rate = int(header["rate"])
        start = int(header["start_frame"])
        if header["dtype"] == "jpeg":
            return LiveBlock(media, rate, captured_at, start, np.zeros((0, 0), "f4"), parts[1])
        shape = tuple(int(n) for n in header["shape"])
        data = np.frombuffer(parts[1], dtype=header["dtype"]).reshape(shape)
    except TapError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise TapError(f"damaged live message: {error}") from error
    return LiveBlock(media, rate, captured_at, start, data)
