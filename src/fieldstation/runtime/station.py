"""Building and running a station from its config: the runtime's top level.

Start-up (:mod:`fieldstation.runtime.startup`, the one path shared with ``record``): take the
home lock (a second runtime on the same home gets
:class:`~fieldstation.home.StationLockedError` naming the holder's PID), check and migrate the
database, start (or continue) the deployment, end the last run's leases, run start-up
recovery; then start the jobs:
each sensor's recorder and each processor in its own process; the network monitor, the outbox
(an owner thread and one delivery worker thread per output), heartbeat, summarizer and
retention as supervisor threads; plus the control API, the
status file writer and the systemd watchdog. Shutdown reverses it.

Process jobs are named by module path and imported only in their child process, so the
supervisor never loads numpy, soundfile or a model; start-up work that needs heavy modules
(migration, spool recovery) runs in a short-lived child (:func:`run_in_child`).
While it runs, the station's umask is ``077`` (:func:`~fieldstation.runtime.startup.private_umask`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fieldstation.clock import Clock, SystemClock
from fieldstation.config.sensors import warmup_of
from fieldstation.config.station import StationConfig, config_hash
from fieldstation.home import StationHome
from fieldstation.progress import FAILING_STATES, Waiting, judge_jobs, parse_report
from fieldstation.runtime import systemd
from fieldstation.runtime.forkserver import start_fork_server, trim_freed_memory
from fieldstation.runtime.jobs import (
    ProcessJobSpec,
    ThreadJobSpec,
    log_file_of,
)
from fieldstation.runtime.liveness import (
    ProcessorLiveness,
    ReadingsLiveness,
    RecorderLiveness,
    ThreadLiveness,
)
from fieldstation.runtime.reconfigure import ConfigChange
from fieldstation.runtime.startup import (
    MigrationError,
    migrate_in_child,
    private_umask,
    run_in_child,
    start_station,
)
from fieldstation.runtime.status import atomic_write_json, disk_status, system_status
from fieldstation.runtime.supervisor import Supervisor, UnknownJobError, tail_lines
from fieldstation.sensors.readings.config import is_slow
from fieldstation.store.db import Database
from fieldstation.store.processing import expire_leases, worker_id

__all__ = [
    "PROCESSOR",
    "RECORDER",
    "MigrationError",
    "Station",
    "migrate_in_child",
    "run_in_child",
    "process_jobs",
]

log = logging.getLogger(__name__)

NEW_MESSAGES = frozenset({"chunk", "processed", "readings"})
"""Progress reports that mean new outbox messages were committed (a ``recording`` notice,
detections, a ``readings`` batch): the station wakes its delivery workers on them."""

TRIM_AFTER_START = 30.0
TRIM_EVERY = 600.0
"""Seconds: the supervisor returns its freed heap to the kernel (:func:`~.forkserver.
trim_freed_memory`) this long after it started (start-up done, first heartbeat sent), then
this often (issue 22: memory)."""

RECORDER = "fieldstation.recording.job:run_recorder"
PROCESSOR = "fieldstation.processing.worker:run_processor"
READINGS = "fieldstation.recording.rows:run_readings"
WEB = "fieldstation.web.job:run_web"

THREAD_LIVENESS: dict[str, float] = {
    "network": 300.0,
    "outbox": 900.0,
    "heartbeat": 300.0,
    "summary": 900.0,
    "retention": 3600.0,
    "upload": 900.0,
    "power": 300.0,
    "field": 300.0,
    "netlevel": 300.0,
    "wifi": 600.0,
    "commands": 3600.0,
}
"""Seconds each thread job may stay busy without a turn of its loop before it counts as hung
(:class:`~fieldstation.runtime.liveness.ThreadLiveness`). Generous: a hung thread starves the
systemd watchdog, which restarts the whole station, so a slow pass (retention deleting a
large backlog from an SD card, a delivery waiting out several 30 s timeouts) must not look
hung (decision record 0064)."""


def process_jobs(
    config: StationConfig,
    recorder: str = RECORDER,
    processor: str = PROCESSOR,
) -> list[ProcessJobSpec]:
    """One job per enabled sensor (``recorder:<name>``: the recorder, or for a slow readings
    sensor the readings job, :data:`READINGS`) and processor (``processor:<name>``)."""
    grace = config.runtime.liveness_grace
    specs = [
        ProcessJobSpec(
            name=f"recorder:{sensor.name}",
            target=READINGS,
            args=(sensor.name,),
            liveness=ReadingsLiveness(
                period=float(getattr(sensor, "period", 60.0)),
                grace=grace,
                wait=float(sensor.wait_limit()) if hasattr(sensor, "wait_limit") else 0.0,
            ),
        )
        if is_slow(sensor)
        else ProcessJobSpec(
            name=f"recorder:{sensor.name}",
            target=recorder,
            args=(sensor.name,),
            liveness=RecorderLiveness(chunk=sensor.chunk, grace=grace, warmup=warmup_of(sensor)),
        )
        for sensor in config.sensors
        if sensor.enabled
    ]
    specs += [
        ProcessJobSpec(
            name=f"processor:{proc.name}",
            target=processor,
            args=(proc.name,),
            liveness=ProcessorLiveness(timeout=proc.timeout, poll_interval=proc.poll_interval),
            drain=True,
        )
        for proc in config.processors
        if proc.enabled
    ]
    if config.web.enabled:  # the web page: a process job judged by its process (decision 0090)
        specs.append(ProcessJobSpec(name="web", target=WEB))
    return specs


@dataclass
class Station:
    """One running station: ``Station(config).run(stop)`` blocks until ``stop`` is set.

    ``jobs``: process jobs to run (default :func:`process_jobs`; thread specs may be added,
    for tests); ``threads``: whether to run the thread jobs (delivery, heartbeat, ...);
    ``thread_liveness``: overrides of :data:`THREAD_LIVENESS` (seconds, by job name);
    ``exit_when_unrunnable``: stop once every process job is in ``config_error`` (a
    foreground ``fieldstation run``; under systemd the station stays up to report it,
    decision record 0063).
    """

    config: StationConfig
    clock: Clock = field(default_factory=SystemClock)
    jobs: list[ProcessJobSpec | ThreadJobSpec] | None = None
    threads: bool = True
    control: bool = True
    tick: float = 5.0
    thread_liveness: dict[str, float] = field(default_factory=dict)
    exit_when_unrunnable: bool = False
    home: StationHome = field(init=False)
    config_hash: str = field(init=False)
    db: Database | None = field(init=False, default=None)
    deployment_id: int | None = field(init=False, default=None)
    supervisor: Supervisor | None = field(init=False, default=None)
    network: Any = field(init=False, default=None)
    power: Any = field(init=False, default=None)
    """The :class:`~fieldstation.power.job.Suspenders` when ``[[suspenders]]`` are set."""
    delivery: Any = field(init=False, default=None)
    _progress_log: Any = field(init=False, default_factory=lambda: _ProgressLog())
    """The running :class:`~fieldstation.outbox.delivery.DeliveryLoop` (rebuilt when its
    thread job restarts), nudged when a job reports new messages."""
    started_at: float = field(init=False, default=0.0)
    ready: threading.Event = field(init=False, default_factory=threading.Event)
    _events: Any = field(init=False, default=None)
    netlevel: Any = field(init=False, default=None)
    """The :class:`~fieldstation.health.netlevel.NetLevelMonitor` (``[field.network]``)."""
    wifi: Any = field(init=False, default=None)
    """The :class:`~fieldstation.field.wifi.Provisioner` (``[field.wifi]``)."""
    commands: Any = field(init=False, default=None)
    """The :class:`~fieldstation.commands.inbox.CommandInbox` (``[commands] enabled``)."""
    _commands_ran: bool = field(init=False, default=False)
    """Whether the ``commands`` job has started in this run (only its first start refuses
    the commands a stop left running)."""
    _stop: threading.Event | None = field(init=False, default=None)
    _poweroff: bool = field(init=False, default=False)
    _reconfiguring: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.home = StationHome(self.config.home_path())
        self.config_hash = config_hash(self.config)

    # --- start-up steps --------------------------------------------------------------------

    def _start(self) -> Any:
        """The start-up path (:func:`~fieldstation.runtime.startup.start_station`), with the
        migration and the recovery in child processes; returns the started station, whose
        lock :meth:`run` releases."""
        started = start_station(self.config, self.clock, runner=run_in_child)
        self.db, self.deployment_id = started.db, started.deployment_id
        self._events = started.events  # with a recovery_failed event it may still keep
        return started

    def _on_progress(self, job: str, what: str, details: dict[str, Any]) -> None:
        """Every process job's report (the supervisor's loop thread): logged when worth a
        line, and a report of new messages (a committed chunk, a processed recording, stored
        readings) wakes the delivery workers at once (event-driven delivery; the outbox poll
        is only the fallback)."""
        self._progress_log(job, what, details)
        if what in NEW_MESSAGES and self.delivery is not None:
            self.delivery.nudge()

    def _job_exited(self, name: str, pid: int | None) -> None:
        kind, _, processor = name.partition(":")
        if kind != "processor" or pid is None or self.db is None:
            return
        released = _expire_leases(self.db, self.clock.now(), worker_id(processor, pid))
        if released:
            log.info("%s: released %d claim(s) of the ended worker", name, released)

    def record_event(
        self, kind: str, source: str, message: str, severity: str, data: dict[str, Any]
    ) -> None:
        """Store an event row and enqueue it for the outputs taking events; kept in memory
        while the database refuses writes (a full disk) and written with the next event or
        status tick (``EventBacklog``)."""
        from fieldstation.store.events import EventBacklog

        assert self.db is not None
        if self._events is None:
            self._events = EventBacklog(
                self.db,
                station_id=self.config.station.id,
                destinations=self.config.destinations_for("event"),
            )
        self._events.record(
            kind=kind,
            source=source,
            message=message,
            now=self.clock.now(),
            severity=severity,  # type: ignore[arg-type]
            data=data,
        )

    def _thread_jobs(self, keep: frozenset[str] = frozenset()) -> list[ThreadJobSpec]:
        """The supervisor's thread jobs: network monitor, delivery, heartbeat, summary,
        retention. Each worker is built in its thread when the job (re)starts. ``keep``:
        ``network`` / ``power`` / ``commands``: reuse the running monitor (inbox) instead of
        building a new one."""
        from fieldstation.health.heartbeat import Heartbeat
        from fieldstation.health.network import NetworkMonitor
        from fieldstation.health.summary import Summarizer
        from fieldstation.outbox.delivery import DeliveryLoop
        from fieldstation.retention import RetentionJob

        config, clock, home, db = self.config, self.clock, self.home, self.db
        assert db is not None

        def job_states() -> list[dict[str, Any]]:
            if self.supervisor is None:
                return []
            return [
                {
                    "name": j["name"],
                    "state": j["state"],
                    "restarts": j["restarts"],
                    "reason": j["reason"],
                    "problem": j["problem"],
                }
                for j in self.supervisor.snapshot()
            ]

        # a reconfiguration (:meth:`reconfigure`) keeps the shared monitors it does not touch
        network = self.network = (
            self.network
            if "network" in keep and self.network is not None
            else NetworkMonitor(config, clock, db=db)
        )
        power = self.power = (
            self.power if "power" in keep and self.power is not None else self._suspenders()
        )

        def liveness(name: str) -> ThreadLiveness:
            return ThreadLiveness(self.thread_liveness.get(name, THREAD_LIVENESS[name]))

        # sets the inbox, for delivery
        command_jobs = self._command_jobs(liveness("commands"), keep="commands" in keep)

        def delivery() -> DeliveryLoop:
            loop = DeliveryLoop(
                config,
                db,
                clock,
                home,
                network_up=network.is_up_for
                if power is None
                else lambda output: power.allows(output.name) and network.is_up_for(output),
                poll_interval=config.runtime.outbox_poll,
                commands=self.commands,
            )
            self.delivery = loop
            return loop

        def thread(name: str, factory: Callable[[], Any]) -> ThreadJobSpec:
            def run(stop: threading.Event) -> None:
                worker = factory()
                try:
                    worker.run(stop)
                finally:
                    close = getattr(worker, "close", None)
                    if close is not None:
                        close()

            return ThreadJobSpec(name, run, liveness=liveness(name))

        from fieldstation.field.job import field_jobs

        return [
            ThreadJobSpec("network", network.run, liveness=liveness("network")),
            thread("outbox", delivery),
            thread(
                "heartbeat",
                lambda: Heartbeat(
                    config,
                    db,
                    clock,
                    home,
                    job_states,
                    network_up=network.is_up,
                    power=None if power is None else power.status,
                    network_info=lambda: self.netlevel.as_dict() if self.netlevel else None,
                    hash_in_force=lambda: self.config_hash,
                ),
            ),
            thread("summary", lambda: Summarizer(config, db, clock)),
            thread("retention", lambda: RetentionJob(config, db, home, clock)),
            *self._upload_jobs(thread),
            *field_jobs(self, liveness),
            *self._plugin_jobs(),
            *command_jobs,
        ] + ([ThreadJobSpec("power", power.run, liveness=liveness("power"))] if power else [])

    def _command_jobs(self, liveness: ThreadLiveness, keep: bool = False) -> list[ThreadJobSpec]:
        """The ``commands`` job when ``[commands] enabled`` (its inbox, :attr:`commands`, is
        handed to the outputs: MQTT subscribes, HTTP outputs with ``commands_url`` are polled
        by the job); docs/commands.md."""
        settings = self.config.commands
        if not settings.enabled:
            return []
        from functools import partial

        from fieldstation.commands.executor import CommandExecutor
        from fieldstation.commands.inbox import CommandInbox
        from fieldstation.commands.job import CommandsJob
        from fieldstation.outbox.http import HttpOutputConfig, poll_commands

        config, db = self.config, self.db
        assert db is not None
        station_id = config.station.id
        inbox = self.commands = (
            self.commands  # a reconfiguration that does not touch the job keeps its inbox
            if keep and self.commands is not None
            else CommandInbox(
                db,
                station_id=station_id,
                hub_keys=settings.hub_keys,
                clock=self.clock,
                answer_to=config.destinations_for("command_result"),
                events_to=config.destinations_for("event"),
                config_hash=lambda: self.config_hash,
                skew=settings.max_skew,
                session_expiry=settings.session_expiry,
            )
        )
        polled = {
            output.name: output
            for output in config.outputs
            if output.enabled
            and isinstance(output, HttpOutputConfig)
            and output.commands_url
            and output.commands
        }
        pollers = {
            name: partial(poll_commands, o, station_id=station_id) for name, o in polled.items()
        }

        def may_poll(name: str) -> bool:  # the delivery loop's gate (monitors in force now)
            power, network = self.power, self.network
            return (power is None or power.allows(name)) and (
                network is None or network.is_up_for(polled[name])
            )

        def run(stop: threading.Event) -> None:
            executor = CommandExecutor(db, self, self.clock)
            job = CommandsJob(
                inbox,
                executor,
                self.clock,
                pollers=pollers,
                poll_interval=settings.poll_interval,
                may_poll=may_poll,
                recover_at_start=not self._commands_ran,
            )
            self._commands_ran = True
            job.run(stop)

        return [ThreadJobSpec("commands", run, liveness=liveness)]

    def _upload_jobs(self, thread: Callable[[str, Callable[[], Any]], Any]) -> list[Any]:
        """The ``upload`` thread job when the station has ``[upload]``."""
        if self.config.upload is None:
            return []
        from fieldstation.upload.job import UploadJob

        config, db, home, clock = self.config, self.db, self.home, self.clock
        assert db is not None
        return [thread("upload", lambda: UploadJob(config, db, home, clock))]

    def _suspenders(self) -> Any:
        """The ``power`` job's :class:`~fieldstation.power.job.Suspenders`, or None without
        ``[[suspenders]]``; it stops and starts held processors through the supervisor."""
        if not self.config.suspenders:
            return None
        from fieldstation.power.job import Suspenders

        return Suspenders(
            self.config,
            self.clock,
            self.home,
            db=self.db,
            events=self.record_event,
            control=lambda: self.supervisor,
        )

    def _plugin_jobs(self) -> list[ThreadJobSpec]:
        """Thread jobs of job plugins (``[[jobs]]``, and the ``alerts`` job when the station
        has ``[[alerts]]`` but no alerts job of its own): :mod:`.plugins_jobs`."""
        from fieldstation.runtime.plugins_jobs import plugin_thread_jobs

        assert self.db is not None
        return [
            ThreadJobSpec(name, run, liveness=ThreadLiveness(self.thread_liveness.get(name, live)))
            for name, run, live in plugin_thread_jobs(self.config, self.db, self.clock, self.home)
        ]

    # --- a new station file while running ---------------------------------------------------

    def reconfigure(self, new: StationConfig) -> ConfigChange:
        """Put ``new`` in force without stopping: restart only the jobs whose settings
        changed, start the new ones, stop the removed ones (:func:`.reconfigure.plan_change`),
        and start a new deployment (``config_hash`` is then ``new``'s). Returns the change;
        one that touches nothing only updates the config and its hash.

        Raises :class:`~.reconfigure.NotAppliableError` (before anything changes) when
        ``new`` changes what cannot change while running (station id or home, ``[runtime]``,
        ``[logging]``), and :class:`UnknownJobError` before the station has started its jobs
        or once it is stopping.
        """
        from fieldstation.runtime.reconfigure import NotAppliableError, plan_change

        with self._reconfiguring:
            supervisor = self._require()
            if supervisor.shutting_down or self._stop is None or self._stop.is_set():
                raise UnknownJobError("the station is stopping")
            old = self.config
            change = plan_change(old, new, threads=self.threads)
            if change.refused:
                raise NotAppliableError(change.refused)
            assert self.db is not None
            keep = frozenset(
                name for name in ("network", "power", "commands") if name not in change.touched
            )
            saved = (self.netlevel, self.wifi, self.network, self.power, self.commands)
            self.config = new
            try:
                specs: list[ProcessJobSpec | ThreadJobSpec] = list(
                    process_jobs(new) if self.jobs is None else self.jobs
                )
                if self.threads:
                    specs += self._thread_jobs(keep)
            except BaseException:
                self.config = old
                self.netlevel, self.wifi, self.network, self.power, self.commands = saved
                raise
            if not change.touched & {"field", "netlevel", "wifi"}:
                self.netlevel, self.wifi = saved[:2]  # the running ones stay in use
            with self.db.session() as session:
                from fieldstation import __version__
                from fieldstation.store.deployments import start_deployment

                self.deployment_id = start_deployment(
                    session,
                    station_id=new.station.id,
                    config_hash=config_hash(new),
                    config=new.model_dump(mode="json"),
                    version=__version__,
                    now=self.clock.now(),
                ).id
            self.config_hash = config_hash(new)
            if self._events is not None and not self._events.pending:
                self._events = None  # rebuilt with the new file's event routes
            names = {spec.name for spec in specs}
            supervisor.reconfigure(
                new,
                self.deployment_id,
                specs,
                restart=change.restart & names,
                add=change.add & names,
                remove=change.remove,
            )
            log.info(
                "station file %s in force: restarted %s; started %s; stopped %s",
                self.config_hash[:12],
                ", ".join(sorted(change.restart)) or "none",
                ", ".join(sorted(change.add)) or "none",
                ", ".join(sorted(change.remove)) or "none",
            )
            return change

    # --- running ---------------------------------------------------------------------------

    def run(self, stop: threading.Event, duration: float | None = None) -> None:
        """Run until ``stop`` is set (or ``duration`` seconds pass); stops every job on return.

        Raises :class:`~fieldstation.home.StationLockedError` when another runtime holds the
        home. Must be called from the main thread only if signals are to reach it.
        """
        with private_umask():
            self._run(stop, duration)

    def _run(self, stop: threading.Event, duration: float | None) -> None:
        configure_orm()  # once, shared with the fork server and its jobs
        start_fork_server()  # before any thread, lock or database (decision 0060)
        self.started_at = self.clock.monotonic()
        self._stop = stop
        started = self._start()
        control = None
        helpers: list[threading.Thread] = []
        try:
            specs: list[ProcessJobSpec | ThreadJobSpec] = list(
                self.jobs if self.jobs is not None else process_jobs(self.config)
            )
            if self.threads:
                specs += self._thread_jobs()
            assert self.deployment_id is not None
            self.supervisor = Supervisor(
                self.config,
                self.home,
                self.deployment_id,
                self.clock,
                specs,
                events=self.record_event,
                on_progress=self._on_progress,
                tick=self.tick,
                on_exit=self._job_exited,
                exit_when_unrunnable=self.exit_when_unrunnable,
            )
            self.supervisor.start()
            if self.control:
                from fieldstation.runtime.control import ControlServer

                control = ControlServer(self.home.control_socket, self).start()
            for name, target in (("status", self._status_loop), ("watchdog", self._watchdog)):
                helper = threading.Thread(target=target, args=(stop,), name=name, daemon=True)
                helper.start()
                helpers.append(helper)
            if duration is not None:
                timer = threading.Thread(
                    target=self._stop_after, args=(stop, duration), name="duration", daemon=True
                )
                timer.start()
            systemd.notify("READY=1\nSTATUS=running")
            self.ready.set()
            self.supervisor.run(stop)
        finally:
            stop.set()
            systemd.notify("STOPPING=1")
            if self.supervisor is not None and not self.supervisor.shutting_down:
                self.supervisor.shutdown()
            for helper in helpers:
                helper.join(5.0)
            if control is not None:
                control.close()
            if self.supervisor is not None:
                self._write_status()
                self.supervisor.close()
            self._flush_events()
            started.close()
            if self._poweroff:
                _power_off(self.config.field.button.poweroff_command)

    def _flush_events(self) -> None:
        """Write the events kept while the database refused writes, before it closes; those
        it still refuses are lost, counted in the log."""
        if self._events is None or not self._events.pending:
            return
        try:
            if not self._events.flush():
                log.warning("%d kept event(s) lost at shutdown", self._events.pending)
        except Exception:
            log.exception("kept events lost at shutdown")

    def _stop_after(self, stop: threading.Event, duration: float) -> None:
        self.clock.wait(stop, duration)
        stop.set()

    def _status_loop(self, stop: threading.Event) -> None:
        interval = self.config.runtime.status_interval
        failing = ""
        trim_at = self.clock.monotonic() + TRIM_AFTER_START
        while True:
            if self.clock.monotonic() >= trim_at:  # start-up's temporaries, then every 10 min
                trim_freed_memory()
                trim_at = self.clock.monotonic() + TRIM_EVERY
            try:
                self._write_status()
                failing = ""
            except OSError as error:  # a full disk: one line when the reason changes
                if str(error) != failing:
                    log.warning("could not write %s: %s", self.home.status_file, error)
                failing = str(error)
            except Exception:  # this thread must not die: status.json would go stale
                log.exception("could not write %s", self.home.status_file)
            try:  # kept events, once the database takes writes again
                if self._events is not None and self._events.pending:
                    self._events.flush()
            except Exception:
                log.exception("could not write the kept events")
            if self.clock.wait(stop, interval):
                return

    def _write_status(self) -> None:
        atomic_write_json(self.home.status_file, self.status(), fsync=False)

    def _watchdog(self, stop: threading.Event) -> None:
        """Feed the systemd watchdog while the supervisor's loop turns and no thread job hangs
        (decision records 0061, 0064).

        A job in ``failed`` or ``config_error`` does not starve the watchdog: it is reported
        (``STATUS=``, an event, the heartbeat) and the other jobs keep running; a restart of
        the whole station by systemd would not mend it and would interrupt the healthy jobs.
        A ``hung`` thread job does: it cannot be killed inside the process, and a restart of
        the station is the only way to get it going again. ``STATUS=`` still says why.
        """
        interval = systemd.watchdog_interval()
        if interval is None:
            return
        while not self.clock.wait(stop, interval):
            supervisor = self.supervisor
            if supervisor is None:
                continue
            line = _status_line(supervisor)
            if supervisor.watchdog_ok():
                systemd.notify(f"WATCHDOG=1\nSTATUS={line}")
            else:
                systemd.notify(f"STATUS={line}")

    def exit_status(self) -> int:
        """What ``fieldstation run`` exits with once :meth:`run` returned
        (:meth:`Supervisor.exit_status`; 0 when no job ever started)."""
        return self.supervisor.exit_status() if self.supervisor is not None else 0

    # --- ControlApi ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Everything ``fieldstation status`` shows (JSON-ready)."""
        supervisor = self.supervisor
        jobs = supervisor.snapshot() if supervisor is not None else []
        pids = [os.getpid()] + [j["pid"] for j in jobs if j["kind"] == "process" and j["pid"]]
        status: dict[str, Any] = {
            "station": self.config.station.id,
            "pid": os.getpid(),
            "home": str(self.home.root),
            "updated_at": self.clock.now().isoformat(),
            "uptime_s": round(self.clock.monotonic() - self.started_at, 3),
            "healthy": supervisor.healthy() if supervisor is not None else False,
            **_health(jobs, supervisor),
            # True from the moment an ordered shutdown begins: jobs then stop on purpose.
            "shutting_down": supervisor.shutting_down if supervisor is not None else False,
            "deployment": {"id": self.deployment_id, "config_hash": self.config_hash},
            "jobs": jobs,
            "recording": _recording_status(jobs),
            "network": {
                "up": self.network.is_up() if self.network is not None else None,
                **(self.netlevel.as_dict() or {} if self.netlevel is not None else {}),
            },
            "power": self.power.status() if self.power is not None else None,
        }
        if self.wifi is not None:
            status["wifi"] = self.wifi.snapshot()
        try:
            status["storage"] = disk_status(self.home.root)
        except OSError as error:
            status["storage"] = {"error": str(error)}
        status.update(system_status(pids))
        status["outbox"] = self._outbox_depth()
        from fieldstation.health.metrics import versions

        status["versions"] = versions()
        return status

    def _outbox_depth(self) -> dict[str, Any]:
        if self.db is None:
            return {}
        try:
            from fieldstation.store.health import outbox_depth

            with self.db.session() as session:
                depth = outbox_depth(session)
            oldest = depth.oldest_created_at
            age = None if oldest is None else (self.clock.now() - oldest).total_seconds()
            return {"pending": depth.pending, "oldest_age_s": age}
        except Exception as error:  # the status must not fail on a busy database
            return {"error": f"{type(error).__name__}: {error}"}

    def _require(self) -> Supervisor:
        if self.supervisor is None:
            raise UnknownJobError("the station is starting; no jobs yet")
        return self.supervisor

    def start_job(self, name: str) -> dict[str, Any]:
        return self._require().start_job(name)

    def stop_job(self, name: str) -> dict[str, Any]:
        return self._require().stop_job(name)

    def restart_job(self, name: str) -> dict[str, Any]:
        return self._require().restart_job(name)

    def logs(self, job: str, lines: int) -> list[str]:
        if job != "station":
            self._require().job(job)  # raises UnknownJobError
        return tail_lines(log_file_of(self.home, job), max(1, min(lines, 10_000)))

    def mark_event(self, message: str, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        """Store an event marked from outside (the field button): ``POST /events``."""
        now = self.clock.now()
        self.record_event(kind, str(data.get("source", "api")), message, "info", data)
        return {"kind": kind, "message": message, "created_at": now.isoformat()}

    def shutdown(self, reason: str, poweroff: bool) -> dict[str, Any]:
        """Stop the whole station (``POST /shutdown``); with ``poweroff``, run
        ``field.button.poweroff_command`` once every job has stopped."""
        if self._stop is None:
            raise UnknownJobError("the station is not running")
        command = self.config.field.button.poweroff_command
        self._poweroff = poweroff and bool(command)
        self.record_event(
            "shutdown_requested",
            reason,
            f"station shutdown requested ({reason})" + (", then power off" if poweroff else ""),
            "warning",
            {"reason": reason, "poweroff": self._poweroff},
        )
        self._stop.set()
        return {"stopping": True, "poweroff": self._poweroff}

    def wifi_setup(self) -> dict[str, Any]:
        """Start Wi-Fi provisioning (``POST /wifi/setup``); an ``error`` when not enabled."""
        if self.wifi is None:
            return {"error": "Wi-Fi provisioning is not enabled ([field.wifi] enabled = true)"}
        answer: dict[str, Any] = self.wifi.request()
        return answer


def _power_off(command: list[str]) -> None:
    """Run the power-off command after the station stopped (a 'shutdown' press)."""
    import subprocess

    log.warning("powering off: %s", " ".join(command))
    try:
        subprocess.run(command, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        log.error("power-off command failed: %s", error)


def _status_line(supervisor: Supervisor) -> str:
    """The systemd ``STATUS=`` text: ``"5/6 jobs running; failed: processor:birdnet"``
    (likewise ``config_error:`` and ``hung:``, each naming its jobs)."""
    jobs = supervisor.snapshot()
    running = sum(1 for j in jobs if j["state"] == "running")
    line = f"{running}/{len(jobs)} jobs running"
    for state in sorted(FAILING_STATES):
        names = [j["name"] for j in jobs if j["state"] == state]
        if names:
            line += f"; {state}: {', '.join(names)}"
    return line


def _health(jobs: list[dict[str, Any]], supervisor: Supervisor | None) -> dict[str, Any]:
    """``health``: ``unhealthy`` (the loop stopped, or a job is failed, config_error or hung),
    ``degraded`` (a job says it cannot do its work, e.g. a recorder waiting for its device,
    or waits to restart) or ``healthy``; ``problems``: one line per reason. The rules for jobs
    are the heartbeat's (:func:`~fieldstation.progress.judge_jobs`)."""
    failing: list[str] = []
    if supervisor is None:
        failing.append("the station is starting")
    elif not supervisor.loop_alive():
        failing.append("the supervisor's loop does not turn")
    stopping = supervisor is not None and supervisor.shutting_down
    failing_jobs, degraded = judge_jobs(jobs, stopping=stopping)
    failing += failing_jobs
    health = "unhealthy" if failing else "degraded" if degraded else "healthy"
    return {"health": health, "problems": failing + degraded}


def _recording_status(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    recorders: dict[str, Any] = {}
    for job in jobs:
        if not job["name"].startswith("recorder:"):
            continue
        last = job["last_progress"] or {}
        recorders[job["name"].partition(":")[2]] = {
            "state": job["state"],
            "in_slot": job["in_slot"],
            "problem": job.get("problem"),
            "last": last.get("what"),
            "next_slot": job["next_slot"],
        }
    return {"sensors": recorders, "active": any(r["in_slot"] for r in recorders.values())}


class _ProgressLog:
    """Logs the progress reports worth a line: chunks, processed recordings, slots, failures;
    and why a recorder is not recording (a device error, low disk), at WARNING, each time the
    reason changes (the job's own log has every retry)."""

    def __init__(self) -> None:
        self._reasons: dict[str, str | None] = {}

    def __call__(self, job: str, what: str, details: dict[str, Any]) -> None:
        report = parse_report(what, details)
        if isinstance(report, Waiting):
            next_slot = report.next_slot or "none"
            if report.reason is None:
                log.info("%s: waiting, next slot %s", job, next_slot)
            elif report.reason != self._reasons.get(job):
                log.warning("%s: not recording: %s; next try %s", job, report.reason, next_slot)
            self._reasons[job] = report.reason
        elif what == "chunk":
            if self._reasons.get(job) is not None:
                log.info("%s: recording again", job)
                self._reasons[job] = None
            log.info(
                "%s: chunk committed, recording %s (%s frames) %s",
                job,
                details.get("recording_id"),
                details.get("frames"),
                details.get("path", ""),
            )
        elif what == "processed":
            log.info(
                "%s: recording %s processed, %s detection%s",
                job,
                details.get("recording_id"),
                details.get("detections"),
                "" if details.get("detections") == 1 else "s",
            )
        elif what == "slot":
            if self._reasons.get(job) is None:
                log.info("%s: slot open until %s", job, details.get("end"))
            else:  # a retry while it cannot record: not "slot open" (nothing records yet)
                log.debug("%s: trying again (slot until %s)", job, details.get("end"))
        elif what == "failed":
            log.info("%s: %s %s", job, what, details)
        else:
            log.debug("%s: %s %s", job, what, details)


def configure_orm() -> None:
    """Configure the station's ORM mappers now (SQLAlchemy does it at the first query).

    Called before the fork server is forked, so the supervisor, the server and every job share
    one configured copy; configured on each side after the fork, it was written twice (issue 22:
    about 7 MiB of pages copied in the supervisor and as many in the fork server).
    """
    from sqlalchemy.orm import configure_mappers

    import fieldstation.store.models  # noqa: F401  (the station's mapped classes)

    configure_mappers()


def _expire_leases(db: Database, now: datetime, worker: str | None = None) -> int:
    with db.session() as session:
        return expire_leases(session, now=now, worker=worker)
