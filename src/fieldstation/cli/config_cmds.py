"""``init``, ``validate`` and ``config schema``: writing and checking station files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from fieldstation.cli.common import (
    EXIT_INVALID,
    ConfigOpt,
    LegacyConfigArg,
    config_path,
    console,
    err_console,
    load_or_exit,
    plural,
    print_config_error,
)
from fieldstation.config import ConfigError, station_model, template_text
from fieldstation.config.secrets import unresolved_secrets
from fieldstation.config.station import host_issues

__all__ = ["register"]

config_app = typer.Typer(help="Station file tools.", no_args_is_help=True)


def init(
    directory: Annotated[Path, typer.Argument(help="Folder to write station.toml into.")] = Path(
        "."
    ),
    station_id: Annotated[str | None, typer.Option("--id", help="Station id.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing station.toml.")] = False,
    guided: Annotated[
        bool,
        typer.Option(
            "--guided",
            help="Ask field by field (station, place, first sensor), with each field's "
            "description and default; a wrong answer is asked again.",
        ),
    ] = False,
) -> None:
    """Write a commented station.toml showing every section; it validates as written."""
    try:
        text = template_text(station_id)
    except ValueError as error:  # an id that would make the file invalid: nothing written
        err_console.print(f"[red]--id[/]: {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INVALID) from None
    target = directory / "station.toml"
    if target.exists() and not force:
        err_console.print(f"[red]{target} exists[/]; use --force to overwrite it")
        raise typer.Exit(EXIT_INVALID)
    if guided:
        from fieldstation.cli.guided import guided_text

        console.print(
            "Answer each question; Enter keeps the default shown in brackets. Every other "
            "setting keeps the commented default of the file.",
            highlight=False,
        )
        try:
            text = guided_text(
                lambda prompt, default: typer.prompt(prompt, default=default, show_default=True),
                lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True),
                station_id,
            )
        except (typer.Abort, EOFError):
            err_console.print("stopped: nothing written")
            raise typer.Exit(1) from None
    directory.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    console.print(
        f"wrote {target}; check it with [bold]fieldstation validate -c {target}[/]",
        highlight=False,
    )


def validate(
    legacy: LegacyConfigArg = None,
    config: ConfigOpt = None,
    host_checks: Annotated[
        bool,
        typer.Option(
            "--host-checks/--no-host-checks",
            help="Also check what this machine must provide: replay files (exist, regular, "
            "readable, decodable headers) and installed model extras. Use --no-host-checks "
            "to check a file meant for another machine.",
        ),
    ] = True,
) -> None:
    """Check a station file: exit 0 when valid, 2 with every error (key, value, reason).
    With no file: $FIELDSTATION_CONFIG, else the embedded default station.

    Besides the file itself, the inputs and extras its enabled sensors and processors need
    on this machine are checked (errors too; skip them with --no-host-checks). Unresolved
    env: and file: secrets are only warnings: the service may have them where it runs.
    """
    config = config_path(config, legacy, "validate")
    station = load_or_exit(config)
    issues = host_issues(station) if host_checks else []
    if issues:
        print_config_error(ConfigError(issues, config))
        err_console.print(
            "(these depend on this machine; to check a file meant for another one, "
            "use --no-host-checks)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_INVALID)
    console.print(
        f"[green]valid[/]: station {station.station.id!r}, "
        f"{plural(len(station.sensors), 'sensor')}, "
        f"{plural(len(station.processors), 'processor')}, "
        f"{plural(len(station.outputs), 'output')}"
        + ("" if config is not None else " (the embedded default station)")
    )
    if not any(output.enabled for output in station.outputs):
        # ENRGDAQ warns of a supervisor without DAQ jobs the same way (warn_for_lack_of_daq_jobs)
        err_console.print(
            "[yellow]warning[/]: no enabled output: the station records and keeps its "
            f"messages in the outbox, but sends them nowhere; add an {escape('[[outputs]]')} "
            "entry (kind file, mqtt or http)",
            highlight=False,
            soft_wrap=True,
        )
    for key, reason in unresolved_secrets(station):
        err_console.print(
            f"[yellow]warning[/]: {escape(key)}: {escape(reason)} (on this machine; the "
            "station needs it where it runs)",
            highlight=False,
            soft_wrap=True,
        )


@config_app.command("schema")
def schema() -> None:
    """Print the JSON Schema of the station file (for editors)."""
    print(json.dumps(station_model().model_json_schema(), indent=2))


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command()(init)
    app.command()(validate)
    app.add_typer(config_app, name="config")
