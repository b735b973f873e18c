"""What a job reports and what state the supervisor judges it in: one vocabulary for all.

A job reports progress as ``(what, details)`` (:data:`fieldstation.job.ProgressFn`), sent over
the job's pipe as JSON ``{"what": ..., "details": {...}, "at": ...}``. This module gives each
kind of report a type (:func:`parse_report` turns the wire pair into one, ``report.details()``
back), so the supervisor, the status and the heartbeat read fields instead of dict keys. The
wire format is unchanged: producers may keep calling ``ctx.progress("chunk", {...})``.

:class:`JobState` is the one list of job states, shared by the supervisor, ``status``, the CLI
and the heartbeat (Home Assistant's ``ConfigEntryState`` does the same for integrations).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

__all__ = [
    "FAILING_STATES",
    "OK_STATES",
    "Chunk",
    "Claimed",
    "ConfigErrorReport",
    "Failed",
    "Idle",
    "JobState",
    "OtherReport",
    "Processed",
    "Report",
    "Slot",
    "Waiting",
    "judge_jobs",
    "parse_report",
    "report_name",
]


class JobState(StrEnum):
    """The state of a supervised job (a ``str``: JSON and comparisons with text just work)."""

    STARTING = "starting"
    """Started; nothing reported yet."""
    RUNNING = "running"
    """Reported at least once (process) or its thread runs."""
    STOPPING = "stopping"
    """Asked to stop, or being killed for hanging."""
    BACKOFF = "backoff"
    """Ended unexpectedly; waits its backoff delay, then restarts."""
    STOPPED = "stopped"
    """Stopped by an operator or the shutdown; stays stopped until started."""
    FAILED = "failed"
    """Restart intensity exceeded; stays failed until started or ``runtime.failed_retry``."""
    CONFIG_ERROR = "config_error"
    """Exited with :data:`fieldstation.job.EXIT_CONFIG`: cannot run with this station file.
    Not restarted until an operator starts it (or the station restarts with a new file)."""
    HUNG = "hung"
    """A thread job that made no progress within its liveness timeout (threads cannot be
    killed: the systemd watchdog is starved so the whole station is restarted)."""


OK_STATES = frozenset({JobState.STARTING, JobState.RUNNING})
"""States of a job doing its work (nothing for an operator to see)."""

FAILING_STATES = frozenset({JobState.FAILED, JobState.CONFIG_ERROR, JobState.HUNG})
"""States of a job that will not work again by itself soon: the station is failing."""


def judge_jobs(
    jobs: Iterable[Mapping[str, Any]], *, stopping: bool = False
) -> tuple[list[str], list[str]]:
    """The one rule for what job states say about a station: ``(failing, degraded)``, one
    line per job that is not well, for ``status`` (its ``health``) and the heartbeat.

    ``jobs``: dicts with ``name``, ``state`` (a :class:`JobState` value) and optionally
    ``reason`` and ``problem`` (as in the supervisor's snapshot). Failing: a job in
    :data:`FAILING_STATES` (``"job NAME STATE: REASON"``). Degraded: a job that says it
    cannot do its work (``"job NAME: PROBLEM"``), or one in a state outside
    :data:`OK_STATES` (``"job NAME STATE"``, with ``: REASON`` when there is one), except
    ``stopped`` while ``stopping`` (the station's ordered shutdown stops jobs on purpose).
    """
    failing: list[str] = []
    degraded: list[str] = []
    for job in jobs:
        state = str(job.get("state", "unknown"))
        name = job.get("name", "?")
        reason, problem = job.get("reason"), job.get("problem")
        because = f": {reason}" if reason else ""
        if state in FAILING_STATES:
            failing.append(f"job {name} {state}{because}")
        elif problem:
            degraded.append(f"job {name}: {problem}")
        elif state not in OK_STATES and not (stopping and state == JobState.STOPPED):
            degraded.append(f"job {name} {state}{because}")
    return failing, degraded


@dataclass(frozen=True)
class Report:
    """Base of the typed progress reports; ``what`` names the kind on the wire."""

    what: ClassVar[str] = ""

    def details(self) -> dict[str, Any]:
        """The wire ``details`` of this report (fields that are None are left out)."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Slot(Report):
    """A recorder opened a slot (ISO times); a ``chunk`` is due from now on."""

    what: ClassVar[str] = "slot"
    start: str | None = None
    end: str | None = None


@dataclass(frozen=True)
class Chunk(Report):
    """A recorder committed a chunk: recording row ``recording_id``, ``frames`` long."""

    what: ClassVar[str] = "chunk"
    recording_id: int | None = None
    path: str | None = None
    frames: int | None = None


@dataclass(frozen=True)
class Waiting(Report):
    """A recorder is not recording: between slots (``reason`` None) or because it cannot
    (``reason``: a device error, low disk). ``next_slot``: ISO time it looks again."""

    what: ClassVar[str] = "waiting"
    next_slot: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Claimed(Report):
    """A processor claimed recording ``recording_id``; its outcome is due within its timeout."""

    what: ClassVar[str] = "claimed"
    recording_id: int | None = None


@dataclass(frozen=True)
class Processed(Report):
    """A processor finished recording ``recording_id`` with ``detections`` kept."""

    what: ClassVar[str] = "processed"
    recording_id: int | None = None
    detections: int | None = None


@dataclass(frozen=True)
class Failed(Report):
    """A processor's attempt at ``recording_id`` failed (``final``: no retry left)."""

    what: ClassVar[str] = "failed"
    recording_id: int | None = None
    error: str | None = None
    final: bool | None = None


@dataclass(frozen=True)
class Idle(Report):
    """A processor found nothing to do (``pending`` recordings still not claimable)."""

    what: ClassVar[str] = "idle"
    pending: int | None = None


@dataclass(frozen=True)
class ConfigErrorReport(Report):
    """The job raised :class:`fieldstation.job.ConfigurationError`; it exits 78 next."""

    what: ClassVar[str] = "config_error"
    reason: str | None = None


@dataclass(frozen=True)
class OtherReport(Report):
    """Any other report (kept as sent, so new kinds need no change here)."""

    kind: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def details(self) -> dict[str, Any]:
        return dict(self.extra)


_KINDS: dict[str, type[Report]] = {
    cls.what: cls
    for cls in (Slot, Chunk, Waiting, Claimed, Processed, Failed, Idle, ConfigErrorReport)
}


def parse_report(what: str, details: dict[str, Any] | None = None) -> Report:
    """The typed report of a wire pair; unknown kinds, unknown keys and wrongly typed values
    never raise (a report is information, not a command): unknown kinds become
    :class:`OtherReport`, unknown keys are dropped from the typed one."""
    data = dict(details or {})
    cls = _KINDS.get(what)
    if cls is None:
        return OtherReport(kind=what, extra=data)
    names = {f for f in cls.__dataclass_fields__}
    return cls(**{k: v for k, v in data.items() if k in names})


def report_name(report: Report) -> str:
    """The wire ``what`` of ``report`` (an :class:`OtherReport` keeps its own)."""
    return report.kind if isinstance(report, OtherReport) else report.what
