"""End to end: a real ``fieldstation run`` station (synthetic sensor, energy detector) with
``[upload] select = "all"`` uploads its recordings to a real hub (uvicorn); each arrives
byte-identical, and the station's rows say ``sent``."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from sqlalchemy import select

from fieldstation.config import template_text
from fieldstation.hub.models import UploadedFile
from fieldstation.store import open_database
from fieldstation.store.models import Recording, Upload


def wait_until(condition: Any, timeout: float, what: str, process: subprocess.Popen[Any]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        assert process.poll() is None, f"the station exited ({process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_running_station_uploads_its_recordings(hub: Any, tmp_path: Path) -> None:
    home = tmp_path / "station"
    data = tomllib.loads(template_text())
    data["station"].update(home=str(home))
    data["sensors"][0].update(sample_rate="16kHz", chunk="2s", min_free="1MB")
    data["processors"][0].update(poll_interval="0.2s")
    data["retention"]["min_free"] = "1MB"
    data["runtime"].update(backoff_initial="0.05s", backoff_max="0.3s", stop_timeout="5s")
    data["upload"] = {
        "url": hub.url,
        "token": "env:FIELDSTATION_TEST_UPLOAD_TOKEN",
        "select": "all",
        "interval": "0.5s",
    }
    home.mkdir(parents=True)
    path = home / "station.toml"
    path.write_text(tomli_w.dumps(data))
    process = subprocess.Popen(
        [sys.executable, "-m", "fieldstation.cli", "run", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "FIELDSTATION_TEST_UPLOAD_TOKEN": hub.token},
    )
    try:

        def stored() -> list[tuple[int, str, str]]:
            with hub.db.session() as session:
                return [
                    (int(f.recording_id or 0), f.sha256, str(f.location))
                    for f in session.scalars(
                        select(UploadedFile).where(UploadedFile.state == "stored")
                    )
                ]

        files = wait_until(lambda: len(stored()) >= 2 and stored(), 120, "2 uploads", process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)
    db = open_database(home / "station.db")
    try:
        with db.session() as session:
            recordings = {r.id: r for r in session.scalars(select(Recording))}
            sent = {u.recording_id for u in session.scalars(select(Upload)) if u.state == "sent"}
            for recording_id, sha256, location in files:
                recording = recordings[recording_id]
                assert recording.sha256 == sha256
                arrived = hub.service.store.path(location).read_bytes()
                assert hashlib.sha256(arrived).hexdigest() == sha256
                assert arrived == (home / recording.path).read_bytes()
                assert recording_id in sent
    finally:
        db.dispose()
