"""``fieldstation record``: records a sensor for a while, with rows and recovery first."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
from sqlalchemy import select
from typer.testing import CliRunner

from fieldstation.cli.app import app
from fieldstation.store import open_database
from fieldstation.store.models import Recording


def station_file(tmp_path: Path, extra: str = "") -> Path:
    home = tmp_path / "home"
    text = f"""
[station]
id = "cli"
latitude = 51.0
longitude = 0.0
home = "{home}"

[[sensors]]
name = "mic"
kind = "synthetic"
sample_rate = "16kHz"
frequency = "2kHz"
chunk = "0.5s"
{extra}
"""
    path = tmp_path / "station.toml"
    path.write_text(text)
    return path


def test_record_for_a_while_writes_sample_exact_chunks(tmp_path: Path) -> None:
    path = station_file(tmp_path, 'format = "wav"')
    result = CliRunner().invoke(app, ["record", str(path), "--sensor", "mic", "--for", "1.2s"])
    assert result.exit_code == 0, result.output
    db = open_database(tmp_path / "home" / "station.db")
    with db.session() as session:
        rows = list(session.scalars(select(Recording).order_by(Recording.id)))
    db.dispose()
    assert [r.end_reason for r in rows[:2]] == ["complete", "complete"]
    assert rows[-1].end_reason == "window_end"
    total = sum(r.frames for r in rows)
    # the period starts when the command starts; the stream when the sensor delivers
    assert 0.8 * 19200 < total <= 19200
    assert [r.start_frame for r in rows] == [0, 8000, 16000][: len(rows)]
    for r in rows:
        assert sf.info(str(tmp_path / "home" / r.path)).frames == r.frames
    assert f"{len(rows)} chunk(s), {total} frames" in result.output


def test_record_names_unknown_sensors(tmp_path: Path) -> None:
    path = station_file(tmp_path)
    result = CliRunner().invoke(app, ["record", str(path), "--sensor", "nope", "--for", "1s"])
    assert result.exit_code == 2
    assert "nope" in result.output and "mic" in result.output


def test_record_for_ends_at_the_deadline_when_the_next_duty_slot_lies_beyond_it(
    tmp_path: Path,
) -> None:
    # slots of 1 s every 4 s on the clock grid; the command starts 1 s before a slot, so the
    # period (2 s from when the command is ready) holds that one slot, and the next slot (3 s
    # after it ends) lies beyond the deadline: the recorder must not wait for it
    path = station_file(
        tmp_path,
        'schedule = "duty"\n\n[schedules.duty]\nwindows = [{ start = "00:00", end = "24:00" }]\n'
        'duty_cycle = { record = "1s", every = "4s", align = "clock" }\n',
    )
    text = path.read_text().replace("longitude = 0.0\n", 'longitude = 0.0\ntimezone = "UTC"\n')
    path.write_text(text)
    time.sleep((3.0 - time.time() % 4.0) % 4.0)  # a slot starts 1 s from now
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "fieldstation.cli", "record", str(path), "--for", "2s"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("`record --for 2s` was still waiting for the next duty slot after 30 s")
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    assert elapsed < 10, f"`record --for 2s` took {elapsed:.1f} s"
    db = open_database(tmp_path / "home" / "station.db")
    with db.session() as session:
        rows = list(session.scalars(select(Recording).order_by(Recording.id)))
    db.dispose()
    # what was recorded lies inside the one duty slot (1 s at 16 kHz), cut at its end
    assert rows and sum(r.frames for r in rows) <= 16000
    assert rows[-1].end_reason == "window_end"
    assert {r.started_at.second % 4 for r in rows} <= {0}
