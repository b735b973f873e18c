"""One export: new rows of one kind, in one format, to one target, and the cursor moved on.

The cursor of each target lives in ``state/exports.json`` in the station home (decision record
0131): key ``<what>|<format>|<target>``, value ``{"last_id": ..., ...}`` plus what the writer
keeps (the CSV's size). It is saved only after the writer made its output durable; a crash in
between is undone by the writer at the next export (see :mod:`.writers`), so exporting twice
never duplicates a row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fieldstation.alerts.state import load_state, save_state, state_path
from fieldstation.export.sources import (
    count_rows,
    pages,
    reanalysed_recordings,
    recording_detections,
    top_run,
)
from fieldstation.export.writers import FORMATS, RavenWriter, make_writer

__all__ = ["ExportError", "ExportResult", "cursor_key", "run_export"]

Progress = Callable[[int, int], None]
"""``progress(done, total)``: rows written so far of the rows to write."""


class ExportError(ValueError):
    """An export that cannot run as asked (format, target, kind); the message says the fix."""


@dataclass(frozen=True)
class ExportResult:
    """``rows`` written; ``last_id``: the cursor after the export; ``target``: where."""

    rows: int
    last_id: int
    target: str


def cursor_key(what: str, fmt: str, to: str) -> str:
    """The key of one export target's cursor."""
    target = to if "://" in to else str(Path(to).expanduser().resolve())
    return f"{what}|{fmt}|{target}"


def run_export(
    db: Any,
    *,
    home_root: Path,
    station: str,
    what: str,
    fmt: str,
    to: str,
    since: datetime | None = None,
    incremental: bool = True,
    page: int = 50_000,
    progress: Progress | None = None,
) -> ExportResult:
    """Export rows of ``what`` (detections, recordings, readings, runs) newer than the target's
    cursor (all rows when ``incremental`` is False) and with time ``>= since`` (aware UTC,
    optional) as ``fmt`` to ``to`` (a path, or a database URL for ``sql``).

    Raises :class:`ExportError` for a bad format, kind or target, and
    :class:`~fieldstation.alerts.state.StateFileError` for an unreadable cursor file."""
    from fieldstation.export.sources import COLUMNS

    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if what not in COLUMNS:
        raise ExportError(f"cannot export {what!r}: choose {', '.join(COLUMNS)}")
    path = state_path(home_root, "exports")
    cursors = load_state(path) or {}
    key = cursor_key(what, fmt, to)
    state: dict[str, Any] = dict(cursors.get(key, {})) if incremental else {}
    after = int(state.get("last_id", 0))
    written = 0
    latest_only = fmt == "raven"  # a Raven table shows the latest run of each processor
    with db.session() as session:
        total = count_rows(session, what, after, since, latest_only=latest_only)
        last = after

        def detections_of(recording_ids: list[int]) -> list[dict[str, Any]]:
            return recording_detections(session, recording_ids, last)

        try:
            writer = make_writer(
                fmt, what, to, station=station, state=state, detections_of=detections_of
            )
        except ValueError as error:
            raise ExportError(str(error)) from None
        if progress is not None:
            progress(0, total)
        runs = top_run(session)
        for columns in pages(session, what, after, since, page=page, latest_only=latest_only):
            last = int(columns["id"][-1])
            written += writer.write(columns)
            if progress is not None:
                progress(written, total)
        if isinstance(writer, RavenWriter):
            # a re-analysis may have changed a table without adding a detection (it found
            # fewer, or nothing): rewrite (or remove) the tables it touched
            reanalysed = reanalysed_recordings(session, int(state.get("last_run", 0)), runs)
            writer.refresh(list(reanalysed), paths=reanalysed)
        kept = writer.finish()
        if isinstance(writer, RavenWriter):
            kept["last_run"] = runs
    if incremental:
        cursors = load_state(path) or {}  # other targets may have moved on meanwhile
        cursors[key] = {"last_id": last, **kept}
        save_state(path, cursors)
    return ExportResult(rows=written, last_id=last, target=to)
