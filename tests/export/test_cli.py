"""``fieldstation export`` from the command line."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import pyarrow.parquet as pq
import tomli_w
from typer.testing import CliRunner

from fieldstation.cli.app import app
from fieldstation.config import template_text
from fieldstation.home import StationHome

from .conftest import Data


def station_file(home: StationHome, tmp_path: Path) -> Path:
    data = copy.deepcopy(tomllib.loads(template_text()))
    data["station"]["home"] = str(home.root)
    path = tmp_path / "station.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def test_export_command_parquet_twice(home: StationHome, data: Data, tmp_path: Path) -> None:
    data.recording("owl", "wren")
    config = station_file(home, tmp_path)
    folder = tmp_path / "out"
    args = [
        "export",
        "-c",
        str(config),
        "--what",
        "detections",
        "--format",
        "parquet",
        "--to",
        str(folder),
        "--since",
        "100000d",
    ]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert f"exported 2 detections to {folder}" in first.output
    again = CliRunner().invoke(app, args)
    assert "exported 0 detections" in again.output
    assert pq.read_table(folder).num_rows == 2


def test_export_command_refuses_what_it_cannot_do(
    home: StationHome, data: Data, tmp_path: Path
) -> None:
    config = station_file(home, tmp_path)
    bad = CliRunner().invoke(
        app,
        [
            "export",
            "-c",
            str(config),
            "--what",
            "readings",
            "--format",
            "raven",
            "--to",
            str(tmp_path / "r"),
        ],
    )
    assert bad.exit_code == 2 and "detections only" in bad.output
    bad = CliRunner().invoke(
        app, ["export", "-c", str(config), "--format", "csv", "--to", "x.csv", "--since", "soon"]
    )
    assert bad.exit_code == 2 and "--since 'soon'" in bad.output
