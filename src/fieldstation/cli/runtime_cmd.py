"""Runtime commands: ``run``, ``status``, ``start/stop/restart JOB``, ``logs``, ``install``,
``uninstall``.

``run`` checks its options and station file, then replaces this process with the lean runner
(:mod:`fieldstation.runtime.run`, same PID; a plain ``run`` never gets here: decision 0146);
the other commands talk to a running station
through its control socket (``run/control.sock`` in the station home), except ``logs`` which
reads the log files directly (so it works on a stopped station too).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fieldstation.cli.common import (
    EXIT_INVALID,
    ConfigOpt,
    LegacyConfigArg,
    config_path,
    console,
    err_console,
    home_of,
    load_or_exit,
)
from fieldstation.home import StationHome
from fieldstation.progress import JobState

__all__ = ["register"]

EXIT_FAILED = 1
"""Exit status when the station cannot run or does not answer."""

HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        metavar="DIR",
        help="Station home (default: the home of the station file, or of the default).",
    ),
]


def _home(home: Path | None, config: Path | None) -> StationHome:
    if home is not None:
        return StationHome(home.expanduser())
    return home_of(load_or_exit(config))


def _client(home: StationHome) -> Any:
    from fieldstation.runtime.client import ControlClient

    return ControlClient(home.control_socket)


def run(
    legacy: LegacyConfigArg = None,
    config: ConfigOpt = None,
    duration: Annotated[
        str | None, typer.Option("--for", help="Stop after this long (e.g. 20s, 5m).")
    ] = None,
) -> None:
    """Run the station (Ctrl-C or SIGTERM stops it gracefully).

    Exit status once stopped: 0; 78 when a job ended in config_error (fix the station
    file); 1 when one ended failed or hung, or the station could not run. In the
    foreground (not under systemd) the station stops by itself when no job can run with the
    station file (decision record 0063).
    """
    from fieldstation.config.units import parse_duration
    from fieldstation.runtime.run import exec_runner

    path = config_path(config, legacy, "run")
    load_or_exit(path)  # a bad station file is reported here, with the command line's output
    seconds = None
    if duration is not None:
        try:
            seconds = parse_duration(duration)
        except ValueError as error:
            err_console.print(f"[red]--for {duration!r}: {error}[/]")
            raise typer.Exit(EXIT_INVALID) from None
    # the supervisor runs in a fresh interpreter without typer and rich (decision 0146)
    exec_runner(path, seconds, duration)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    from fieldstation.config.units import format_seconds

    return format_seconds(round(seconds))


def _render(status: dict[str, Any]) -> None:
    from rich.table import Table

    from fieldstation.config.units import format_bytes

    deployment = status.get("deployment") or {}
    storage = status.get("storage") or {}
    outbox = status.get("outbox") or {}
    level = status.get("health") or ("healthy" if status.get("healthy") else "unhealthy")
    colour = {"healthy": "green", "degraded": "yellow"}.get(level, "red")
    health = f"[{colour}]{level}[/]"
    if status.get("shutting_down"):
        health += ", [yellow]shutting down[/]"
    console.print(
        f"station [bold]{status.get('station')}[/] pid {status.get('pid')} {health}, up "
        f"{_age(status.get('uptime_s'))}, deployment {deployment.get('id')}",
        highlight=False,
    )
    for problem in status.get("problems") or []:
        console.print(f"  [{colour}]{problem}[/]", highlight=False)
    table = Table("job", "state", "pid", "uptime", "restarts", "last progress", "next slot")
    colours = {
        JobState.RUNNING: "green",
        JobState.FAILED: "red",
        JobState.CONFIG_ERROR: "red",
        JobState.HUNG: "red",
        JobState.BACKOFF: "yellow",
        JobState.STOPPED: "dim",
    }
    for job in status.get("jobs", []):
        last = job.get("last_progress") or {}
        progress = "-"
        if last:
            reason = (last.get("details") or {}).get("reason")
            what = f"{last['what']}: {reason}" if reason else last["what"]
            progress = f"{what} ({_age(last.get('age_s'))} ago)"
        state = job["state"]
        if job.get("restart_in_s") is not None:
            state += f" ({job['restart_in_s']:.0f} s)"
        if job["state"] in (JobState.CONFIG_ERROR, JobState.FAILED, JobState.HUNG):
            state += f": {job.get('reason')}"
        table.add_row(
            job["name"],
            f"[{colours.get(job['state'], 'white')}]{state}[/]",
            str(job.get("pid") or "-"),
            _age(job.get("uptime_s")),
            str(job.get("restarts", 0)),
            progress,
            job.get("next_slot") or "-",
        )
    console.print(table)
    free = storage.get("free_bytes")
    net = status.get("network") or {}
    line = (
        f"outbox pending {outbox.get('pending', '?')}, disk free "
        f"{format_bytes(free) if free is not None else '?'}, network "
        f"{ {True: 'up', False: 'down', None: '?'}[net.get('up')] }"
    )
    if net.get("level"):
        wifi = net.get("wifi") or {}
        signal = f" {wifi.get('signal', '?')} %" if wifi else ""
        line += f" ({net['level']}" + (f", Wi-Fi {wifi.get('ssid') or '?'}{signal}" if wifi else "")
        line += ")"
    if (status.get("wifi") or {}).get("mode") == "hotspot":
        line += ", Wi-Fi setup hotspot up"
    console.print(line, highlight=False)
    for job, held in ((status.get("power") or {}).get("held") or {}).items():
        console.print(f"[yellow]{job} paused since {held['since']}: {held['reason']}[/]")


def status(
    config: ConfigOpt = None,
    home: HomeOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (for scripts) instead of a table.")
    ] = False,
) -> None:
    """Show the jobs of the running station (exit 1 when it is not running)."""
    from fieldstation.runtime.client import StationNotRunningError
    from fieldstation.runtime.status import read_status

    station_home = _home(home, config)
    try:
        with _client(station_home) as client:
            body = client.status()
    except StationNotRunningError as error:
        last = read_status(station_home.status_file)
        if as_json:
            from fieldstation.cli.json_output import StationStatus, dump

            dump(StationStatus(running=False, error=str(error), last=last))
        else:
            err_console.print(f"[yellow]{error}[/]", highlight=False)
            if last is not None:
                err_console.print(f"last status written at {last.get('updated_at')}:")
                _render(last)
        raise typer.Exit(EXIT_FAILED) from None
    if as_json:
        from fieldstation.cli.json_output import StationStatus, dump

        dump(StationStatus.model_validate({"running": True, **body}))
    else:
        _render(body)


def _job_command(action: str, job: str, home: StationHome) -> None:
    from fieldstation.runtime.client import ControlError, StationNotRunningError

    try:
        with _client(home) as client:
            body = getattr(client, action)(job)
    except (StationNotRunningError, ControlError) as error:
        err_console.print(f"[red]{error}[/]", highlight=False)
        code = EXIT_INVALID if isinstance(error, ControlError) and error.status == 404 else 1
        raise typer.Exit(code) from None
    console.print(f"{body['name']}: {body['state']}", highlight=False)


JobArg = Annotated[str, typer.Argument(help="Job name, e.g. recorder:mic, processor:energy.")]


def start(job: JobArg, config: ConfigOpt = None, home: HomeOpt = None) -> None:
    """Start a stopped, failed or config_error job (after fixing the station file)."""
    _job_command("start", job, _home(home, config))


def stop(
    job: Annotated[
        str | None,
        typer.Argument(help="Job name, e.g. recorder:mic; none: stop the whole station."),
    ] = None,
    config: ConfigOpt = None,
    home: HomeOpt = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", min=1, help="Seconds to wait for the whole station to stop (no JOB)."
        ),
    ] = 120.0,
) -> None:
    """Stop a job (it stays stopped until started; a sleeping recorder skips its next slot);
    with no job, stop the whole station gracefully, as Ctrl-C does, and wait until it has.
    Under systemd, prefer systemctl stop (or the service manager restarts it)."""
    station_home = _home(home, config)
    if job is not None:
        _job_command("stop", job, station_home)
        return
    _stop_station(station_home, timeout)


def _stop_station(home: StationHome, timeout: float) -> None:
    """SIGTERM the supervisor of the station in ``home`` (found through its control socket)
    and wait until its control socket stops answering; exit 1 when it was not running or did
    not stop within ``timeout`` seconds."""
    from fieldstation.runtime.client import StationNotRunningError

    try:
        with _client(home) as client:
            body = client.status()
    except StationNotRunningError as error:
        err_console.print(f"[red]{error}[/]", highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    pid = int(body["pid"])
    name = body.get("station")
    console.print(f"stopping station {name} (pid {pid})", highlight=False)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            console.print(f"station {name} stopped", highlight=False)
            return
        time.sleep(0.1)
    err_console.print(
        f"[red]station {name} (pid {pid}) still running after {timeout:g} s[/]", highlight=False
    )
    raise typer.Exit(EXIT_FAILED)


def _alive(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie (an exited child of ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return fields[0] != "Z"
    return True


def restart(job: JobArg, config: ConfigOpt = None, home: HomeOpt = None) -> None:
    """Stop a job and start it again."""
    _job_command("restart", job, _home(home, config))


def logs(
    job: Annotated[str, typer.Argument(help="Job name, or 'station' (the supervisor).")] = (
        "station"
    ),
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new lines.")] = (
        False
    ),
    lines: Annotated[int, typer.Option("--lines", "-n", min=1, help="Lines to show.")] = 50,
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Print the last lines of a job's log: logs/<job>.log together with the station log's
    lines about the job (its chunks, detections, starts and restarts), in time order."""
    from fieldstation.runtime.jobs import log_file_of
    from fieldstation.runtime.logs import about_job, job_log_records
    from fieldstation.runtime.supervisor import tail_lines

    station_home = _home(home, config)
    path = log_file_of(station_home, job)
    if not path.exists():
        known = sorted(p.stem.replace("-", ":", 1) for p in station_home.logs.glob("*.log"))
        err_console.print(
            f"[red]no log {path}[/]; logs: {', '.join(known) or 'none'}", highlight=False
        )
        raise typer.Exit(EXIT_INVALID)
    station_log = log_file_of(station_home, "station")
    if job == "station":
        records = tail_lines(path, lines)
    else:
        merged = job_log_records(  # more lines than records: tracebacks are several lines
            tail_lines(path, lines + 200), tail_lines(station_log, STATION_LINES_SCANNED), job
        )
        records = merged[-lines:]
    for record in records:
        print(record)
    if not follow:
        return
    followed = [(path, None)] if job == "station" else [(path, None), (station_log, job)]
    handles: dict[Path, Any] = {}
    try:
        for file, _ in followed:
            with contextlib.suppress(FileNotFoundError):  # opened once it appears
                first = open(file, encoding="utf-8", errors="replace")  # noqa: SIM115
                first.seek(0, 2)
                handles[file] = first
        while True:
            printed = False
            for file, about in followed:
                handle = handles.get(file)
                if handle is None or (file.exists() and file.stat().st_size < handle.tell()):
                    # not there yet, or rotated: (re)open it and read it from its start
                    if handle is not None:
                        handle.close()
                        handles.pop(file)
                    try:
                        handles[file] = open(file, encoding="utf-8", errors="replace")  # noqa: SIM115
                    except FileNotFoundError:
                        continue
                    handle = handles[file]
                line = handle.readline()
                while line:
                    if about is None or about_job(line.rstrip("\n"), about):
                        print(line, end="", flush=True)
                    printed = True
                    line = handle.readline()
            if not printed:
                time.sleep(0.5)
    except KeyboardInterrupt:
        return
    finally:
        for handle in handles.values():
            handle.close()


STATION_LINES_SCANNED = 5000
"""Lines at the end of ``station.log`` searched for a job's lines by ``logs JOB``."""


def install(
    legacy: LegacyConfigArg = None,
    config: ConfigOpt = None,
    user: Annotated[bool, typer.Option("--user", help="Install a user unit.")] = False,
    enable: Annotated[bool, typer.Option(help="Enable and start it with systemctl.")] = True,
) -> None:
    """Install a systemd service running this station (Type=notify, watchdog, restarts).
    It needs a station file: -c FILE or $FIELDSTATION_CONFIG.

    The env: secrets the station file references are taken from this shell's environment
    into an EnvironmentFile (mode 0600, in the home's systemd/ folder) that the unit reads;
    install refuses, naming the variable to export, when one is not set.
    """
    from fieldstation.runtime.systemd import (
        SystemdError,
        environment_file_name,
        install_unit,
        render_unit,
        write_environment_file,
    )

    path = config_path(config, legacy, "install", required=True)
    assert path is not None  # required
    config = path
    cfg = load_or_exit(config)
    values, unset = _env_secret_values(cfg)
    if unset:
        for key, name in unset:
            err_console.print(
                f"[red]{key}[/] = 'env:{name}', but {name} is not set in this shell; the "
                f"service gets it from here: export {name}=... (or use sudo -E / "
                "sudo --preserve-env for a system unit) and run install again",
                highlight=False,
                soft_wrap=True,
            )
        raise typer.Exit(EXIT_INVALID)
    station_home = home_of(cfg).ensure()
    env_file = None
    if values:
        env_file = station_home.systemd / environment_file_name(cfg.station.id)
        try:
            write_environment_file(env_file, values)
        except (OSError, ValueError) as error:
            err_console.print(f"[red]cannot write {env_file}[/]: {error}", highlight=False)
            raise typer.Exit(EXIT_FAILED) from None
        console.print(
            f"wrote {env_file} (mode 0600): {', '.join(values)} for the service",
            highlight=False,
        )
    text = render_unit(
        station_id=cfg.station.id,
        config_path=config,
        home=station_home.root,
        user=user,
        environment_file=env_file,
    )
    try:
        done = install_unit(
            text,
            station_id=cfg.station.id,
            home_systemd=station_home.systemd,
            user=user,
            enable=enable,
        )
    except SystemdError as error:
        err_console.print(f"[red]{error}[/]", highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    for path in done.copies:
        console.print(f"wrote {path}", highlight=False)
    if done.enabled:
        console.print(f"enabled and started {done.unit}")
    if done.todo:
        console.print("to finish, run:")
        for line in done.todo:
            console.print(f"  {line}", highlight=False, markup=False)


def _env_secret_values(cfg: Any) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The ``env:`` secrets of ``cfg`` read from this process's environment: ``(values by
    variable, [(key path, variable) not set])``."""
    import os

    from fieldstation.config.secrets import env_secrets

    values: dict[str, str] = {}
    unset: list[tuple[str, str]] = []
    for key, name in env_secrets(cfg):
        value = os.environ.get(name)
        if value is None:
            unset.append((key, name))
        else:
            values[name] = value
    return values, unset


def uninstall(
    legacy: LegacyConfigArg = None,
    config: ConfigOpt = None,
    user: Annotated[bool, typer.Option("--user", help="Remove the user unit.")] = False,
) -> None:
    """Stop, disable and remove the station's systemd unit."""
    from fieldstation.runtime.systemd import SystemdError, uninstall_unit

    cfg = load_or_exit(config_path(config, legacy, "uninstall"))
    try:
        removed = uninstall_unit(
            station_id=cfg.station.id, home_systemd=home_of(cfg).systemd, user=user
        )
    except SystemdError as error:
        err_console.print(f"[red]{error}[/]", highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    for path in removed:
        console.print(f"removed {path}", highlight=False)
    if not removed:
        console.print("no unit installed")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command()(run)
    app.command()(status)
    app.command()(start)
    app.command()(stop)
    app.command()(restart)
    app.command()(logs)
    app.command()(install)
    app.command()(uninstall)
