"""``recordings``, ``detections``, ``sessions``, ``pin`` and ``unpin``: looking at and keeping
the data."""

from __future__ import annotations

import csv
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from fieldstation.cli.common import (
    EXIT_INVALID,
    ConfigOpt,
    LegacyConfigArg,
    config_path,
    console,
    err_console,
    format_score,
    home_of,
    load_or_exit,
    plural,
)
from fieldstation.config.units import parse_since

if TYPE_CHECKING:
    from fieldstation.store import Database

__all__ = ["parse_since", "register", "since_or_exit"]

SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="Only since this time: ISO 8601 (UTC unless it names a zone) or an "
        "age like '2d', '6h'.",
    ),
]
LimitOpt = Annotated[int, typer.Option("--limit", min=0, help="At most this many rows (0: all).")]
DETECTIONS_TABLE_LIMIT = 100
"""Rows ``detections`` shows in its table when no ``--limit`` is given (CSV and JSON: all)."""
DetectionLimitOpt = Annotated[
    int | None,
    typer.Option(
        "--limit",
        min=0,
        help=f"At most this many rows (0: all; default {DETECTIONS_TABLE_LIMIT} in the table, "
        "all with --csv or --json). When rows are left out, stderr says so.",
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print JSON (for scripts) instead of a table.")
]


def since_or_exit(text: str | None) -> datetime | None:
    """``--since TEXT`` as an aware UTC time (see :func:`parse_since`), None when not given;
    exits 2 with both accepted forms when it is neither."""
    if text is None:
        return None
    try:
        return parse_since(text, datetime.now(UTC))
    except ValueError as error:
        err_console.print(f"[red]{error}[/]")
        raise typer.Exit(EXIT_INVALID) from None


def _open(config_path: Path | None) -> Database:
    """The station database of the station file, or exit 1 when the station never ran."""
    from fieldstation.store import open_database

    home = home_of(load_or_exit(config_path))
    if not home.database.exists():
        run = " ".join(["fieldstation run", *(["-c", str(config_path)] if config_path else [])])
        err_console.print(
            f"[red]no station database at {home.database}[/]; run the station first (`{run}`)"
        )
        raise typer.Exit(1)
    return open_database(home.database)


def recordings(
    legacy: LegacyConfigArg = None,
    config: ConfigOpt = None,
    state: Annotated[
        str | None,
        typer.Option(
            "--state",
            help="recorded, processing, processed, failed, quarantined; or present, "
            "deleted, missing (the file).",
        ),
    ] = None,
    since: SinceOpt = None,
    limit: LimitOpt = 50,
    as_json: JsonOpt = False,
) -> None:
    """List recordings, newest first, with their detection counts and file state."""
    from fieldstation.store.processing import latest_detection_counts
    from fieldstation.store.retention import list_recordings

    config = config_path(config, legacy, "recordings")
    states = ("recorded", "processing", "processed", "failed", "quarantined")
    file_states = ("present", "deleted", "missing")
    if state is not None and state not in states + file_states:
        err_console.print(f"[red]--state {state!r}[/]: one of {', '.join(states + file_states)}")
        raise typer.Exit(EXIT_INVALID)
    after = since_or_exit(since)
    db = _open(config)
    try:
        with db.session() as session:
            rows = list_recordings(
                session,
                state=state if state in states else None,
                file_state=state if state in file_states else None,
                since=after,
                limit=limit or None,
            )
            # the latest run of each processor only: a reprocessed recording is not counted twice
            latest = latest_detection_counts(session, [rec.id for rec, _ in rows])
            rows = [(rec, latest.get(rec.id, 0)) for rec, _ in rows]
    finally:
        db.dispose()
    if as_json:
        from fieldstation.cli.json_output import RecordingList, RecordingRow, dump

        dump(
            RecordingList(
                recordings=[
                    RecordingRow(
                        id=rec.id,
                        sensor=rec.sensor,
                        media=rec.media,
                        started_at=rec.started_at,
                        duration_s=rec.duration,
                        state=rec.state,
                        file_state=rec.file_state,
                        delete_reason=rec.delete_reason,
                        pinned=bool(rec.pinned),
                        detections=n,
                        path=rec.path,
                    )
                    for rec, n in rows
                ]
            )
        )
        return
    table = Table(title=plural(len(rows), "recording"))
    for column in ("id", "sensor", "started (UTC)", "s", "state", "file", "pin", "det"):
        table.add_column(column)
    table.add_column("path", overflow="fold")  # whole, folded: never cut to "data/mic/de…"
    for rec, n in rows:
        file = rec.file_state if rec.file_state != "deleted" else f"deleted ({rec.delete_reason})"
        table.add_row(
            str(rec.id),
            rec.sensor if rec.media == "audio" else f"{rec.sensor} ({rec.media})",
            rec.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"{rec.duration:.1f}",
            rec.state,
            file,
            "yes" if rec.pinned else "",
            str(n),
            rec.path,
        )
    console.print(table)


def detections(
    legacy: LegacyConfigArg = None,
    config: ConfigOpt = None,
    label: Annotated[str | None, typer.Option("--label", help="Only this label.")] = None,
    min_score: Annotated[
        float | None, typer.Option("--min-score", min=0, max=1, help="Only scores at least this.")
    ] = None,
    since: SinceOpt = None,
    limit: DetectionLimitOpt = None,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="CSV on stdout instead of a table.")
    ] = False,
    as_json: JsonOpt = False,
    all_runs: Annotated[
        bool,
        typer.Option(
            "--all-runs",
            help="Every model run's detections; by default only the latest run of each "
            "processor on each recording (after 'reprocess').",
        ),
    ] = False,
) -> None:
    """List detections, newest first, of the latest model run of each processor on each
    recording (CSV for spreadsheets, JSON for scripts)."""
    from fieldstation.store.processing import list_run_detections

    config = config_path(config, legacy, "detections")
    after = since_or_exit(since)
    if limit is None:
        limit = 0 if (as_csv or as_json) else DETECTIONS_TABLE_LIMIT
    db = _open(config)
    try:
        with db.session() as session:
            found = list_run_detections(
                session,
                label=label,
                min_score=min_score,
                since=after,
                limit=limit + 1 if limit else None,  # one more: tells whether rows are left out
                all_runs=all_runs,
            )
    finally:
        db.dispose()
    cut = bool(limit) and len(found) > limit
    rows = [(det, rec) for det, rec, _ in found[: limit or None]]
    runs = [run for _, _, run in found[: limit or None]]
    if cut:
        err_console.print(
            f"[yellow]only the newest {plural(limit, 'detection')} shown: more match "
            "(--limit 0 for all)[/]",
            highlight=False,
        )
    header = [
        "id",
        "detected_at",
        "label",
        "score",
        "start_s",
        "end_s",
        "low_hz",
        "high_hz",
        "recording_id",
        "sensor",
        "path",
        "file_state",
        "processor",
        "model",
        "model_version",
        "run_id",
    ]
    if as_json:
        from fieldstation.cli.json_output import DetectionList, DetectionRow, dump

        dump(
            DetectionList(
                detections=[
                    DetectionRow(
                        id=det.id,
                        detected_at=det.detected_at,
                        label=det.label,
                        score=det.score,
                        start_s=det.start,
                        end_s=det.end,
                        low_hz=det.low_hz,
                        high_hz=det.high_hz,
                        recording_id=rec.id,
                        sensor=rec.sensor,
                        path=rec.path,
                        file_state=rec.file_state,
                    )
                    for det, rec in rows
                ]
            )
        )
        return
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(header)
        for (det, rec), run in zip(rows, runs, strict=True):
            writer.writerow(
                [
                    det.id,
                    det.detected_at.isoformat(),
                    det.label,
                    f"{det.score:.6g}",
                    det.start,
                    det.end,
                    det.low_hz if det.low_hz is not None else "",
                    det.high_hz if det.high_hz is not None else "",
                    rec.id,
                    rec.sensor,
                    rec.path,
                    rec.file_state,
                    run.processor,
                    run.model,
                    run.model_version,
                    run.run_id or f"run-{run.id}",
                ]
            )
        return
    table = Table(title=plural(len(rows), "detection"))
    for column in ("id", "detected (UTC)", "label", "score", "start-end s", "recording", "file"):
        table.add_column(column)
    for det, rec in rows:
        table.add_row(
            str(det.id),
            det.detected_at.strftime("%Y-%m-%d %H:%M:%S"),
            det.label,
            format_score(det.score),
            f"{det.start:.2f}-{det.end:.2f}",
            str(rec.id),
            rec.file_state,
        )
    console.print(table)


def _set_pin(config: Path | None, recording_id: int, pinned: bool) -> None:
    from fieldstation.store.retention import RecordingNotFoundError, set_pinned

    db = _open(config)
    try:
        with db.session() as session:
            rec = set_pinned(session, recording_id, pinned)
            file_state, path = rec.file_state, rec.path
    except RecordingNotFoundError as error:
        err_console.print(f"[red]{error}[/]")
        raise typer.Exit(EXIT_INVALID) from None
    finally:
        db.dispose()
    verb = "pinned (retention never deletes it)" if pinned else "unpinned"
    console.print(f"recording {recording_id} {verb}: {path}")
    if file_state != "present":
        err_console.print(f"[yellow]note: its file is {file_state}[/]")


RecordingIdArg = Annotated[int, typer.Argument(help="Recording id (see 'recordings').")]


def pin(recording_id: RecordingIdArg, config: ConfigOpt = None) -> None:
    """Pin a recording: retention never deletes it."""
    _set_pin(config, recording_id, True)


def unpin(recording_id: RecordingIdArg, config: ConfigOpt = None) -> None:
    """Unpin a recording: retention rules apply to it again."""
    _set_pin(config, recording_id, False)


def sessions(
    legacy: LegacyConfigArg = None,
    config: ConfigOpt = None,
    capture: Annotated[
        str | None,
        typer.Option("--id", help="Print the manifest (JSON) of this session id."),
    ] = None,
    write: Annotated[
        bool,
        typer.Option(
            "--write",
            help="With --id: also write the manifest to data/sessions/<name>/<id>.json.",
        ),
    ] = False,
    since: SinceOpt = None,
) -> None:
    """List sessions of several streams ([[sessions]]), or print one's manifest: every chunk of
    every stream with its offset from the session anchor in seconds and frames."""
    import json

    from fieldstation.recording.chunk import write_json_atomic
    from fieldstation.recording.sessions import capture_manifest, list_captures

    config = config_path(config, legacy, "sessions")
    after = since_or_exit(since)
    station = load_or_exit(config)
    db = _open(config)
    try:
        with db.session() as session:
            if capture is None:
                found = list_captures(session, since=after)
                manifest = None
            else:
                manifest = capture_manifest(
                    session, capture, _slow_members(station, session, capture)
                )
    finally:
        db.dispose()
    if capture is None:
        from fieldstation.config.units import format_bytes

        table = Table(title=plural(len(found), "session"))
        for column in ("id", "first chunk (UTC)", "sensors", "chunks", "bytes"):
            table.add_column(column)
        for c in found:
            table.add_row(
                c["capture_id"],
                c["first"],
                ", ".join(c["sensors"]),
                str(c["chunks"]),
                format_bytes(c["bytes"]),
            )
        console.print(table)
        return
    if manifest is None:
        err_console.print(f"[red]no chunk belongs to session id {capture!r}[/]")
        raise typer.Exit(1)
    if write:
        target = home_of(station).data / "sessions" / str(manifest["session"]) / f"{capture}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(target, manifest)
        err_console.print(f"manifest written to {target}")
    sys.stdout.write(json.dumps(manifest, indent=2) + "\n")


def _slow_members(station: Any, session: Any, capture: str) -> list[str]:
    """The slow readings sensors (rows, not chunks) of the ``[[sessions]]`` entry that the
    chunks of session id ``capture`` name, for its manifest."""
    from sqlalchemy import select

    from fieldstation.sensors.readings.config import is_slow
    from fieldstation.store.models import Recording

    extra = session.scalars(
        select(Recording.extra).where(Recording.capture_id == capture).limit(1)
    ).first()
    name = (extra or {}).get("capture_session")
    entry = next((s for s in station.sessions if s.name == name), None)
    if entry is None:
        return []
    names = {s.name: s for s in station.sensors}
    return [n for n in entry.sensors if n in names and is_slow(names[n])]


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command()(recordings)
    app.command()(detections)
    app.command()(sessions)
    app.command()(pin)
    app.command()(unpin)
