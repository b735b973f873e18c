"""The supervisor: owns every job, restarts what dies or stalls, answers commands.

Process jobs run in child processes started through a fork server (see :mod:`.jobs`); thread jobs
run as threads of the supervisor. One loop (:meth:`Supervisor.run`) waits on the children's
progress pipes and exit sentinels and runs the commands other threads submit
(``start_job``/``stop_job``/``restart_job`` from the control API). What to do about each event
(restart after a backoff, fail, ``config_error``, kill a hung job) is decided by each job's
sans-IO :class:`~fieldstation.runtime.core.JobCore`; this module carries it out with processes,
pipes, signals and threads. Only the loop thread changes job state; :meth:`snapshot` reads it
under a lock.

Job states (:class:`~fieldstation.progress.JobState`): ``starting`` (spawned, nothing reported
yet), ``running``, ``stopping`` (asked to stop, or killed for hanging), ``backoff`` (waiting to
restart), ``stopped`` (by an operator or the shutdown; stays stopped until started), ``failed``
(restart intensity exceeded; stays failed until started, or until ``runtime.failed_retry``
seconds have passed), ``config_error`` (exited 78 after a ``config_error`` report: not restarted
until started), ``hung`` (a thread job whose loop stopped turning; reported, and the systemd
watchdog starves).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import threading
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from fieldstation.clock import Clock
from fieldstation.config.station import StationConfig, config_data
from fieldstation.home import StationHome
from fieldstation.job import EXIT_CONFIG, ConfigurationError
from fieldstation.progress import FAILING_STATES, Chunk, Idle, JobState, parse_report
from fieldstation.runtime.core import (
    Action,
    JobCore,
    Log,
    Nudge,
    Record,
    Signal,
    Spawn,
    exit_status,
    has_pending_work,
)
from fieldstation.runtime.forkserver import ForkServerError
from fieldstation.runtime.jobs import (
    WAKE_SIGNAL,
    ChildProcess,
    ProcessJobSpec,
    ThreadJobSpec,
    log_file_of,
    start_job,
)
from fieldstation.runtime.liveness import BUSY, WAITING
from fieldstation.runtime.policy import RestartPolicy

__all__ = [
    "EventSink",
    "JobStateError",
    "Supervisor",
    "TickingEvent",
    "UnknownJobError",
    "tail_lines",
]

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


class TickingEvent(threading.Event):
    """The stop event of a thread job, which also tells whether the thread's loop turns.

    Every loop of a thread job touches its stop event each turn (``stop.is_set()``, or a
    wait on it between turns). A touch marks the thread ``busy`` from now; a wait marks it
    ``waiting`` until the wait returns. :attr:`state` is read by the supervisor's loop thread
    and judged by the job's :class:`~fieldstation.runtime.liveness.ThreadLiveness`.
    """

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self._clock = clock
        self.state: tuple[str, float] = (BUSY, clock.monotonic())
        """(``busy`` | ``waiting``, since monotonic seconds); one attribute: swapped whole."""

    def is_set(self) -> bool:
        self.state = (BUSY, self._clock.monotonic())
        return super().is_set()

    def wait(self, timeout: float | None = None) -> bool:
        self.state = (WAITING, self._clock.monotonic())
        try:
            return super().wait(timeout)
        finally:
            self.state = (BUSY, self._clock.monotonic())


@dataclass
class _Job:
    """A job's OS side: its process (and pipe) or thread; the decisions are in ``core``."""

    spec: ProcessJobSpec | ThreadJobSpec
    core: JobCore
    process: ChildProcess | None = None
    conn: Connection | None = None
    thread: threading.Thread | None = None
    thread_stop: TickingEvent | None = None
    thread_error: str | None = None
    thread_config_error: bool = False
    pid: int | None = None
    pgids: set[int] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_process(self) -> bool:
        return isinstance(self.spec, ProcessJobSpec)

    @property
    def drains(self) -> bool:
        return isinstance(self.spec, ProcessJobSpec) and self.spec.drain

    @property
    def state(self) -> JobState:
        return self.core.state

    @property
    def alive(self) -> bool:
        if self.process is not None:
            return self.process.exitcode is None
        return self.thread is not None and self.thread.is_alive()


class Supervisor:
    """Runs ``jobs`` (process and thread specs) and keeps them running.

    The decisions (restart, backoff, failed, config_error, liveness) are each job's
    :class:`~fieldstation.runtime.core.JobCore`; this class does what they ask with processes,
    pipes, signals and threads, and feeds them what happened.

    ``events``: where restarts and failures are recorded (default: only logged).
    ``on_progress(job, what, details)``: called in the loop thread for every report.
    ``tick``: longest wait of the loop (s); bounds how late liveness acts (reports, exits,
    commands and ``stop`` wake the loop at once; backoff deadlines shorten the wait).
    ``on_exit(job, pid)``: called in the loop thread when a job's process has ended.
    ``exit_when_unrunnable``: :meth:`run` returns (the station stops) once every process job
    is in ``config_error`` (decision record 0063).
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
        exit_when_unrunnable: bool = False,
    ) -> None:
        self.config = config
        self.home = home
        self.deployment_id = deployment_id
        self.clock = clock
        self.events = events
        self.on_progress = on_progress
        self.on_exit = on_exit
        self.tick = tick
        self.exit_when_unrunnable = exit_when_unrunnable
        self._config_data = config_data(config)
        self._jitter = jitter
        self._jobs: dict[str, _Job] = {}
        for spec in jobs:
            if spec.name in self._jobs:
                raise ValueError(f"two jobs named {spec.name!r}")
            self._jobs[spec.name] = self._new_job(spec)
        self._lock = threading.RLock()
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = (
            queue.SimpleQueue()
        )
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._loop_thread: threading.Thread | None = None
        self.last_tick: float = clock.monotonic()
        self.shutting_down = False
        self._last_chunk_at: float | None = None
        self._retiring: set[str] = set()
        """Jobs removed by :meth:`reconfigure`: dropped once they have ended."""

    def _new_job(self, spec: ProcessJobSpec | ThreadJobSpec) -> _Job:
        core = JobCore(
            name=spec.name,
            policy=RestartPolicy.from_config(self.config.runtime, jitter=self._jitter),
            liveness=spec.liveness,
            process=isinstance(spec, ProcessJobSpec),
            drain=isinstance(spec, ProcessJobSpec) and spec.drain,
            stop_timeout=self.config.runtime.stop_timeout,
            failed_retry=self.config.runtime.failed_retry,
        )
        return _Job(spec=spec, core=core)

    # --- public API (any thread) -------------------------------------------------------------

    def start(self) -> None:
        """Start every job (call from the loop thread, before :meth:`run`). The fork server
        starts with the first process job when none runs; start it earlier, while the process
        is single-threaded, with :func:`~.forkserver.start_fork_server` (decision 0060)."""
        now = self.clock.monotonic()
        for job in self._jobs.values():
            with self._lock:
                actions = job.core.begin(now)
            self._apply(actions)

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set (or, with ``exit_when_unrunnable``, until no process job
        can run with this station file), then stop every job (:meth:`shutdown`)."""
        self._loop_thread = threading.current_thread()
        waker = threading.Thread(target=self._wake_on, args=(stop,), name="wake", daemon=True)
        waker.start()
        try:
            while not stop.is_set():
                self.step(self.tick)
                if self.exit_when_unrunnable and self.unrunnable():
                    log.error(
                        "no job can run with this station file (every one has a configuration "
                        "error); stopping"
                    )
                    break
        finally:
            self.shutdown()
            stop.set()
            waker.join(1.0)

    def _wake_on(self, stop: threading.Event) -> None:
        stop.wait()  # blocks without polling
        self.wake()

    def wake(self) -> None:
        """Make the loop turn now (e.g. after ``stop`` was set)."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def snapshot(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per job: name, kind, state, pid, uptime_s, restarts, reason,
        problem (why it does not do its work, or None), ..."""
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
        (default ``3 * tick + 5``). A loop that no longer turns can restart nothing, so only a
        restart of the whole station helps."""
        limit = max_loop_age if max_loop_age is not None else 3 * self.tick + 5.0
        return self.clock.monotonic() - self.last_tick <= limit

    def jobs_in(self, *states: JobState) -> list[str]:
        """Names of the jobs in any of ``states``."""
        with self._lock:
            return [job.name for job in self._jobs.values() if job.state in states]

    def failed_jobs(self) -> list[str]:
        """Names of the jobs that will not work again by themselves soon: ``failed``
        (restart intensity exceeded), ``config_error``, ``hung`` (a thread job)."""
        return self.jobs_in(*FAILING_STATES)

    def watchdog_ok(self, max_loop_age: float | None = None) -> bool:
        """Whether to feed the systemd watchdog: the loop turns and no thread job hangs.

        A hung thread cannot be killed or restarted inside the process; systemd restarting
        the whole station is the only cure (decision record 0064). A ``failed`` or
        ``config_error`` job does not starve it (decision record 0061).
        """
        return self.loop_alive(max_loop_age) and not self.jobs_in(JobState.HUNG)

    def healthy(self, max_loop_age: float | None = None) -> bool:
        """True while the loop turns (:meth:`loop_alive`) and no job has failed, has a
        configuration error or hangs."""
        return self.loop_alive(max_loop_age) and not self.failed_jobs()

    def unrunnable(self) -> bool:
        """Every process job (at least one) is in ``config_error``."""
        with self._lock:
            processes = [job for job in self._jobs.values() if job.is_process]
            return bool(processes) and all(job.state == JobState.CONFIG_ERROR for job in processes)

    def exit_status(self) -> int:
        """What ``fieldstation run`` exits with, from the jobs' states when it stopped:
        :data:`~fieldstation.job.EXIT_CONFIG` (78) when a job is in ``config_error``, 1 when
        one is ``failed`` or ``hung``, else 0 (decision record 0063)."""
        with self._lock:
            return exit_status(job.state for job in self._jobs.values())

    def start_job(self, name: str) -> dict[str, Any]:
        """Start a stopped, failed or misconfigured job (forgets its past restarts); returns
        its snapshot."""
        return self._call(lambda: self._command(name, JobCore.start), name)

    def stop_job(self, name: str) -> dict[str, Any]:
        """Stop a job (stop reason ``stopped``); it stays stopped until started."""
        return self._call(lambda: self._command(name, JobCore.stop), name)

    def restart_job(self, name: str) -> dict[str, Any]:
        """Stop a job (reason ``stopped``) and start it again once it has exited."""
        return self._call(lambda: self._command(name, JobCore.restart), name)

    def reconfigure(
        self,
        config: StationConfig,
        deployment_id: int,
        specs: Sequence[ProcessJobSpec | ThreadJobSpec],
        *,
        restart: Collection[str] = (),
        add: Collection[str] = (),
        remove: Collection[str] = (),
    ) -> None:
        """Take a new station file while running (:mod:`.reconfigure` decides the names).

        From now on process jobs start with ``config`` and ``deployment_id``. Each job in
        ``restart`` gets its new spec from ``specs`` and is stopped and started again (one an
        operator stopped only gets the spec and stays stopped); each in ``add`` is started;
        each in ``remove`` is stopped and dropped once it has ended. Other jobs run on
        untouched. Runs in the loop thread; returns once the stops and starts are under way.
        Raises ``KeyError`` when ``specs`` lacks a restarted or added job.
        """
        by_name = {spec.name: spec for spec in specs}
        for name in (*restart, *add):
            if name not in by_name:
                raise KeyError(f"no spec for job {name!r}")

        def command() -> None:
            now = self.clock.monotonic()
            self.config, self.deployment_id = config, deployment_id
            self._config_data = config_data(config)
            for name in remove:
                job = self._jobs.get(name)
                if job is None:
                    continue
                with self._lock:
                    self._retiring.add(name)
                    actions = job.core.stop(now)
                self._apply(actions)
            for name in restart:
                job = self._jobs.get(name)
                if job is None:
                    continue
                with self._lock:
                    self._retiring.discard(name)
                    job.spec = by_name[name]
                    job.core.liveness = by_name[name].liveness
                    held = not job.core.wanted and job.state == JobState.STOPPED
                    actions = [] if held else job.core.restart(now)
                self._apply(actions)
            for name in add:
                with self._lock:
                    self._retiring.discard(name)
                    job = self._jobs.get(name)
                    if job is None:
                        job = self._jobs[name] = self._new_job(by_name[name])
                    else:  # still ending after a removal: it starts again once ended
                        job.spec = by_name[name]
                        job.core.liveness = by_name[name].liveness
                    actions = job.core.start(now)
                self._apply(actions)
            self._drop_retired()

        self._submit(command)

    def _submit(self, command: Callable[[], Any]) -> Any:
        """Run ``command`` in the loop thread (here when there is none) and return its result."""
        loop = self._loop_thread
        if loop is None or loop is threading.current_thread() or not loop.is_alive():
            return command()
        future: Future[Any] = Future()
        self._commands.put((command, future))
        self.wake()
        return future.result(timeout=30)

    def _drop_retired(self) -> None:
        """Forget the removed jobs that have ended (loop thread)."""
        for name in list(self._retiring):
            job = self._jobs.get(name)
            if job is None or not job.core.active:
                with self._lock:
                    self._jobs.pop(name, None)
                    self._retiring.discard(name)

    # --- loop ---------------------------------------------------------------------------------

    def step(self, timeout: float) -> None:
        """One turn of the loop: wait up to ``timeout`` s for reports, exits or commands."""
        now = self.clock.monotonic()
        self.last_tick = now
        deadlines = [d for job in self._jobs.values() if (d := job.core.deadline()) is not None]
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
        if self._retiring:
            self._drop_retired()

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
        self._get(name)  # an unknown job: UnknownJobError here, in the caller's thread
        loop = self._loop_thread
        if loop is None or loop is threading.current_thread() or not loop.is_alive():
            command()
        else:
            future: Future[Any] = Future()
            self._commands.put((command, future))
            self.wake()
            future.result(timeout=30)
        return self.job(name)

    def _command(self, name: str, decide: Callable[[JobCore, float], list[Action]]) -> None:
        job = self._get(name)
        with self._lock:
            actions = decide(job.core, self.clock.monotonic())
        self._apply(actions)

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
        report = parse_report(what, details)
        now = self.clock.monotonic()
        if isinstance(report, Chunk):
            self._last_chunk_at = now
        with self._lock:
            wall = message.get("at") or self.clock.now().isoformat()
            actions = job.core.reported(report, now, wall)
        self._apply(actions)
        if self.on_progress is not None:
            try:
                self.on_progress(job.name, what, details)
            except Exception:
                log.exception("progress callback failed")

    def _check(self, now: float) -> None:
        for job in self._jobs.values():
            if (job.process is not None or job.thread is not None) and not job.alive:
                self._on_exit(job, now)
                continue
            with self._lock:
                if job.thread_stop is not None and job.core.active:
                    job.core.observed(*job.thread_stop.state)
                actions = job.core.tick(now)
            self._apply(actions)

    # --- carrying out the core's actions (loop thread) -------------------------------------

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Spawn):
                self._spawn(self._jobs[action.job])
            elif isinstance(action, Signal):
                self._signal(self._jobs[action.job], action.how)
            elif isinstance(action, Record):
                self._record(action)
            elif isinstance(action, Log):
                log.log(action.level, "%s", action.message)
            elif isinstance(action, Nudge):
                self._nudge_consumers()

    def _spawn(self, job: _Job) -> None:
        if isinstance(job.spec, ThreadJobSpec):
            with self._lock:
                job.thread_stop = TickingEvent(self.clock)
                job.thread_error = None
                job.thread_config_error = False
                job.thread = threading.Thread(
                    target=self._thread_main, args=(job,), name=job.name, daemon=True
                )
                job.thread.start()
            return
        # not under the lock: the fork server may take up to START_TIMEOUT s to answer, and
        # snapshot() (status, heartbeat, watchdog) must not wait for it
        try:
            process, reader = start_job(job.spec, self._config_data, self.home, self.deployment_id)
        except (ForkServerError, OSError) as error:
            # this job is not started; it goes through backoff like a crash, the rest run on
            with self._lock:
                actions = job.core.exited(
                    self.clock.monotonic(), None, error=f"not started: {error}"
                )
            self._apply(actions)
            return
        with self._lock:
            job.process, job.conn, job.pid = process, reader, process.pid
            job.pgids.add(process.pid)
        log.info("job %s started (pid %s)", job.name, job.pid)

    def _thread_main(self, job: _Job) -> None:
        assert isinstance(job.spec, ThreadJobSpec) and job.thread_stop is not None
        try:
            job.spec.run(job.thread_stop)
        except ConfigurationError as error:
            job.thread_error = str(error)
            job.thread_config_error = True
        except Exception as error:
            log.exception("thread job %s crashed", job.name)
            job.thread_error = f"{type(error).__name__}: {error}"

    def _signal(self, job: _Job, how: str) -> None:
        if how == "kill":
            self._kill_group(job, signal.SIGKILL)
            return
        if job.thread is not None:
            assert job.thread_stop is not None
            job.thread_stop.set()
            return
        sig = signal.SIGUSR1 if how == "stop" else signal.SIGTERM
        if job.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(job.pid, sig)

    def _record(self, action: Record) -> None:
        data = dict(action.data)
        if action.log_tail:
            job = self._jobs[action.job]
            # a thread job logs into the supervisor's own log (with its crash traceback)
            data["log_tail"] = tail_lines(
                log_file_of(self.home, job.name if job.is_process else "station")
            )
        self._event(action.kind, action.job, action.message, action.severity, data)

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
        error: str | None = None
        if job.process is not None:
            job.process.join(0)
            code = job.process.exitcode
            with contextlib.suppress(ValueError):
                job.process.close()
            if job.conn is not None:
                job.conn.close()
        else:
            error = job.thread_error
            code = EXIT_CONFIG if job.thread_config_error else (1 if error else 0)
            if job.thread_config_error:
                job.core.config_reason = error
        with self._lock:
            job.process = job.conn = job.thread = None
            pid, job.pid = job.pid, None
            actions = job.core.exited(now, code, pid, error)
        # whatever the job left in its process group goes with it
        self._kill_group(job, signal.SIGKILL)
        if self.on_exit is not None and job.is_process:
            try:
                self.on_exit(job.name, pid)
            except Exception:
                log.exception("exit callback of %s failed", job.name)
        self._apply(actions)

    def _event(
        self, kind: str, source: str, message: str, severity: str, data: dict[str, Any]
    ) -> None:
        if self.events is None:
            return
        try:
            self.events(kind, source, message, severity, data)
        except Exception:
            log.exception("could not record event %s of %s", kind, source)

    # --- shutdown ------------------------------------------------------------------------------

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
        with self._lock:
            for job in self._jobs.values():
                job.core.begin_shutdown()
        producers = [j for j in self._jobs.values() if j.is_process and not j.drains]
        consumers = [j for j in self._jobs.values() if j.is_process and j.drains]
        self._stop_processes(producers, limit)
        self._await_idle(consumers, self.clock.monotonic() + limit)
        self._stop_processes(consumers, limit)
        now = self.clock.monotonic()
        for job in self._jobs.values():
            if job.thread is not None:
                with self._lock:
                    actions = job.core.terminate("shutdown", now)
                self._apply(actions)
        deadline = now + limit
        for job in self._jobs.values():
            if job.thread is not None:
                job.thread.join(max(0.1, deadline - self.clock.monotonic()))
                if not job.thread.is_alive():
                    self._on_exit(job, self.clock.monotonic())
                else:  # hung: the station exits 1 (decision record 0063)
                    with self._lock:
                        actions = job.core.not_stopped(self.clock.monotonic() - now)
                    self._apply(actions)
            self._kill_group(job, signal.SIGKILL)

    def _stop_processes(self, jobs: list[_Job], limit: float) -> None:
        """SIGTERM the live ``jobs``; SIGKILL what still runs after ``limit`` s; reap all."""
        now = self.clock.monotonic()
        for job in jobs:
            if job.alive:
                with self._lock:
                    actions = job.core.terminate("shutdown", now)
                self._apply(actions)
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
            if job.drains and job.state == JobState.RUNNING and job.alive and job.pid:
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
                if j.alive
                and not (isinstance(j.core.last, Idle) and (j.core.last_at or 0.0) >= since)
            ]

        waiting = busy()
        pending = [
            j for j in waiting if has_pending_work(j.core.last, j.core.last_at, self._last_chunk_at)
        ]
        if pending:
            log.info("letting %s finish pending work", ", ".join(j.name for j in pending))
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
        described = job.core.describe(now)
        described["kind"] = job.spec.kind
        described["pid"] = job.pid if job.is_process else os.getpid()
        return described
