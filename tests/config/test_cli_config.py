"""`fieldstation init`, `validate`, `config schema` and `--version` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from fieldstation import __version__
from fieldstation.cli.app import app
from fieldstation.config import default_config, load_config

SECTIONS = (
    "station",
    "sensors",
    "schedules",
    "processors",
    "retention",
    "outputs",
    "heartbeat",
    "logging",
)


def test_init_then_validate_exits_0(tmp_path: Path) -> None:
    """The issue's acceptance command, run as real processes."""
    target = tmp_path / "s"
    subprocess.run([sys.executable, "-m", "fieldstation.cli", "init", str(target)], check=True)
    done = subprocess.run(
        [sys.executable, "-m", "fieldstation.cli", "validate", "-c", str(target / "station.toml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "valid" in done.stdout


def test_init_shows_every_section_with_comments(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["init", str(tmp_path), "--id", "pond-7"])
    assert result.exit_code == 0
    text = (tmp_path / "station.toml").read_text()
    for section in SECTIONS:
        assert f"[{section}" in text or f"[[{section}" in text, section
    assert text.count("#") > 30
    assert load_config(tmp_path / "station.toml").station.id == "pond-7"


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["init", str(tmp_path)]).exit_code == 0
    assert runner.invoke(app, ["init", str(tmp_path)]).exit_code == 2
    assert runner.invoke(app, ["init", str(tmp_path), "--force"]).exit_code == 0


def test_schema_is_json_schema_of_the_station_file() -> None:
    result = CliRunner().invoke(app, ["config", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema["additionalProperties"] is False
    assert {"station", "sensors", "outputs"} <= set(schema["properties"])
    text = json.dumps(schema)
    for plugin in ("SyntheticConfig", "ReplayConfig", "EnergyConfig", "MqttOutputConfig"):
        assert plugin in text


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_default_config_uses_plugin_models() -> None:
    config = default_config()
    assert type(config.sensors[0]).__name__ == "SyntheticConfig"
    assert type(config.processors[0]).__name__ == "EnergyConfig"
    assert config.destinations_for("heartbeat") == ["local"]


def test_init_refuses_an_invalid_id_before_writing(tmp_path: Path) -> None:
    for bad in ("my station", 'pond"7', "", "-pond", "x" * 65):
        result = CliRunner().invoke(app, ["init", str(tmp_path / "s"), "--id", bad])
        assert result.exit_code == 2, (bad, result.output)
        assert "station id" in result.output and "letters, digits" in result.output
        assert not (tmp_path / "s" / "station.toml").exists()


def test_init_with_an_id_names_the_station_after_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["init", str(tmp_path), "--id", "hive-7"])
    assert result.exit_code == 0, result.output
    station = load_config(tmp_path / "station.toml").station
    assert (station.id, station.name) == ("hive-7", "hive-7")


def test_validate_warns_when_no_output_is_enabled(tmp_path: Path) -> None:
    CliRunner().invoke(app, ["init", str(tmp_path)])
    path = tmp_path / "station.toml"
    assert "no enabled output" not in CliRunner().invoke(app, ["validate", "-c", str(path)]).output
    text = path.read_text().replace('kind = "file"', 'kind = "file"\nenabled = false', 1)
    path.write_text(text)
    result = CliRunner().invoke(app, ["validate", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert "warning: no enabled output" in " ".join(result.output.split())
