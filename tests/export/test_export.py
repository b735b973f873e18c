"""Exports read back by their readers: pyarrow for Parquet, a Raven selection-table parser,
the csv module, PostgreSQL; incremental exports never duplicate a row."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import create_engine, text

from fieldstation.clock import VirtualClock
from fieldstation.export import ExportError, run_export
from fieldstation.home import StationHome
from fieldstation.store import Database

from .conftest import Data

RAVEN_STANDARD = (
    "Selection",
    "View",
    "Channel",
    "Begin Time (s)",
    "End Time (s)",
    "Low Freq (Hz)",
    "High Freq (Hz)",
)
"""The columns of a Raven Pro selection table, in Raven's order."""


def read_raven(path: Path) -> list[dict[str, str]]:
    """A Raven selection table: tab-separated text, a header line, one selection per line,
    Raven's standard columns first and in order, selections numbered from 1."""
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        assert tuple(reader.fieldnames or ())[: len(RAVEN_STANDARD)] == RAVEN_STANDARD
        found = list(reader)
    assert [int(r["Selection"]) for r in found] == list(range(1, len(found) + 1))
    for r in found:
        assert r["View"].startswith("Spectrogram") and int(r["Channel"]) >= 1
        assert float(r["Begin Time (s)"]) <= float(r["End Time (s)"])
        assert float(r["Low Freq (Hz)"]) <= float(r["High Freq (Hz)"])
    return found


def export(db: Database, home: StationHome, what: str, fmt: str, to: Any, **kw: Any) -> int:
    return run_export(
        db, home_root=home.root, station="default", what=what, fmt=fmt, to=str(to), **kw
    ).rows


def test_parquet_read_back_by_pyarrow_and_incremental(
    db: Database, home: StationHome, data: Data, clock: VirtualClock, tmp_path: Path
) -> None:
    data.recording("owl", "wren", "robin")
    folder = tmp_path / "parquet"
    assert export(db, home, "detections", "parquet", folder) == 3
    clock.advance(60)
    data.recording("owl", "jay")
    assert export(db, home, "detections", "parquet", folder) == 2
    assert export(db, home, "detections", "parquet", folder) == 0
    table = pq.read_table(folder)
    assert table.num_rows == 5
    assert sorted(table.column("id").to_pylist()) == [1, 2, 3, 4, 5]  # no duplicate
    assert table.schema.field("detected_at").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("score").type == pa.float64()
    assert sorted(table.column("label").to_pylist()) == ["jay", "owl", "owl", "robin", "wren"]
    assert set(table.column("processor").to_pylist()) == {"birdnet"}


def test_parquet_part_of_a_crashed_export_is_replaced(
    db: Database, home: StationHome, data: Data, tmp_path: Path
) -> None:
    data.recording("owl")
    folder = tmp_path / "parquet"
    export(db, home, "detections", "parquet", folder)
    data.recording("wren", "jay")
    state = (home.root / "state" / "exports.json").read_bytes()
    export(db, home, "detections", "parquet", folder)
    (home.root / "state" / "exports.json").write_bytes(state)  # crash before the cursor
    assert export(db, home, "detections", "parquet", folder) == 2
    assert sorted(pq.read_table(folder).column("id").to_pylist()) == [1, 2, 3]


def test_raven_one_table_per_recording_rewritten_without_duplicates(
    db: Database, home: StationHome, data: Data, tmp_path: Path
) -> None:
    first = data.recording("owl", "wren", path="data/mic/2026-06-01/a.wav")
    data.recording("jay", path="data/mic/2026-06-01/b.wav")
    folder = tmp_path / "raven"
    assert export(db, home, "detections", "raven", folder) == 3
    a = read_raven(folder / "a.Table.1.selections.txt")
    assert [(r["Label"], r["Begin Time (s)"], r["End Time (s)"]) for r in a] == [
        ("owl", "0.000000", "1.000000"),
        ("wren", "2.000000", "3.000000"),
    ]
    assert a[0]["Low Freq (Hz)"] == "2000.0" and a[0]["High Freq (Hz)"] == "8000.0"
    assert len(read_raven(folder / "b.Table.1.selections.txt")) == 1
    data.detections_on(first, "robin", processor="energy")  # a second processor's first run
    assert export(db, home, "detections", "raven", folder) == 1
    again = read_raven(folder / "a.Table.1.selections.txt")
    assert [r["Label"] for r in again] == ["owl", "wren", "robin"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "a.Table.1.selections.txt",
        "b.Table.1.selections.txt",
    ]


def test_csv_incremental_and_cut_back_after_a_crash(
    db: Database, home: StationHome, data: Data, clock: VirtualClock, tmp_path: Path
) -> None:
    data.readings(3)
    target = tmp_path / "out" / "readings.csv"
    assert export(db, home, "readings", "csv", target) == 3
    with target.open("a") as handle:
        handle.write("99,bme,temperature,Cel,1.0,2026-06-01T00:00:00+00:00\n")  # half an export
    data.readings(2)
    assert export(db, home, "readings", "csv", target) == 2
    with target.open(newline="") as handle:
        found = list(csv.DictReader(handle))
    assert [int(r["id"]) for r in found] == [1, 2, 3, 4, 5]
    assert found[0]["measured_at"] == "2026-06-01T00:00:00+00:00"


def test_since_and_full(
    db: Database, home: StationHome, data: Data, clock: VirtualClock, tmp_path: Path
) -> None:
    data.recording("old")
    clock.advance(3 * 86400)
    data.recording("new")
    target = tmp_path / "d.csv"
    since = clock.now() - __import__("datetime").timedelta(days=2)
    assert export(db, home, "detections", "csv", target, since=since) == 1
    assert export(db, home, "detections", "csv", tmp_path / "all.csv", incremental=False) == 2
    assert export(db, home, "detections", "csv", tmp_path / "all.csv", incremental=False) == 2


def test_bad_requests_say_what_to_do(db: Database, home: StationHome, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="detections only"):
        export(db, home, "readings", "raven", tmp_path)
    with pytest.raises(ExportError, match="not a database URL"):
        export(db, home, "readings", "sql", tmp_path)
    with pytest.raises(ExportError, match="choose one of csv, parquet, raven, sql"):
        export(db, home, "readings", "xlsx", tmp_path)


def test_sql_to_postgresql_twice_and_after_a_crash(
    db: Database, home: StationHome, data: Data, clock: VirtualClock, postgres_url: str
) -> None:
    data.recording("owl", "wren")
    assert export(db, home, "detections", "sql", postgres_url) == 2
    data.recording("jay")
    state = (home.root / "state" / "exports.json").read_bytes()
    assert export(db, home, "detections", "sql", postgres_url) == 1
    (home.root / "state" / "exports.json").write_bytes(state)  # crash before the cursor
    assert export(db, home, "detections", "sql", postgres_url) == 1
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            got = connection.execute(
                text("SELECT id, label, detected_at FROM fieldstation_detections ORDER BY id")
            ).all()
    finally:
        engine.dispose()
    assert [(r[0], r[1]) for r in got] == [(1, "owl"), (2, "wren"), (3, "jay")]
    assert got[0][2].utcoffset() is not None  # stored with its time zone


def test_parquet_parts_with_an_all_null_column_read_back_as_one_table(
    db: Database, home: StationHome, data: Data, clock: VirtualClock, tmp_path: Path
) -> None:
    """A part whose optional column is all null (no frequency band: BirdNET-only pages) and a
    part where it has values read back together: every part has the same Arrow schema."""
    first = data.recording("owl")
    with db.session() as session:
        from fieldstation.store.models import Detection

        for detection in session.query(Detection).filter(Detection.recording_id == first):
            detection.low_hz = detection.high_hz = None
    folder = tmp_path / "parquet"
    assert export(db, home, "detections", "parquet", folder) == 1
    clock.advance(60)
    data.recording("wren")
    assert export(db, home, "detections", "parquet", folder) == 1
    table = pq.read_table(folder)
    assert table.schema.field("low_hz").type == pa.float64()
    assert sorted(table.column("low_hz").to_pylist(), key=str) == [2000.0, None]
