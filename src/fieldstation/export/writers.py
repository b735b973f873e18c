"""Export formats: CSV, Parquet, Raven selection tables and an SQL database.

Every writer takes pages of columns (:mod:`fieldstation.export.sources`) and is safe to run
again after a crash that came between its write and the saving of the export's cursor
(``state``: what the writer keeps in the cursor of its target):

- **csv**: one file, appended to, with a header when new; the cursor keeps the file's size
  after the last finished export, and a file longer than that is cut back first.
- **parquet**: a folder of part files ``<what>-<first id>-<last id>.parquet`` (Arrow types,
  times as ``timestamp[us, UTC]``); parts beginning after the cursor are removed first.
  Read all parts back with ``pyarrow.parquet.read_table(folder)``.
- **raven**: detections only; a folder with one Raven selection table per recording,
  ``<recording file stem>.Table.1.selections.txt``: tab-separated, columns ``Selection``,
  ``View``, ``Channel``, ``Begin Time (s)``, ``End Time (s)``, ``Low Freq (Hz)``,
  ``High Freq (Hz)`` (Raven Pro's own), then ``Label``, ``Score``, ``Processor``,
  ``Detected At``, ``Model Version``, ``Run ID``. A table holds the detections of the
  **latest run** of each processor on its recording (a re-analysis replaces the selections
  of the run before it). A recording with new detections, or with a re-analysis, has its
  table rewritten whole, so a second export adds no duplicate; a table whose recording's
  latest runs found nothing is removed.
- **sql**: a SQLAlchemy URL; table ``fieldstation_<what>`` (created if missing) with the
  columns plus ``station``; primary key (station, id). Each page is one transaction that
  deletes the page's ids and inserts them, so a repeated page replaces itself.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from fieldstation.home import fsync_dir

__all__ = [
    "FORMATS",
    "RAVEN_COLUMNS",
    "CsvWriter",
    "ExportWriter",
    "ParquetWriter",
    "RavenWriter",
    "SqlWriter",
    "make_writer",
]

FORMATS = ("csv", "parquet", "raven", "sql")

RAVEN_COLUMNS = (
    "Selection",
    "View",
    "Channel",
    "Begin Time (s)",
    "End Time (s)",
    "Low Freq (Hz)",
    "High Freq (Hz)",
    "Label",
    "Score",
    "Processor",
    "Detected At",
    "Model Version",
    "Run ID",
)
"""Columns of a Raven selection table written here: Raven Pro's seven, then ours."""


class ExportWriter(Protocol):
    """Writes pages of one export to one target."""

    def write(self, page: dict[str, list[Any]]) -> int:
        """Write one page; returns rows written."""
        ...

    def finish(self) -> dict[str, Any]:
        """Make everything durable; returns the writer's part of the new cursor."""
        ...


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


class CsvWriter:
    """Appends rows to one CSV file (module docstring)."""

    def __init__(self, path: Path, columns: Sequence[str], state: dict[str, Any]) -> None:
        self.path = path
        self.columns = list(columns)
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = int(state.get("bytes", 0))
        if path.exists() and path.stat().st_size > 0:
            with path.open(newline="", encoding="utf-8") as handle:
                header = next(csv.reader(handle), [])
            if header != self.columns:  # checked before anything is cut: not our file
                raise ValueError(
                    f"{path} has the columns {','.join(header)}, not this export's "
                    f"{','.join(self.columns)} (written by another version or kind): export "
                    "to a new file, or move this one away"
                )
        if path.exists() and path.stat().st_size > kept:
            with path.open("r+b") as handle:  # an export that crashed before its cursor
                handle.truncate(kept)
        new = not path.exists() or path.stat().st_size == 0
        self._handle = path.open("a", newline="", encoding="utf-8")
        self._csv = csv.writer(self._handle)
        if new:
            self._csv.writerow(self.columns)

    def write(self, page: dict[str, list[Any]]) -> int:
        rows = list(zip(*(page[c] for c in self.columns), strict=True))
        self._csv.writerows([[_text(v) for v in row] for row in rows])
        return len(rows)

    def finish(self) -> dict[str, Any]:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        return {"bytes": self.path.stat().st_size}


ARROW_TYPES: dict[str, str] = {
    **dict.fromkeys(
        ("id", "recording_id", "chunk_index", "rate", "channels", "frames", "bytes"), "int64"
    ),
    **dict.fromkeys(("score", "start", "end", "low_hz", "high_hz", "duration", "value"), "float64"),
    **dict.fromkeys(("detected_at", "recording_started_at", "started_at", "measured_at"), "time"),
    "model_run_id": "int64",
    "n_detections": "int64",
    "reanalysis": "bool",
}
"""Arrow type of each exported column that is not a string: the same for every part, so a
folder of parts reads back as one table (a page whose optional column is all null would
otherwise get Arrow's ``null`` type and clash with the next part's)."""


def _arrow_table(page: dict[str, list[Any]]) -> Any:
    import pyarrow as pa

    types = {
        "int64": pa.int64(),
        "float64": pa.float64(),
        "time": pa.timestamp("us", tz="UTC"),
        "bool": pa.bool_(),
    }
    arrays = {
        name: pa.array(values, type=types.get(ARROW_TYPES.get(name, ""), pa.string()))
        for name, values in page.items()
    }
    return pa.table(arrays)


class ParquetWriter:
    """One Parquet part file per page in a folder (module docstring)."""

    def __init__(
        self, folder: Path, what: str, state: dict[str, Any], columns: Sequence[str]
    ) -> None:
        import pyarrow.parquet as pq

        self.folder = folder
        self.what = what
        folder.mkdir(parents=True, exist_ok=True)
        after = int(state.get("last_id", 0))
        parts = sorted(folder.glob(f"{what}-*-*.parquet"))
        if parts and pq.read_schema(parts[0]).names != list(columns):
            # a reader takes the first part's columns and would drop the new ones silently
            raise ValueError(
                f"{folder} holds parts with the columns "
                f"{','.join(pq.read_schema(parts[0]).names)}, not this export's "
                f"{','.join(columns)} (written by another version): export to a new folder"
            )
        for part in parts:
            first = part.stem.split("-")[1]
            if first.isdigit() and int(first) > after:
                part.unlink()  # written by an export that crashed before its cursor

    def write(self, page: dict[str, list[Any]]) -> int:
        import pyarrow.parquet as pq

        ids = page["id"]
        target = self.folder / f"{self.what}-{ids[0]:012d}-{ids[-1]:012d}.parquet"
        tmp = target.with_name(f".{target.name}.tmp")
        pq.write_table(_arrow_table(page), tmp, compression="zstd")
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        return len(ids)

    def finish(self) -> dict[str, Any]:
        fsync_dir(self.folder)
        return {}


class RavenWriter:
    """One Raven selection table per recording (module docstring). ``detections_of(ids)``
    gives the detections of the latest runs of those recordings as rows of columns (from the
    database, :func:`~fieldstation.export.sources.recording_detections`)."""

    def __init__(self, folder: Path, detections_of: Any) -> None:
        self.folder = folder
        self.detections_of = detections_of
        folder.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def table_name(recording_path: str) -> str:
        """``data/mic/2026-06-01/x.wav`` -> ``x.Table.1.selections.txt``."""
        return f"{Path(recording_path).stem}.Table.1.selections.txt"

    def write(self, page: dict[str, list[Any]]) -> int:
        self.refresh(sorted(set(page["recording_id"])))
        return len(page["id"])

    def refresh(self, recording_ids: list[int], paths: dict[int, str] | None = None) -> None:
        """Rewrite the tables of ``recording_ids`` from their latest runs' detections; the
        table of one whose latest runs found nothing (``paths``: recording id -> path, to
        name it) is removed."""
        by_recording: dict[int, list[dict[str, Any]]] = {}
        for row in self.detections_of(recording_ids):
            by_recording.setdefault(row["recording_id"], []).append(row)
        for recording_id, path in (paths or {}).items():
            if recording_id not in by_recording:
                (self.folder / self.table_name(path)).unlink(missing_ok=True)
        for rows in by_recording.values():
            rows.sort(key=lambda r: (r["start"], r["id"]))
            target = self.folder / self.table_name(rows[0]["recording_path"])
            tmp = target.with_name(f".{target.name}.tmp")
            with tmp.open("w", encoding="utf-8", newline="") as handle:
                handle.write("\t".join(RAVEN_COLUMNS) + "\n")
                for number, row in enumerate(rows, start=1):
                    fields = [
                        str(number),
                        "Spectrogram 1",
                        "1",
                        f"{row['start']:.6f}",
                        f"{row['end']:.6f}",
                        f"{row['low_hz'] or 0.0:.1f}",
                        f"{row['high_hz'] or 0.0:.1f}",
                        row["label"].replace("\t", " "),
                        f"{row['score']:.4f}",
                        row["processor"],
                        row["detected_at"].isoformat(),
                        row["model_version"],
                        row["run_id"] or "",
                    ]
                    handle.write("\t".join(fields) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)

    def finish(self) -> dict[str, Any]:
        fsync_dir(self.folder)
        return {}


class SqlWriter:
    """Rows into table ``fieldstation_<what>`` of a SQLAlchemy URL (module docstring)."""

    def __init__(self, url: str, what: str, station: str) -> None:
        from sqlalchemy import create_engine

        from fieldstation.export.sources import COLUMNS

        self.engine = create_engine(url)
        self.station = station
        self.table = _sql_table(what, COLUMNS[what])
        self.table.metadata.create_all(self.engine)
        from sqlalchemy import inspect

        there = {c["name"] for c in inspect(self.engine).get_columns(self.table.name)}
        missing = [c.name for c in self.table.columns if c.name not in there]
        if missing:
            self.engine.dispose()
            raise ValueError(
                f"table {self.table.name} lacks the columns {', '.join(missing)} (made by an "
                "earlier version): add them (ALTER TABLE) or export to another database"
            )

    def write(self, page: dict[str, list[Any]]) -> int:
        from sqlalchemy import delete, insert

        names = list(page)
        rows = [
            {"station": self.station, **dict(zip(names, values, strict=True))}
            for values in zip(*(page[n] for n in names), strict=True)
        ]
        with self.engine.begin() as connection:
            connection.execute(
                delete(self.table).where(
                    self.table.c.station == self.station, self.table.c.id.in_(page["id"])
                )
            )
            connection.execute(insert(self.table), rows)
        return len(rows)

    def finish(self) -> dict[str, Any]:
        self.engine.dispose()
        return {}


def _sql_table(what: str, names: Sequence[str]) -> Any:
    """The table of ``what``: column types from :mod:`.sources`' columns."""
    from sqlalchemy import (
        BigInteger,
        Boolean,
        Column,
        DateTime,
        Float,
        MetaData,
        String,
        Table,
    )

    floats = {"score", "start", "end", "low_hz", "high_hz", "duration", "value"}
    times = {"detected_at", "recording_started_at", "started_at", "measured_at"}
    ints = {
        "id",
        "recording_id",
        "model_run_id",
        "n_detections",
        "chunk_index",
        "rate",
        "channels",
        "frames",
        "bytes",
    }
    columns: list[Any] = [Column("station", String(64), primary_key=True)]
    for name in names:
        if name == "id":
            columns.append(Column("id", BigInteger, primary_key=True, autoincrement=False))
        elif name in floats:
            columns.append(Column(name, Float))
        elif name in times:
            columns.append(Column(name, DateTime(timezone=True)))
        elif name in ints:
            columns.append(Column(name, BigInteger))
        elif name == "reanalysis":
            columns.append(Column(name, Boolean))
        else:
            columns.append(Column(name, String(512)))
    return Table(f"fieldstation_{what}", MetaData(), *columns)


def make_writer(
    fmt: str,
    what: str,
    to: str,
    *,
    station: str,
    state: dict[str, Any],
    detections_of: Any = None,
) -> ExportWriter:
    """The writer of ``fmt`` for target ``to``. Raises ValueError for a format that cannot
    take ``what`` (raven: detections only) or a target of the wrong form."""
    from fieldstation.export.sources import COLUMNS

    if fmt == "csv":
        return CsvWriter(Path(to), COLUMNS[what], state)
    if fmt == "parquet":
        return ParquetWriter(Path(to), what, state, COLUMNS[what])
    if fmt == "raven":
        if what != "detections":
            raise ValueError("Raven selection tables hold detections only: use --what detections")
        return RavenWriter(Path(to), detections_of)
    if fmt == "sql":
        if "://" not in to:
            raise ValueError(
                f"--to {to!r} is not a database URL; give one such as "
                "postgresql+psycopg://user@host/db or sqlite:////path/to/file.db"
            )
        return SqlWriter(to, what, station)
    raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
