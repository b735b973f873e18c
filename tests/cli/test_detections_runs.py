"""``detections`` and ``recordings`` after a re-analysis (decision 0135): the latest run per
recording by default, ``--all-runs`` on request, counts not doubled, and ``--csv`` that never
cuts an export without saying so."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fieldstation.cli.app import app
from fieldstation.config import template_text
from fieldstation.home import StationHome
from fieldstation.store import Database
from fieldstation.store.deployments import start_deployment
from fieldstation.testing.rows import add_detection, add_model_run, add_recording

runner = CliRunner()
START = datetime(2026, 6, 1, 5, 0, tzinfo=UTC)


@pytest.fixture
def station_file(home: StationHome, tmp_path: Path) -> Path:
    toml = tmp_path / "station.toml"
    toml.write_text(
        template_text().replace('# home = "/var/lib/fieldstation/default"', f'home = "{home.root}"')
    )
    return toml


def _two_runs(db: Database) -> tuple[int, list[str]]:
    """One recording analysed by ``energy`` twice (2 then 3 detections) and once by
    ``other`` (1 detection); returns the recording id and the run ids, oldest first."""
    with db.session() as s:
        deployment = start_deployment(
            s, station_id="t", config_hash="h", config={}, version="test", now=START
        ).id
        rec = add_recording(s, deployment_id=deployment, started_at=START, state="processed")
        runs = []
        for processor, n in (("energy", 2), ("other", 1), ("energy", 3)):
            run = add_model_run(s, rec.id, started_at=START, processor=processor, n_detections=n)
            run.run_id = f"{processor}-{run.id}"
            runs.append(run)
            for i in range(n):
                add_detection(
                    s,
                    run,
                    label=processor,
                    score=0.5,
                    detected_at=START + timedelta(seconds=i),
                    start=float(i),
                )
        return rec.id, [r.run_id or "" for r in runs]


def _csv(output: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(output)))


def test_latest_run_by_default_and_all_runs_on_request(station_file: Path, db: Database) -> None:
    _, (first, other, latest) = _two_runs(db)
    result = runner.invoke(app, ["detections", "-c", str(station_file), "--csv"])
    assert result.exit_code == 0, result.output
    rows = _csv(result.stdout)
    assert sorted(r["run_id"] for r in rows) == [latest] * 3 + [other]
    assert {r["processor"] for r in rows} == {"energy", "other"}
    assert all(r["model_version"] == "1" and r["model"] for r in rows)
    result = runner.invoke(app, ["detections", "-c", str(station_file), "--csv", "--all-runs"])
    assert result.exit_code == 0, result.output
    assert sorted(r["run_id"] for r in _csv(result.stdout)) == sorted(
        [first] * 2 + [latest] * 3 + [other]
    )
    table = runner.invoke(app, ["detections", "-c", str(station_file)])
    assert table.exit_code == 0 and "4 detections" in table.stdout


def test_recordings_listing_does_not_double_count(station_file: Path, db: Database) -> None:
    rec, _ = _two_runs(db)
    result = runner.invoke(app, ["recordings", "-c", str(station_file), "--json"])
    assert result.exit_code == 0, result.output
    import json

    listed = {r["id"]: r["detections"] for r in json.loads(result.stdout)["recordings"]}
    assert listed == {rec: 4}  # 3 (energy's latest run) + 1 (other): not 6


def test_csv_without_limit_exports_all_and_a_cut_says_so(station_file: Path, db: Database) -> None:
    with db.session() as s:
        deployment = start_deployment(
            s, station_id="t", config_hash="h", config={}, version="test", now=START
        ).id
        rec = add_recording(s, deployment_id=deployment, started_at=START, state="processed")
        run = add_model_run(s, rec.id, started_at=START, n_detections=150)
        for i in range(150):
            add_detection(
                s, run, label="x", score=0.5, detected_at=START + timedelta(seconds=i), start=i
            )
    result = runner.invoke(app, ["detections", "-c", str(station_file), "--csv"])
    assert result.exit_code == 0, result.output
    assert len(_csv(result.stdout)) == 150  # more than the table's 100: all of them
    assert "--limit" not in result.stderr
    result = runner.invoke(app, ["detections", "-c", str(station_file), "--csv", "--limit", "100"])
    assert result.exit_code == 0, result.output
    assert len(_csv(result.stdout)) == 100
    assert "only the newest 100 detections shown" in result.stderr  # never a silent cut
    exact = runner.invoke(app, ["detections", "-c", str(station_file), "--csv", "--limit", "150"])
    assert len(_csv(exact.stdout)) == 150 and "only the newest" not in exact.stderr
    table = runner.invoke(app, ["detections", "-c", str(station_file)])
    assert table.exit_code == 0 and "100 detections" in table.stdout
    assert "only the newest 100 detections shown" in table.stderr
