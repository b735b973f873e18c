"""The live view of the station web app: input levels and a scrolling spectrogram of what each
sensor hears now, and the latest frame of each camera (issue 18, decision 0093).

Routes (Starlette):

- ``GET /live``: the page (``templates/live.html``): per sensor a canvas spectrogram scrolling
  right to left and peak/RMS bars per channel (vanilla JS, no CDN); per camera an image;
- ``GET /live/{sensor}/events``: Server-Sent Events, one ``data:`` JSON object at most every
  :data:`EVENT_INTERVAL` s while the sensor's recorder publishes (a ``: keep-alive`` comment
  every :data:`KEEPALIVE` s otherwise). Audio/readings: ``{"media", "t" (UTC ISO time of the
  newest frame), "rate" (Hz), "n_fft", "peak" and "rms" (dBFS per channel over the blocks since
  the previous event, fieldstation.recording.levels), "columns" (the spectrogram columns
  completed since, :data:`COLUMNS_PER_SECOND` per second of signal, at most
  :data:`MAX_COLUMNS`, each ``n_fft // 2 + 1`` integer dB re full scale from 0 Hz to
  rate/2)}``; video: ``{"media": "video", "t", "frame" (the URL of the JPEG)}``;
- ``GET /live/{sensor}/frame.jpg``: the sensor's newest live JPEG (503 when none comes within
  :data:`FRAME_WAIT` s).

Each open event stream is one :class:`~fieldstation.recording.tap.LiveSubscriber`; with no
browser on the page no subscriber exists and the recorders' taps serialise nothing.

Use :func:`live_routes` (bound to a station home and config) or :data:`routes` (reading
``request.app.state.home`` and ``request.app.state.config``).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.templating import Jinja2Templates

from fieldstation.config.station import StationConfig
from fieldstation.home import StationHome
from fieldstation.recording.levels import SpectrogramScroll, levels
from fieldstation.recording.tap import LiveBlock, LiveSubscriber
from fieldstation.sensors.readings.config import is_slow

__all__ = [
    "EVENT_INTERVAL",
    "AudioEvents",
    "LiveSensor",
    "live_routes",
    "live_sensors",
    "routes",
]

EVENT_INTERVAL = 0.1
"""Least seconds between two events of one stream (at most 10 updates per second)."""
KEEPALIVE = 2.0
"""Seconds without data after which an event stream sends a comment (and notices a browser
that has gone)."""
COLUMNS_PER_SECOND = 32.0
"""Spectrogram columns per second of signal (the page scrolls one pixel per column)."""
MAX_COLUMNS = 16
"""Most spectrogram columns in one event (the newest; a stream that fell behind skips)."""
N_FFT = 512
"""FFT length of the live spectrogram columns (257 bins)."""
FRAME_WAIT = 3.0
"""Seconds ``frame.jpg`` waits for a live frame."""
FRAME_FRESH = 2.0
"""Age (seconds) under which the last JPEG an event stream saw is served without waiting."""
_POLL = 0.25
"""Seconds one blocking receive (in a worker thread) waits before the stream checks again."""

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


@dataclass(frozen=True)
class LiveSensor:
    """A sensor the live view can show: its name and media (audio, video, readings)."""

    name: str
    media: str


def live_sensors(config: StationConfig) -> list[LiveSensor]:
    """The sensors recorded by a recorder (with a live tap), in station-file order; slow
    readings sensors have none."""
    return [LiveSensor(s.name, s.media) for s in config.sensors if not is_slow(s)]


Station = Callable[[Request], tuple[StationHome, StationConfig]]


class _Frames:
    """The newest JPEG per sensor seen by any event stream (so ``frame.jpg`` needs no
    subscriber of its own while a page is open)."""

    def __init__(self) -> None:
        self.latest: dict[str, tuple[float, bytes]] = {}

    def put(self, sensor: str, jpeg: bytes) -> None:
        self.latest[sensor] = (time.monotonic(), jpeg)

    def fresh(self, sensor: str) -> bytes | None:
        seen = self.latest.get(sensor)
        if seen is None or time.monotonic() - seen[0] > FRAME_FRESH:
            return None
        return seen[1]


def _sensor(config: StationConfig, name: str) -> LiveSensor:
    for sensor in live_sensors(config):
        if sensor.name == name:
            return sensor
    raise HTTPException(404, f"no live sensor named {name!r}")


class AudioEvents:
    """Turns one sensor's live audio/readings blocks into events: levels over the blocks since
    the last event, spectrogram columns at a steady :data:`COLUMNS_PER_SECOND`
    (:class:`~fieldstation.recording.levels.SpectrogramScroll`, restarted after a gap)."""

    def __init__(self, n_fft: int = N_FFT) -> None:
        self.n_fft = n_fft
        self._scroll: SpectrogramScroll | None = None
        self._next_frame: int | None = None
        self._columns: list[np.ndarray] = []
        self._blocks: list[LiveBlock] = []

    def add(self, block: LiveBlock) -> None:
        """Take ``block`` (float32 (frames, channels), full scale ±1.0)."""
        if self._scroll is None:
            self._scroll = SpectrogramScroll(block.rate, self.n_fft, COLUMNS_PER_SECOND)
        if self._next_frame is not None and block.start_frame != self._next_frame:
            self._scroll.reset()  # frames skipped (dropped for a slow reader, or cut)
        self._next_frame = block.start_frame + len(block.data)
        self._columns.extend(self._scroll.feed(block.data))
        self._blocks.append(block)

    def event(self) -> dict[str, Any] | None:
        """The event of what was added since the last one (None when nothing was)."""
        if not self._blocks:
            return None
        blocks, self._blocks = self._blocks, []
        columns, self._columns = self._columns[-MAX_COLUMNS:], []
        last = blocks[-1]
        return {
            "media": last.media,
            "t": last.captured_at.isoformat(),
            "rate": last.rate,
            "n_fft": self.n_fft,
            **levels(np.concatenate([b.data for b in blocks])).as_dict(),
            "columns": [np.rint(c).astype(int).tolist() for c in columns],
        }


async def _events(
    request: Request, home: StationHome, sensor: LiveSensor, frames: _Frames
) -> AsyncIterator[str]:
    live = LiveSubscriber(home, sensor.name)
    try:
        yield "retry: 1000\n\n"
        audio = AudioEvents()
        last_sent = 0.0
        quiet_since = time.monotonic()
        while True:
            block = await anyio.to_thread.run_sync(live.receive, _POLL)
            now = time.monotonic()
            if block is not None:
                quiet_since = now
                if block.jpeg is not None:
                    frames.put(sensor.name, block.jpeg)
                    url = str(request.url_for("live_frame", sensor=sensor.name).path)
                    frame = {"media": "video", "t": block.captured_at.isoformat(), "frame": url}
                    yield f"data: {json.dumps(frame)}\n\n"
                    continue
                audio.add(block)
                if now - last_sent >= EVENT_INTERVAL and (event := audio.event()) is not None:
                    yield f"data: {json.dumps(event)}\n\n"
                    last_sent = now
            elif now - quiet_since >= KEEPALIVE:
                quiet_since = now
                if await request.is_disconnected():
                    return
                yield ": keep-alive\n\n"
    finally:
        live.close()


def _make_routes(station: Station) -> list[BaseRoute]:
    frames = _Frames()

    async def page(request: Request) -> Response:
        _, config = station(request)
        sensors = live_sensors(config)
        return TEMPLATES.TemplateResponse(
            request,
            "live.html",
            {"station": config.station.id, "sensors": sensors, "n_fft": N_FFT},
        )

    async def events(request: Request) -> Response:
        home, config = station(request)
        sensor = _sensor(config, request.path_params["sensor"])
        return StreamingResponse(
            _events(request, home, sensor, frames),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def frame(request: Request) -> Response:
        home, config = station(request)
        sensor = _sensor(config, request.path_params["sensor"])
        jpeg = frames.fresh(sensor.name)
        if jpeg is None:
            jpeg = await anyio.to_thread.run_sync(_wait_for_frame, home, sensor.name)
        if jpeg is None:
            raise HTTPException(503, f"no live frame from {sensor.name!r} (is it recording?)")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    return [
        Route("/live", page, methods=["GET"], name="live"),
        Route("/live/{sensor}/events", events, methods=["GET"], name="live_events"),
        Route("/live/{sensor}/frame.jpg", frame, methods=["GET"], name="live_frame"),
    ]


def _wait_for_frame(home: StationHome, sensor: str) -> bytes | None:
    deadline = time.monotonic() + FRAME_WAIT
    with LiveSubscriber(home, sensor) as live:
        while (left := deadline - time.monotonic()) > 0:
            block = live.receive(left)
            if block is not None and block.jpeg is not None:
                return block.jpeg
    return None


def live_routes(home: StationHome, config: StationConfig) -> list[BaseRoute]:
    """The live view's routes for the station ``config`` living in ``home``."""
    return _make_routes(lambda request: (home, config))


def _from_state(request: Request) -> tuple[StationHome, StationConfig]:
    state = request.app.state
    return state.home, state.config


routes: list[BaseRoute] = _make_routes(_from_state)
"""The live view's routes reading the station from ``request.app.state.home`` (a
:class:`~fieldstation.home.StationHome`) and ``request.app.state.config``."""
