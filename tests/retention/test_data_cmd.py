"""The data commands: recordings, detections (table and CSV), pin and unpin."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fieldstation.cli.app import app
from fieldstation.config import template_text
from fieldstation.config.units import parse_since
from fieldstation.home import StationHome
from fieldstation.store import Database
from fieldstation.store.models import Recording

runner = CliRunner()


@pytest.fixture
def station_file(home: StationHome) -> Path:
    path = home.root / "station.toml"
    text = template_text().replace("[station]\n", f'[station]\nhome = "{home.root}"\n', 1)
    path.write_text(text)
    return path


def test_recordings_detections_pin(station_file: Path, db: Database, rows: Any, clock: Any) -> None:
    first = rows.recording()
    second = rows.recording(state="recorded")
    rows.detection(first, "Turdus merula", 0.91)
    rows.detection(first, "Erithacus rubecula", 0.42)

    result = runner.invoke(app, ["recordings", "-c", str(station_file)])
    assert result.exit_code == 0, result.output
    assert "2 recordings" in result.output and "processed" in result.output
    result = runner.invoke(app, ["recordings", "-c", str(station_file), "--state", "recorded"])
    assert "1 recording" in result.output
    result = runner.invoke(app, ["recordings", "-c", str(station_file), "--state", "bogus"])
    assert result.exit_code == 2 and "one of" in result.output

    result = runner.invoke(app, ["detections", "-c", str(station_file), "--csv"])
    assert result.exit_code == 0, result.output
    table = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {r["label"] for r in table} == {"Turdus merula", "Erithacus rubecula"}
    assert {r["recording_id"] for r in table} == {str(first)}
    result = runner.invoke(
        app, ["detections", "-c", str(station_file), "--label", "Turdus merula", "--csv"]
    )
    assert [r["score"] for r in csv.DictReader(io.StringIO(result.stdout))] == ["0.91"]
    result = runner.invoke(app, ["detections", "-c", str(station_file), "--min-score", "0.5"])
    assert result.exit_code == 0 and "1 detection" in result.output

    result = runner.invoke(app, ["pin", str(second), "-c", str(station_file)])
    assert result.exit_code == 0 and "pinned" in result.output
    with db.session() as session:
        rec = session.get(Recording, second)
        assert rec is not None and rec.pinned
    result = runner.invoke(app, ["unpin", str(second), "--config", str(station_file)])
    assert result.exit_code == 0
    with db.session() as session:
        rec = session.get(Recording, second)
        assert rec is not None and not rec.pinned
    result = runner.invoke(app, ["pin", "999", "-c", str(station_file)])
    assert result.exit_code == 2 and "no recording with id 999" in result.output


def test_no_database_yet(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    home = tmp_path / "nohome"
    path.write_text(template_text().replace("[station]\n", f'[station]\nhome = "{home}"\n', 1))
    result = runner.invoke(app, ["recordings", "-c", str(path)])
    assert result.exit_code == 1 and "no station database" in result.output


def test_parse_since() -> None:
    now = datetime(2026, 6, 10, 12, tzinfo=UTC)
    assert parse_since("2d", now) == now - timedelta(days=2)
    assert parse_since("2026-06-01", now) == datetime(2026, 6, 1, tzinfo=UTC)
    assert parse_since("2026-06-01T05:00+02:00", now) == datetime(2026, 6, 1, 3, tzinfo=UTC)
    with pytest.raises(ValueError, match="ISO time"):
        parse_since("yesterday", now)
