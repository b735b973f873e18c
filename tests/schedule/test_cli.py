"""``fieldstation schedule`` on the embedded default station and on sun-relative schedules."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import tomli_w
from typer.testing import CliRunner

from fieldstation.cli.app import app
from fieldstation.config import template_text
from fieldstation.config.units import format_bytes

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables 200 columns wide, whatever width the shared console took at import."""
    from fieldstation.cli import common

    for shared in (common.console, common.err_console):
        monkeypatch.setattr(shared, "_width", 200)


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["schedule", "-c", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


@pytest.fixture
def default_file(tmp_path: Path) -> Path:
    path = tmp_path / "station.toml"
    path.write_text(template_text(), encoding="utf-8")
    return path


def station_file(tmp_path: Path, **changes: object) -> Path:
    """The default station with the mic on the sun-relative 'dawn_chorus' schedule."""
    data = tomllib.loads(template_text())
    data["sensors"][0]["schedule"] = "dawn_chorus"
    for key, value in changes.items():
        section, _, field = key.partition("__")
        target = data[section] if section != "dawn" else data["schedules"]["dawn_chorus"]
        target[field] = value
    path = tmp_path / "sun.toml"
    path.write_bytes(tomli_w.dumps(data).encode())
    return path


def test_default_station_records_continuously_24_hours_a_day(default_file):
    code, out = run(str(default_file), "--days", "3", "--start", "2027-06-01")
    assert code == 0, out
    rows = [line for line in out.splitlines() if re.search(r"2027-06-0[123] \w{3}", line)]
    assert len(rows) == 3
    for row in rows:
        assert "00:00–24:00" in row and "24.00" in row
    # 48 kHz x 1 channel x int16 = 96000 B/s for 86400 s a day; FLAC roughly half of it
    pcm, flac = format_bytes(96000 * 86400), format_bytes(96000 * 86400 / 2)
    assert all(pcm in row and flac in row for row in rows)
    assert "roughly half" in out and "estimate" in out
    assert "mic" in out and "'always'" in out


def test_sun_relative_schedule_lists_slots_and_hours(tmp_path):
    path = station_file(tmp_path)
    code, out = run(str(path), "--days", "2", "--start", "2027-04-15", "--sensor", "mic")
    assert code == 0, out
    assert "dawn_chorus" in out
    rows = [line for line in out.splitlines() if re.search(r"2027-04-1[56] \w{3}", line)]
    # sunrise-30m .. sunrise+2h and sunset-1h .. sunset+30m, 1 min every 5 min: 30 + 18 slots
    assert all(" 48 " in row and "0.80" in row for row in rows), rows
    assert "polar" not in out


def test_svalbard_summer_flags_polar_fallback_days(tmp_path):
    path = station_file(
        tmp_path,
        station__latitude=78.2,
        station__longitude=15.6,
        station__timezone="Arctic/Longyearbyen",
        dawn__polar="whole_day",
    )
    code, out = run(str(path), "--days", "3", "--start", "2027-06-20")
    assert code == 0, out
    flagged = [line for line in out.splitlines() if "polar fallback" in line]
    assert len(flagged) == 3
    assert all("whole day recorded" in line and "288" in line for line in flagged)


def test_svalbard_winter_skip_says_days_were_skipped(tmp_path):
    path = station_file(
        tmp_path,
        station__latitude=78.2,
        station__longitude=15.6,
        station__timezone="Arctic/Longyearbyen",
    )
    code, out = run(str(path), "--days", "2", "--start", "2027-12-20", "--slots", "1")
    assert code == 0, out
    flagged = [line for line in out.splitlines() if "polar fallback" in line]
    assert len(flagged) == 2 and all("window skipped" in line for line in flagged)
    assert "2028-02" in out  # the next slot is when the sun comes back


def test_unknown_sensor_and_bad_start_exit_2(default_file):
    code, out = run(str(default_file), "--sensor", "nope")
    assert code == 2 and "no sensor named 'nope'" in out
    code, out = run(str(default_file), "--start", "tomorrow")
    assert code == 2 and "--start" in out


def test_a_replay_sensor_without_a_rate_is_estimated_at_its_files_rate(tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    audio = tmp_path / "bats.wav"
    sf.write(audio, np.zeros((1000, 2), dtype=np.int16), 256000, subtype="PCM_16")
    data = tomllib.loads(template_text())
    data["sensors"] = [{"name": "bats", "kind": "replay", "files": [str(audio)], "format": "wav"}]
    path = tmp_path / "replay.toml"
    path.write_bytes(tomli_w.dumps(data).encode())
    code, out = run(str(path), "--days", "1", "--start", "2027-06-01")
    assert code == 0, out
    # 256 kHz x 2 channels x int16 (the file's), not the 48 kHz mono default
    assert f"{format_bytes(256000 * 2 * 2)}/s of raw PCM" in out
    assert format_bytes(256000 * 4 * 86400) in out


def test_video_and_readings_sensors_have_storage_estimates() -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    code, out = run(str(examples / "camera.toml"), "--days", "1", "--start", "2027-06-01")
    assert code == 0, out
    text = " ".join(out.split())
    # 1280 x 720 x 15 fps x 0.07 bit per pixel / 8 (decision 0071's still-scene estimate)
    assert f"{format_bytes(1280 * 720 * 15 * 0.07 / 8)}/s of H.264 (estimate, still scene)" in text
    assert f"{format_bytes(200 * 6 * 4)}/s of Arrow float32" in text  # 200 Hz x 6 x float32
    assert f"{format_bytes(5 * 200 / 60)}/s of database rows (estimate)" in text
