"""The web page's costs (issue 18): idle CPU, spectrogram render time, page latency at scale.

Prints one JSON object:

- ``idle``: ``fieldstation run`` of a station whose schedule is closed now (so the recorder
  waits), with and without ``[web]``, sampled for ``--seconds`` after ``--warmup``: CPU of all
  station processes (percent of ONE core) and of the ``web`` job alone, while no browser is
  connected.
- ``live``: the same station with ``[web]`` whose mic records (schedule open), with no viewer
  and with 1 live viewer (an SSE client on ``/live/mic/events``, in this process, connected
  through the warm-up and the measurement): CPU of all station processes and of the ``web``
  job, and the events and spectrogram columns per second the viewer received. The recorder's
  own share of a viewer is in ``bench/live.py``.
- ``spectrogram``: the PNG of a 60 s, 48 kHz mono chunk (the real bird recording, resampled
  to 48 kHz and looped to 60 s, FLAC): read + STFT + colour + PNG, median and max of
  ``--renders`` runs, and the split between decoding, the STFT image and PNG encoding.
- ``pages``: p50/p95/max milliseconds of each page over HTTP (uvicorn in a thread, httpx on
  loopback; ``--requests`` each) with 100,000 recordings of 4 sensors and 50,000 detections
  of 20 labels inserted directly into the station database.

    python3 bench/web.py [--seconds 30] [--warmup 10] [--renders 5] [--requests 100]
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import tomli_w

from fieldstation.config import parse_config, template_text

SAMPLES = Path(
    os.environ.get("FIELDSTATION_SAMPLES", Path("~/.cache/fieldstation/samples").expanduser())
)
CLI = [sys.executable, "-m", "fieldstation.cli"]
OLDER = re.compile(r'<a href="([^"]+)" id="older">')


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def station_data(home: Path, web: bool, recording: bool = False) -> dict[str, Any]:
    """The default station (one synthetic 48 kHz mic, 10 s FLAC chunks). ``recording``: its
    schedule is always open; otherwise the recorder waits for a window that is not open now."""
    data = tomllib.loads(template_text())
    data["station"].update(home=str(home), timezone="UTC")
    if not recording:
        hour = (datetime.now(UTC) + timedelta(hours=6)).hour
        data["schedules"]["always"] = {
            "windows": [{"start": f"{hour:02d}:00", "end": f"{hour:02d}:30"}]
        }
    if web:
        data["web"] = {"enabled": True, "port": free_port()}
    return data


def station_processes(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(procs: list[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for proc in procs:
        try:
            times = proc.cpu_times()
            seconds[proc.pid] = times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return seconds


def web_pid(home: Path) -> int | None:
    from fieldstation.runtime.client import ControlClient

    with ControlClient(home / "run" / "control.sock", timeout=10) as client:
        for job in client.status()["jobs"]:
            if job["name"] == "web":
                return int(job["pid"]) if job["pid"] else None
    return None


class Viewer:
    """One live viewer: an SSE client of ``/live/<sensor>/events`` in a thread, counting the
    ``data:`` events (and the spectrogram columns in them) it receives."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events = 0
        self.columns = 0
        self.error: BaseException | None = None
        self.first = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import httpx

        try:
            with (
                httpx.Client(timeout=httpx.Timeout(10, read=30)) as http,
                http.stream("GET", self.url) as response,
            ):
                response.raise_for_status()
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith("data:"):
                        self.events += 1
                        self.columns += len(json.loads(line[5:]).get("columns", []))
                        self.first.set()
        except BaseException as error:  # reported by the bench
            self.error = error
            self.first.set()

    def __enter__(self) -> Viewer:
        self._thread.start()
        if not self.first.wait(60) or self.error is not None:
            raise RuntimeError(f"the live view sent no event: {self.error}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(35)


def measure_idle(
    web: bool, seconds: float, warmup: float, *, recording: bool = False, viewer: bool = False
) -> dict[str, Any]:
    """CPU of a ``fieldstation run`` station over ``seconds`` after ``warmup``; ``recording``:
    its mic records (schedule open); ``viewer``: one SSE client on ``/live/mic/events`` for
    the whole measurement (it starts before the warm-up; its own CPU, in this process, is not
    counted)."""
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        home = Path(tmp) / "home"
        config = Path(tmp) / "station.toml"
        data = station_data(home, web, recording)
        config.write_text(tomli_w.dumps(data))
        run = subprocess.Popen(
            [*CLI, "run", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            root = psutil.Process(run.pid)
            deadline = time.monotonic() + 60
            while not (home / "run" / "control.sock").exists():
                if time.monotonic() > deadline or run.poll() is not None:
                    raise RuntimeError("the station did not start")
                time.sleep(0.1)
            with contextlib.ExitStack() as stack:
                watching = None
                if viewer:
                    url = f"http://127.0.0.1:{data['web']['port']}/live/mic/events"
                    deadline = time.monotonic() + 60
                    while True:  # the web job listens once the supervisor started it
                        try:
                            watching = stack.enter_context(Viewer(url))
                            break
                        except RuntimeError:
                            if time.monotonic() > deadline:
                                raise
                            time.sleep(0.5)
                time.sleep(warmup)
                page = web_pid(home) if web else None
                procs = station_processes(root)
                before = cpu_seconds(procs)
                events_before = watching.events if watching else 0
                columns_before = watching.columns if watching else 0
                start = time.monotonic()
                time.sleep(seconds)
                wall = time.monotonic() - start
                after = cpu_seconds(procs)
                used = sum(after[p] - before[p] for p in after if p in before)
                result: dict[str, Any] = {
                    "processes": len(procs),
                    "station_cpu_percent": round(100 * used / wall, 3),
                }
                if page is not None:
                    result["web_cpu_seconds"] = round(after.get(page, 0) - before.get(page, 0), 4)
                    result["web_cpu_percent"] = round(100 * result["web_cpu_seconds"] / wall, 4)
                if watching is not None:
                    if watching.error is not None:
                        raise RuntimeError(f"the viewer failed: {watching.error}")
                    result["viewer_events_per_s"] = round(
                        (watching.events - events_before) / wall, 2
                    )
                    result["viewer_columns_per_s"] = round(
                        (watching.columns - columns_before) / wall, 2
                    )
                return result
        finally:
            run.terminate()
            run.wait(60)


def sixty_seconds_of_birds(path: Path) -> None:
    import soundfile

    rate = 48_000
    files = sorted((SAMPLES / "birds").glob("*.wav"))
    if files:
        audio, source_rate = soundfile.read(files[0], dtype="float32", always_2d=True)
        mono = audio.mean(axis=1)
        t = np.arange(int(len(mono) * rate / source_rate)) / rate
        mono = np.interp(t, np.arange(len(mono)) / source_rate, mono).astype(np.float32)
    else:  # no samples fetched: a noisy chirp, said so in the output
        t = np.arange(10 * rate) / rate
        mono = (
            0.3 * np.sin(2 * np.pi * (2000 * t + 300 * t**2))
            + 0.01 * np.random.default_rng(1).standard_normal(t.size)
        ).astype(np.float32)
    reps = int(np.ceil(60 * rate / len(mono)))
    soundfile.write(path, np.tile(mono, reps)[: 60 * rate], rate, format="FLAC")


def measure_spectrogram(renders: int) -> dict[str, Any]:
    import soundfile

    from fieldstation.web.spectrogram import file_png, png_bytes, spectrogram_levels

    with tempfile.TemporaryDirectory(prefix="bench-spec-") as tmp:
        path = Path(tmp) / "chunk.flac"
        sixty_seconds_of_birds(path)
        totals, reads, images, pngs = [], [], [], []
        size = 0
        for _ in range(renders):
            start = time.perf_counter()
            size = len(file_png(path))
            totals.append(time.perf_counter() - start)
            start = time.perf_counter()
            samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
            reads.append(time.perf_counter() - start)
            start = time.perf_counter()
            image = spectrogram_levels(samples, rate)
            images.append(time.perf_counter() - start)
            start = time.perf_counter()
            png_bytes(image)
            pngs.append(time.perf_counter() - start)

    def ms(values: list[float]) -> float:
        return round(1000 * statistics.median(values), 1)

    return {
        "source": "birds sample" if sorted((SAMPLES / "birds").glob("*.wav")) else "chirp",
        "seconds": 60,
        "rate": 48_000,
        "image": "1000x256",
        "png_bytes": size,
        "median_ms": ms(totals),
        "max_ms": round(1000 * max(totals), 1),
        "decode_ms": ms(reads),
        "stft_image_ms": ms(images),
        "png_ms": ms(pngs),
    }


def fill(db: Any, recordings: int, detections: int) -> dict[str, Any]:
    from sqlalchemy import insert

    from fieldstation.store.deployments import start_deployment
    from fieldstation.store.models import Detection, ModelRun, Recording

    start = datetime(2026, 1, 1, tzinfo=UTC)
    sensors = ["mic", "mic2", "bat", "cam"]
    labels = [f"Species {n:02d}" for n in range(20)]
    with db.session() as s:
        dep = start_deployment(
            s, station_id="bench", config_hash="b", config={}, version="bench", now=start
        )
        dep_id = dep.id
    t0 = time.perf_counter()
    batch = 5000
    for first in range(0, recordings, batch):
        rows = []
        for n in range(first, min(first + batch, recordings)):
            at = start + timedelta(seconds=15 * n)
            sensor = sensors[n % 4]
            rows.append(
                {
                    "deployment_id": dep_id,
                    "sensor": sensor,
                    "path": f"data/{sensor}/{at:%Y-%m-%d}/{n}.flac",
                    "session_id": str(uuid.uuid4()),
                    "chunk_index": n,
                    "start_frame": n * 48000 * 60,
                    "started_at": at,
                    "duration": 60.0,
                    "media": "audio",
                    "rate": 48000,
                    "channels": 1,
                    "frames": 48000 * 60,
                    "bytes": 2_000_000,
                    "sha256": "0" * 64,
                    "format": "flac",
                    "end_reason": "complete",
                    "state": "processed",
                    "file_state": "deleted",
                    "pinned": False,
                    "attempts": 1,
                    "created_at": at,
                    "extra": {},
                }
            )
        with db.session(durable=False) as s:
            s.execute(insert(Recording), rows)
    with db.session(durable=False) as s:
        s.execute(
            insert(ModelRun),
            [
                {
                    "recording_id": n * (recordings // detections) + 1,
                    "processor": "energy",
                    "model": "energy",
                    "model_version": "1",
                    "status": "ok",
                    "started_at": start,
                    "duration": 0.1,
                    "n_detections": 1,
                }
                for n in range(detections)
            ],
        )
    for first in range(0, detections, batch):
        with db.session(durable=False) as s:
            s.execute(
                insert(Detection),
                [
                    {
                        "recording_id": n * (recordings // detections) + 1,
                        "model_run_id": n + 1,
                        "label": labels[n % 20],
                        "score": 0.5 + (n % 50) / 100,
                        "start": 1.0,
                        "end": 2.0,
                        "detected_at": start
                        + timedelta(seconds=15 * n * (recordings // detections)),
                        "extra": {},
                    }
                    for n in range(first, min(first + batch, detections))
                ],
            )
    return {
        "recordings": recordings,
        "detections": detections,
        "insert_s": round(time.perf_counter() - t0, 1),
    }


def measure_pages(requests: int, recordings: int, detections: int) -> dict[str, Any]:
    import httpx

    from fieldstation.home import StationHome
    from fieldstation.store import open_database
    from fieldstation.web.app import create_app
    from fieldstation.web.job import QuietServer, bind

    with tempfile.TemporaryDirectory(prefix="bench-pages-") as tmp:
        data = tomllib.loads(template_text())
        data["station"]["home"] = str(Path(tmp) / "home")
        data["sensors"] = [dict(data["sensors"][0], name=n) for n in ("mic", "mic2", "bat", "cam")]
        config = parse_config(data)
        home = StationHome(config.home_path()).ensure()
        db = open_database(home.database)
        filled = fill(db, recordings, detections)

        class Control:
            def status(self) -> dict[str, Any]:
                return {"jobs": [], "health": "healthy"}

        app = create_app(config, home=home, db=db, control=Control())  # type: ignore[arg-type]
        sock = bind("127.0.0.1", 0)
        server = QuietServer(app)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        port = sock.getsockname()[1]
        results: dict[str, Any] = {"rows": filled}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            while True:
                try:
                    http.get("/login")
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            deep = "/recordings?sensor=mic"
            for _ in range(20):  # 20 pages deep: keyset, so no slower than the first
                found = OLDER.search(http.get(deep).text)
                if found is None:
                    break
                deep = html.unescape(found.group(1))
            paths = {
                "status": "/",
                "recordings": "/recordings",
                "recordings_sensor": "/recordings?sensor=mic",
                "recordings_sensor_day": "/recordings?sensor=mic&day=2026-01-10",
                "recordings_20_pages_deep": deep,
                "recording": f"/recordings/{recordings // 2}",
                "detections": "/detections",
                "detections_label": "/detections?label=Species+07",
                "detections_label_day": "/detections?label=Species+07&day=2026-03-01",
                "schedule": "/schedule",
            }
            for name, path in paths.items():
                times = []
                for _ in range(requests):
                    start = time.perf_counter()
                    response = http.get(path)
                    times.append(1000 * (time.perf_counter() - start))
                    if response.status_code != 200:
                        raise RuntimeError(f"{path}: {response.status_code} {response.text[:200]}")
                times.sort()
                results[name] = {
                    "p50_ms": round(times[len(times) // 2], 2),
                    "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2),
                    "max_ms": round(times[-1], 2),
                }
            start = time.perf_counter()
            csv = http.get("/detections.csv")
            results["csv_all_detections"] = {
                "rows": csv.text.count("\n") - 1,
                "ms": round(1000 * (time.perf_counter() - start), 1),
            }
        server.request_exit()
        thread.join(10)
        db.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--renders", type=int, default=5)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--recordings", type=int, default=100_000)
    parser.add_argument("--detections", type=int, default=50_000)
    parser.add_argument("--skip-idle", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "bench": "web",
        "host": {"cpus": psutil.cpu_count(), "load_1m": os.getloadavg()[0]},
    }
    if not args.skip_idle:
        result["idle"] = {
            "without_web": measure_idle(False, args.seconds, args.warmup),
            "with_web": measure_idle(True, args.seconds, args.warmup),
            "seconds": args.seconds,
        }
        result["live"] = {
            "recording_no_viewer": measure_idle(True, args.seconds, args.warmup, recording=True),
            "recording_1_viewer": measure_idle(
                True, args.seconds, args.warmup, recording=True, viewer=True
            ),
            "seconds": args.seconds,
        }
    result["spectrogram"] = measure_spectrogram(args.renders)
    result["pages"] = measure_pages(args.requests, args.recordings, args.detections)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
