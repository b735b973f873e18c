"""The one station start-up path, used by ``run``, ``record``, ``db recover`` and tests.

:func:`start_station` takes the steps in this order (decision 0007): take the home lock (a
second runtime gets :class:`~fieldstation.home.StationLockedError` naming the holder), make
the home private, check the schema (a newer release's or a damaged database is refused in
one line before any child starts), migrate (all-or-nothing), start or continue the deployment
(refused when the home belongs to another station id), end the processing leases of the last
run, then start-up recovery (spool, data/ and rows brought back into agreement: quick, from
``spool/`` and the unprocessed rows, unless the database is new or rebuilt; decision 0120).

Work that needs heavy modules (Alembic, soundfile) can run in a short-lived child process
(``runner=run_in_child``, what the long-running supervisor does) or in this process
(``runner=in_process``, for one-shot commands and tests). Every error a user must act on is a
:class:`~fieldstation.home.HomeError` whose message is one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fieldstation import __version__
from fieldstation.clock import Clock, SystemClock
from fieldstation.config.station import StationConfig, config_data, config_hash
from fieldstation.home import HomeError, StationHome, StationLock
from fieldstation.store.db import Database, open_database

__all__ = [
    "MigrationError",
    "Runner",
    "StartedStation",
    "in_process",
    "migrate_in_child",
    "private_umask",
    "run_in_child",
    "start_station",
]

log = logging.getLogger(__name__)

Runner = Callable[..., Any]
"""``runner(function, *args)``: runs ``function(*args)`` somewhere and returns its result."""

PRIVATE_UMASK = 0o077
"""The station's umask while it runs: files it creates (database, logs, status, recordings)
are its user's only."""


class MigrationError(RuntimeError):
    """The station database could not be migrated; the message says why."""


def in_process(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in this process (a :data:`Runner`)."""
    return function(*args)


def run_in_child(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in a short-lived child process started by the fork server
    (:func:`~fieldstation.runtime.forkserver.call_in_child`; the server starts if none runs).

    For start-up work whose imports the supervisor, which runs for months, should not keep:
    Alembic costs a process about 34 MiB that it never gives back, and salvaging spool files
    loads numpy and soundfile. Returns what ``function`` returned and re-raises what it raised
    (both cross the process boundary pickled, so ``function`` must be a module-level name).
    """
    from fieldstation.runtime.forkserver import call_in_child

    return call_in_child(function, *args)


def _migrate(path: str) -> None:
    open_database(path, migrate=True).dispose()


def migrate_in_child(path: Path, runner: Runner = run_in_child) -> None:
    """Open and migrate the database at ``path`` with ``runner`` (a child by default).

    Re-raises a :class:`~fieldstation.home.HomeError` as it is (damaged, read-only, full
    disk: one clear line); raises :class:`MigrationError` naming the cause otherwise.
    """
    try:
        runner(_migrate, str(path))
    except HomeError:
        raise
    except Exception as error:
        raise MigrationError(f"migrating {path} failed: {type(error).__name__}: {error}") from error


def _recover(data: dict[str, Any], root: str, deployment_id: int, full: bool = True) -> Any:
    from fieldstation.config import parse_config
    from fieldstation.job import JobContext
    from fieldstation.recording.recovery import recover

    ctx = JobContext(
        config=parse_config(data),
        home=StationHome(Path(root)),
        deployment_id=deployment_id,
        clock=SystemClock(),
        name="recovery",
    )
    try:
        return recover(ctx, full=full)
    finally:
        if "db" in ctx.__dict__:  # opened by recover()
            ctx.db.dispose()


def _restore_deployments(root: str) -> int:
    """Re-create the deployment rows named in the metadata embedded in the files under
    ``data/`` (:func:`~fieldstation.store.deployments.restore_deployment`), so that recovery
    can register every file of a rebuilt database under its own deployment. Returns how many
    were restored; unreadable files are left to recovery (which quarantines them)."""
    from fieldstation.recording.media import format_of_path
    from fieldstation.recording.metadata import MetadataError
    from fieldstation.store.deployments import restore_deployment

    home = StationHome(Path(root))
    db = open_database(home.database, migrate=False)
    restored = 0
    try:
        with db.session() as session:  # one commit for them all
            for path in sorted(home.data.rglob("*")):
                fmt = format_of_path(path)
                if fmt is None or not path.is_file():
                    continue
                try:
                    spec, _, _ = fmt.inspect(path)
                except (MetadataError, OSError, RuntimeError, ValueError):
                    continue
                restored += restore_deployment(
                    session,
                    deployment_id=spec.deployment_id,
                    station_id=spec.station,
                    config_hash=spec.config_hash,
                    version=spec.version,
                    started_at=spec.started_at,
                )
    finally:
        db.dispose()
    return restored


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Run the block with :data:`PRIVATE_UMASK` (the previous umask is restored after it), so
    that whatever the station creates meanwhile, here or in processes it forks, is private."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


@dataclass
class StartedStation:
    """What :func:`start_station` leaves open: the held lock and the migrated database of the
    deployment in force. ``close()`` disposes of the database and releases the lock."""

    config: StationConfig
    home: StationHome
    lock: StationLock
    db: Database
    deployment_id: int
    released: int = 0
    """Processing claims of the last run ended at start-up."""
    recovery: Any = None
    """The :class:`~fieldstation.recording.recovery.RecoveryReport`, None when not run or
    when it failed."""
    recovery_error: str | None = None
    """Why start-up recovery failed (also a ``recovery_failed`` event), else None."""
    events: Any = None
    """The :class:`~fieldstation.store.events.EventBacklog` start-up recorded its events
    through (None when it recorded none): it may keep some the database refused, to be
    written later by whoever runs the station."""

    def close(self) -> None:
        self.db.dispose()
        self.lock.release()


def start_station(
    config: StationConfig,
    clock: Clock | None = None,
    *,
    runner: Runner = in_process,
    recover: bool = True,
    lock: StationLock | None = None,
) -> StartedStation:
    """Take the start-up steps of the module docstring and return the started station.

    ``runner`` runs the migration and the recovery (:func:`run_in_child` in the supervisor).
    A failing recovery is logged and recorded as a ``recovery_failed`` event, and start-up
    goes on (``recovery_error``). ``lock``: the home's lock, when the caller already holds it
    (``db recover`` moves the damaged file aside under it).

    Raises :class:`~fieldstation.home.StationLockedError`, a
    :class:`~fieldstation.home.HomeError` (read-only home, full disk, damaged or newer
    database, a home of another station) or :class:`MigrationError`; nothing stays held then.
    """
    from fieldstation.store.deployments import home_owner, start_deployment
    from fieldstation.store.processing import expire_leases

    clock = clock or SystemClock()
    home = StationHome(config.home_path())
    lock = lock or home.lock()
    db: Database | None = None
    try:
        changed = home.make_private()
        if changed:
            log.info("start-up: made private %s", ", ".join(str(p) for p in changed))
        db = open_database(home.database, migrate=False)
        db.check_schema()  # a newer release's database: a clear error, before any child
        migrate_in_child(home.database, runner)
        with db.session() as session:
            new = home_owner(session) is None
        if new and recover and home.data.is_dir() and any(home.data.iterdir()):
            restored = runner(_restore_deployments, str(home.root))
            log.info("start-up: %d deployment(s) restored from data/", restored)
        with db.session() as session:
            deployment = start_deployment(
                session,
                station_id=config.station.id,
                config_hash=config_hash(config),
                config=config.model_dump(mode="json"),
                version=__version__,
                now=clock.now(),
            )
            deployment_id = deployment.id
        log.info("station %s: deployment %s", config.station.id, deployment_id)
        with db.session() as session:
            released = expire_leases(session, now=clock.now())
        if released:
            log.info("start-up: released %d processing claim(s) of the last run", released)
        started = StartedStation(config, home, lock, db, deployment_id, released)
        if recover:
            # full (every file under data/) only for a new or rebuilt database: decision 0120
            _run_recovery(started, clock, runner, full=new)
        return started
    except BaseException as error:
        translated = _translated(error, home.database)
        if db is not None:
            db.dispose()
        lock.release()
        if translated is not error:
            raise translated from error
        raise


def _translated(error: BaseException, database: Path) -> BaseException:
    """A driver or OS error met at start-up as the one-line :class:`HomeError` it means."""
    from sqlalchemy.exc import DBAPIError

    from fieldstation.home import home_error
    from fieldstation.store.db import database_error

    if isinstance(error, DBAPIError):
        return database_error(error, database) or error
    if isinstance(error, OSError):
        return home_error(error, database.parent) or error
    return error


def _run_recovery(
    started: StartedStation, clock: Clock, runner: Runner, *, full: bool = True
) -> None:
    config = started.config
    try:
        started.recovery = runner(
            _recover, config_data(config), str(started.home.root), started.deployment_id, full
        )
    except Exception as error:
        log.exception("start-up recovery failed")
        started.recovery_error = f"{type(error).__name__}: {error}"
        from fieldstation.store.events import EventBacklog

        # kept in memory when the database refuses it (a full disk): start-up goes on
        started.events = EventBacklog(
            started.db,
            station_id=config.station.id,
            destinations=config.destinations_for("event"),
        )
        started.events.record(
            kind="recovery_failed",
            source="runtime",
            message=f"recovery failed: {error}",
            now=clock.now(),
            severity="error",
        )
        return
    log.info("start-up recovery: %s", started.recovery)
