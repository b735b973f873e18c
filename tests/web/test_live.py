"""The live view: its page, its Server-Sent Events and frames on a real uvicorn server, five
browsers' event streams watching a real recorder, and a real Chromium seeing the level move while
a PulseAudio virtual microphone plays a real bird recording (issue 18)."""

from __future__ import annotations

import json
import threading
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.testclient import TestClient

from fieldstation.clock import SystemClock
from fieldstation.config import StationConfig, config_hash, parse_config, template_text
from fieldstation.home import StationHome
from fieldstation.job import JobContext
from fieldstation.recording.job import ContinuousSlot, run_recorder
from fieldstation.recording.tap import LiveTap
from fieldstation.sensors.base import Block, StreamDescription, audio_description
from fieldstation.store.deployments import start_deployment
from fieldstation.store.models import Event, Recording
from fieldstation.testing.asgi import AsgiServer
from fieldstation.testing.browser import chromium_driver, screenshot
from fieldstation.web import live
from fieldstation.web.live import live_routes

T0 = datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.fixture
def make_station(home: StationHome) -> Any:
    """``make_station(*sensors)``: the embedded default station in ``home`` with ``sensors``."""

    def build(*sensors: dict[str, Any]) -> StationConfig:
        data = tomllib.loads(template_text())
        data["station"]["home"] = str(home.root)
        data["sensors"] = list(sensors)
        return parse_config(data)

    return build


class Progress:
    """Collects a job's progress reports."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, what: str, details: dict[str, Any]) -> None:
        self.reports.append((what, details))

    def of(self, what: str) -> list[dict[str, Any]]:
        return [d for w, d in self.reports if w == what]


@pytest.fixture
def make_ctx(home: StationHome, db: Any) -> Any:
    """``make_ctx(config)``: a recorder's JobContext on ``home`` (real time) and its Progress."""

    def build(config: StationConfig, clock: Any = None) -> tuple[JobContext, Progress]:
        clock = clock or SystemClock()
        with db.session() as session:
            deployment = start_deployment(
                session,
                station_id=config.station.id,
                config_hash=config_hash(config),
                config={},
                version="test",
                now=clock.now(),
            )
        progress = Progress()
        ctx = JobContext(
            config=config,
            home=home,
            deployment_id=deployment.id,
            clock=clock,
            stop=threading.Event(),
            progress=progress,
            name="recorder:test",
        )
        return ctx, progress

    return build


def station_with(make_station: Any, *sensors: dict[str, Any]) -> StationConfig:
    config: StationConfig = make_station(*sensors)
    return config


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The JSON ``data:`` events of a Server-Sent Events response."""
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line[len("data: ") :])


MIC = {"name": "mic", "kind": "synthetic", "sample_rate": 48000, "chunk": "1s", "block": "0.02s"}
CAM_CONFIG = {"name": "cam", "kind": "video", "source": "testsrc", "width": 64, "height": 48}
"""A camera entry (only its media matters here: the tests publish its frames themselves)."""


def test_the_page_lists_the_live_sensors(make_station: Any, home: StationHome) -> None:
    config = station_with(make_station, MIC)
    client = TestClient(Starlette(routes=live_routes(home, config)))
    page = client.get("/live")
    assert page.status_code == 200
    assert 'data-sensor="mic"' in page.text and 'data-events="/live/mic/events"' in page.text
    assert "<canvas" in page.text and "EventSource" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN
    assert client.get("/live/nope/events").status_code == 404
    assert client.get("/live/nope/frame.jpg").status_code == 404


def test_the_state_routes_read_the_app_state(make_station: Any, home: StationHome) -> None:
    app = Starlette(routes=live.routes)
    app.state.home = home
    app.state.config = station_with(make_station, MIC)
    assert 'data-sensor="mic"' in TestClient(app).get("/live").text


def publishing(tap: LiveTap, make_block: Any, stop: threading.Event) -> threading.Thread:
    """A thread publishing ``make_block(k)`` every 20 ms until ``stop``."""

    def run() -> None:
        k = 0
        while not stop.wait(0.02):
            tap.publish(make_block(k))
            k += 1

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_events_carry_levels_and_spectrogram_columns(make_station: Any, home: StationHome) -> None:
    rate, n_fft = 48000, live.N_FFT
    k = 40  # a bin-centred tone at 3750 Hz, peak at -6.02 dBFS (16384 of int16)
    tap = LiveTap.open(home, "mic", audio_description(rate, 1, "int16"))
    assert tap is not None

    def make_block(i: int) -> Block:
        t = np.arange(i * 960, (i + 1) * 960) / rate
        tone = np.rint(16384 * np.sin(2 * np.pi * k * rate / n_fft * t)).astype(np.int16)
        return Block(tone[:, None], i * 960, T0 + timedelta(seconds=i * 0.02))

    stop = threading.Event()
    thread = publishing(tap, make_block, stop)
    app = Starlette(routes=live_routes(home, station_with(make_station, MIC)))
    try:
        with (
            AsgiServer(app) as server,
            httpx.stream("GET", f"{server.url}/live/mic/events", timeout=20) as response,
        ):
            assert response.headers["content-type"].startswith("text/event-stream")
            events = []
            for event in sse_events(response):
                events.append(event)
                if len(events) == 4:
                    break
    finally:
        stop.set()
        thread.join(5)
        tap.close()
    for event in events:
        assert event["media"] == "audio" and event["rate"] == rate and event["n_fft"] == n_fft
        assert event["peak"][0] == pytest.approx(-6.0, abs=0.1)
        assert event["rms"][0] == pytest.approx(-9.0, abs=0.1)
        assert len(event["columns"]) <= live.MAX_COLUMNS
    columns = [column for event in events for column in event["columns"]]
    assert len(columns) >= 2  # 32 per second of signal
    for column in columns:
        assert len(column) == n_fft // 2 + 1
        assert int(np.argmax(column)) == k and column[k] == -6
    times = [datetime.fromisoformat(e["t"]) for e in events]
    assert times == sorted(times) and times[0] >= T0


def test_frame_jpg_serves_the_newest_camera_frame(make_station: Any, home: StationHome) -> None:
    from io import BytesIO

    from PIL import Image

    stream = StreamDescription("video", 10, (48, 64, 3), "uint8", "mp4", "h264")
    tap = LiveTap.open(home, "cam", stream, video_fps=50.0)
    assert tap is not None
    frames = np.zeros((1, 48, 64, 3), dtype=np.uint8)
    frames[..., 2] = 255  # blue

    stop = threading.Event()
    thread = publishing(tap, lambda i: Block(frames, i, T0), stop)
    config = station_with(make_station, CAM_CONFIG)
    try:
        with AsgiServer(Starlette(routes=live_routes(home, config))) as server:
            response = httpx.get(f"{server.url}/live/cam/frame.jpg", timeout=20)
            with httpx.stream("GET", f"{server.url}/live/cam/events", timeout=20) as events:
                event = next(sse_events(events))
    finally:
        stop.set()
        thread.join(5)
        tap.close()
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    image = np.asarray(Image.open(BytesIO(response.content)).convert("RGB"))
    assert image.shape == (48, 64, 3) and image[..., 2].mean() > 240
    assert event["media"] == "video" and event["frame"] == "/live/cam/frame.jpg"


def test_frame_jpg_without_a_recorder_is_503(make_station: Any, home: StationHome) -> None:
    live.FRAME_WAIT, saved = 0.3, live.FRAME_WAIT
    try:
        client = TestClient(
            Starlette(routes=live_routes(home, station_with(make_station, CAM_CONFIG)))
        )
        assert client.get("/live/cam/frame.jpg").status_code == 503
    finally:
        live.FRAME_WAIT = saved


# --- five browsers watching a real recorder ---
def recorded_slots(
    make_station: Any, make_ctx: Any, db: Any, name: str, browsers: int
) -> tuple[list[float], dict[int, int]]:
    """Record 5 slots of 1 s every 1.5 s of a 48 kHz synthetic sensor (20 ms blocks, real
    time) while ``browsers`` clients read the live view's event stream from a real uvicorn
    server; checks that every slot's frames are committed, contiguous, with no loss; returns
    each slot's start error (ms) and the events each browser received."""
    sensor = {**MIC, "name": name, "chunk": "0.5s", "min_free": "1MB"}
    config = station_with(make_station, sensor)
    ctx, _ = make_ctx(config, SystemClock())
    first = SystemClock().now() + timedelta(seconds=2)
    starts = [first + timedelta(seconds=1.5 * k) for k in range(5)]

    def slots(now: datetime) -> ContinuousSlot | None:
        for start in starts:
            if start + timedelta(seconds=1) > now:
                return ContinuousSlot(start, start + timedelta(seconds=1))
        return None

    received: dict[int, int] = {}
    stop = threading.Event()
    app = Starlette(routes=live_routes(ctx.home, config))
    with AsgiServer(app) as server:

        def browse(index: int) -> None:
            received[index] = 0
            with httpx.stream("GET", f"{server.url}/live/{name}/events", timeout=30) as response:
                for line in response.iter_lines():  # events, and keep-alives when idle
                    if line.startswith("data: "):
                        received[index] += 1
                    if stop.is_set():
                        return

        viewers = [threading.Thread(target=browse, args=(i,)) for i in range(browsers)]
        for viewer in viewers:
            viewer.start()
        until = starts[-1] + timedelta(seconds=1)
        recorder = threading.Thread(
            target=run_recorder, args=(ctx, name), kwargs={"slots": slots, "until": until}
        )
        recorder.start()
        recorder.join(40)
        alive = recorder.is_alive()
        ctx.stop.set()
        recorder.join(10)
        stop.set()
        for viewer in viewers:
            viewer.join(15)
    assert not alive, "the recorder did not finish its slots"
    with db.session() as session:
        rows = list(
            session.scalars(
                select(Recording).where(Recording.sensor == name).order_by(Recording.id)
            )
        )
        lost = session.scalars(select(Event).where(Event.kind == "frames_lost")).all()
    assert not lost, [e.message for e in lost]
    sessions: dict[str, list[Recording]] = {}
    for row in rows:
        sessions.setdefault(row.session_id, []).append(row)
    assert len(sessions) == len(starts)
    errors = []
    for chunks, start in zip(sessions.values(), starts, strict=True):
        chunks.sort(key=lambda r: r.chunk_index)
        anchor = chunks[0].started_at.replace(tzinfo=UTC)
        for a, b in zip(chunks, chunks[1:], strict=False):
            assert b.start_frame == a.start_frame + a.frames  # no gap, no overlap
        expected = (start + timedelta(seconds=1) - anchor) // timedelta(microseconds=1)
        assert sum(r.frames for r in chunks) == expected * 48000 // 1_000_000  # no sample lost
        errors.append((anchor - start).total_seconds() * 1000)
    return errors, received


@pytest.mark.slow
def test_five_browsers_on_the_live_view_cost_the_recorder_nothing(
    make_station: Any, make_ctx: Any, db: Any
) -> None:
    alone, _ = recorded_slots(make_station, make_ctx, db, "alone", 0)
    watched, received = recorded_slots(make_station, make_ctx, db, "watched", 5)
    print(f"slot-start error ms: alone {alone}, watched {watched}; events {received}")
    # 5 s recorded at up to 10 events/s: every browser saw the level many times
    assert len(received) == 5 and all(n >= 20 for n in received.values()), received
    # the slot-start error (the capture time of a session's first frame minus the slot start)
    # stays what it is without viewers. Compared by the median: on a loaded machine single
    # slots of either run start 20-30 ms late (the thread woken late), viewers or not; a
    # viewer that blocked the recorder would delay every slot, and by far more than this.
    assert float(np.median(watched)) <= float(np.median(alone)) + 5.0, (alone, watched)
    assert max(watched) < max(alone) + 100.0, (alone, watched)


# --- a real browser, a real microphone (PulseAudio), a real bird ---
PULSE_RATE = 32000
"""Rate of the virtual microphone (the ``pulse`` fixture of tests/conftest.py)."""


@pytest.fixture
def browser(require: Any) -> Iterator[Any]:
    """Headless Debian Chromium driven by Selenium through chromedriver."""
    with chromium_driver(require, size=(1000, 900)) as driver:
        yield driver


@pytest.mark.samples
@pytest.mark.slow
def test_a_browser_sees_the_level_move_while_a_bird_sings(  # type: ignore[no-untyped-def]
    pulse, browser, bird_files, make_station, make_ctx
):
    sensor = {
        "name": "mic",
        "kind": "audio",
        "device": "pulse",
        "sample_rate": 32000,
        "chunk": "5s",
        "timeout": "5s",
    }
    config = station_with(make_station, sensor)
    ctx, progress = make_ctx(config, SystemClock())
    recorder = threading.Thread(target=run_recorder, args=(ctx, "mic"))
    player = None
    recorder.start()
    try:
        with AsgiServer(Starlette(routes=live_routes(ctx.home, config))) as server:
            browser.get(f"{server.url}/live")
            numbers = browser.find_element("id", "levels-mic")

            def level_when(predicate: Any, timeout: float) -> float:
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    value = numbers.get_attribute("data-peak")
                    if value and predicate(float(value)):
                        return float(value)
                    time.sleep(0.05)
                raise AssertionError(f"level never matched; last {numbers.text!r}")

            quiet = level_when(lambda db: db < -60, 20)  # the null sink's silence
            player = pulse.start_playing(bird_files[0])
            loud = level_when(lambda db: db > -40, 15)  # the bird
            section = browser.find_element("css selector", "section.sensor")
            before = int(section.get_attribute("data-updates"))
            time.sleep(2.0)  # the spectrogram scrolls some of the song in
            updates = int(section.get_attribute("data-updates")) - before
            screenshot(browser, "live-view-bird")
            canvas_lit = browser.execute_script(
                "const c = document.getElementById('spec-mic');"
                "const d = c.getContext('2d').getImageData(c.width - 200, 0, 200, c.height).data;"
                "let lit = 0; for (let i = 0; i < d.length; i += 4) if (d[i+1] > 150) lit++;"
                "return lit;"
            )
    finally:
        if player is not None:
            player.kill()
            player.wait(5)
        ctx.stop_reason = "stopped"
        ctx.stop.set()
        recorder.join(15)
    assert progress.of("slot"), "the recorder never opened the virtual microphone"
    assert quiet < -60 < -40 < loud
    assert updates >= 6  # several updates per second (at most 10)
    assert canvas_lit > 50  # the song's energy drawn in the spectrogram's bright colours
