"""What ``fieldstation analyze`` prints: file names (not a cut folder path), scores at one
precision, counts of what was analysed only, exit status when nothing could be, and ``--set``
errors in ``validate``'s words."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import soundfile as sf
from typer.testing import CliRunner

from fieldstation.cli import common
from fieldstation.cli.app import app

from ..processing.conftest import chirp_signal as chirps

runner = CliRunner()


def test_table_shows_file_names_and_three_decimal_scores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a 200-column terminal, whatever the environment was when the console was made (rich
    # fixes its width from $COLUMNS at construction when set then)
    monkeypatch.setattr(common.console, "_width", 200)
    deep = tmp_path / "a-rather-long-folder-name-that-would-be-cut" / "and-another-level"
    deep.mkdir(parents=True)
    sf.write(deep / "dawn-2026-06-01.wav", chirps(4.0, [1.0, 2.5], seed=1), 48_000)
    sf.write(deep / "quiet.wav", chirps(4.0, [], seed=2), 48_000)
    result = runner.invoke(app, ["analyze", str(tmp_path), "-m", "energy"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if "energy" in line]
    assert len(rows) == 2 and all("dawn-2026-06-01.wav" in row for row in rows)
    assert all("a-rather-long-folder" not in row for row in rows)
    cells = [[c.strip() for c in row.strip("│ ").split("│")] for row in rows]
    assert all(re.fullmatch(r"[01]\.\d{3}", c[2]) for c in cells), cells  # score: 0.937
    assert [(c[3], c[4]) for c in cells] == [("1.00", "1.03"), ("2.50", "2.53")]
    assert all(c[5] == "1000" and c[6] == "12000" for c in cells)
    assert "2 detections in 2 files analysed" in result.stdout


def test_an_empty_folder_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["analyze", str(tmp_path), "-m", "energy"])
    assert result.exit_code == 2
    assert "no audio file to analyse" in result.stderr and ".wav" in result.stderr


def test_files_that_all_failed_exit_1_and_are_not_counted(tmp_path: Path) -> None:
    for name in ("bad.wav", "worse.flac"):
        (tmp_path / name).write_bytes(b"not audio at all")
    result = runner.invoke(app, ["analyze", str(tmp_path), "-m", "energy"])
    assert result.exit_code == 1
    assert "0 detections in 0 files analysed (2 files could not be)" in result.stdout


def test_one_good_one_bad_counts_one(
    tmp_path: Path,
) -> None:
    sf.write(tmp_path / "good.wav", chirps(2.0, [1.0], seed=3), 48_000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF")
    result = runner.invoke(app, ["analyze", str(tmp_path), "-m", "energy"])
    assert result.exit_code == 1
    assert "1 detection in 1 file analysed (1 file could not be)" in result.stdout


def test_set_errors_in_the_words_of_validate(tmp_path: Path) -> None:
    station = tmp_path / "station.toml"
    station.write_text(
        '[station]\nid = "x"\nlatitude = 0\nlongitude = 0\n'
        '[[processors]]\nname = "energy"\nmodel = "energy"\nthreshold_db = "loud"\n'
    )
    validated = runner.invoke(app, ["validate", "-c", str(station), "--no-host-checks"])
    assert validated.exit_code == 2
    words = next(line for line in validated.stderr.splitlines() if "threshold_db" in line)
    reason = words.split("threshold_db: ", 1)[1]

    result = runner.invoke(
        app, ["analyze", str(tmp_path), "-m", "energy", "--set", "threshold_db=loud"]
    )
    assert result.exit_code == 2
    assert "1 error in --set" in result.stderr
    assert f"  threshold_db: {reason}" in result.stderr.splitlines()
    unknown = runner.invoke(app, ["analyze", str(tmp_path), "-m", "energy", "--set", "colour=red"])
    assert unknown.exit_code == 2 and "colour: Extra inputs are not permitted" in unknown.stderr
