"""``fieldstation analyze`` (files, no station) and ``fieldstation reprocess`` (a station's data).

analyze: run a model plugin on files or folders of the media it analyses (audio; video for the
``motion`` model) and print (or write as CSV) what it found; no station, no database. A file of
another media is refused (exit 2) before anything runs.

reprocess: run a station's processor again on the stored recordings it has already processed;
each recording's new ModelRun, detections and outbox messages are committed together (earlier
runs are kept: one ModelRun per run). Recordings the processor has not done yet are left to its
worker: a run stored without a claim would count as done and strand them in ``recorded``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

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

if TYPE_CHECKING:
    from fieldstation.processing.model import RecordingInput

__all__ = ["register"]

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}
VIDEO_SUFFIXES = {".mkv", ".mp4", ".mov", ".avi", ".webm"}
SUFFIXES = {"audio": AUDIO_SUFFIXES, "video": VIDEO_SUFFIXES, "readings": {".arrows"}}
"""File extensions (lower case) of each media: searched in folders, and what tells a named
file's media (a file with another extension is taken for audio)."""
CSV_FIELDS = ["file", "label", "score", "start", "end", "low_hz", "high_hz", "extra"]


def media_of_file(path: Path) -> str:
    """The media of a file by its extension (see :data:`SUFFIXES`); ``audio`` when unknown."""
    suffix = path.suffix.lower()
    return next((media for media, known in SUFFIXES.items() if suffix in known), "audio")


def _media_files(paths: list[Path], media: str) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES[media])
        elif path.exists():
            files.append(path)
        else:
            err_console.print(f"[red]no such file or folder: {path}[/]")
            raise typer.Exit(EXIT_INVALID)
    return files


def recording_input(path: Path) -> RecordingInput:
    """The model input of a file: a fieldstation chunk from the metadata embedded in it, an
    audio file from its header, any other video file from its header read by PyAV (rate =
    average frame rate, Hz; duration, seconds). Raises ``UndecodableAudioError``."""
    from fieldstation.processing.model import RecordingInput, UndecodableAudioError

    if media_of_file(path) != "video":
        return RecordingInput.from_file(path)
    try:
        return RecordingInput.from_file(path)
    except (UndecodableAudioError, ImportError):
        pass  # not a fieldstation chunk (no metadata), or no video chunk format installed
    import av

    path = path.resolve()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UndecodableAudioError(f"cannot decode {path}: it has no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 0)
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = (container.duration or 0) / av.time_base
    except av.FFmpegError as error:
        raise UndecodableAudioError(f"cannot decode {path}: {error}") from error
    return RecordingInput(
        path=path, rate=max(1, round(rate)), duration=max(0.0, duration), media="video"
    )


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
    paths: Annotated[
        list[Path],
        typer.Argument(help="Files or folders (searched for files of the model's media)."),
    ],
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
    """Run a model on audio files (video files for the motion model; no station needed) and
    list what it detects. A video model writes a thumbnail beside each file. Exits 2 when
    there is no file to analyse, 1 when a file could not be analysed."""
    from fieldstation.config.plugins import UnknownPluginError, load_plugin
    from fieldstation.processing.model import ModelUnavailableError, model_media

    try:
        plugin = load_plugin("models", model)
    except UnknownPluginError as error:
        err_console.print(f"[red]{error}[/]")
        raise typer.Exit(EXIT_INVALID) from None
    settings: dict[str, Any] = {"name": model, "model": model}
    for item in option or []:
        key, sep, value = item.partition("=")
        if not sep:
            err_console.print(f"[red]--set {item!r}: use KEY=VALUE[/]")
            raise typer.Exit(EXIT_INVALID)
        settings[key.strip()] = value.strip()
    problems = settings_issues(settings)
    if problems:
        err_console.print(f"[bold red]{plural(len(problems), 'error')} in --set[/]", soft_wrap=True)
        for problem in problems:
            err_console.print(f"  {problem}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_INVALID)
    try:
        detector = plugin.factory(plugin.config_model.model_validate(settings))
    except ModelUnavailableError as error:
        err_console.print(f"[red]{error}[/]")
        raise typer.Exit(EXIT_INVALID) from None
    media = model_media(detector)
    files = _media_files(paths, media)
    wrong = [path for path in files if media_of_file(path) != media]
    for path in wrong:
        err_console.print(
            f"[red]{path}: model {model!r} analyses {media}, but this file is "
            f"{media_of_file(path)} ({path.suffix}): give it {media} files "
            f"({', '.join(sorted(SUFFIXES[media]))}), or use a model for "
            f"{media_of_file(path)}[/]"
        )
    if wrong:
        raise typer.Exit(EXIT_INVALID)
    if not files:
        err_console.print(
            f"[red]no {media} file to analyse[/] in {', '.join(str(p) for p in paths)} "
            f"(looked for {', '.join(sorted(SUFFIXES[media]))})",
            highlight=False,
        )
        raise typer.Exit(EXIT_INVALID)
    rows: list[dict[str, Any]] = []
    thumbnails: list[str] = []
    failures = 0
    with _progress() as progress:
        task = progress.add_task(f"{model}", total=len(files))
        for path in files:
            progress.update(task, description=path.name)
            try:
                output = detector.run(recording_input(path))
            except Exception as error:  # noqa: BLE001 - report and go on with the next file
                failures += 1
                err_console.print(f"[yellow]{path}: {type(error).__name__}: {error}[/]")
            else:
                rows += [
                    {
                        "file": str(path),
                        "label": d.label,
                        "score": d.score,
                        "start": round(d.start, 3),
                        "end": round(d.end, 3),
                        "low_hz": d.low_hz,
                        "high_hz": d.high_hz,
                        "extra": json.dumps(d.extra, sort_keys=True) if d.extra else "",
                    }
                    for d in output.detections
                ]
                if "thumbnail" in output.extra:
                    thumbnails.append(str(output.extra["thumbnail"]))
            progress.advance(task)
    analysed = len(files) - failures
    counted = f"{plural(len(rows), 'detection')} in {plural(analysed, 'file')} analysed"
    if failures:
        counted += f" ({plural(failures, 'file')} could not be)"
    if csv_file is not None:
        with csv_file.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
            writer.writeheader()
            writer.writerows({**row, "score": f"{row['score']:.6g}"} for row in rows)
        console.print(f"{counted}, written to {csv_file}", highlight=False)
    else:
        from rich.table import Table

        table = Table(*CSV_FIELDS)
        for row in rows:
            shown = {
                **row,
                "file": Path(row["file"]).name,
                "score": format_score(row["score"]),
                "start": f"{row['start']:.2f}",  # seconds, as `detections` prints them
                "end": f"{row['end']:.2f}",
                **{
                    hz: None if row[hz] is None else f"{row[hz]:.0f}"
                    for hz in ("low_hz", "high_hz")
                },
            }
            table.add_row(*("" if shown[f] is None else str(shown[f]) for f in CSV_FIELDS))
        console.print(table)
        console.print(counted, highlight=False)
    for thumbnail in thumbnails:
        console.print(f"thumbnail: {thumbnail}", soft_wrap=True)
    if failures:
        raise typer.Exit(1)


def reprocess(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Processor name (or model plugin) to run again.")
    ],
    legacy: LegacyConfigArg = None,
    config_file: ConfigOpt = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only recordings started at or after this time: ISO 8601 (UTC unless it "
            "names a zone) or an age like '2d', '6h'.",
        ),
    ] = None,
) -> None:
    """Run a station's processor on its processed or failed recordings, whether it ran on
    them before or not (a processor added later); earlier runs are kept. Recordings not yet
    processed are left to its worker."""
    from fieldstation.cli.data_cmd import since_or_exit
    from fieldstation.processing.model import ModelUnavailableError
    from fieldstation.processing.reprocess import UnknownProcessorError
    from fieldstation.processing.reprocess import reprocess as run_again

    config = load_or_exit(config_path(config_file, legacy, "reprocess"))
    after = since_or_exit(since)
    home = home_of(config)
    with _progress() as progress:
        task = progress.add_task(model, total=None)

        def on_row(recording_id: int, outcome: str, error: str | None) -> None:
            if outcome == "failed":
                err_console.print(f"[yellow]recording {recording_id}: {error}[/]")
            progress.advance(task)

        try:
            done = run_again(
                config,
                home,
                model,
                since=after,
                on_total=lambda n: progress.update(task, total=n),
                on_row=on_row,
            )
        except (UnknownProcessorError, ModelUnavailableError) as error:
            err_console.print(f"[red]{error}[/]")
            raise typer.Exit(EXIT_INVALID) from None
    stored, failed = done.stored, done.failed
    console.print(f"{done.processor}: {plural(stored, 'recording')} reprocessed, {failed} failed")
    if done.waiting:
        console.print(
            f"{plural(done.waiting, 'recording')} not yet processed by {done.processor} left to "
            "its worker"
        )
    if failed:
        raise typer.Exit(1)


def settings_issues(settings: dict[str, Any]) -> list[str]:
    """The problems of model settings given with ``--set``, in ``validate``'s words, keyed
    by the setting (``threshold_db: Input should be a valid number ... (got 'x')``): the
    settings are validated as the processor entry of a station file."""
    from fieldstation.config import ConfigError, parse_config

    entry = "processors[0]."
    data = {"station": {"id": "analyze", "latitude": 0, "longitude": 0}, "processors": [settings]}
    try:
        parse_config(data)
    except ConfigError as error:
        return [
            str(issue)[len(entry) :] if issue.path.startswith(entry) else str(issue)
            for issue in error.issues
            if issue.path.startswith("processors[0]")
        ]
    return []


def register(app: typer.Typer) -> None:
    """Add ``analyze`` and ``reprocess`` to ``app``."""
    app.command("analyze")(analyze)
    app.command("reprocess")(reprocess)
