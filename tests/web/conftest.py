"""Fixtures of the web page's tests: a station home with real rows and real audio files, and
the page's app on Starlette's TestClient."""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from starlette.testclient import TestClient

from fieldstation.clock import VirtualClock
from fieldstation.config import StationConfig, parse_config
from fieldstation.home import StationHome
from fieldstation.runtime.client import ControlError
from fieldstation.store import Database
from fieldstation.store.deployments import start_deployment
from fieldstation.store.events import record_event
from fieldstation.testing.rows import add_detection, add_model_run, add_recording
from fieldstation.web.app import create_app

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
RATE = 48_000
TONE_HZ = 3_000.0


class RecordingControl:
    """The station's control API as the page sees it: a status to show and the start/stop
    calls received (a stand-in for :class:`~fieldstation.runtime.client.ControlClient`)."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.status_data = status
        self.calls: list[tuple[str, str]] = []

    def status(self) -> dict[str, Any]:
        return self.status_data

    def _act(self, action: str, job: str) -> dict[str, Any]:
        if job not in {j["name"] for j in self.status_data["jobs"]}:
            raise ControlError(404, f"no job named {job!r}")
        self.calls.append((action, job))
        return {"name": job}

    def start(self, job: str) -> dict[str, Any]:
        return self._act("start", job)

    def stop(self, job: str) -> dict[str, Any]:
        return self._act("stop", job)


def status_of(station: str) -> dict[str, Any]:
    """A status as ``Station.status()`` writes it, with one failing job."""
    job = {
        "kind": "process",
        "pid": 4242,
        "restarts": 0,
        "reason": None,
        "problem": None,
        "in_slot": True,
        "next_slot": "2026-06-01T12:30:00+00:00",
        "last_progress": {"what": "chunk", "at": "2026-06-01T11:59:50+00:00"},
    }
    return {
        "station": station,
        "updated_at": NOW.isoformat(),
        "uptime_s": 3600.0,
        "health": "unhealthy",
        "problems": ["processor:energy is failed"],
        "jobs": [
            {**job, "name": "recorder:mic", "state": "running"},
            {
                **job,
                "name": "processor:energy",
                "state": "failed",
                "problem": "crashed 5 times",
                "in_slot": False,
                "next_slot": None,
                "last_progress": {"what": "idle"},
            },
            {**job, "name": "outbox", "kind": "thread", "state": "running", "pid": None},
        ],
        "recording": {
            "sensors": {
                "mic": {
                    "state": "running",
                    "in_slot": True,
                    "problem": None,
                    "last": "chunk",
                    "next_slot": "2026-06-01T12:30:00+00:00",
                }
            },
            "active": True,
        },
        "network": {"up": False},
        "storage": {"total_bytes": 32 * 2**30, "used_bytes": 12 * 2**30, "free_bytes": 20 * 2**30},
        "cpu": {"count": 4, "load_1m": 0.31, "station_percent": 4.5},
        "memory": {"total_bytes": 2**31, "available_bytes": 2**30, "station_rss_bytes": 90 * 2**20},
        "outbox": {"pending": 17, "oldest_age_s": 125.0},
    }


def write_tone(path: Path, seconds: float = 4.0, freq: float = TONE_HZ) -> None:
    """A 48 kHz mono 16-bit WAV: a ``freq`` Hz tone at -6 dBFS."""
    t = np.arange(int(seconds * RATE)) / RATE
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(
        path, (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), RATE, subtype="PCM_16"
    )


@dataclass
class WebStation:
    """A station home with rows and files, and the page's app."""

    config: StationConfig
    home: StationHome
    db: Database
    control: RecordingControl
    clock: VirtualClock
    ids: dict[str, list[int]] = field(default_factory=dict)

    def client(self, **web: Any) -> TestClient:
        """A TestClient of the page; ``web`` overrides ``[web]`` keys."""
        config = self.config
        if web:
            data = copy.deepcopy(config.model_dump(mode="json", exclude_unset=True))
            data.setdefault("web", {}).update(web)
            config = parse_config(data)
        app = create_app(config, home=self.home, db=self.db, control=self.control, clock=self.clock)
        return TestClient(app, base_url="http://127.0.0.1:8080")


@pytest.fixture
def web_station(config: StationConfig, db: Database, home: StationHome) -> Iterator[WebStation]:
    """Two days of recordings of sensor ``mic`` (a real 4 s tone WAV for the newest three),
    detections of two labels, a deleted recording, and events."""
    clock = VirtualClock(NOW)
    ids: dict[str, list[int]] = {"recordings": [], "detections": [], "files": []}
    with db.session() as s:
        dep = start_deployment(
            s,
            station_id=config.station.id,
            config_hash="x" * 64,
            config={},
            version="test",
            now=NOW - timedelta(days=2),
        )
        for n in range(8):
            started = NOW - timedelta(days=1) + timedelta(minutes=10 * n)
            has_file = n >= 5
            rel = f"data/mic/{started:%Y-%m-%d}/mic_{n}.wav"
            if has_file:
                write_tone(home.root / rel)
            rec = add_recording(
                s,
                deployment_id=dep.id,
                started_at=started,
                path=rel,
                duration=4.0,
                frames=4 * RATE,
                bytes=(home.root / rel).stat().st_size if has_file else 10,
                sha256=f"{n:064d}",
                state="processed",
                file_state="present" if has_file else "deleted",
                end_reason="complete" if n != 7 else "stopped",
            )
            ids["recordings"].append(rec.id)
            if has_file:
                ids["files"].append(rec.id)
            run = add_model_run(s, rec.id, started_at=started)
            for k, label in enumerate(("Turdus merula", "Erithacus rubecula")[: 1 + n % 2]):
                det = add_detection(
                    s,
                    run,
                    label=label,
                    score=0.5 + 0.05 * n,
                    detected_at=started + timedelta(seconds=1 + k),
                    start=1.0 + k,
                )
                ids["detections"].append(det.id)
        record_event(
            s,
            kind="job_failed",
            source="processor:energy",
            message="crashed 5 times",
            now=NOW - timedelta(minutes=3),
            severity="error",
            destinations=[],
            station_id=config.station.id,
        )
    yield WebStation(config, home, db, RecordingControl(status_of(config.station.id)), clock, ids)


@pytest.fixture
def client(web_station: WebStation) -> TestClient:
    return web_station.client()


def csrf_of(html: str) -> str:
    """The session's CSRF token as the page shows it (``<meta name="csrf">``)."""
    marker = '<meta name="csrf" content="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


# --- a real station serving its page --------------------------------------------------------

SAMPLES = Path(
    os.environ.get("FIELDSTATION_SAMPLES", Path("~/.cache/fieldstation/samples").expanduser())
)
CLI = [sys.executable, "-m", "fieldstation.cli"]
TOKEN = "browser-test-token-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    """Poll ``predicate`` every 0.1 s until it returns something true (the event itself)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what or 'condition'} not met within {timeout} s")


@dataclass
class LiveStation:
    """``fieldstation run`` of a replay station (the real bird recording, the energy
    detector) serving its page at ``url``."""

    home: Path
    url: str
    process: subprocess.Popen[bytes]

    def status(self) -> dict[str, Any]:
        from fieldstation.runtime.client import ControlClient

        with ControlClient(self.home / "run" / "control.sock", timeout=10) as client:
            return client.status()

    def job(self, name: str) -> dict[str, Any]:
        return next(j for j in self.status()["jobs"] if j["name"] == name)

    def processed(self) -> int:
        import sqlite3

        with contextlib.closing(sqlite3.connect(self.home / "station.db", timeout=10)) as con:
            row = con.execute(
                "select count(*) from recordings where state = 'processed'"
            ).fetchone()
        return int(row[0])


def bird_recording() -> Path:
    files = sorted((SAMPLES / "birds").glob("*.wav")) if (SAMPLES / "birds").is_dir() else []
    if not files:
        from tests.conftest import require

        require("samples", f"no bird sample in {SAMPLES / 'birds'}: run scripts/fetch-sample-data")
    return files[0]


@pytest.fixture(scope="session")
def live_station(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStation]:
    """One real station for the tests that need one (started once, stopped at the end)."""
    import tomllib

    import tomli_w

    from fieldstation.config import template_text

    bird = bird_recording()
    root = tmp_path_factory.mktemp("web-station")
    home = root / "home"
    port = free_port()
    data = tomllib.loads(template_text())
    data["station"].update(id="web-test", name="Web test station", home=str(home))
    data["sensors"][0] = {
        "name": "mic",
        "kind": "replay",
        "files": [str(bird)],
        "loop": True,
        "chunk": "5s",
        "format": "flac",
        "schedule": "always",
        "min_free": "1MB",
    }
    data["processors"][0].update(poll_interval="0.5s")
    data["retention"]["min_free"] = "1MB"
    data["runtime"].update(status_interval="1s", outbox_poll="0.5s", stop_timeout="5s")
    data["web"] = {"enabled": True, "host": "127.0.0.1", "port": port, "token": "env:FS_WEB_TOKEN"}
    config = root / "station.toml"
    config.write_text(tomli_w.dumps(data))
    env = {**os.environ, "FS_WEB_TOKEN": TOKEN}
    log = (root / "run.log").open("wb")
    process = subprocess.Popen(
        [*CLI, "run", str(config)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    station = LiveStation(home, f"http://127.0.0.1:{port}", process)
    try:

        def listening() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"station exited: {(root / 'run.log').read_text()[-3000:]}")
            try:
                last = station.job("web").get("last_progress") or {}
            except Exception:
                return False
            return last.get("what") == "listening"

        wait_for(listening, 60, "the web job listening")
        wait_for(lambda: station.processed() >= 2, 90, "two processed recordings")
        yield station
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
