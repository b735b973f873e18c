"""``fieldstation analyze`` and ``fieldstation reprocess`` through the real typer app."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
from sqlalchemy import func, select
from typer.testing import CliRunner

from fieldstation.cli.app import app
from fieldstation.config import template_text
from fieldstation.processing.worker import ProcessorWorker
from fieldstation.store.models import Detection, Message, ModelRun, Recording

runner = CliRunner()


def test_analyze_writes_csv(tmp_path: Path, chirp_signal: Callable[..., np.ndarray]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "a.wav", chirp_signal(4.0, [1.0, 2.5], seed=1), 48_000)
    sf.write(folder / "b.flac", chirp_signal(4.0, [], seed=2), 48_000)
    out = tmp_path / "out.csv"
    result = runner.invoke(app, ["analyze", str(folder), "--model", "energy", "--csv", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [(Path(r["file"]).name, r["label"]) for r in rows] == [("a.wav", "energy")] * 2
    assert abs(float(rows[0]["start"]) - 1.0) <= 0.01


def test_analyze_rejects_unknown_model_and_bad_files(tmp_path: Path) -> None:
    result = runner.invoke(app, ["analyze", str(tmp_path), "--model", "nope"])
    assert result.exit_code == 2 and "no models plugin named 'nope'" in result.output
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    result = runner.invoke(app, ["analyze", str(bad), "--model", "energy"])
    assert result.exit_code == 1 and "bad.wav" in result.output


def test_reprocess_adds_a_second_run(make_station, chirp_signal, tmp_path: Path) -> None:
    station = make_station()
    station.add_recording(chirp_signal(4.0, [1.0], seed=3))
    ProcessorWorker(station.context(), "energy").step()
    toml = tmp_path / "station.toml"
    toml.write_text(
        template_text().replace(
            '# home = "/var/lib/fieldstation/default"', f'home = "{station.home.root}"'
        )
    )
    result = runner.invoke(app, ["reprocess", "-c", str(toml), "--model", "energy"])
    assert result.exit_code == 0, result.output
    assert "1 recording reprocessed" in result.output
    with station.db.session() as s:
        assert s.scalar(select(func.count()).select_from(ModelRun)) == 2
        assert s.scalar(select(func.count()).select_from(Detection)) == 2
        assert len(set(s.scalars(select(Message.message_id)))) == 2
    result = runner.invoke(app, ["reprocess", "-c", str(toml), "--model", "ghost"])
    assert result.exit_code == 2


def test_reprocess_leaves_unprocessed_recordings_to_the_worker(
    make_station, chirp_signal, tmp_path: Path
) -> None:
    station = make_station()
    done = station.add_recording(chirp_signal(4.0, [1.0], seed=3))
    ProcessorWorker(station.context(), "energy").step()
    waiting = station.add_recording(chirp_signal(4.0, [2.0], seed=4))  # not processed yet
    toml = tmp_path / "station.toml"
    toml.write_text(
        template_text().replace(
            '# home = "/var/lib/fieldstation/default"', f'home = "{station.home.root}"'
        )
    )
    result = runner.invoke(app, ["reprocess", "-c", str(toml), "--model", "energy"])
    assert result.exit_code == 0, result.output
    assert "1 recording reprocessed" in result.output
    assert "1 recording not yet processed by energy left to its worker" in result.output
    worker = ProcessorWorker(station.context(), "energy")
    assert worker.pending() == 1
    step = worker.step()
    assert (step.outcome, step.recording_id) == ("processed", waiting)
    with station.db.session() as s:
        runs = s.execute(select(ModelRun.recording_id, ModelRun.status)).all()
        states = dict(s.execute(select(Recording.id, Recording.state)).all())
    assert sorted(runs) == [(done, "ok"), (done, "ok"), (waiting, "ok")]  # both runs kept
    assert states == {done: "processed", waiting: "processed"}
    assert worker.pending() == 0
