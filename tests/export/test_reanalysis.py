"""Exports around a re-analysis (``fieldstation reprocess``: a new run of a processor on a
recording it had analysed): CSV, Parquet and SQL carry every run's detections once, with the
run's identity; a Raven table shows the latest run only. Exporting twice adds nothing."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from sqlalchemy import create_engine, text

from fieldstation.clock import VirtualClock
from fieldstation.export import run_export
from fieldstation.home import StationHome
from fieldstation.processing.model import Detection as Found
from fieldstation.store import Database
from fieldstation.store import processing as repo

from .conftest import Data
from .test_export import read_raven


def export(db: Database, home: StationHome, fmt: str, to: Any) -> int:
    return run_export(
        db, home_root=home.root, station="default", what="detections", fmt=fmt, to=str(to)
    ).rows


def reprocess(db: Database, clock: VirtualClock, recording_id: int, *labels: str) -> str:
    """A new run of ``birdnet`` on the recording, stored as ``fieldstation reprocess`` stores
    it (no claim), finding ``labels``; returns its run id."""
    with db.session() as session:
        run = repo.RunInfo(
            processor="birdnet",
            model="birdnet",
            model_version=f"2.4+{clock.now():%H%M%S}abcdef",
            started_at=clock.now(),
            duration=0.1,
            run_key=f"reprocess:{clock.now().isoformat()}",
        )
        pk = repo.complete(
            session,
            recording_id=recording_id,
            token=None,
            run=run,
            detections=[Found(label, 0.8, 4.0 + i, 5.0 + i) for i, label in enumerate(labels)],
            required=("birdnet",),
            destinations=[],
            station_id="default",
            now=clock.now(),
        )
        from fieldstation.store.models import ModelRun

        run_id = session.get(ModelRun, pk).run_id  # type: ignore[union-attr]
        assert run_id
        return run_id


def latest(rows: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """The documented reading: per (recording_id, processor), the rows of the highest
    model_run_id."""
    top: dict[tuple[int, str], int] = defaultdict(int)
    for r in rows:
        key = (int(r["recording_id"]), r["processor"])
        top[key] = max(top[key], int(r["model_run_id"]))
    return sorted(
        (int(r["recording_id"]), r["label"])
        for r in rows
        if int(r["model_run_id"]) == top[(int(r["recording_id"]), r["processor"])]
    )


def listed(db: Database) -> list[tuple[int, str]]:
    """What ``fieldstation detections`` lists (the latest runs)."""
    with db.session() as session:
        return sorted((d.recording_id, d.label) for d, _, _ in repo.list_run_detections(session))


def test_csv_and_parquet_carry_every_run_once_with_its_identity(
    db: Database, home: StationHome, data: Data, clock: VirtualClock, tmp_path: Path
) -> None:
    first = data.recording("owl", "wren")
    data.recording("jay")
    target, folder = tmp_path / "d.csv", tmp_path / "parquet"
    assert export(db, home, "csv", target) == 3
    assert export(db, home, "parquet", folder) == 3
    clock.advance(3600)
    run_id = reprocess(db, clock, first, "owl", "robin")
    assert export(db, home, "csv", target) == 2  # the re-analysis' two rows, once
    assert export(db, home, "parquet", folder) == 2
    assert export(db, home, "csv", target) == 0
    assert export(db, home, "parquet", folder) == 0
    with target.open(newline="") as handle:
        from_csv = list(csv.DictReader(handle))
    from_parquet = pq.read_table(folder).to_pylist()
    for found in (from_csv, from_parquet):
        assert sorted(int(r["id"]) for r in found) == [1, 2, 3, 4, 5]  # no duplicate
        again = [r for r in found if r["run_id"] == run_id]
        assert [r["label"] for r in again] == ["owl", "robin"]
        assert {str(r["reanalysis"]) for r in again} == {"True"}
        assert {str(r["reanalysis"]) for r in found if r["run_id"] != run_id} == {"False"}
        assert {r["model_version"] for r in again} == {"2.4+010000abcdef"}
        # keeping the highest model_run_id per recording and processor gives the listing
        assert latest(found) == listed(db) == [(1, "owl"), (1, "robin"), (2, "jay")]


def test_sql_carries_every_run_once(
    db: Database, home: StationHome, data: Data, clock: VirtualClock, postgres_url: str
) -> None:
    first = data.recording("owl", "wren")
    assert export(db, home, "sql", postgres_url) == 2
    run_id = reprocess(db, clock, first, "robin")
    assert export(db, home, "sql", postgres_url) == 1
    assert export(db, home, "sql", postgres_url) == 0
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            found = [
                dict(r._mapping)
                for r in connection.execute(
                    text(
                        "SELECT id, recording_id, processor, label, run_id, model_run_id, "
                        "reanalysis FROM fieldstation_detections ORDER BY id"
                    )
                )
            ]
    finally:
        engine.dispose()
    assert [(r["id"], r["label"], r["reanalysis"]) for r in found] == [
        (1, "owl", False),
        (2, "wren", False),
        (3, "robin", True),
    ]
    assert found[2]["run_id"] == run_id
    assert latest(found) == listed(db) == [(1, "robin")]


def test_raven_table_shows_the_latest_run_only(
    db: Database, home: StationHome, data: Data, clock: VirtualClock, tmp_path: Path
) -> None:
    first = data.recording("owl", "wren", path="data/mic/2026-06-01/a.wav")
    other = data.recording("jay", path="data/mic/2026-06-01/b.wav")
    folder = tmp_path / "raven"
    assert export(db, home, "raven", folder) == 3
    clock.advance(3600)
    run_id = reprocess(db, clock, first, "owl", "robin")
    assert export(db, home, "raven", folder) == 2
    table = read_raven(folder / "a.Table.1.selections.txt")
    assert [(r["Label"], r["Begin Time (s)"]) for r in table] == [
        ("owl", "4.000000"),
        ("robin", "5.000000"),
    ]  # the first run's owl and wren are gone: one analysis per table, no duplicate
    assert {r["Run ID"] for r in table} == {run_id}
    assert {r["Model Version"] for r in table} == {"2.4+010000abcdef"}
    assert export(db, home, "raven", folder) == 0
    assert read_raven(folder / "a.Table.1.selections.txt") == table
    # a re-analysis that finds nothing: the table goes, as for a recording with no detection
    clock.advance(3600)
    reprocess(db, clock, other)
    assert export(db, home, "raven", folder) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["a.Table.1.selections.txt"]


def test_raven_first_export_after_a_reprocess_lists_the_latest_run(
    db: Database, home: StationHome, data: Data, clock: VirtualClock, tmp_path: Path
) -> None:
    first = data.recording("owl", "wren", path="data/mic/2026-06-01/a.wav")
    reprocess(db, clock, first, "robin")
    folder = tmp_path / "raven"
    assert export(db, home, "raven", folder) == 1
    assert [r["Label"] for r in read_raven(folder / "a.Table.1.selections.txt")] == ["robin"]


def test_runs_export_tells_a_reanalysis_that_found_nothing(
    db: Database, home: StationHome, data: Data, clock: VirtualClock, tmp_path: Path
) -> None:
    """With ``--what runs`` beside the detections, the latest analysis is exact: a re-analysis
    that found nothing is a run with no rows."""
    first = data.recording("owl", "wren")
    data.recording("jay")
    runs, detections = tmp_path / "runs", tmp_path / "detections"
    assert (
        run_export(
            db, home_root=home.root, station="default", what="runs", fmt="parquet", to=str(runs)
        ).rows
        == 2
    )
    export(db, home, "parquet", detections)
    clock.advance(3600)
    run_id = reprocess(db, clock, first)  # a newer model hears nothing there
    assert (
        run_export(
            db, home_root=home.root, station="default", what="runs", fmt="parquet", to=str(runs)
        ).rows
        == 1
    )
    assert export(db, home, "parquet", detections) == 0  # nothing new to add
    table = pq.read_table(runs).to_pylist()
    assert [(r["recording_id"], r["n_detections"], r["reanalysis"]) for r in table] == [
        (1, 0, False),  # rows.add_model_run leaves n_detections 0
        (2, 0, False),
        (1, 0, True),
    ]
    assert table[2]["run_id"] == run_id and table[2]["status"] == "ok"
    latest_runs: dict[tuple[int, str], int] = {}
    for r in table:
        key = (r["recording_id"], r["processor"])
        latest_runs[key] = max(latest_runs.get(key, 0), r["id"])
    rows = pq.read_table(detections).to_pylist()
    current = sorted(
        (r["recording_id"], r["label"])
        for r in rows
        if latest_runs[(r["recording_id"], r["processor"])] == r["model_run_id"]
    )
    assert current == listed(db) == [(2, "jay")]


def test_targets_of_other_columns_are_refused_not_appended_to(
    db: Database, home: StationHome, data: Data, tmp_path: Path, postgres_url: str
) -> None:
    """Targets written by an earlier version (without the run columns) are left as they are,
    with an error that says what to do."""
    import pyarrow as pa
    import pytest

    from fieldstation.export import ExportError

    data.recording("owl")
    target = tmp_path / "old.csv"
    target.write_text("id,recording_id,label\n1,1,owl\n")
    with pytest.raises(ExportError, match="old.csv has the columns .*export to a new file"):
        export(db, home, "csv", target)
    assert target.read_text() == "id,recording_id,label\n1,1,owl\n"

    folder = tmp_path / "parquet"
    folder.mkdir()
    old_part = folder / "detections-000000000001-000000000001.parquet"
    pq.write_table(pa.table({"id": [1], "label": ["owl"]}), old_part)
    with pytest.raises(ExportError, match="export to a new folder"):
        export(db, home, "parquet", folder)
    assert [p.name for p in folder.iterdir()] == [old_part.name]

    engine = create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "CREATE TABLE fieldstation_detections (station varchar(64), id bigint, "
                    "label varchar(512), PRIMARY KEY (station, id))"
                )
            )
    finally:
        engine.dispose()
    with pytest.raises(ExportError, match="lacks the columns .*run_id.*ALTER TABLE"):
        export(db, home, "sql", postgres_url)
