"""The example station files validate, and minimal.toml is the embedded default."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fieldstation.config import config_hash, default_config, load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CLI = [sys.executable, "-m", "fieldstation.cli"]


@pytest.mark.parametrize(
    "name", ["minimal.toml", "birds.toml", "bats.toml", "hive.toml", "camera.toml"]
)
def test_example_validates(name: str) -> None:
    assert load_config(EXAMPLES / name).station.id


def test_minimal_is_the_embedded_default() -> None:
    assert config_hash(load_config(EXAMPLES / "minimal.toml")) == config_hash(default_config())


@pytest.mark.parametrize(
    ("name", "sensor", "frames"),
    [
        ("hive.toml", "buzz", 2 * 16000),
        ("hive.toml", "entrance_cam", 2 * 10),
        ("camera.toml", "cam", 2 * 15),
        ("camera.toml", "imu", 2 * 200),
    ],
)
def test_example_streams_record_on_this_machine(
    tmp_path: Path, name: str, sensor: str, frames: int
) -> None:
    """The synthetic camera, the simulated IMU and the synthetic hum record with no hardware,
    exactly the frames asked for, into chunks whose rows say so."""
    done = subprocess.run(
        [*CLI, "record", "-c", str(EXAMPLES / name), "--sensor", sensor, "--for", "2s", "--now"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "FIELDSTATION_HOME": str(tmp_path / "home")},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    db = sqlite3.connect(tmp_path / "home" / "station.db")
    rows = db.execute("SELECT frames, media, path FROM recordings").fetchall()
    db.close()
    assert rows and sum(r[0] for r in rows) == frames, rows
    assert all((tmp_path / "home" / r[2]).is_file() for r in rows)


def test_the_hive_temperature_is_a_real_series_stored_as_rows(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            *CLI,
            "record",
            "-c",
            str(EXAMPLES / "hive.toml"),
            "--sensor",
            "brood_temp",
            "--for",
            "1s",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "FIELDSTATION_HOME": str(tmp_path / "home")},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    db = sqlite3.connect(tmp_path / "home" / "station.db")
    rows = db.execute("SELECT quantity, unit, value FROM readings").fetchall()
    db.close()
    # the first hourly Seattle temperature of 2010 in the vega_datasets wheel: 39.4 °F
    assert rows == [("temperature", "Cel", pytest.approx((39.4 - 32) * 5 / 9))]
