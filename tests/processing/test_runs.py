"""Model runs that can be told apart (decision 0135): run identity in the store and in
detection messages, a version that follows the model's files and settings, and ``reprocess``
for a model that never ran on a recording."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from typer.testing import CliRunner

from fieldstation.cli.app import app
from fieldstation.config import template_text
from fieldstation.messages.bodies import DetectionBody
from fieldstation.processing.energy import EnergyDetector
from fieldstation.processing.model import run_version
from fieldstation.processing.worker import ProcessorWorker
from fieldstation.store.models import Message, ModelRun, Recording

runner = CliRunner()

SECOND = '\n[[processors]]\nname = "energy2"\nmodel = "energy"\nthreshold_db = 9.0\n'
"""A second processor, added to the station file after the first one has done its work."""


def _station_file(tmp_path: Path, root: Path, extra: str = "") -> Path:
    toml = tmp_path / "station.toml"
    toml.write_text(
        template_text().replace('# home = "/var/lib/fieldstation/default"', f'home = "{root}"')
        + extra
    )
    return toml


def test_run_version_follows_settings_and_model_files(tmp_path: Path) -> None:
    model = EnergyDetector.__new__(EnergyDetector)  # run_version reads only version and files
    settings: dict[str, Any] = {"name": "energy", "model": "energy", "threshold_db": 12.0}
    base = run_version(model, settings)
    assert base.startswith(f"{model.version}+") and len(base) <= 64
    assert run_version(model, settings) == base  # stable
    # what a processor runs on, how often and how long do not change what the model finds
    assert run_version(model, {**settings, "name": "other", "max_attempts": 9}) == base
    assert run_version(model, {**settings, "threshold_db": 9.0}) != base
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"weights v1")
    with_file = run_version(model, {**settings, "model_path": str(weights)})
    assert with_file != base
    weights.write_bytes(b"weights v2")  # same path, new content: a new version
    assert run_version(model, {**settings, "model_path": str(weights)}) != with_file
    model.files = (weights,)  # type: ignore[attr-defined]  # a model naming its own files
    own = run_version(model, settings)
    weights.write_bytes(b"weights v3")
    assert run_version(model, settings) != own


def test_each_run_has_an_identity_in_store_and_message(
    make_station: Callable[..., Any], chirp_signal: Callable[..., np.ndarray], tmp_path: Path
) -> None:
    station = make_station()
    station.add_recording(chirp_signal(4.0, [1.0], seed=3))
    worker = ProcessorWorker(station.context(), "energy")
    assert worker.step().outcome == "processed"
    toml = _station_file(tmp_path, station.home.root)
    result = runner.invoke(app, ["reprocess", "-c", str(toml), "--model", "energy"])
    assert result.exit_code == 0, result.output
    with station.db.session() as s:
        runs = s.scalars(select(ModelRun).order_by(ModelRun.id)).all()
        bodies = [
            DetectionBody.model_validate(json.loads(payload)["body"])
            for payload in s.scalars(select(Message.payload).where(Message.kind == "detection"))
        ]
    assert len(runs) == 2 and len({r.run_id for r in runs}) == 2
    assert all(r.run_id and len(r.run_id) == 36 for r in runs)
    assert runs[0].model_version == runs[1].model_version == worker.run_version
    assert sorted(b.run_id or "" for b in bodies) == sorted(r.run_id or "" for r in runs)
    assert {b.model_version for b in bodies} == {worker.run_version}


def test_reprocess_runs_a_model_never_run_before_with_since(
    make_station: Callable[..., Any], chirp_signal: Callable[..., np.ndarray], tmp_path: Path
) -> None:
    station = make_station()
    now = datetime.now(UTC)
    old = station.add_recording(
        chirp_signal(4.0, [1.0], seed=3), started_at=now - timedelta(days=5)
    )
    recent = station.add_recording(
        chirp_signal(4.0, [2.0], seed=4), started_at=now - timedelta(hours=3)
    )
    worker = ProcessorWorker(station.context(), "energy")
    assert [worker.step().outcome for _ in range(2)] == ["processed", "processed"]
    toml = _station_file(tmp_path, station.home.root, SECOND)
    result = runner.invoke(
        app, ["reprocess", "-c", str(toml), "--model", "energy2", "--since", "2d"]
    )
    assert result.exit_code == 0, result.output
    assert "energy2: 1 recording reprocessed, 0 failed" in result.output
    with station.db.session() as s:
        runs = s.execute(select(ModelRun.recording_id, ModelRun.processor)).all()
        states = dict(s.execute(select(Recording.id, Recording.state)).all())
        versions = dict(s.execute(select(ModelRun.processor, ModelRun.model_version)).all())
    assert sorted(runs) == sorted([(old, "energy"), (recent, "energy"), (recent, "energy2")])
    assert states == {old: "processed", recent: "processed"}  # states left alone
    assert versions["energy"] != versions["energy2"]  # another threshold: another version
    result = runner.invoke(app, ["reprocess", "-c", str(toml), "--model", "energy2"])
    assert result.exit_code == 0, result.output
    assert "energy2: 2 recordings reprocessed, 0 failed" in result.output


def test_reprocess_leaves_recorded_recordings_of_a_new_model_to_its_worker(
    make_station: Callable[..., Any], chirp_signal: Callable[..., np.ndarray], tmp_path: Path
) -> None:
    station = make_station()
    station.add_recording(chirp_signal(4.0, [1.0], seed=3))  # recorded, not processed by anyone
    toml = _station_file(tmp_path, station.home.root, SECOND)
    result = runner.invoke(app, ["reprocess", "-c", str(toml), "--model", "energy2"])
    assert result.exit_code == 0, result.output
    assert "energy2: 0 recordings reprocessed" in result.output
    assert "1 recording not yet processed by energy2 left to its worker" in result.output


def test_a_recording_analysed_again_is_counted_once_by_the_page_and_the_summaries(
    make_station: Callable[..., Any], chirp_signal: Callable[..., np.ndarray], tmp_path: Path
) -> None:
    from fieldstation.store.health import detection_stats
    from fieldstation.web.queries import detections_page, recording_detections, recordings_page

    station = make_station()
    now = datetime.now(UTC)
    rid = station.add_recording(
        chirp_signal(4.0, [1.0, 2.5], seed=5), started_at=now - timedelta(hours=1)
    )
    assert ProcessorWorker(station.context(), "energy").step().outcome == "processed"
    toml = _station_file(tmp_path, station.home.root)
    result = runner.invoke(app, ["reprocess", "-c", str(toml), "--model", "energy"])
    assert result.exit_code == 0, result.output
    with station.db.session() as s:
        runs = s.scalars(select(ModelRun).where(ModelRun.recording_id == rid)).all()
        assert len(runs) == 2 and runs[0].n_detections == runs[1].n_detections > 0
        once = runs[1].n_detections
        rows, _ = recordings_page(s)
        assert [(r.recording.id, r.detections) for r in rows] == [(rid, once)]
        assert len(recording_detections(s, rid)) == once
        page, _ = detections_page(s)
        assert {row.detection.model_run_id for row in page} == {runs[1].id}
        stats = detection_stats(s, now - timedelta(days=1), now + timedelta(days=1))
        assert sum(count for _, count, _, _ in stats) == once
