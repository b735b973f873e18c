"""What every command shares: the console, loading a station file, exit codes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from fieldstation.config import ConfigError, StationConfig, default_config, load_config
from fieldstation.home import StationHome
from fieldstation.job import EXIT_CONFIG
from fieldstation.runtime.console import TolerantConsole
from fieldstation.runtime.run import CONFIG_ENV, EXIT_INVALID, exit_status_of, station_error

__all__ = [
    "CONFIG_ENV",
    "ConfigOpt",
    "EXIT_CONFIG",
    "LegacyConfigArg",
    "LegacyConfigGroup",
    "PlainCommand",
    "PlainGroup",
    "use_plain_help",
    "config_path",
    "format_score",
    "plural",
    "EXIT_INVALID",
    "exit_status_of",
    "console",
    "err_console",
    "home_of",
    "load_or_exit",
    "print_config_error",
    "station_error",
]

# EXIT_INVALID (2: invalid input, a bad station file or argument), station_error and
# exit_status_of: the lean runner's (fieldstation.runtime.run), re-exported.

# EXIT_CONFIG (fieldstation.job's, re-exported): the exit status when the station cannot start
# until someone acts (a damaged database, a home of another station): EX_CONFIG, which the
# systemd unit names in RestartPreventExitStatus= so that it does not restart in a loop.

console = TolerantConsole()
err_console = TolerantConsole(stderr=True)
"""Output of the commands: a reader that goes away (``| head``) silences them, never stops
``fieldstation run`` half-way."""


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar=CONFIG_ENV,
        metavar="FILE",
        show_envvar=True,
        show_default=False,
        help="Station file (TOML); default: $FIELDSTATION_CONFIG, else the embedded default "
        "station.",
    ),
]
"""``-c/--config FILE``: the one way every station command is given its station file."""

LegacyConfigArg = Annotated[
    Path | None,
    typer.Argument(hidden=True, metavar="[FILE]", show_default=False),
]
"""The station file given as a positional argument, the form of earlier releases: still
accepted for one release with a deprecation line (see :func:`config_path`); hidden from help."""


def deprecated_positional(old: str, new: str) -> None:
    """Print the one-line deprecation warning of the positional form ``old`` (the command line
    after ``fieldstation``) on stderr, naming the form ``new`` to use."""
    err_console.print(
        f"warning: `fieldstation {old}` is deprecated; use `fieldstation {new}` (the "
        "positional station file goes in the next release)",
        style="yellow",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def config_path(
    option: Path | None, legacy: Path | None, command: str, *, required: bool = False
) -> Path | None:
    """The station file a command was given: ``-c/--config`` (or ``$FIELDSTATION_CONFIG``,
    which typer puts into ``option``), else the deprecated positional ``legacy`` (with a
    warning on stderr), else None (the embedded default station).

    ``required``: the command needs a real file (e.g. ``install``: the service must have a
    file to run); exits 2 with what to do when none is given. Also exits 2 when both forms
    name different files.
    """
    if legacy is not None:
        deprecated_positional(f"{command} {legacy}", f"{command} -c {legacy}")
        if option is not None and option != legacy and os.environ.get(CONFIG_ENV) != str(option):
            err_console.print(
                f"two station files: -c {option} and {legacy}; give only -c FILE",
                style="red",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_INVALID)
        return legacy
    if option is None and required:
        err_console.print(
            f"`fieldstation {command}` needs a station file: -c FILE (or set {CONFIG_ENV})",
            style="red",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_INVALID)
    return option


def _is_option(param: object) -> bool:
    # typer 0.2x vendors its own click: compare by click's public kind name, not by class
    return getattr(param, "param_type_name", None) == "option"


def _is_argument(param: object) -> bool:
    return getattr(param, "param_type_name", None) == "argument"


_TYPE_WORDS = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "Path": "PATH"}


def _type_word(param: object) -> str:
    """The value placeholder of an option in help: ``TEXT``, ``INTEGER``, ``PATH``, or the
    choices (``[a|b]``). Reads typer 0.2x's ``bare_type()`` or click's ``type.name``."""
    descriptor = getattr(param, "type_descriptor", None) or getattr(param, "type", None)
    choices = getattr(descriptor, "choices", None)
    if choices:
        return "[" + "|".join(str(choice) for choice in choices) + "]"
    if hasattr(param, "bare_type"):
        name = str(param.bare_type())
        if name.startswith("list[") and name.endswith("]"):
            name = name[5:-1]
        return _TYPE_WORDS.get(name, name.upper())
    name = str(getattr(getattr(param, "type", None), "name", "") or "value")
    return name.split()[0].upper()


class _PlainHelp:
    """Help in click's plain words for every command: usage ``pin [OPTIONS] RECORDING_ID``,
    options ``--since TEXT``, flags bare. (typer 0.2x's own help prints Python-ish
    placeholders: ``<bool>``, ``<str>``, ``{config}``.) Hidden arguments (the deprecated
    positional station file) stay out of the usage line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:  # type: ignore[attr-defined]
            if _is_option(param) and param.metavar is None and not getattr(param, "is_flag", False):
                param.metavar = _type_word(param)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        this: Any = self
        pieces = [this.options_metavar] if this.options_metavar else []
        for param in this.get_params(ctx):
            if _is_argument(param) and not getattr(param, "hidden", False):
                name = param.metavar or (param.name or "value").upper()
                name = name if param.required else f"[{name}]"
                pieces.append(name + ("..." if param.nargs != 1 else ""))
        if isinstance(self, TyperGroup):
            pieces.append(self.subcommand_metavar or "COMMAND [ARGS]...")
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        this: Any = self
        params = this.get_params(ctx)
        arguments = [
            (p.metavar or (p.name or "value").upper(), getattr(p, "help", None) or "")
            for p in params
            if _is_argument(p) and not getattr(p, "hidden", False)
        ]
        if any(text for _, text in arguments):
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        options = [record for p in params if _is_option(p) and (record := p.get_help_record(ctx))]
        if options:
            with formatter.section("Options"):
                formatter.write_dl(options)
        if isinstance(self, TyperGroup):
            self.format_commands(ctx, formatter)


class PlainCommand(_PlainHelp, TyperCommand):  # type: ignore[misc]
    """A command with :class:`_PlainHelp`."""


class PlainGroup(_PlainHelp, TyperGroup):  # type: ignore[misc]
    """A command group with :class:`_PlainHelp`."""


def use_plain_help(app: typer.Typer) -> None:
    """Give every command and group of ``app`` (those added by other modules too) the plain
    help of :class:`_PlainHelp`, unless it chose a class of its own."""
    from typer.models import DefaultPlaceholder

    def unset(value: object) -> bool:
        return value is None or isinstance(value, DefaultPlaceholder)

    def walk(instance: typer.Typer) -> None:
        if unset(instance.info.cls) or instance.info.cls is TyperGroup:
            instance.info.cls = PlainGroup
        walk_commands(instance)
        for group in instance.registered_groups:
            if group.typer_instance is not None:
                if unset(group.cls):
                    walk(group.typer_instance)
                else:
                    walk_commands(group.typer_instance)

    def walk_commands(instance: typer.Typer) -> None:
        for command in instance.registered_commands:
            if command.cls in (None, TyperCommand):
                command.cls = PlainCommand

    walk(app)


class LegacyConfigGroup(PlainGroup):
    """A command group (``outbox``) that also takes the deprecated ``GROUP FILE SUBCOMMAND``
    form: a first argument that is neither an option nor a subcommand is read as ``-c FILE``,
    with the deprecation line of :func:`deprecated_positional`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            rest = " ".join(args[1:2])
            deprecated_positional(
                f"{ctx.info_name} {args[0]} {rest}".rstrip(),
                f"{ctx.info_name} {rest} -c {args[0]}".replace("  ", " "),
            )
            args = ["--config", args[0], *args[1:]]
        return super().parse_args(ctx, args)


def format_score(score: float) -> str:
    """A model score as every table prints it: three decimals (``0.912``)."""
    return f"{score:.3f}"


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``"1 message"``, ``"2 messages"``, ``"0 messages"`` (``many``: an irregular plural)."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


def print_config_error(error: ConfigError) -> None:
    """Print every issue of ``error`` with its key path, value and reason."""
    where = f" in {error.source}" if error.source else ""
    err_console.print(f"[bold red]{plural(len(error.issues), 'error')}{where}[/]", soft_wrap=True)
    for issue in error.issues:
        err_console.print(f"  {issue}", highlight=False, markup=False, soft_wrap=True)


def load_or_exit(path: Path | None) -> StationConfig:
    """Load the station file at ``path`` (None: the embedded default) or exit with status 2."""
    if path is None:
        return default_config()
    try:
        return load_config(path)
    except ConfigError as error:
        print_config_error(error)
        raise typer.Exit(EXIT_INVALID) from None


def home_of(config: StationConfig) -> StationHome:
    """The station home of ``config`` (not created)."""
    return StationHome(config.home_path())
