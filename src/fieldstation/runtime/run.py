"""The lean runner of ``fieldstation run``: the supervisor's process, without the command line.

``fieldstation run`` (typer + rich) checks its options and the station file, then replaces
itself with ``python -m fieldstation.runtime.run`` (:func:`exec_runner`, ``os.execve``: same
PID, so systemd's ``Type=notify`` and a caller's ``wait`` see one process). The runner
imports neither typer, rich nor click, so neither the supervisor nor the fork server and the
jobs forked from it carry them (issue 22: memory; decision 0146). Its messages are those the
command printed before: plain text, bold or red only on a terminal.

    python -m fieldstation.runtime.run [--config FILE] [--for SECONDS] [--for-text TEXT]

``--config``: the station file (absent: the embedded default station); ``--for``: stop after
this many seconds; ``--for-text``: how the user wrote it, for the first line. Exit status:
:meth:`.station.Station.exit_status` (0, 1, or 78), 1 when the home is locked by another
station, 2 for a station file that no longer loads, and :func:`exit_status_of` for the errors
of :func:`station_error`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from fieldstation.config.station import StationConfig

__all__ = [
    "CONFIG_ENV",
    "EXIT_FAILED",
    "EXIT_INVALID",
    "exec_runner",
    "exit_status_of",
    "main",
    "plain_run",
    "run_plain",
    "station_error",
]

EXIT_INVALID = 2
"""Exit status for invalid input (a bad station file, a bad argument)."""
EXIT_FAILED = 1
"""Exit status when the station cannot run or does not answer."""
CONFIG_ENV = "FIELDSTATION_CONFIG"
"""The environment variable naming the station file when ``-c/--config`` is not given."""


def station_error(error: BaseException) -> BaseException | None:
    """The one-line error a user must act on behind ``error``, or None for an unexpected one
    (a bug: its traceback is worth having).

    Recognised: :class:`~fieldstation.home.HomeError` (read-only home, full disk, damaged or
    newer database, a home of another station), :class:`~fieldstation.home.StationLockedError`
    and a database driver error of a kind :func:`~fieldstation.store.db.database_error`
    knows (met while a command ran, after the database opened).
    """
    from sqlalchemy.exc import DBAPIError

    from fieldstation.home import HomeError, StationLockedError
    from fieldstation.store.db import database_error

    if isinstance(error, HomeError | StationLockedError):
        return error
    if isinstance(error, DBAPIError):
        notes = [n for n in getattr(error, "__notes__", ()) if n.startswith("station database: ")]
        path = Path(notes[0].partition(": ")[2]) if notes else Path("station.db")
        return database_error(error, path)
    if isinstance(error, OSError):
        from fieldstation.home import home_error

        return home_error(error, Path(error.filename or "."))
    return None


def exit_status_of(error: BaseException) -> int:
    """The exit status for a :func:`station_error`: ``EXIT_CONFIG`` (78) when retrying cannot
    help (a damaged database, a home of another station), :data:`EXIT_INVALID` for a newer
    release's database or a home in use (as before), else 1."""
    from fieldstation.home import StationLockedError
    from fieldstation.job import EXIT_CONFIG
    from fieldstation.store.db import DatabaseDamagedError, SchemaVersionError
    from fieldstation.store.deployments import StationMismatchError

    if isinstance(error, DatabaseDamagedError | StationMismatchError):
        return EXIT_CONFIG
    if isinstance(error, SchemaVersionError | StationLockedError):
        return EXIT_INVALID
    return 1


def exec_runner(config: Path | None, seconds: float | None, text: str | None) -> NoReturn:
    """Replace this process with the runner (``os.execve``: same PID, descriptors kept).

    ``config``: the station file (None: the embedded default); ``seconds``: stop after this
    long (None: until a signal); ``text``: ``seconds`` as the user wrote it. Raises
    ``OSError`` only when the interpreter cannot be executed.
    """
    # -P: the working directory is not put on sys.path (as for the ``fieldstation`` script),
    # so a file there cannot shadow a module; the package stays importable where it was found
    argv = [sys.executable, "-P", "-m", "fieldstation.runtime.run"]
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    if package_root not in (str(Path(entry).resolve()) for entry in sys.path[1:] if entry):
        env["PYTHONPATH"] = os.pathsep.join(
            part for part in (package_root, env.get("PYTHONPATH")) if part
        )
    if config is not None:
        argv += ["--config", str(Path(config).absolute())]
    if seconds is not None:
        argv += ["--for", repr(seconds), "--for-text", text or f"{seconds}s"]
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader gone away: nothing to keep
            stream.flush()
    os.execve(sys.executable, argv, env)


def _styled(text: str, code: str, stream: object) -> str:
    """``text`` in an ANSI style when ``stream`` is a terminal (and NO_COLOR is unset)."""
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty() and not os.environ.get("NO_COLOR"):
        return f"\x1b[{code}m{text}\x1b[0m"
    return text


def _say(text: str, *, stderr: bool = False, red: bool = False) -> None:
    """One line on stdout (or stderr; ``red`` on a terminal); a reader that went away
    (``| head``) silences it (the descriptor then points at /dev/null), never the station."""
    stream = sys.stderr if stderr or red else sys.stdout
    try:
        print(_styled(text, "31", stream) if red else text, file=stream, flush=True)
    except (OSError, ValueError):
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)


def _load(path: Path | None) -> StationConfig:
    from fieldstation.config import ConfigError, default_config, load_config

    if path is None:
        return default_config()
    try:
        return load_config(path)
    except ConfigError as error:  # changed since `fieldstation run` checked it
        _say(str(error), red=True)
        raise SystemExit(EXIT_INVALID) from None


def run(cfg: StationConfig, seconds: float | None, text: str | None) -> int:
    """Run the station of ``cfg`` (or the kept remote station file in force for it:
    :func:`~fieldstation.runtime.kept_configs.config_in_force`) until a signal (or
    ``seconds``); its exit status."""
    from fieldstation.home import StationLockedError
    from fieldstation.progress import FAILING_STATES
    from fieldstation.runtime.kept_configs import config_in_force
    from fieldstation.runtime.logs import setup_logging
    from fieldstation.runtime.station import Station

    given = cfg
    # a station file applied remotely (set_config) and proven healthy stays in force
    cfg, source = config_in_force(given)
    # under systemd (Type=notify) the station stays up to report a config error remotely
    station = Station(cfg, exit_when_unrunnable="NOTIFY_SOCKET" not in os.environ)
    station.home.ensure()
    setup_logging(cfg.logging, station.home.logs, name="station", console=True)
    if cfg is not given:
        logging.getLogger(__name__).info("station file in force: %s", source)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    name = _styled(cfg.station.id, "1", sys.stdout)
    _say(
        f"station {name} in {station.home.root}"
        + (f" for {text}" if seconds is not None else " (Ctrl-C stops)")
    )
    try:
        station.run(stop, duration=seconds)
    except StationLockedError as error:
        _say(str(error), red=True)
        return EXIT_FAILED
    code = station.exit_status()
    if code:
        bad = [
            f"{j['name']} {j['state']}: {j.get('reason')}"
            for j in (station.supervisor.snapshot() if station.supervisor else [])
            if j["state"] in FAILING_STATES
        ]
        bold = _styled(cfg.station.id, "1", sys.stderr)
        _say(f"station {bold} stopped with: " + "; ".join(bad), stderr=True)
        return code
    _say(f"station {name} stopped")
    return 0


def plain_run(argv: list[str]) -> tuple[Path | None, str | None] | None:
    """``(station file or None, --for text or None)`` when ``argv`` (without the program) is a
    plain ``run`` command: ``run`` with only ``-c FILE``/``--config[=]FILE`` and
    ``--for[=]DURATION``; the file is ``$FIELDSTATION_CONFIG`` when not given. None for
    anything else (help, the deprecated positional file, an unknown or repeated option): the
    command line (typer) parses those."""
    if not argv or argv[0] != "run":
        return None
    values: dict[str, str] = {}
    rest = argv[1:]
    while rest:
        word, rest = rest[0], rest[1:]
        name, equals, value = word.partition("=")
        key = {"-c": "config", "--config": "config", "--for": "for"}.get(name if equals else word)
        if key is None or key in values or (equals and name == "-c"):
            return None
        if not equals:
            if not rest or rest[0].startswith("-"):
                return None
            value, rest = rest[0], rest[1:]
        if not value:
            return None
        values[key] = value
    config = values.get("config") or os.environ.get(CONFIG_ENV) or None
    return (Path(config) if config else None), values.get("for")


def run_plain(argv: list[str]) -> None:
    """Run the station in this process when ``argv`` is a plain ``run`` command
    (:func:`plain_run`) whose station file loads and whose ``--for`` reads as a duration: never
    returns then (``SystemExit`` with the station's exit status). Returns at once otherwise, for
    the command line to parse ``argv`` and report what is wrong as it always has.

    The ``fieldstation`` script calls it first (:mod:`fieldstation.cli.main`), so a station
    started by systemd imports neither typer nor rich, and starts sooner."""
    plain = plain_run(argv)
    if plain is None:
        return
    config, text = plain
    _memory_settings()
    from fieldstation.config import ConfigError, default_config, load_config
    from fieldstation.config.units import parse_duration

    try:
        seconds = None if text is None else parse_duration(text)
        cfg = default_config() if config is None else load_config(config)
    except (ConfigError, ValueError):
        return  # the command line says what is wrong, with its own output
    _guarded(lambda: run(cfg, seconds, text))


def _memory_settings() -> None:
    """glibc's malloc settings of the station's processes (:func:`~.forkserver.
    give_back_freed_memory`: fixed thresholds, few arenas), set before the first thread and
    before the fork server is forked (which inherits them, as its jobs do)."""
    from fieldstation.runtime.forkserver import give_back_freed_memory

    give_back_freed_memory()


def _guarded(start: Callable[[], int]) -> NoReturn:
    """``start()``'s exit status as ``SystemExit``; the errors a user must act on
    (:func:`station_error`) are one line on stderr, not a traceback."""
    try:
        code = start()
    except Exception as error:
        problem = station_error(error)
        if problem is None:
            raise
        _say(str(problem), red=True)
        raise SystemExit(exit_status_of(problem)) from None
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> NoReturn:
    """``python -m fieldstation.runtime.run`` (what ``fieldstation run`` executes once it has
    checked its options): exits with the station's exit status."""
    parser = argparse.ArgumentParser(prog="fieldstation run", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--for", dest="seconds", type=float, default=None)
    parser.add_argument("--for-text", dest="text", default=None)
    args = parser.parse_args(argv)
    _memory_settings()
    _guarded(lambda: run(_load(args.config), args.seconds, args.text))


if __name__ == "__main__":
    main()
