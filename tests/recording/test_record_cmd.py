"""``fieldstation record``: records a sensor for a while, with rows and recovery first."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC
from pathlib import Path

import pytest
import soundfile as sf
from sqlalchemy import select
from typer.testing import CliRunner

from fieldstation.cli.app import app
from fieldstation.store import open_database
from fieldstation.store.models import Deployment, Recording


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


@pytest.mark.parametrize("now", [False, True])
def test_record_for_a_while_writes_exactly_that_many_frames(tmp_path: Path, now: bool) -> None:
    path = station_file(tmp_path, 'format = "wav"')
    args = [
        "record",
        "-c",
        str(path),
        "--sensor",
        "mic",
        "--for",
        "1.2s",
        *(["--now"] if now else []),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    db = open_database(tmp_path / "home" / "station.db")
    with db.session() as session:
        rows = list(session.scalars(select(Recording).order_by(Recording.id)))
    db.dispose()
    assert [r.end_reason for r in rows[:2]] == ["complete", "complete"]
    assert rows[-1].end_reason == "window_end"
    total = sum(r.frames for r in rows)
    # 1.2 s at 16 kHz, counted from the first captured frame, however late the sensor started
    assert total == 19200
    assert [r.start_frame for r in rows] == [0, 8000, 16000][: len(rows)]
    for r in rows:
        assert sf.info(str(tmp_path / "home" / r.path)).frames == r.frames
    assert f"{len(rows)} chunk{'s' if len(rows) != 1 else ''}, {total} frames" in result.output


def test_record_says_when_no_slot_was_open(tmp_path: Path) -> None:
    path = station_file(
        tmp_path,
        'schedule = "never_now"\n\n[schedules.never_now]\n'
        'windows = [{ start = "00:00", end = "24:00" }]\nfirst_date = 2099-01-01\n',
    )
    result = CliRunner().invoke(app, ["record", "-c", str(path), "--for", "0.5s"])
    assert result.exit_code == 0, result.output
    assert "no slot of mic's schedule was open in these 0.5s: nothing recorded" in " ".join(
        result.output.split()
    )


def test_record_names_unknown_sensors(tmp_path: Path) -> None:
    path = station_file(tmp_path)
    result = CliRunner().invoke(app, ["record", "-c", str(path), "--sensor", "nope", "--for", "1s"])
    assert result.exit_code == 2
    assert "nope" in result.output and "mic" in result.output


def _ready_at(db_path: Path) -> float:
    """Wall time (epoch s) at which ``record`` started its deployment: when it was ready."""
    db = open_database(db_path)
    with db.session() as session:
        started = session.scalars(select(Deployment.started_at)).one()
    db.dispose()
    return (started if started.tzinfo else started.replace(tzinfo=UTC)).timestamp()


@pytest.mark.slow
def test_record_for_ends_at_the_deadline_when_the_next_duty_slot_lies_beyond_it(
    tmp_path: Path,
) -> None:
    # slots of 1 s every 12 s on the clock grid; the command's period (8 s from when it is
    # ready) holds one whole slot and ends in the gap after it, the next slot lying beyond the
    # deadline: the recorder must not wait for it. How long the command takes to get ready
    # depends on the machine's load (2-10 s on a loaded build machine): it is launched `lead` s
    # before a slot and must be ready 0-7 s before it (checked: the deployment's start); when it
    # was not, it runs again in a fresh home with the lead set from what was measured.
    period, every = 8.0, 12.0
    lead = 5.0
    for attempt in range(5):
        base = tmp_path / f"try{attempt}"
        base.mkdir()
        path = station_file(
            base,
            'schedule = "duty"\n\n[schedules.duty]\n'
            'windows = [{ start = "00:00", end = "24:00" }]\n'
            'duty_cycle = { record = "1s", every = "12s", align = "clock" }\n',
        )
        text = path.read_text().replace("longitude = 0.0\n", 'longitude = 0.0\ntimezone = "UTC"\n')
        path.write_text(text)
        time.sleep((-lead - time.time()) % every)  # a slot starts `lead` s from now
        launched = time.time()
        slot = launched + lead
        try:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "fieldstation.cli",
                    "record",
                    "-c",
                    str(path),
                    "--for",
                    "8s",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except subprocess.TimeoutExpired:
            pytest.fail("`record --for 8s` was still waiting for the next duty slot after 60 s")
        ended = time.time()
        assert done.returncode == 0, done.stdout + done.stderr
        ready = _ready_at(base / "home" / "station.db")
        if slot + 1.0 - period + 0.2 <= ready <= slot - 0.2:
            break
        lead = min(every - 1.0, ready - launched + 1.0)  # any lead up to the slot spacing
    else:
        pytest.fail(f"`record` was never ready 0-7 s before a slot (last lead {lead:.1f} s)")
    # it ends at its deadline (ready + 8 s), it does not idle for the next slot (it idled 1 h)
    assert ended - ready < period + 5, f"`record --for 8s` ended {ended - ready:.1f} s after ready"
    db = open_database(base / "home" / "station.db")
    with db.session() as session:
        rows = list(session.scalars(select(Recording).order_by(Recording.id)))
    db.dispose()
    # what was recorded lies inside the one duty slot (1 s at 16 kHz), cut at its end
    assert rows and sum(r.frames for r in rows) <= 16000
    assert rows[-1].end_reason == "window_end"
    assert {r.started_at.second % 12 for r in rows} <= {0}


def test_a_first_record_into_a_new_home_makes_everything_private(tmp_path: Path) -> None:
    """The private umask is in force from the start of ``record``: what start-up makes (the
    home's folders, the database) is private too, not only what the recorder writes."""
    import os
    import stat

    path = station_file(tmp_path, 'format = "wav"')
    before = os.umask(0o022)
    try:
        result = CliRunner().invoke(app, ["record", "-c", str(path), "--for", "0.6s", "--now"])
    finally:
        os.umask(before)
    assert result.exit_code == 0, result.output
    home = tmp_path / "home"
    modes = {
        p.relative_to(home).as_posix(): stat.S_IMODE(p.stat().st_mode)
        for p in [home, *home.rglob("*")]
    }
    assert modes["."] == 0o700 and modes["station.db"] == 0o600
    for name in ("data", "logs", "run", "spool", "quarantine"):
        assert modes[name] == 0o700, modes
    assert not [p for p, m in modes.items() if m & 0o077], modes
