"""The supervisor's decisions, without I/O: (state, event, now) -> actions.

:class:`JobCore` is the life of ONE supervised job as a state machine over
:class:`~fieldstation.progress.JobState`. It is fed what happened (the job was spawned, it
reported, it exited with a code, time passed, an operator asked) with the monotonic time of
the injected clock, changes its state and returns what to do as plain data
(:class:`Spawn`, :class:`Signal`, :class:`Record`, :class:`Log`, :class:`Nudge`). It never
touches a process, a pipe, a signal, a thread or a file: the
:class:`~fieldstation.runtime.supervisor.Supervisor` does those, driving the core. So restart
backoff, restart intensity, ``failed_retry``, configuration errors and liveness kills are
tested on a :class:`~fieldstation.clock.VirtualClock` in milliseconds (the sans-IO shape of
h11 and of Trio's ``MockClock`` tests).

Not thread-safe: one owner (the supervisor's loop thread) calls it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from fieldstation.job import EXIT_CONFIG
from fieldstation.progress import (
    Chunk,
    ConfigErrorReport,
    Idle,
    JobState,
    Report,
    Slot,
    Waiting,
    report_name,
)
from fieldstation.runtime.liveness import AlwaysAlive, Liveness
from fieldstation.runtime.policy import RestartPolicy

__all__ = [
    "Action",
    "JobCore",
    "Log",
    "Nudge",
    "Record",
    "Signal",
    "Spawn",
    "exit_status",
    "has_pending_work",
]


@dataclass(frozen=True)
class Spawn:
    """Start the job (a new process or thread); the core already counts it as started."""

    job: str


@dataclass(frozen=True)
class Signal:
    """Tell the job to stop: ``stop`` (an operator: SIGUSR1), ``terminate`` (shutdown or a
    hang: SIGTERM), ``kill`` (SIGKILL to its whole process group). A thread job gets its stop
    event set for the first two, nothing for ``kill`` (threads cannot be killed)."""

    job: str
    how: Literal["stop", "terminate", "kill"]


@dataclass(frozen=True)
class Record:
    """Record an event (database row + outbox). ``log_tail``: attach the job's last log lines
    to ``data`` (read by the supervisor, which knows where the logs are)."""

    job: str
    kind: str
    severity: str
    message: str
    data: dict[str, Any]
    log_tail: bool = False


@dataclass(frozen=True)
class Log:
    """Write a line to the station log (the console too, under ``fieldstation run``)."""

    level: int
    message: str


@dataclass(frozen=True)
class Nudge:
    """A producer committed new data: wake the consumers (``drain`` jobs) now."""

    job: str


Action = Spawn | Signal | Record | Log | Nudge


def exit_status(states: Iterable[JobState]) -> int:
    """The exit status of a station whose jobs ended in ``states`` (decision record 0063):
    :data:`~fieldstation.job.EXIT_CONFIG` (78) when one is ``config_error``, 1 when one is
    ``failed`` or ``hung``, else 0."""
    found = set(states)
    if JobState.CONFIG_ERROR in found:
        return EXIT_CONFIG
    if found & {JobState.FAILED, JobState.HUNG}:
        return 1
    return 0


def has_pending_work(
    last: Report | None, last_at: float | None, last_chunk_at: float | None
) -> bool:
    """Whether a consumer may still have work: its last report is not ``idle``, or a producer
    committed a chunk (at monotonic ``last_chunk_at``) after that ``idle`` (at ``last_at``)."""
    if not isinstance(last, Idle):
        return True
    return last_chunk_at is not None and (last_at is None or last_chunk_at > last_at)


_ACTIVE = (JobState.STARTING, JobState.RUNNING, JobState.HUNG)


@dataclass
class JobCore:
    """Decisions for one job.

    ``process``: a process job (killed when it hangs) or a thread job (reported ``hung``).
    ``drain``: a consumer (processor), stopped after the producers at shutdown.
    ``stop_timeout``: seconds from the stop signal to SIGKILL. ``failed_retry``: seconds
    after which a ``failed`` job is tried again with a fresh budget (0: never).
    """

    name: str
    policy: RestartPolicy
    liveness: Liveness = field(default_factory=AlwaysAlive)
    process: bool = True
    drain: bool = False
    stop_timeout: float = 10.0
    failed_retry: float = 0.0
    state: JobState = JobState.STOPPED
    active: bool = False
    """A process or thread of this job exists (from :class:`Spawn` until :meth:`exited`)."""
    wanted: bool = True
    """Should run (False after an operator stop or during shutdown)."""
    shutting_down: bool = False
    restart_after_stop: bool = False
    started_at: float | None = None
    last: Report | None = None
    last_what: str | None = None
    last_at: float | None = None
    last_wall: str | None = None
    next_start: float | None = None
    kill_at: float | None = None
    stop_cause: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    config_reason: str | None = None
    waiting_reason: str | None = None
    """Why the job says it cannot work (a ``waiting`` report's reason), kept through the
    ``slot`` report of a retry until a ``chunk`` or a ``waiting`` without reason."""

    # --- events in --------------------------------------------------------------------------

    def begin(self, now: float) -> list[Action]:
        """Start the job for the first time (the station starts)."""
        return self._spawn(now)

    def reported(self, report: Report, now: float, wall: str | None = None) -> list[Action]:
        """The job sent ``report`` at monotonic ``now`` (``wall``: its ISO time)."""
        self.last, self.last_what, self.last_at = report, report_name(report), now
        self.last_wall = wall
        if self.state == JobState.STARTING:
            self.state = JobState.RUNNING
        if isinstance(report, ConfigErrorReport):
            self.config_reason = report.reason
        elif isinstance(report, Waiting):
            self.waiting_reason = report.reason
        elif isinstance(report, Chunk):
            self.waiting_reason = None
        if isinstance(report, Chunk) and not self.drain:
            return [Nudge(self.name)]  # a new recording: consumers start on it at once
        return []

    def observed(self, what: str, at: float) -> None:
        """Liveness input of a thread job (``busy``/``waiting`` since monotonic ``at``); not
        a progress report (the last report is kept)."""
        self.last_what, self.last_at = what, at

    def exited(
        self, now: float, code: int | None, pid: int | None = None, error: str | None = None
    ) -> list[Action]:
        """The job's process (exit ``code``) or thread (``error``: its exception) ended."""
        uptime = now - self.started_at if self.started_at is not None else 0.0
        self.active = False
        self.exit_code = code
        self.kill_at = None
        cause, self.stop_cause = self.stop_cause, None
        if cause in ("stopped", "shutdown") or not self.wanted or self.shutting_down:
            self.state = JobState.STOPPED
            self.reason = cause
            actions: list[Action] = [Log(logging.INFO, f"job {self.name} stopped (exit {code})")]
            if self.restart_after_stop and not self.shutting_down:
                self.policy.reset()
                actions += self._spawn(now)
            return actions
        data: dict[str, Any] = {"job": self.name, "exit_code": code, "pid": pid}
        if code == EXIT_CONFIG:
            return self._config_error(data)
        reason = self.reason if cause == "hung" else (error or "exited")
        decision = self.policy.on_exit(now)
        data.update(
            reason=reason,
            uptime_s=round(uptime, 3),
            restarts_in_window=decision.restarts_in_window,
        )
        if decision.restart:
            self.state = JobState.BACKOFF
            self.next_start = now + decision.delay
            self.reason = reason
            data["delay_s"] = round(decision.delay, 3)
            return [
                Log(
                    logging.WARNING,
                    f"job {self.name} ended ({reason}, exit {code}); "
                    f"restart in {decision.delay:.1f} s",
                ),
                Record(
                    self.name,
                    "job_restarted",
                    "warning",
                    f"job {self.name} ended ({reason}, exit code {code}); "
                    f"restarting in {decision.delay:.1f} s",
                    data,
                    log_tail=True,
                ),
            ]
        retry = self.failed_retry
        self.state = JobState.FAILED
        self.next_start = now + retry if retry > 0 else None
        self.reason = (
            f"more than {self.policy.max_restarts} restarts in "
            f"{self.policy.restart_window:.0f} s; last: {reason}"
        )
        return [
            Log(logging.ERROR, f"job {self.name} failed: {self.reason}"),
            Record(
                self.name,
                "job_failed",
                "error",
                f"job {self.name} failed: {self.reason} (exit code {code}); "
                + (f"it is tried again in {retry:.0f} s, or " if retry > 0 else "")
                + f"start it again with `fieldstation start {self.name}`",
                data,
                log_tail=True,
            ),
        ]

    def _config_error(self, data: dict[str, Any]) -> list[Action]:
        """Exit 78: the station file is wrong for this job. No restart, no backoff, no
        restart budget spent: ONE log line, ONE event, and the state says why."""
        reason = self.config_reason or f"configuration error (exit code {EXIT_CONFIG})"
        self.state = JobState.CONFIG_ERROR
        self.next_start = None
        self.reason = reason
        data["reason"] = reason
        how = f"fix the station file, then `fieldstation start {self.name}`"
        return [
            Log(
                logging.ERROR,
                f"job {self.name}: configuration error: {reason}; not restarted: {how}",
            ),
            Record(
                self.name,
                "job_config_error",
                "error",
                f"job {self.name} cannot run with this station file: {reason}; "
                f"it is not restarted: {how} (or restart the station)",
                data,
            ),
        ]

    def tick(self, now: float) -> list[Action]:
        """Time passed: liveness, SIGKILL deadlines, backoff and ``failed_retry`` restarts."""
        actions: list[Action] = []
        if self.active:
            if self.state in _ACTIVE:
                why = self.liveness.stalled(self.last_what, self.last_at, now)
                actions += self._judge(why, now)
            if self.kill_at is not None and now >= self.kill_at:
                actions.append(
                    Log(logging.WARNING, f"job {self.name} did not stop in time; SIGKILL")
                )
                actions.append(Signal(self.name, "kill"))
                self.kill_at = None
        elif self.state == JobState.BACKOFF and self._due(now):
            actions += self._spawn(now)
        elif self.state == JobState.FAILED and self._due(now):
            self.policy.reset()
            actions.append(
                Record(
                    self.name,
                    "job_retried",
                    "info",
                    f"job {self.name} failed {self.failed_retry:.0f} s ago; "
                    "starting it again with a fresh restart budget",
                    {"job": self.name, "reason": self.reason},
                )
            )
            actions.append(Log(logging.INFO, f"job {self.name}: retrying after its failure"))
            actions += self._spawn(now)
        return actions

    def _judge(self, why: str | None, now: float) -> list[Action]:
        if self.process:
            if why is None:
                return []
            self.reason = f"hung: {why}"
            return [
                Log(logging.WARNING, f"job {self.name} hangs: {why}; killing it"),
                *self._terminate("hung", "terminate", now),
            ]
        # a thread cannot be killed: report it, and the watchdog starves (see Supervisor)
        if why is not None and self.state != JobState.HUNG:
            self.state = JobState.HUNG
            self.reason = f"hung: {why}"
            return [
                Log(logging.ERROR, f"job {self.name} hangs: {why}"),
                Record(
                    self.name,
                    "job_hung",
                    "error",
                    f"thread job {self.name} hangs: {why}; the systemd watchdog is no longer "
                    "fed, so systemd restarts the station",
                    {"job": self.name, "reason": self.reason},
                ),
            ]
        if why is None and self.state == JobState.HUNG:
            self.state = JobState.RUNNING
            self.reason = None
            return [Log(logging.WARNING, f"job {self.name} turns again after hanging")]
        return []

    def _due(self, now: float) -> bool:
        return self.next_start is not None and now >= self.next_start

    # --- operator commands -------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        """An operator starts the job (forgets its past restarts)."""
        self.policy.reset()
        if self.state == JobState.STOPPING:
            self.restart_after_stop = True
            self.wanted = True
            return []
        if not self.active:
            return self._spawn(now)
        return []

    def stop(self, now: float) -> list[Action]:
        """An operator stops the job; it stays stopped until started."""
        self.wanted = False
        self.restart_after_stop = False
        if self.active:
            if self.state != JobState.STOPPING or self.stop_cause == "hung":
                return self._terminate("stopped", "stop", now)
            return []
        self.state = JobState.STOPPED
        self.next_start = None
        self.reason = "stopped"
        return []

    def restart(self, now: float) -> list[Action]:
        """An operator restarts the job: stop it, start it again once it has ended."""
        if self.active:
            actions = self.stop(now)
            self.restart_after_stop = True
            return actions
        return self.start(now)

    def begin_shutdown(self) -> None:
        """The station stops: nothing restarts from now on."""
        self.shutting_down = True
        self.wanted = False
        self.next_start = None
        if not self.active and self.state in (
            JobState.BACKOFF,
            JobState.STARTING,
            JobState.RUNNING,
        ):
            self.state = JobState.STOPPED

    def terminate(self, cause: str, now: float) -> list[Action]:
        """Stop the job for ``cause`` (``shutdown``) with SIGTERM, SIGKILL after
        ``stop_timeout`` s."""
        return self._terminate(cause, "terminate", now)

    def not_stopped(self, waited: float) -> list[Action]:
        """A thread job still runs ``waited`` s after it was told to stop (at shutdown). A
        thread cannot be killed: it counts as ``hung``, so the station exits with status 1
        (:func:`exit_status`, decision record 0063) and systemd sees the failure."""
        self.state = JobState.HUNG
        self.kill_at = None
        self.reason = f"hung: still running {waited:.1f} s after it was told to stop"
        return [
            Log(logging.ERROR, f"thread job {self.name} did not stop: {self.reason}"),
            Record(
                self.name,
                "job_hung",
                "error",
                f"thread job {self.name} did not stop: {self.reason}; the station exits with "
                "status 1",
                {"job": self.name, "reason": self.reason},
            ),
        ]

    # --- helpers -----------------------------------------------------------------------------

    def _spawn(self, now: float) -> list[Action]:
        self.next_start = self.kill_at = None
        self.stop_cause = None
        self.wanted = True
        self.restart_after_stop = False
        self.last, self.last_what, self.last_at, self.last_wall = None, None, None, None
        self.config_reason = None
        self.waiting_reason = None
        self.started_at = now
        self.active = True
        self.state = JobState.STARTING if self.process else JobState.RUNNING
        if not self.process:
            self.last_what, self.last_at = "busy", now  # it starts by running
        return [Spawn(self.name)]

    def _terminate(self, cause: str, how: Literal["stop", "terminate"], now: float) -> list[Action]:
        self.stop_cause = cause
        self.state = JobState.STOPPING
        self.kill_at = now + self.stop_timeout
        return [Signal(self.name, how)]

    # --- reading ------------------------------------------------------------------------------

    def deadline(self) -> float | None:
        """The next monotonic time :meth:`tick` must run at (restart or SIGKILL), or None."""
        times = [t for t in (self.next_start, self.kill_at) if t is not None]
        return min(times) if times else None

    @property
    def next_slot(self) -> str | None:
        """When a waiting recorder looks again (ISO), from its last report."""
        return self.last.next_slot if isinstance(self.last, Waiting) else None

    @property
    def in_slot(self) -> bool:
        """The last report says the job records (a recorder inside a slot)."""
        return isinstance(self.last, Slot | Chunk)

    @property
    def problem(self) -> str | None:
        """Why the job does not do its work, when it says so or is judged so: the reason of
        ``failed``/``config_error``/``hung``, or a recorder's ``waiting`` reason (a device
        error, low disk), kept while it retries (its ``slot`` report) until it records again.
        None while all is well (between slots included)."""
        if self.state in (JobState.FAILED, JobState.CONFIG_ERROR, JobState.HUNG):
            return self.reason
        if self.state in (JobState.RUNNING, JobState.STARTING):
            return self.waiting_reason
        return None

    def describe(self, now: float) -> dict[str, Any]:
        """JSON-ready state (without the OS fields: pid, kind)."""
        uptime = None
        if self.state in (*_ACTIVE, JobState.STOPPING) and self.started_at is not None:
            uptime = round(now - self.started_at, 3)
        last: dict[str, Any] | None = None
        if self.last is not None:
            age = None if self.last_at is None else round(now - self.last_at, 3)
            last = {
                "what": report_name(self.last),
                "details": self.last.details(),
                "at": self.last_wall,
                "age_s": age,
            }
        restart_in = None
        if self.state in (JobState.BACKOFF, JobState.FAILED) and self.next_start is not None:
            restart_in = round(max(0.0, self.next_start - now), 3)
        return {
            "name": self.name,
            "state": str(self.state),
            "uptime_s": uptime,
            "restarts": self.policy.total_restarts,
            "last_progress": last,
            "next_slot": self.next_slot,
            "in_slot": self.in_slot,
            "restart_in_s": restart_in,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "problem": self.problem,
        }
