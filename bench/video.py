"""Video capture and encoding: frames dropped, CPU per hour of 720p25, encode throughput.

Prints one JSON object with three parts:

- ``live``: a real RTSP camera (GStreamer's RTSP server in a child process,
  :mod:`fieldstation.testing.rtsp`, ``videotestsrc`` 1280x720 at 25 fps as H.264) recorded in
  real time (SystemClock) for ``--seconds`` seconds through the real recorder (ffmpeg capture,
  PyAV encoding at ``--preset``, 10 s chunks, commits). ``frames_dropped``: frames the sensor's
  queue dropped (the recorder could not keep up); ``ffmpeg_dup`` / ``ffmpeg_drop``: frames
  FFmpeg duplicated or dropped to hold 25 fps; ``frames_recorded`` against ``frames_expected``
  (25 x seconds, minus the camera's start-up). ``cpu_s_per_hour``: CPU seconds (user + system)
  of the recorder process and its ffmpeg child during the run, scaled to one hour of capture
  (the camera server's own CPU is reported apart: on a station the camera does that work).
- ``encode``: flat-out encoding of 1280x720 RGB frames (held in memory, testsrc2 pictures) by
  the chunk writer for each preset: ``fps`` and the bytes per second of video it produced
  (testsrc2 is busy: a still field scene compresses several times better).
- ``capture``: flat-out ffmpeg capture of ``lavfi:testsrc2`` 1280x720 (no encoding): ``fps``.

Anchor on this 2-core machine: omgrab encodes its RGB + depth + IMU set at 35.8 fps.

    python3 bench/video.py [--seconds 30] [--preset veryfast] [--pattern ball] [--frames 300]
                           [--skip-live]

``--pattern ball`` (a small ball on black) is an easy scene; ``snow`` (noise) is the worst case.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import context, station
from sqlalchemy import select

from fieldstation.clock import SystemClock, VirtualClock
from fieldstation.recording.job import run_recorder
from fieldstation.recording.metadata import ChunkSpec
from fieldstation.recording.video import FORMAT
from fieldstation.sensors.camera import VideoSensor
from fieldstation.sensors.video import VideoConfig
from fieldstation.store.models import Recording
from fieldstation.testing.rtsp import RtspCamera

WIDTH, HEIGHT, FPS = 1280, 720, 25


def cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def live(root: Path, seconds: float, preset: str, pattern: str) -> dict[str, Any]:
    camera = RtspCamera(width=WIDTH, height=HEIGHT, fps=FPS, pattern=pattern).start()
    try:
        sensor_config = {
            "name": "cam",
            "kind": "video",
            "source": camera.url,
            "width": WIDTH,
            "height": HEIGHT,
            "fps": FPS,
            "preset": preset,
            "chunk": "10s",
            "min_free": "1MB",
        }
        config = station(root / "live", sensor_config)
        clock = SystemClock()
        ctx = context(config, clock, lambda what, details: None)
        sensor = VideoSensor(config.sensor("cam"), clock)  # type: ignore[arg-type]
        timer = threading.Timer(seconds, ctx.stop.set)
        self0, children0 = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
        wall = time.perf_counter()
        timer.start()
        run_recorder(ctx, "cam", sensor=sensor)  # returns once stopped; ffmpeg reaped
        wall = time.perf_counter() - wall
        used = cpu(resource.RUSAGE_SELF) - self0 + cpu(resource.RUSAGE_CHILDREN) - children0
        health = sensor.health()
        with ctx.db.session() as session:
            recs = list(session.scalars(select(Recording).order_by(Recording.id)))
    finally:
        server = camera.process
        import psutil

        server_cpu = None
        if server is not None:
            times = psutil.Process(server.pid).cpu_times()
            server_cpu = round(times.user + times.system, 1)
        camera.kill()
    return {
        "camera": f"RTSP {WIDTH}x{HEIGHT} {FPS} fps (GStreamer videotestsrc {pattern}, x264enc)",
        "preset": preset,
        "seconds": round(wall, 1),
        "chunks": len(recs),
        "sessions": len({r.session_id for r in recs}),
        "frames_expected": int(wall * FPS),
        "frames_recorded": sum(r.frames for r in recs),
        "frames_dropped": health.lost_frames,
        "ffmpeg_dup": health.details["dup"],
        "ffmpeg_drop": health.details["drop"],
        "cpu_s": round(used, 1),
        "cpu_s_per_hour": round(used * 3600 / wall),
        "cores_busy": round(used / wall, 2),
        "camera_server_cpu_s": server_cpu,
        "bytes_per_second": round(sum(r.bytes for r in recs) / max(wall, 1e-9)),
    }


def frames(count: int) -> list[Any]:
    """``count`` distinct 720p testsrc2 frames from the real capture (flat out)."""
    config = VideoConfig(
        name="cam",
        kind="video",
        source=f"lavfi:testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}",
        width=WIDTH,
        height=HEIGHT,
        fps=FPS,
    )
    sensor = VideoSensor(config, VirtualClock())
    sensor.open()
    try:
        out = []
        for _ in range(count):
            block = sensor.read()
            assert block is not None
            out.append(block.data)
        return out
    finally:
        sensor.close()


def capture(count: int) -> dict[str, Any]:
    wall = time.perf_counter()
    frames(count)
    wall = time.perf_counter() - wall
    return {"frames": count, "fps": round(count / wall, 1)}


def encode(root: Path, count: int, presets: list[str]) -> dict[str, Any]:
    pictures = frames(min(count, 50))  # 50 x 2.8 MB held in memory, cycled
    result: dict[str, Any] = {}
    for preset in presets:
        config = VideoConfig(
            name="cam",
            kind="video",
            source="lavfi:testsrc2",
            width=WIDTH,
            height=HEIGHT,
            fps=FPS,
            preset=preset,
        )
        spec = ChunkSpec(
            station="bench",
            sensor="cam",
            session_id="bench",
            chunk_index=0,
            start_frame=0,
            started_at=datetime(2026, 6, 1, tzinfo=UTC),
            stream=VideoSensor(config, VirtualClock()).describe(),
            deployment_id=1,
            config_hash="bench",
            version="bench",
            latitude=0.0,
            longitude=0.0,
            elevation=0.0,
        )
        path = root / f"encode-{preset}.mkv"
        self0 = cpu(resource.RUSAGE_SELF)
        wall = time.perf_counter()
        writer = FORMAT.open(path, spec)
        for i in range(count):
            writer.write(pictures[i % len(pictures)])
        writer.close("complete")
        wall = time.perf_counter() - wall
        used = cpu(resource.RUSAGE_SELF) - self0
        result[preset] = {
            "frames": count,
            "fps": round(count / wall, 1),
            "cpu_s_per_frame": round(used / count, 4),
            "bytes_per_second": round(os.path.getsize(path) * FPS / count),
        }
        path.unlink()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument(
        "--pattern", default="ball", help="videotestsrc pattern of the camera (ball, snow, ...)"
    )
    parser.add_argument("--skip-live", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fieldstation-bench-") as tmp:
        result: dict[str, Any] = {
            "capture": capture(args.frames),
            "encode": encode(Path(tmp), args.frames, ["ultrafast", "veryfast"]),
        }
        if not args.skip_live:
            result["live"] = live(Path(tmp), args.seconds, args.preset, args.pattern)
    result["anchor"] = "omgrab: RGB + depth + IMU encoded at 35.8 fps on this machine"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
