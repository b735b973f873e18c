"""``fieldstation analyze`` (files, no station) and ``fieldstation reprocess`` (a station's data).

analyze: run a model plugin on audio files or folders and print (or write as CSV) what it found;
no station, no database. reprocess: run a station's processor again on the stored recordings
it has already processed; each recording's new ModelRun, detections and outbox messages are
committed together (earlier runs are kept: one ModelRun per run). Recordings the processor has
not done yet are left to its worker: a run stored without a claim would count as done and
strand them in ``recorded``.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from fieldstation.cli.common import EXIT_INVALID, console, err_console, home_of, load_or_exit

__all__ = ["register"]

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}
CSV_FIELDS = ["file", "label", "score", "start", "end", "low_hz", "high_hz"]


def _audio_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        elif path.exists():
            files.append(path)
        else:
            err_console.print(f"[red]no such file or folder: {path}[/]")
            raise typer.Exit(EXIT_INVALID)
    return files


def _progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )


def analyze(
    paths: Annotated[list[Path], typer.Argument(help="Audio files or folders (searched).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model plugin: energy, birdnet…")],
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="Write detections to this CSV file.")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Model setting KEY=VALUE (as in the station file).", show_default=False
        ),
    ] = None,
) -> None:
    """Run a model on audio files (no station needed) and list what it detects."""
    from pydantic import ValidationError

    from fieldstation.config.plugins import UnknownPluginError, load_plugin
    from fieldstation.processing.model import ModelUnavailableError, RecordingInput

    try:
        plugin = load_plugin("models", model)
    except UnknownPluginError as error:
        err_console.print(f"[red]{error}[/]")
        raise typer.Exit(EXIT_INVALID) from None
    settings: dict[str, Any] = {"name": "analyze", "model": model}
    for item in option or []:
        key, sep, value = item.partition("=")
        if not sep:
            err_console.print(f"[red]--set {item!r}: use KEY=VALUE[/]")
            raise typer.Exit(EXIT_INVALID)
        settings[key.strip()] = value.strip()
    try:
        config = plugin.config_model.model_validate(settings)
        detector = plugin.factory(config)
    except ValidationError as error:
        err_console.print(f"[red]invalid model settings:[/] {error}")
        raise typer.Exit(EXIT_INVALID) from None
    except ModelUnavailableError as error:
        err_console.print(f"[red]{error}[/]")
        raise typer.Exit(EXIT_INVALID) from None
    files = _audio_files(paths)
    rows: list[dict[str, Any]] = []
    failures = 0
    with _progress() as progress:
        task = progress.add_task(f"{model}", total=len(files))
        for path in files:
            progress.update(task, description=path.name)
            try:
                output = detector.run(RecordingInput.from_file(path))
            except Exception as error:  # noqa: BLE001 - report and go on with the next file
                failures += 1
                err_console.print(f"[yellow]{path}: {type(error).__name__}: {error}[/]")
            else:
                rows += [
                    {
                        "file": str(path),
                        "label": d.label,
                        "score": round(d.score, 4),
                        "start": round(d.start, 3),
                        "end": round(d.end, 3),
                        "low_hz": d.low_hz,
                        "high_hz": d.high_hz,
                    }
                    for d in output.detections
                ]
            progress.advance(task)
    if csv_file is not None:
        with csv_file.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        console.print(f"{len(rows)} detection(s) in {len(files)} file(s) written to {csv_file}")
    else:
        from rich.table import Table

        table = Table(*CSV_FIELDS)
        for row in rows:
            table.add_row(*("" if row[f] is None else str(row[f]) for f in CSV_FIELDS))
        console.print(table)
        console.print(f"{len(rows)} detection(s) in {len(files)} file(s)")
    if failures:
        raise typer.Exit(1)


def reprocess(
    config_path: Annotated[Path, typer.Argument(help="Station file.", metavar="CONFIG")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Processor name (or model plugin) to run again.")
    ],
    since: Annotated[
        datetime | None,
        typer.Option(help="Only recordings started at or after this time (UTC if naive)."),
    ] = None,
) -> None:
    """Run a station's processor again on the recordings it has already processed (earlier
    runs are kept); recordings it has not processed yet are left to its worker."""
    from fieldstation.clock import SystemClock
    from fieldstation.job import JobContext
    from fieldstation.processing.model import ModelUnavailableError
    from fieldstation.processing.worker import ProcessorWorker, build_model
    from fieldstation.store import open_database
    from fieldstation.store import processing as repo
    from fieldstation.store.deployments import current_deployment

    config = load_or_exit(config_path)
    chosen = [p for p in config.processors if model in (p.name, p.model)]
    if not chosen:
        names = ", ".join(p.name for p in config.processors) or "none"
        err_console.print(f"[red]no processor named (or using model) {model!r}: {names}[/]")
        raise typer.Exit(EXIT_INVALID)
    processor = chosen[0]
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    try:
        detector = build_model(processor)
    except ModelUnavailableError as error:
        err_console.print(f"[red]{error}[/]")
        raise typer.Exit(EXIT_INVALID) from None
    home = home_of(config)
    db = open_database(home.database)
    run_key = f"reprocess:{datetime.now(UTC).isoformat()}"
    with db.session() as session:
        rows = repo.reprocessable(
            session, processor=processor.name, sensors=processor.sensors, since=since
        )
        waiting = repo.count_pending(session, processor=processor.name, sensors=processor.sensors)
        deployment = current_deployment(session)
        session.expunge_all()
    ctx = JobContext(config, home, deployment.id if deployment else 0, SystemClock())
    ctx.__dict__["db"] = db  # share the open database (cached_property slot)
    worker = ProcessorWorker(ctx, processor.name, detector)  # the worker's own step
    stored = failed = 0
    with _progress() as progress:
        task = progress.add_task(processor.name, total=len(rows))
        for row in rows:
            result = worker.rerun(row, run_key)
            if result.outcome == "failed":
                failed += 1
                err_console.print(f"[yellow]recording {row.id}: {result.error}[/]")
            elif result.outcome == "processed":
                stored += 1
            progress.advance(task)
    db.dispose()
    console.print(f"{processor.name}: {stored} recording(s) reprocessed, {failed} failed")
    if waiting:
        console.print(
            f"{waiting} recording(s) not yet processed by {processor.name} are left to its worker"
        )
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``analyze`` and ``reprocess`` to ``app``."""
    app.command("analyze")(analyze)
    app.command("reprocess")(reprocess)
