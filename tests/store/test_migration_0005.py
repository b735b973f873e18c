"""Migration 0005 (decision 0135): ``model_runs.run_id``, from 0004 with rows, and again after
a half-finished attempt."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, inspect, text

from fieldstation.store import open_database
from fieldstation.store.db import alembic_config


def _at_0004_with_runs(path: Path) -> None:
    from alembic import command

    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as c:
        command.upgrade(alembic_config(c), "0004")
        c.execute(
            text(
                "INSERT INTO deployments (id, station_id, config_hash, config, "
                "fieldstation_version, started_at) VALUES (1, 's', 'h', '{}', 't', "
                "'2026-06-01 05:00:00.000000')"
            )
        )
        c.execute(
            text(
                "INSERT INTO recordings (id, deployment_id, sensor, path, session_id, "
                "chunk_index, start_frame, started_at, duration, media, rate, channels, frames, "
                "bytes, sha256, format, end_reason, state, file_state, pinned, attempts, "
                "created_at, extra) VALUES (1, 1, 'mic', 'a.wav', 's', 0, 0, "
                "'2026-06-01 05:00:00.000000', 1.0, 'audio', 48000, 1, 48000, 1, 'x', 'wav', "
                "'complete', 'processed', 'present', 0, 1, '2026-06-01 05:00:00.000000', '{}')"
            )
        )
        for run in (1, 2):
            c.execute(
                text(
                    "INSERT INTO model_runs (id, recording_id, processor, model, model_version, "
                    "status, started_at, duration, n_detections) VALUES (:id, 1, 'energy', "
                    "'energy', '1', 'ok', '2026-06-01 05:00:00.000000', 0.1, 0)"
                ),
                {"id": run},
            )
    engine.dispose()


def _run_ids(path: Path) -> list[tuple[int, str]]:
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as c:
        rows = [(int(i), str(r)) for i, r in c.execute(text("SELECT id, run_id FROM model_runs"))]
    engine.dispose()
    return sorted(rows)


def test_0004_to_0005_gives_earlier_runs_an_id(tmp_path: Path) -> None:
    path = tmp_path / "station.db"
    _at_0004_with_runs(path)
    open_database(path).dispose()
    assert _run_ids(path) == [(1, "run-1"), (2, "run-2")]
    engine = create_engine(f"sqlite:///{path}")
    indexes = {i["name"]: i for i in inspect(engine).get_indexes("model_runs")}
    engine.dispose()
    assert indexes["ix_model_runs_run_id"]["unique"]


def test_0005_half_applied_is_finished(tmp_path: Path) -> None:
    """Column added, killed before the index and the stamp: the stamp says 0004."""
    path = tmp_path / "station.db"
    _at_0004_with_runs(path)
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as c:
        c.execute(text("ALTER TABLE model_runs ADD COLUMN run_id VARCHAR(36)"))
    engine.dispose()
    open_database(path).dispose()
    assert _run_ids(path) == [(1, "run-1"), (2, "run-2")]
