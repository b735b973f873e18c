"""What a job receives from whoever runs it: the contract between jobs and the supervisor.

A job (a sensor's recorder, a processor's worker, ...) is a plain function ``job(ctx) -> None``
that runs until ``ctx.stop`` is set, then returns. It reports progress through
``ctx.progress`` (a committed chunk, a claimed recording, a delivered batch) so the supervisor
can judge it alive by progress rather than by its process merely existing. The same function
runs under the supervisor (in its own process), under ``fieldstation record`` and in tests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from fieldstation.clock import Clock, SystemClock
from fieldstation.config.station import StationConfig
from fieldstation.home import StationHome

if TYPE_CHECKING:  # the store (SQLAlchemy) is imported where a job opens it, not by importers
    from fieldstation.store.db import Database

__all__ = [
    "EXIT_CONFIG",
    "ConfigurationError",
    "JobContext",
    "JobFunction",
    "ProgressFn",
    "StopEvent",
    "ignore_progress",
]

EXIT_CONFIG = 78
"""Exit status of a job process that raised :class:`ConfigurationError` (``EX_CONFIG`` of
BSD's sysexits.h, which systemd also knows): the supervisor does not restart it."""


class ConfigurationError(Exception):
    """A job cannot run with the station file as it is, and retrying will not help: a replay
    file that does not exist, a model whose extra is not installed, a sample rate the format
    cannot hold. The message names the key and what to do. The supervisor marks the job
    ``config_error`` and does not restart it until the station file changes or an operator
    starts it; every other exception is a transient fault, restarted with backoff."""


ProgressFn = Callable[[str, dict[str, Any]], None]
"""``progress(what, details)``: e.g. ``("chunk", {"recording_id": 12})``, ``("idle", {})``."""


def ignore_progress(what: str, details: dict[str, Any]) -> None:
    """A progress callback that drops reports (for one-shot commands)."""


class StopEvent(threading.Event):
    """A job's stop event: setting it also sets the events linked to it (``ctx.wake``)."""

    def __init__(self) -> None:
        super().__init__()
        self.linked: list[threading.Event] = []

    def set(self) -> None:
        super().set()
        for event in self.linked:
            event.set()


@dataclass
class JobContext:
    """Everything a job needs. Open the database in the job's own process (``ctx.db``)."""

    config: StationConfig
    home: StationHome
    deployment_id: int
    clock: Clock = field(default_factory=SystemClock)
    stop: threading.Event = field(default_factory=StopEvent)
    progress: ProgressFn = ignore_progress
    name: str = ""
    """Job name (``recorder:<sensor>``, ``processor:<name>``), for logs and events."""
    wake: threading.Event = field(default_factory=threading.Event)
    """Set when there may be new work (the supervisor's nudge, SIGUSR2 in a job process) and
    whenever ``stop`` is set: an idle job waits on it instead of ``stop`` and clears it, so it
    starts at once instead of at its next poll. When ``stop`` is a plain ``threading.Event``
    (not a :class:`StopEvent`), ``wake`` is ``stop`` itself: no nudges, but no missed stop."""
    stop_reason: str = "shutdown"
    """End reason for work cut short by ``stop``: ``shutdown`` (station stops) or ``stopped``
    (an operator stopped this job); set it before setting ``stop``."""

    def __post_init__(self) -> None:
        if isinstance(self.stop, StopEvent):
            self.stop.linked.append(self.wake)
            if self.stop.is_set():
                self.wake.set()
        else:
            self.wake = self.stop

    @cached_property
    def db(self) -> Database:
        """The station database, opened on first use in the calling process (no migration)."""
        from fieldstation.store.db import open_database

        return open_database(self.home.database, migrate=False)


class JobFunction(Protocol):
    """A job: runs until ``ctx.stop`` is set; raises to report a crash."""

    def __call__(self, ctx: JobContext) -> None: ...
