"""The positional station file of earlier releases (``recordings FILE``, ``outbox FILE
status``, ``validate FILE``...) still works for one release, with one deprecation line on
stderr naming the ``-c FILE`` form; ``$FIELDSTATION_CONFIG`` stands for ``-c``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fieldstation.cli.app import app
from fieldstation.cli.common import CONFIG_ENV
from fieldstation.clock import VirtualClock
from fieldstation.home import StationHome
from fieldstation.store import Database
from fieldstation.store.deployments import start_deployment
from fieldstation.testing.rows import add_detection, add_model_run, add_recording

from .conftest import station_text

runner = CliRunner()


@pytest.fixture
def station_file(home: StationHome, db: Database, clock: VirtualClock) -> Path:
    """A station file whose home holds a database with one recording and a detection."""
    with db.session() as session:
        deployment = start_deployment(
            session,
            station_id="cli-test",
            config_hash="x" * 64,
            config={},
            version="test",
            now=clock.now(),
        )
        recording = add_recording(session, deployment_id=deployment.id, started_at=clock.now())
        run = add_model_run(session, recording.id, started_at=clock.now(), n_detections=1)
        add_detection(session, run, label="Turdus merula", score=0.91, detected_at=clock.now())
    path = home.root / "station.toml"
    path.write_text(station_text(home.root))
    return path


def deprecation_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "deprecated" in line]


@pytest.mark.parametrize(
    ("old", "new", "said"),
    [
        (["validate", "{f}"], ["validate", "-c", "{f}"], "valid: station 'cli-test'"),
        (["recordings", "{f}", "--json"], ["recordings", "-c", "{f}", "--json"], '"recordings"'),
        (["detections", "{f}", "--csv"], ["detections", "-c", "{f}", "--csv"], "Turdus merula"),
        (["schedule", "{f}", "--days", "1"], ["schedule", "-c", "{f}", "--days", "1"], "per day"),
        (["outbox", "{f}", "status"], ["outbox", "status", "-c", "{f}"], "outbox of station"),
        (["outbox", "{f}", "list"], ["outbox", "list", "-c", "{f}"], "outbox messages"),
        (["db", "check", "{f}"], ["db", "check", "-c", "{f}"], "integrity ok"),
        (["sessions", "{f}"], ["sessions", "-c", "{f}"], "0 sessions"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_positional_form_warns_once_and_still_works(
    station_file: Path, old: list[str], new: list[str], said: str
) -> None:
    f = str(station_file)
    before = runner.invoke(app, [a.replace("{f}", f) for a in old], env={"COLUMNS": "200"})
    after = runner.invoke(app, [a.replace("{f}", f) for a in new], env={"COLUMNS": "200"})
    assert before.exit_code == 0 == after.exit_code, (before.output, after.output)
    assert said in before.stdout and said in after.stdout
    warned = deprecation_lines(before.stderr)
    shown_new = " ".join(new[: new.index("-c") + 2]).replace("{f}", f)  # the command, -c FILE
    assert len(warned) == 1 and shown_new in warned[0], before.stderr
    assert warned[0].startswith("warning: `fieldstation ")
    assert "deprecated" not in before.stdout  # scripts reading stdout see the same output
    assert deprecation_lines(after.stderr) == []


def test_environment_variable_names_the_station_file(station_file: Path) -> None:
    result = runner.invoke(app, ["recordings", "--json"], env={CONFIG_ENV: str(station_file)})
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["recordings"]) == 1
    # -c wins over the variable
    other = station_file.with_name("other.toml")
    other.write_text(station_text(station_file.parent / "elsewhere"))
    shown = runner.invoke(
        app, ["recordings", "-c", str(other)], env={CONFIG_ENV: str(station_file)}
    )
    assert shown.exit_code == 1 and "no station database" in shown.output


def test_two_different_files_are_refused(station_file: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text(station_text(tmp_path / "x"))
    result = runner.invoke(app, ["recordings", str(station_file), "-c", str(other)])
    assert result.exit_code == 2 and "two station files" in result.stderr


def test_install_needs_a_station_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["install", "--user", "--no-enable"], env={CONFIG_ENV: None})
    assert result.exit_code == 2
    assert "needs a station file: -c FILE (or set FIELDSTATION_CONFIG)" in result.stderr
