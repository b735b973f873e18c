"""The video sensor: config errors, the real ffmpeg capture of lavfi graphs, files and an RTSP
camera, pacing on the injected clock, dropped frames, failures, a clean stop of ffmpeg."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from fieldstation.clock import SystemClock, VirtualClock
from fieldstation.config import ConfigError, parse_config, template_text
from fieldstation.config.plugins import load_plugin
from fieldstation.sensors import DeviceError, build_sensor
from fieldstation.sensors.base import SensorConfigurationError
from fieldstation.sensors.camera import VideoSensor, capture_command
from fieldstation.sensors.video import VideoConfig, bits_per_pixel, preflight
from fieldstation.testing.broker import free_port

LAVFI = {
    "name": "cam",
    "kind": "video",
    "source": "lavfi:testsrc2=size=160x120:rate=25",
    "width": 160,
    "height": 120,
    "fps": 25,
}


def video(**fields: Any) -> VideoConfig:
    return VideoConfig.model_validate({**LAVFI, **fields})


def error_of(**fields: Any) -> tuple[str, str]:
    """``(key, message)`` of the one validation error of a video config with ``fields``."""
    with pytest.raises(ValidationError) as caught:
        video(**fields)
    [error] = caught.value.errors()
    return ".".join(str(p) for p in error["loc"]), error["msg"]


@pytest.fixture
def sensors() -> Iterator[list[VideoSensor]]:
    """Sensors made by a test, closed after it whatever happens."""
    made: list[VideoSensor] = []
    yield made
    for sensor in made:
        sensor.close()


def make(sensors: list[VideoSensor], clock: Any, **fields: Any) -> VideoSensor:
    sensor = VideoSensor(video(**fields), clock)
    sensors.append(sensor)
    return sensor


def clip(tmp_path: Path, frames: int = 25) -> Path:
    """A real H.264 file of ``frames`` frames at 25 fps (testsrc2 with a frame counter)."""
    path = tmp_path / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25"]
        + ["-frames:v", str(frames), "-c:v", "libx264", "-preset", "ultrafast", str(path)],
        check=True,
        timeout=60,
    )
    return path


# --- config ---


@pytest.mark.parametrize(
    ("fields", "key", "words"),
    [
        ({"width": 161}, "width", "even"),
        ({"height": 121}, "height", "even"),
        ({"fps": 0}, "fps", "greater than or equal to 1"),
        ({"fps": 25.5}, "fps", "integer"),
        ({"preset": "warp"}, "preset", "ultrafast"),
        ({"crf": 60}, "crf", "less than or equal to 51"),
        ({"source": "ftp://cam/x"}, "source", "rtsp://"),
        ({"source": "lavfi:"}, "source", "testsrc2"),
        ({"loop": True}, "", "loop applies to a video file source only"),
        ({"format": "mp4"}, "format", "mkv"),
        ({"width": 3840, "height": 2160, "queue_frames": 100}, "", "use at most 43"),
    ],
)
def test_bad_settings_name_the_key_and_the_fix(fields: dict[str, Any], key: str, words: str):
    where, message = error_of(**fields)
    assert where == key
    assert words in message


def test_a_station_file_takes_a_video_sensor(home: Any) -> None:
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home.root)
    data["sensors"] = [{**LAVFI, "chunk": "30s"}]
    sensor = parse_config(data).sensor("cam")
    assert isinstance(sensor, VideoConfig) and sensor.media == "video" and sensor.chunk == 30
    data["sensors"] = [{**LAVFI, "width": 161}]
    with pytest.raises(ConfigError, match="width"):
        parse_config(data)


def test_storage_estimate_follows_resolution_rate_and_crf() -> None:
    hd = video(width=1280, height=720, fps=25)
    assert hd.bytes_per_second() == pytest.approx(1280 * 720 * 25 * 0.07 / 8)  # 201.6 kB/s
    assert video(width=1280, height=720, fps=25, crf=29).bytes_per_second() == pytest.approx(
        hd.bytes_per_second() / 2  # type: ignore[operator]
    )
    assert bits_per_pixel(17) == pytest.approx(0.14)


def test_the_plugin_module_is_cheap_to_import() -> None:
    code = (
        "import sys, fieldstation.sensors.video as v; v.plugin; "
        "print(sorted(m for m in ('numpy', 'av', 'fieldstation.sensors.camera') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
    assert load_plugin("sensors", "video").config_model is VideoConfig


def test_a_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    config = video(source=str(tmp_path / "gone.mkv"))
    with pytest.raises(SensorConfigurationError, match="source: video file .* does not exist"):
        build_sensor(config, VirtualClock())
    assert any("gone.mkv" in p for p in preflight(config))
    assert preflight(video()) == []


def test_capture_commands_per_source(tmp_path: Path) -> None:
    rtsp = capture_command(video(source="rtsp://cam/1", timeout=3))
    assert rtsp[rtsp.index("-rtsp_transport") + 1] == "tcp" and "3000000" in rtsp
    assert rtsp[rtsp.index("-fpsprobesize") + 1] == "0"
    http = capture_command(video(source="http://cam/video.mjpg"))
    assert "-rw_timeout" in http
    device = capture_command(video(source="/dev/video0", input_options=["-input_format", "mjpeg"]))
    assert device[device.index("-i") - 3 : device.index("-i") + 2] == [
        "mjpeg",
        "-f",
        "v4l2",
        "-i",
        "/dev/video0",
    ]
    looped = capture_command(video(source=str(tmp_path / "a.mkv"), loop=True))
    assert looped[looped.index("-stream_loop") + 1] == "-1"
    for cmd in (rtsp, http, device, looped):
        assert cmd[-7:] == ["-r", "25", "-vsync", "cfr", "-f", "rawvideo", "pipe:1"]
        assert "rgb24" in cmd and "scale=160:120" in cmd


# --- the capture, not live ---


def test_lavfi_frames_are_paced_on_the_clock_and_timed_by_the_stream(  # type: ignore[no-untyped-def]
    sensors, clock
):
    sensor = make(sensors, clock)
    assert sensor.describe().as_dict() == {
        "media": "video",
        "rate": 25,
        "shape": [120, 160, 3],
        "dtype": "uint8",
        "format": "mkv",
        "codec": "h264",
        "fields": [],
        "units": [],
        "options": {"crf": 23, "preset": "veryfast"},
    }
    start = clock.now()
    sensor.open()
    blocks = [sensor.read() for _ in range(50)]
    assert all(b is not None for b in blocks)
    assert [b.start_frame for b in blocks] == list(range(50))  # type: ignore[union-attr]
    assert all(b.data.shape == (1, 120, 160, 3) and b.data.dtype == np.uint8 for b in blocks)  # type: ignore[union-attr]
    assert [b.captured_at for b in blocks] == [  # type: ignore[union-attr]
        start + timedelta(milliseconds=40 * k) for k in range(50)
    ]
    assert clock.now() == start + timedelta(seconds=2)  # frame 49 was released at 50/25 s
    assert not np.array_equal(blocks[0].data, blocks[1].data)  # type: ignore[union-attr]
    health = sensor.health()
    assert (health.state, health.frames, health.lost_frames) == ("open", 50, 0)
    assert health.details["live"] is False


def test_a_file_plays_once_then_ends_or_loops(sensors, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = clip(tmp_path, 25)
    once = make(sensors, VirtualClock(), source=str(path))
    once.open()
    frames = []
    while (block := once.read()) is not None:
        frames.append(block.data[0])
    assert len(frames) == 25
    assert once.read() is None  # stays ended
    looped = make(sensors, VirtualClock(), source=str(path), loop=True)
    looped.open()
    again = [looped.read() for _ in range(60)]
    assert [b.start_frame for b in again] == list(range(60))  # type: ignore[union-attr]
    for k in range(25):  # the second pass replays the same decoded frames
        assert np.array_equal(again[k].data[0], frames[k])  # type: ignore[union-attr]
        assert np.array_equal(again[k + 25].data[0], frames[k])  # type: ignore[union-attr]


def test_a_graph_ffmpeg_refuses_is_a_configuration_error(sensors) -> None:  # type: ignore[no-untyped-def]
    sensor = make(sensors, VirtualClock(), source="lavfi:nosuchfilter=1")
    sensor.open()
    with pytest.raises(SensorConfigurationError, match="source: lavfi:nosuchfilter=1"):
        sensor.read()
    assert sensor.health().state == "error"


def test_ffmpeg_killed_mid_stream_is_a_device_error_not_a_configuration_error(sensors) -> None:  # type: ignore[no-untyped-def]
    sensor = make(sensors, VirtualClock())
    sensor.open()
    assert sensor.read().start_frame == 0  # type: ignore[union-attr]
    assert sensor._process is not None
    os.kill(sensor._process.pid, signal.SIGKILL)
    with pytest.raises(DeviceError, match="failed after") as raised:
        while True:
            sensor.read()
    assert not isinstance(raised.value, SensorConfigurationError)


def test_close_stops_ffmpeg_and_reaps_it(sensors) -> None:  # type: ignore[no-untyped-def]
    sensor = make(sensors, VirtualClock())
    sensor.open()
    sensor.read()
    process = sensor._process
    assert process is not None and process.poll() is None
    # ffmpeg is blocked writing frames nobody reads: close must still end it at once
    began = time.monotonic()
    sensor.close()
    assert time.monotonic() - began < 4.0  # SIGTERM worked (SIGKILL comes after 5 s)
    assert process.returncode is not None  # reaped: no zombie
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)
    sensor.close()  # idempotent
    assert sensor.health().state == "closed"
    sensor.open()  # and it opens again from frame 0
    assert sensor.read().start_frame == 0  # type: ignore[union-attr]


# --- live sources ---


def test_a_camera_that_does_not_answer_is_a_device_error(sensors) -> None:  # type: ignore[no-untyped-def]
    sensor = make(sensors, SystemClock(), source=f"rtsp://127.0.0.1:{free_port()}/cam")
    sensor.open()
    with pytest.raises(DeviceError, match="Connection refused"):
        sensor.read()
    assert sensor.health().state == "error"


@pytest.fixture
def camera(require: Any) -> Any:
    from fieldstation.testing.rtsp import RtspCamera, rtsp_available

    why = rtsp_available()
    if why is not None:
        require("rtsp", why)
    with RtspCamera(width=160, height=120, fps=25) as cam:
        yield cam


def test_rtsp_frames_are_timed_from_the_first_one_and_the_end_is_a_device_error(  # type: ignore[no-untyped-def]
    sensors, camera
):
    clock = SystemClock()
    sensor = make(sensors, clock, source=camera.url, timeout=5)
    before = clock.now()
    sensor.open()
    blocks = [sensor.read() for _ in range(30)]
    first = blocks[0].captured_at  # type: ignore[union-attr]
    assert before <= first <= clock.now()
    assert [b.start_frame for b in blocks] == list(range(30))  # type: ignore[union-attr]
    assert [b.captured_at - first for b in blocks] == [  # type: ignore[union-attr]
        timedelta(milliseconds=40 * k) for k in range(30)
    ]
    assert sensor.health().details["live"] is True
    camera.stop()
    with pytest.raises(DeviceError, match="stopped after"):
        while True:
            sensor.read()


def test_a_full_queue_drops_and_counts_live_frames(sensors, camera) -> None:  # type: ignore[no-untyped-def]
    sensor = make(sensors, SystemClock(), source=camera.url, queue_frames=5)
    sensor.open()
    deadline = time.monotonic() + 30
    while sensor.health().lost_frames < 3:  # nobody reads: the queue fills, frames drop
        assert time.monotonic() < deadline, sensor.health()
        time.sleep(0.05)
    indices = [sensor.read().start_frame for _ in range(6)]  # type: ignore[union-attr]
    assert indices[:5] == list(range(5))  # what the queue held
    assert indices[5] > 5  # then a jump: the recorder starts a new session there
    health = sensor.health()
    assert health.overflows == health.lost_frames >= 3


@pytest.fixture
def mjpeg_camera() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real HTTP MJPEG camera: ffmpeg serving testsrc2 as multipart JPEG (``-listen 1``, one
    client), in real time; yields its URL and process once it listens."""
    import psutil

    port = free_port()
    server = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25"]
        + ["-c:v", "mjpeg", "-f", "mpjpeg", "-listen", "1", f"http://127.0.0.1:{port}/cam.mjpg"],
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        # a probe connection would take the one client slot: look for the listening socket
        while not any(
            c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
            for c in psutil.Process(server.pid).net_connections(kind="tcp")
        ):
            assert server.poll() is None and time.monotonic() < deadline, "no MJPEG server"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/cam.mjpg", server
    finally:
        server.kill()
        server.wait()


def test_an_http_mjpeg_camera_is_live_and_its_end_is_a_device_error(  # type: ignore[no-untyped-def]
    sensors, mjpeg_camera
):
    url, server = mjpeg_camera
    sensor = make(sensors, SystemClock(), source=url, timeout=5)
    sensor.open()
    blocks = [sensor.read() for _ in range(25)]
    assert [b.start_frame for b in blocks] == list(range(25))  # type: ignore[union-attr]
    assert blocks[-1].data.shape == (1, 120, 160, 3)  # type: ignore[union-attr]
    server.kill()
    with pytest.raises(DeviceError, match="stopped after"):
        while True:
            sensor.read()
    sensor.close()
    health = sensor.health()  # the error stays until the next open (as for audio devices)
    assert health.state == "error" and "exited" in (health.error or "")
    assert sensor._process is None and server.wait(10) is not None


def test_a_stalled_camera_is_a_device_error_after_timeout(sensors, camera) -> None:  # type: ignore[no-untyped-def]
    sensor = make(sensors, SystemClock(), source=camera.url, timeout=2)
    sensor.open()
    sensor.read()
    camera.process.send_signal(signal.SIGSTOP)  # the camera hangs: connection open, no frame
    try:
        began = time.monotonic()
        with pytest.raises(DeviceError) as raised:
            while True:
                sensor.read()
        assert time.monotonic() - began < 15
        assert "sent no frame for 2 s" in str(raised.value)
        process = sensor._process
        sensor.close()  # ffmpeg, maybe blocked on the silent socket, is still ended and reaped
        assert process is None or process.returncode is not None
    finally:
        camera.process.send_signal(signal.SIGCONT)
