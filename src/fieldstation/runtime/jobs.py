"""Job specs and the entry point of a job's child process.

A process job names its function by module path (``"fieldstation.recording.job:run_recorder"``)
so the supervisor never imports it: the child does, after the fork, and only the child pays
for the heavy modules a job needs (numpy, soundfile, a model). A thread job is a callable
``run(stop)`` built by the station (the outbox's delivery owner, heartbeat, ...).

Children are started through the station's own fork server (:mod:`.forkserver`, started by
:func:`.forkserver.start_fork_server`, or by the first :func:`start_job`): a small
single-threaded process, forked from the supervisor before it starts any thread and preloaded
with the modules every job needs (:data:`PRELOAD`), forks each child. Forking the supervisor
itself would be cheaper, but it runs threads that use SQLite, and a fork taken while another thread
holds a lock (SQLite's own mutexes included) can deadlock the child (decision record 0060).
The config crosses over as JSON-ready data and is validated again in the child.

The child process (:func:`child_main`):

- asks the kernel to send it SIGTERM when its parent (the fork server, which exits when the
  supervisor dies) dies (``PR_SET_PDEATHSIG``, prctl(2)), and exits at once if it is gone;
- moves into its own process group, so the supervisor can kill it with everything it started
  (``killpg``) and a terminal's Ctrl-C reaches only the supervisor, which then stops jobs in
  order;
- SIGTERM sets ``ctx.stop`` with ``stop_reason`` ``"shutdown"``, SIGUSR1 with ``"stopped"``
  (an operator stopped the job); either arms ``alarm(stop_timeout)`` so a job that ignores the
  stop still dies; SIGUSR2 sets ``ctx.wake`` (new work may be waiting);
- logs to ``logs/<job>.log`` only, and reports progress to the supervisor as JSON lines over
  a one-way pipe (bounded: a supervisor that stops reading slows the job down).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

from fieldstation.clock import SystemClock
from fieldstation.home import StationHome
from fieldstation.runtime.forkserver import (
    PRELOAD,
    ChildProcess,
    die_with_parent,
    start_fork_server,
    trim_freed_memory,
)
from fieldstation.runtime.liveness import AlwaysAlive, Liveness

__all__ = [
    "PRELOAD",
    "JobNotFoundError",
    "ChildProcess",
    "ProcessJobSpec",
    "ThreadJobSpec",
    "child_main",
    "start_job",
    "log_file_of",
    "resolve_target",
]

STOP_SIGNALS = {signal.SIGTERM: "shutdown", signal.SIGUSR1: "stopped"}
"""Signal the supervisor sends -> ``ctx.stop_reason`` of the job."""

WAKE_SIGNAL = signal.SIGUSR2
"""Signal the supervisor sends to a ``drain`` job when there may be new work: sets
``ctx.wake`` (a recorder committed a chunk; the shutdown's drain began)."""

log = logging.getLogger(__name__)


class JobNotFoundError(LookupError):
    """A job target ``module:function`` cannot be imported."""


@dataclass(frozen=True)
class ProcessJobSpec:
    """A job run in its own OS process: ``target(ctx, *args)``.

    ``target``: ``"package.module:function"``. ``liveness``: how progress is judged.
    ``drain``: at shutdown, stop this job only after the other process jobs (the producers)
    have exited and it has reported ``idle`` since, or ``runtime.stop_timeout`` seconds
    passed (a processor finishes the recorders' last chunks).
    """

    name: str
    target: str
    args: tuple[Any, ...] = ()
    liveness: Liveness = field(default_factory=AlwaysAlive)
    kind: str = "process"
    drain: bool = False


@dataclass(frozen=True)
class ThreadJobSpec:
    """A job run as a thread of the supervisor: ``run(stop)`` returns once ``stop`` is set.

    ``liveness``: e.g. :class:`~fieldstation.runtime.liveness.ThreadLiveness`, judged from
    the thread's touches of ``stop`` (see :mod:`fieldstation.runtime.liveness`).
    """

    name: str
    run: Callable[[threading.Event], None]
    kind: str = "thread"
    liveness: Liveness = field(default_factory=AlwaysAlive)


def log_file_of(home: StationHome, job: str) -> Any:
    """Path of the log file of ``job`` (``recorder:mic`` -> ``logs/recorder-mic.log``)."""
    return home.logs / f"{job.replace(':', '-')}.log"


def resolve_target(target: str) -> Callable[..., Any]:
    """Import ``"module:function"``; raises :class:`JobNotFoundError` naming what is missing."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)  # type: ignore[no-any-return]
    except (ImportError, AttributeError) as error:
        raise JobNotFoundError(f"job function {target} not found: {error}") from error


def start_job(
    spec: ProcessJobSpec,
    config_data: dict[str, Any],
    home: StationHome,
    deployment_id: int,
) -> tuple[ChildProcess, Connection]:
    """Start ``spec``'s process through the fork server (started when none runs).

    Returns the process (``pid``, ``sentinel``, ``exitcode``, ``join``, ``close``) and the
    read end of its progress pipe. Raises :class:`~.forkserver.ForkServerError` when the fork
    server is gone and cannot be started again.
    """
    server = start_fork_server()  # first: a server forked now must not inherit our pipe
    read_fd, write_fd = os.pipe()
    reader = Connection(read_fd, writable=False)
    request = ("run", child_main, (spec, config_data, home, deployment_id))
    try:
        process = server.start(request, write_fd, spec.name)
    except BaseException:
        reader.close()
        raise
    return process, reader


IDLE_REPORTS = frozenset({"waiting", "idle"})
"""Progress reports after which a job sleeps (a recorder before its next slot, a processor with
nothing to claim): its freed heap is then returned to the kernel."""
TRIM_EVERY = 60.0
"""Seconds: a job returns its freed heap at most this often (:data:`IDLE_REPORTS`)."""


class _Reporter:
    """``progress(what, details)`` writing JSON lines to the supervisor's pipe; before an idle
    report (:data:`IDLE_REPORTS`) it returns the job's freed heap to the kernel
    (:func:`~.forkserver.trim_freed_memory`, at most every :data:`TRIM_EVERY` s)."""

    def __init__(self, conn: Connection, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self._monotonic = monotonic
        self._trimmed: float | None = None

    def __call__(self, what: str, details: dict[str, Any]) -> None:
        if what in IDLE_REPORTS:
            now = self._monotonic()
            if self._trimmed is None or now - self._trimmed >= TRIM_EVERY:
                self._trimmed = now
                trim_freed_memory()
        message = {"what": what, "details": details, "at": datetime.now(UTC).isoformat()}
        data = json.dumps(message, default=str).encode()
        with self.lock, contextlib.suppress(OSError, ValueError):
            self.conn.send_bytes(data)


def child_main(
    spec: ProcessJobSpec,
    config_data: dict[str, Any],
    home: StationHome,
    deployment_id: int,
    conn: Connection,
) -> None:
    """Entry point of a job process (run in the child the fork server forked); never returns.

    ``config_data``: :func:`fieldstation.config.config_data` of the station (validated again
    here).
    Exit status: 0 when the job returned, :data:`~fieldstation.job.EXIT_CONFIG` (78) when it
    raised :class:`~fieldstation.job.ConfigurationError` (after a ``config_error`` progress
    report with the reason), 1 when it raised anything else (the traceback goes to its log).
    """
    from fieldstation.config import parse_config
    from fieldstation.job import EXIT_CONFIG, ConfigurationError, JobContext, StopEvent
    from fieldstation.runtime.logs import setup_logging

    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(WAKE_SIGNAL, signal.SIG_IGN)  # a nudge must never end the job
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    config = parse_config(config_data)
    setup_logging(config.logging, home.logs, name=spec.name, console=False)
    stop = StopEvent()
    ctx = JobContext(
        config=config,
        home=home,
        deployment_id=deployment_id,
        clock=SystemClock(),
        stop=stop,
        progress=_Reporter(conn),
        name=spec.name,
    )
    stop_timeout = max(1, int(config.runtime.stop_timeout + 0.999))

    def on_stop(signum: int, frame: object) -> None:
        if not stop.is_set():
            ctx.stop_reason = STOP_SIGNALS.get(signal.Signals(signum), "shutdown")
            stop.set()  # sets ctx.wake too
            signal.alarm(stop_timeout)

    def on_wake(signum: int, frame: object) -> None:
        ctx.wake.set()

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_stop)
    signal.signal(WAKE_SIGNAL, on_wake)
    code = 0
    try:
        log.info("job %s starting (pid %d)", spec.name, os.getpid())
        resolve_target(spec.target)(ctx, *spec.args)
        log.info("job %s ended (%s)", spec.name, ctx.stop_reason if stop.is_set() else "returned")
    except ConfigurationError as error:
        log.error("job %s: configuration error: %s", spec.name, error)
        ctx.progress("config_error", {"reason": str(error)})
        code = EXIT_CONFIG
    except BaseException:
        log.exception("job %s crashed", spec.name)
        code = 1
    finally:
        logging.shutdown()
        with contextlib.suppress(Exception):
            conn.close()
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)
