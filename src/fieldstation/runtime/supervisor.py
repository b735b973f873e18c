"""The supervisor: owns every job, restarts what dies or stalls, answers commands.

Process jobs run in child processes started through a fork server (see :mod:`.jobs`); thread jobs
run as threads of the supervisor. One loop (:meth:`Supervisor.run`) waits on the children's
progress pipes and exit sentinels, judges liveness, applies the restart policy and runs the
commands other threads submit (``start_job``/``stop_job``/``restart_job`` from the control
API). Only the loop thread changes job state; :meth:`snapshot` reads it under a lock.

Job states: ``starting`` (spawned, nothing reported yet), ``running``, ``stopping`` (asked to
stop, or killed for hanging), ``backoff`` (waiting to restart), ``stopped`` (by an operator or
the shutdown; stays stopped until started), ``failed`` (restart intensity exceeded; stays
failed until started, or until ``runtime.failed_retry`` seconds have passed).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from fieldstation.clock import Clock
from fieldstation.config.station import StationConfig, config_data
from fieldstation.home import StationHome
from fieldstation.runtime.jobs import (
    WAKE_SIGNAL,
    ChildProcess,
    ProcessJobSpec,
    ThreadJobSpec,
    fork_fork_server,
    log_file_of,
    start_job,
)
from fieldstation.runtime.policy import RestartPolicy

__all__ = ["EventSink", "JobStateError", "Supervisor", "UnknownJobError", "tail_lines"]

log = logging.getLogger(__name__)

EventSink = Callable[[str, str, str, str, dict[str, Any]], None]
"""``sink(kind, source, message, severity, data)``: record an event (db row + outbox)."""

LOG_TAIL_LINES = 20
"""Lines of a job's log attached to its restart event."""


class UnknownJobError(KeyError):
    """No job of that name; the message lists the jobs there are."""

    def __str__(self) -> str:
        return str(self.args[0])


class JobStateError(RuntimeError):
    """The command does not apply to the job's state."""


def tail_lines(path: os.PathLike[str] | str, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``lines`` whole lines of a text file (``lines`` < 1: none; empty when the file
    does not exist). Reads backwards in 64 KiB blocks until it has them, however long they
    are."""
    if lines < 1:
        return []
    block = 65536
    try:
        with open(path, "rb") as handle:
            start = handle.seek(0, os.SEEK_END)
            data = b""
            while start > 0 and data.count(b"\n") <= lines:
                step = min(block, start)
                start -= step
                handle.seek(start)
                data = handle.read(step) + data
    except OSError:
        return []
    found = data.decode("utf-8", errors="replace").splitlines()
    if start > 0:
        found = found[1:]  # the first line read may be cut: only whole lines
    return found[-lines:]


@dataclass
class _Job:
    spec: ProcessJobSpec | ThreadJobSpec
    policy: RestartPolicy
    state: str = "stopped"
    wanted: bool = True
    """Should run (False after an operator stop or during shutdown)."""
    restart_after_stop: bool = False
    process: ChildProcess | None = None
    conn: Connection | None = None
    thread: threading.Thread | None = None
    thread_stop: threading.Event = field(default_factory=threading.Event)
    thread_error: str | None = None
    pid: int | None = None
    pgids: set[int] = field(default_factory=set)
    started_at: float | None = None
    last_what: str | None = None
    last_details: dict[str, Any] = field(default_factory=dict)
    last_at: float | None = None
    last_wall: str | None = None
    next_slot: str | None = None
    next_start: float | None = None
    kill_at: float | None = None
    stop_cause: str | None = None
    exit_code: int | None = None
    reason: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_process(self) -> bool:
        return isinstance(self.spec, ProcessJobSpec)

    @property
    def alive(self) -> bool:
        if self.process is not None:
            return self.process.exitcode is None
        return self.thread is not None and self.thread.is_alive()


class Supervisor:
    """Runs ``jobs`` (process and thread specs) and keeps them running.

    ``events``: where restarts and failures are recorded (default: only logged).
    ``on_progress(job, what, details)``: called in the loop thread for every report.
    ``tick``: longest wait of the loop (s); bounds how late liveness acts (reports, exits,
    commands and ``stop`` wake the loop at once; backoff deadlines shorten the wait).
    ``on_exit(job, pid)``: called in the loop thread when a job's process has ended.
    """

    def __init__(
        self,
        config: StationConfig,
        home: StationHome,
        deployment_id: int,
        clock: Clock,
        jobs: Sequence[ProcessJobSpec | ThreadJobSpec],
        *,
        events: EventSink | None = None,
        on_progress: Callable[[str, str, dict[str, Any]], None] | None = None,
        jitter: Callable[[], float] | None = None,
        tick: float = 5.0,
        on_exit: Callable[[str, int | None], None] | None = None,
    ) -> None:
        self.config = config
        self.home = home
        self.deployment_id = deployment_id
        self.clock = clock
        self.events = events
        self.on_progress = on_progress
        self.on_exit = on_exit
        self.tick = tick
        self._config_data = config_data(config)
        self._jobs: dict[str, _Job] = {}
        for spec in jobs:
            if spec.name in self._jobs:
                raise ValueError(f"two jobs named {spec.name!r}")
            policy = RestartPolicy.from_config(config.runtime, jitter=jitter)
            self._jobs[spec.name] = _Job(spec=spec, policy=policy)
        self._lock = threading.RLock()
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = (
            queue.SimpleQueue()
        )
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._loop_thread: threading.Thread | None = None
        self.last_tick: float = clock.monotonic()
        self.shutting_down = False

    # --- public API (any thread) -------------------------------------------------------------

    @property
    def job_names(self) -> list[str]:
        return list(self._jobs)

    def prepare(self) -> None:
        """Start the fork server now (before the caller starts threads); idempotent."""
        fork_fork_server()

    def start(self) -> None:
        """Start every job (call from the loop thread, before :meth:`run`)."""
        self.prepare()
        for job in self._jobs.values():
            self._spawn(job)

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set, then stop every job (:meth:`shutdown`)."""
        self._loop_thread = threading.current_thread()
        waker = threading.Thread(target=self._wake_on, args=(stop,), name="wake", daemon=True)
        waker.start()
        try:
            while not stop.is_set():
                self.step(self.tick)
        finally:
            self.shutdown()
            waker.join(1.0)

    def _wake_on(self, stop: threading.Event) -> None:
        stop.wait()  # blocks without polling
        self.wake()

    def wake(self) -> None:
        """Make the loop turn now (e.g. after ``stop`` was set)."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def snapshot(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per job: name, kind, state, pid, uptime_s, restarts, ..."""
        now = self.clock.monotonic()
        with self._lock:
            return [self._describe(job, now) for job in self._jobs.values()]

    def job(self, name: str) -> dict[str, Any]:
        """The snapshot of job ``name``; raises :class:`UnknownJobError`."""
        job = self._get(name)
        with self._lock:
            return self._describe(job, self.clock.monotonic())

    def loop_alive(self, max_loop_age: float | None = None) -> bool:
        """True while the loop turns: its last turn is at most ``max_loop_age`` s old
        (default ``3 * tick + 5``). This is what feeds the systemd watchdog: a loop that no
        longer turns can restart nothing, so only a restart of the whole station helps."""
        limit = max_loop_age if max_loop_age is not None else 3 * self.tick + 5.0
        return self.clock.monotonic() - self.last_tick <= limit

    def failed_jobs(self) -> list[str]:
        """Names of the jobs in state ``failed`` (restart intensity exceeded)."""
        with self._lock:
            return [job.name for job in self._jobs.values() if job.state == "failed"]

    def healthy(self, max_loop_age: float | None = None) -> bool:
        """True while the loop turns (:meth:`loop_alive`) and no job has failed."""
        return self.loop_alive(max_loop_age) and not self.failed_jobs()

    def start_job(self, name: str) -> dict[str, Any]:
        """Start a stopped or failed job (forgets its past restarts); returns its snapshot."""
        return self._call(lambda: self._start_job(self._get(name)), name)

    def stop_job(self, name: str) -> dict[str, Any]:
        """Stop a job (stop reason ``stopped``); it stays stopped until started."""
        return self._call(lambda: self._stop_job(self._get(name)), name)

    def restart_job(self, name: str) -> dict[str, Any]:
        """Stop a job (reason ``stopped``) and start it again once it has exited."""
        return self._call(lambda: self._restart_job(self._get(name)), name)

    # --- loop ---------------------------------------------------------------------------------

    def step(self, timeout: float) -> None:
        """One turn of the loop: wait up to ``timeout`` s for reports, exits or commands."""
        now = self.clock.monotonic()
        self.last_tick = now
        deadlines = [
            d for job in self._jobs.values() for d in (job.next_start, job.kill_at) if d is not None
        ]
        if deadlines:
            timeout = max(0.0, min(timeout, min(deadlines) - now))
        waitables: list[Any] = [self._wake_r]
        for job in self._jobs.values():
            if job.conn is not None:
                waitables.append(job.conn)
            if job.process is not None:
                waitables.append(job.process.sentinel)
        ready = wait(waitables, timeout)
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError, OSError):
                os.read(self._wake_r, 4096)
        self._run_commands()
        for job in self._jobs.values():
            if job.conn is not None and job.conn in ready:
                self._drain(job)
        self._check(self.clock.monotonic())

    def _run_commands(self) -> None:
        while True:
            try:
                command, future = self._commands.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(command())
            except BaseException as error:
                future.set_exception(error)

    def _call(self, command: Callable[[], Any], name: str) -> dict[str, Any]:
        loop = self._loop_thread
        if loop is None or loop is threading.current_thread() or not loop.is_alive():
            command()
        else:
            future: Future[Any] = Future()
            self._commands.put((command, future))
            self.wake()
            future.result(timeout=30)
        return self.job(name)

    def _get(self, name: str) -> _Job:
        try:
            return self._jobs[name]
        except KeyError:
            raise UnknownJobError(
                f"no job named {name!r}; jobs: {', '.join(self._jobs) or 'none'}"
            ) from None

    def _drain(self, job: _Job) -> None:
        conn = job.conn
        if conn is None:
            return
        try:
            while conn.poll():
                self._on_report(job, conn.recv_bytes())
        except (EOFError, OSError):
            conn.close()
            job.conn = None

    def _on_report(self, job: _Job, data: bytes) -> None:
        try:
            message = json.loads(data)
            what, details = str(message["what"]), dict(message.get("details") or {})
        except (ValueError, KeyError, TypeError):
            log.warning("job %s sent a malformed report: %r", job.name, data[:200])
            return
        with self._lock:
            job.last_what, job.last_details = what, details
            job.last_at = self.clock.monotonic()
            job.last_wall = message.get("at") or self.clock.now().isoformat()
            if job.state == "starting":
                job.state = "running"
            if what == "waiting":
                job.next_slot = details.get("next_slot")
            elif what == "slot":
                job.next_slot = None
        if what == "chunk" and not self._drains(job):
            self._nudge_consumers()  # a new recording: processors start on it at once
        if self.on_progress is not None:
            try:
                self.on_progress(job.name, what, details)
            except Exception:
                log.exception("progress callback failed")

    def _check(self, now: float) -> None:
        for job in self._jobs.values():
            if job.process is not None or job.thread is not None:
                if not job.alive:
                    self._on_exit(job, now)
                    continue
                if job.state in ("starting", "running") and job.is_process:
                    assert isinstance(job.spec, ProcessJobSpec)
                    why = job.spec.liveness.stalled(job.last_what, job.last_at, now)
                    if why is not None:
                        log.warning("job %s hangs: %s; killing it", job.name, why)
                        job.reason = f"hung: {why}"
                        self._terminate(job, "hung", signal.SIGTERM, now)
                if job.kill_at is not None and now >= job.kill_at and job.alive:
                    log.warning("job %s did not stop in time; SIGKILL", job.name)
                    self._kill_group(job, signal.SIGKILL)
                    job.kill_at = None
            elif job.state == "backoff" and job.next_start is not None and now >= job.next_start:
                self._spawn(job)
            elif job.state == "failed" and job.next_start is not None and now >= job.next_start:
                job.policy.reset()
                self._event(
                    "job_retried",
                    job.name,
                    f"job {job.name} failed {self.config.runtime.failed_retry:.0f} s ago; "
                    "starting it again with a fresh restart budget",
                    "info",
                    {"job": job.name, "reason": job.reason},
                )
                log.info("job %s: retrying after its failure", job.name)
                self._spawn(job)

    # --- transitions (loop thread) -------------------------------------------------------------

    def _spawn(self, job: _Job) -> None:
        with self._lock:
            job.next_start = job.kill_at = None
            job.stop_cause = None
            job.wanted = True
            job.restart_after_stop = False
            job.last_what, job.last_details, job.last_at = None, {}, None
            job.started_at = self.clock.monotonic()
            job.state = "starting"
            if isinstance(job.spec, ThreadJobSpec):
                job.thread_stop = threading.Event()
                job.thread_error = None
                job.thread = threading.Thread(
                    target=self._thread_main, args=(job,), name=job.name, daemon=True
                )
                job.thread.start()
                job.state = "running"
                return
            process, reader = start_job(job.spec, self._config_data, self.home, self.deployment_id)
            job.process, job.conn, job.pid = process, reader, process.pid
            job.pgids.add(process.pid)
        log.info("job %s started (pid %s)", job.name, job.pid)

    def _thread_main(self, job: _Job) -> None:
        assert isinstance(job.spec, ThreadJobSpec)
        try:
            job.spec.run(job.thread_stop)
        except Exception as error:
            log.exception("thread job %s crashed", job.name)
            job.thread_error = f"{type(error).__name__}: {error}"

    def _terminate(self, job: _Job, cause: str, sig: signal.Signals, now: float) -> None:
        job.stop_cause = cause
        job.state = "stopping"
        job.kill_at = now + self.config.runtime.stop_timeout
        if job.thread is not None:
            job.thread_stop.set()
            return
        if job.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(job.pid, sig)

    def _kill_group(self, job: _Job, sig: signal.Signals) -> None:
        for pgid in list(job.pgids):
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                job.pgids.discard(pgid)
        if job.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(job.pid, sig)

    def _on_exit(self, job: _Job, now: float) -> None:
        self._drain(job)
        code: int | None
        if job.process is not None:
            job.process.join(0)
            code = job.process.exitcode
            with contextlib.suppress(ValueError):
                job.process.close()
            if job.conn is not None:
                job.conn.close()
        else:
            code = 1 if job.thread_error else 0
        uptime = now - job.started_at if job.started_at is not None else 0.0
        with self._lock:
            job.process = job.conn = job.thread = None
            job.exit_code = code
            job.kill_at = None
            cause, job.stop_cause = job.stop_cause, None
            pid, job.pid = job.pid, None
        # whatever the job left in its process group goes with it
        self._kill_group(job, signal.SIGKILL)
        if self.on_exit is not None and job.is_process:
            try:
                self.on_exit(job.name, pid)
            except Exception:
                log.exception("exit callback of %s failed", job.name)
        if cause in ("stopped", "shutdown") or not job.wanted or self.shutting_down:
            with self._lock:
                job.state = "stopped"
                job.reason = cause
            log.info("job %s stopped (exit %s)", job.name, code)
            if job.restart_after_stop and not self.shutting_down:
                job.policy.reset()
                self._spawn(job)
            return
        reason = job.reason if cause == "hung" else (job.thread_error or "exited")
        decision = job.policy.on_exit(now)
        # a thread job logs into the supervisor's own log (with its crash traceback)
        tail = tail_lines(log_file_of(self.home, job.name if job.is_process else "station"))
        data = {
            "job": job.name,
            "exit_code": code,
            "pid": pid,
            "reason": reason,
            "uptime_s": round(uptime, 3),
            "restarts_in_window": decision.restarts_in_window,
            "log_tail": tail,
        }
        if decision.restart:
            with self._lock:
                job.state = "backoff"
                job.next_start = now + decision.delay
                job.reason = reason
            data["delay_s"] = round(decision.delay, 3)
            log.warning(
                "job %s ended (%s, exit %s); restart in %.1f s",
                job.name,
                reason,
                code,
                decision.delay,
            )
            self._event(
                "job_restarted",
                job.name,
                f"job {job.name} ended ({reason}, exit code {code}); "
                f"restarting in {decision.delay:.1f} s",
                "warning",
                data,
            )
        else:
            retry = self.config.runtime.failed_retry
            with self._lock:
                job.state = "failed"
                job.next_start = now + retry if retry > 0 else None
                job.reason = (
                    f"more than {job.policy.max_restarts} restarts in "
                    f"{job.policy.restart_window:.0f} s; last: {reason}"
                )
            log.error("job %s failed: %s", job.name, job.reason)
            self._event(
                "job_failed",
                job.name,
                f"job {job.name} failed: {job.reason} (exit code {code}); "
                + (f"it is tried again in {retry:.0f} s, or " if retry > 0 else "")
                + f"start it again with `fieldstation start {job.name}`",
                "error",
                data,
            )

    def _event(
        self, kind: str, source: str, message: str, severity: str, data: dict[str, Any]
    ) -> None:
        if self.events is None:
            return
        try:
            self.events(kind, source, message, severity, data)
        except Exception:
            log.exception("could not record event %s of %s", kind, source)

    def _start_job(self, job: _Job) -> None:
        job.policy.reset()
        if job.state in ("stopped", "failed", "backoff"):
            self._spawn(job)
        elif job.state == "stopping":
            job.restart_after_stop = True
            job.wanted = True

    def _stop_job(self, job: _Job) -> None:
        job.wanted = False
        job.restart_after_stop = False
        if job.alive:
            if job.state != "stopping" or job.stop_cause == "hung":
                self._terminate(job, "stopped", signal.SIGUSR1, self.clock.monotonic())
        else:
            with self._lock:
                job.state = "stopped"
                job.next_start = None
                job.reason = "stopped"

    def _restart_job(self, job: _Job) -> None:
        if job.alive:
            self._stop_job(job)
            job.restart_after_stop = True
        else:
            self._start_job(job)

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop every job in order: producers, then drained consumers, then threads.

        1. Process jobs without ``drain`` (the producers: recorders) get SIGTERM (reason
           ``shutdown``), so each closes its open chunk; SIGKILL after ``timeout`` seconds
           (default ``runtime.stop_timeout``).
        2. Process jobs with ``drain`` (processors) keep running until each has reported
           ``idle`` after step 1 ended (it has processed what the producers committed while
           closing), at most ``timeout`` seconds; then SIGTERM, SIGKILL after ``timeout``.
        3. Thread jobs (delivery, heartbeat, ...) stop last, so the outbox still sees what the
           process jobs committed.

        Waits until every child has exited and kills each job's whole process group.
        """
        self.shutting_down = True
        limit = timeout if timeout is not None else self.config.runtime.stop_timeout
        now = self.clock.monotonic()
        for job in self._jobs.values():
            job.wanted = False
            job.next_start = None
            if not job.alive and job.state in ("backoff", "starting", "running"):
                job.state = "stopped"
        producers = [j for j in self._jobs.values() if j.is_process and not self._drains(j)]
        consumers = [j for j in self._jobs.values() if j.is_process and self._drains(j)]
        self._stop_processes(producers, limit)
        self._await_idle(consumers, self.clock.monotonic() + limit)
        self._stop_processes(consumers, limit)
        now = self.clock.monotonic()
        for job in self._jobs.values():
            if job.thread is not None:
                self._terminate(job, "shutdown", signal.SIGTERM, now)
        deadline = now + limit
        for job in self._jobs.values():
            if job.thread is not None:
                job.thread.join(max(0.1, deadline - self.clock.monotonic()))
                if not job.thread.is_alive():
                    self._on_exit(job, self.clock.monotonic())
                else:
                    log.warning("thread job %s did not stop in time", job.name)
            self._kill_group(job, signal.SIGKILL)

    @staticmethod
    def _drains(job: _Job) -> bool:
        return isinstance(job.spec, ProcessJobSpec) and job.spec.drain

    def _stop_processes(self, jobs: list[_Job], limit: float) -> None:
        """SIGTERM the live ``jobs``; SIGKILL what still runs after ``limit`` s; reap all."""
        now = self.clock.monotonic()
        for job in jobs:
            if job.alive:
                self._terminate(job, "shutdown", signal.SIGTERM, now)
        deadline = now + limit
        while any(j.process is not None for j in jobs):
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                for job in jobs:
                    if job.process is not None:
                        log.warning("job %s ignored SIGTERM; SIGKILL", job.name)
                        self._kill_group(job, signal.SIGKILL)
                deadline = self.clock.monotonic() + 5.0
            sentinels = [j.process.sentinel for j in jobs if j.process is not None]
            wait(sentinels, max(0.0, min(0.5, remaining)))
            self._reap(jobs)

    def _nudge_consumers(self) -> None:
        """Send :data:`~.jobs.WAKE_SIGNAL` to every running ``drain`` job (a processor).

        Only to jobs that have reported (state ``running``): their handler is installed then;
        before it, the signal's default action would end the process."""
        for job in self._jobs.values():
            if self._drains(job) and job.state == "running" and job.alive and job.pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(job.pid, WAKE_SIGNAL)

    def _await_idle(self, jobs: list[_Job], deadline: float) -> None:
        """Let ``jobs`` run until each has reported ``idle`` from now on, or ``deadline``."""
        since = self.clock.monotonic()  # an idle reported before does not count
        self._nudge_consumers()  # look for the producers' last chunks now, not at the next poll

        def busy() -> list[_Job]:
            return [
                j
                for j in jobs
                if j.alive and not (j.last_what == "idle" and (j.last_at or 0.0) >= since)
            ]

        waiting = busy()
        if waiting:
            log.info("letting %s finish pending work", ", ".join(j.name for j in waiting))
        while waiting and self.clock.monotonic() < deadline:
            conns = [j.conn for j in waiting if j.conn is not None]
            sentinels = [j.process.sentinel for j in waiting if j.process is not None]
            remaining = deadline - self.clock.monotonic()
            ready = wait([*conns, *sentinels], max(0.0, min(0.5, remaining)))
            for job in waiting:
                if job.conn is not None and job.conn in ready:
                    self._drain(job)
            self._reap(jobs)
            waiting = busy()
        if waiting:
            log.warning(
                "%s still busy after the drain time; stopping anyway",
                ", ".join(j.name for j in waiting),
            )

    def _reap(self, jobs: list[_Job]) -> None:
        for job in jobs:
            if job.process is not None and not job.alive:
                self._on_exit(job, self.clock.monotonic())

    def close(self) -> None:
        """Release the wake-up pipe (after :meth:`shutdown`)."""
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # --- describing ------------------------------------------------------------------------

    def _describe(self, job: _Job, now: float) -> dict[str, Any]:
        uptime = None
        if job.state in ("starting", "running", "stopping") and job.started_at is not None:
            uptime = round(now - job.started_at, 3)
        last: dict[str, Any] | None = None
        if job.last_what is not None:
            age = None if job.last_at is None else round(now - job.last_at, 3)
            last = {
                "what": job.last_what,
                "details": job.last_details,
                "at": job.last_wall,
                "age_s": age,
            }
        restart_in = None
        if job.state in ("backoff", "failed") and job.next_start is not None:
            restart_in = round(max(0.0, job.next_start - now), 3)
        return {
            "name": job.name,
            "kind": job.spec.kind,
            "state": job.state,
            "pid": job.pid if job.is_process else os.getpid(),
            "uptime_s": uptime,
            "restarts": job.policy.total_restarts,
            "last_progress": last,
            "next_slot": job.next_slot,
            "restart_in_s": restart_in,
            "exit_code": job.exit_code,
            "reason": job.reason,
        }
