"""The station's ``power`` thread job: samples, decides (:mod:`.core`) and carries it out.

Every ``interval`` seconds (the shortest of the suspenders') :class:`Suspenders` reads each
suspender's value (:class:`Sampler`: the INA219 of ``[battery]``, the CPU temperature, the
latest value of a ``readings`` sensor), feeds it to the suspender's
:class:`~fieldstation.power.core.SuspenderCore` and, on a transition:

- records an event ``suspended`` (warning) or ``resumed`` (info) from ``suspender:<name>``;
- writes the jobs held to ``run/power.json`` (:mod:`.state`): a recorder reads it, closes its
  chunk with end reason ``suspended`` and waits, reporting why, until released;
- stops a held processor through the supervisor (``stop_job``) and starts it again when
  released, if it was running before (deferred processing);
- holds a held output: :meth:`Suspenders.allows` is the delivery loop's gate.

A job named by several suspenders is held while any of them is suspended. The state is in
``status`` and heartbeats (:meth:`Suspenders.status`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Protocol

from fieldstation.clock import Clock
from fieldstation.config.power import SuspenderConfig
from fieldstation.config.station import StationConfig
from fieldstation.home import StationHome
from fieldstation.power.core import SuspenderCore, Transition
from fieldstation.power.state import state_path, write_state

if TYPE_CHECKING:
    from fieldstation.health.battery import BatteryReading
    from fieldstation.store.db import Database

__all__ = ["BatteryReader", "JobControl", "Sampler", "Suspenders", "job_names"]

log = logging.getLogger(__name__)

EventFn = Callable[[str, str, str, str, dict[str, Any]], None]
"""``events(kind, source, message, severity, data)``: :meth:`Station.record_event`."""


class BatteryReader(Protocol):
    """:class:`~fieldstation.health.battery.Ina219Battery` or its fake
    (:class:`~fieldstation.power.replay.ReplayBattery`)."""

    def read(self) -> BatteryReading | None: ...


class JobControl(Protocol):
    """The supervisor's commands (:class:`~fieldstation.runtime.supervisor.Supervisor`)."""

    def job(self, name: str) -> dict[str, Any]: ...

    def stop_job(self, name: str) -> dict[str, Any]: ...

    def start_job(self, name: str) -> dict[str, Any]: ...


def job_names(config: StationConfig) -> list[str]:
    """Every job a suspender may hold: ``recorder:<sensor>`` of the enabled streaming
    sensors, ``processor:<name>`` of the enabled processors, ``output:<name>`` of the outputs.
    Slow readings sensors are never held: one of them may be the very value a suspender
    watches (a paused battery reading would never resume)."""
    from fieldstation.sensors.readings.config import is_slow

    names = [f"recorder:{s.name}" for s in config.sensors if s.enabled and not is_slow(s)]
    names += [f"processor:{p.name}" for p in config.processors if p.enabled]
    names += [f"output:{o.name}" for o in config.outputs]
    return names


class Sampler:
    """Reads the value of each source once per :meth:`sample`; ``None`` when unknown (no
    battery monitor, no thermal zone, no recent reading).

    ``battery``: default the INA219 of ``[battery]`` when enabled; ``temperature``: default
    :func:`~fieldstation.health.metrics.cpu_temperature`; ``db``: for ``reading`` sources.
    """

    def __init__(
        self,
        config: StationConfig,
        clock: Clock,
        *,
        db: Database | None = None,
        battery: BatteryReader | None = None,
        temperature: Callable[[], float | None] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.db = db
        if battery is None and config.battery.enabled:
            from fieldstation.health.battery import Ina219Battery

            battery = Ina219Battery(config.battery, clock)
        self.battery = battery
        if temperature is None:
            from fieldstation.health.metrics import cpu_temperature

            temperature = cpu_temperature
        self.temperature = temperature

    def sample(self, suspenders: list[SuspenderConfig]) -> dict[str, float | None]:
        """Value by suspender name (battery and database read at most once)."""
        battery: BatteryReading | None = None
        battery_read = False
        readings: dict[str, dict[tuple[str, str], Any]] = {}
        values: dict[str, float | None] = {}
        for s in suspenders:
            value: float | None = None
            if s.source.startswith("battery_"):
                if not battery_read:
                    battery_read = True
                    battery = self._battery()
                if battery is not None:
                    value = {
                        "battery_voltage": battery.voltage,
                        "battery_percent": battery.percent,
                        "battery_current": battery.current,
                    }[s.source]
            elif s.source == "cpu_temperature":
                value = self._safe(self.temperature, "CPU temperature")
            else:
                assert s.sensor is not None and s.quantity is not None
                if s.sensor not in readings:
                    readings[s.sensor] = self._readings(s.sensor)
                row = readings[s.sensor].get((s.sensor, s.quantity))
                if row is not None:
                    measured = row.measured_at
                    age = (self.clock.now() - measured).total_seconds()
                    value = float(row.value) if age <= s.stale_after else None
            values[s.name] = value
        return values

    def _battery(self) -> BatteryReading | None:
        if self.battery is None:
            return None
        try:
            return self.battery.read()
        except Exception as error:  # a fault of the monitor is "unknown", not a crash
            log.warning("battery not read: %s", error)
            return None

    def _safe(self, read: Callable[[], float | None], what: str) -> float | None:
        try:
            return read()
        except Exception as error:
            log.warning("%s not read: %s", what, error)
            return None

    def _readings(self, sensor: str) -> dict[tuple[str, str], Any]:
        if self.db is None:
            return {}
        from sqlalchemy.exc import SQLAlchemyError

        from fieldstation.store.readings import latest_values

        try:
            with self.db.session() as session:
                found = latest_values(session, sensor)
                for row in found.values():
                    session.expunge(row)
                return found
        except SQLAlchemyError as error:
            log.warning("readings of %s not read: %s", sensor, error)
            return {}


class Suspenders:
    """All ``[[suspenders]]`` of a station (module docstring).

    ``events``: where transitions go (default: rows through an
    :class:`~fieldstation.store.events.EventBacklog` of ``db``); ``control``: the
    supervisor's commands, for processors (None: processors are not touched, e.g. in
    ``fieldstation record``); ``sampler``: default :class:`Sampler`.
    """

    def __init__(
        self,
        config: StationConfig,
        clock: Clock,
        home: StationHome,
        *,
        db: Database | None = None,
        sampler: Sampler | None = None,
        events: EventFn | None = None,
        control: Callable[[], JobControl | None] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.home = home
        self.db = db
        self.sampler = sampler or Sampler(config, clock, db=db)
        self.cores = [SuspenderCore(s) for s in config.suspenders]
        self.known = job_names(config)
        self.events = events or self._default_events()
        self.control = control
        self.held: dict[str, str] = {}
        """Job name -> why it is held, for every job held now."""
        self._stopped: set[str] = set()
        """Processors this object stopped (started again on release)."""
        self._since: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self._stepped = False

    def _default_events(self) -> EventFn | None:
        if self.db is None:
            return None
        from fieldstation.store.events import EventBacklog

        backlog = EventBacklog(
            self.db,
            station_id=self.config.station.id,
            destinations=self.config.destinations_for("event"),
        )

        def record(
            kind: str, source: str, message: str, severity: str, data: dict[str, Any]
        ) -> None:
            backlog.record(
                kind=kind,
                source=source,
                message=message,
                now=self.clock.now(),
                severity=severity,  # type: ignore[arg-type]
                data=data,
            )

        return record

    @property
    def interval(self) -> float:
        """Seconds between two steps: the shortest ``interval`` of the suspenders."""
        return min((c.config.interval for c in self.cores), default=60.0)

    def jobs_of(self, suspender: SuspenderConfig) -> list[str]:
        """The known jobs matched by ``suspender.jobs`` (shell patterns)."""
        return [j for j in self.known if any(fnmatchcase(j, p) for p in suspender.jobs)]

    def step(self) -> list[Transition]:
        """Sample every value once, feed each core, carry out the transitions; returns
        them. The state file is written at the first step and at each transition."""
        values = self.sampler.sample([c.config for c in self.cores])
        now = self.clock.monotonic()
        transitions = []
        for core in self.cores:
            transition = core.observe(values.get(core.config.name), now)
            if transition is not None:
                transitions.append(transition)
        if transitions or not self._stepped:
            self._stepped = True
            self._apply(transitions)
        return transitions

    def _apply(self, transitions: list[Transition]) -> None:
        held: dict[str, str] = {}
        for core in self.cores:
            reason = core.reason()
            if reason is None:
                continue
            for job in self.jobs_of(core.config):
                held.setdefault(job, reason)
        wall = self.clock.now()
        with self._lock:
            before, self.held = self.held, held
            for job in held:
                self._since.setdefault(job, wall)
            for job in set(self._since) - set(held):
                del self._since[job]
        try:
            write_state(state_path(self.home), held, wall)
        except OSError as error:  # a full disk: recorders learn it at the next transition
            log.error("could not write %s: %s", state_path(self.home), error)
        for t in transitions:
            core = next(c for c in self.cores if c.config.name == t.suspender)
            jobs = self.jobs_of(core.config)
            log.log(logging.WARNING if t.state == "suspended" else logging.INFO, "%s", t.message)
            if self.events is not None:
                self.events(
                    t.state if t.state == "suspended" else "resumed",
                    f"suspender:{t.suspender}",
                    t.message,
                    "warning" if t.state == "suspended" else "info",
                    {
                        "suspender": t.suspender,
                        "source": core.config.source,
                        "value": round(t.value, 4),
                        "threshold": t.threshold,
                        "jobs": jobs,
                    },
                )
        self._processors(set(before), set(held))

    def _processors(self, before: set[str], held: set[str]) -> None:
        """Stop processors newly held (if running), start those released that this object
        stopped."""
        control = self.control() if self.control is not None else None
        if control is None:
            return
        for job in sorted(held - before):
            if not job.startswith("processor:"):
                continue
            try:
                if control.job(job)["state"] in ("running", "starting", "backoff"):
                    control.stop_job(job)
                    self._stopped.add(job)
            except Exception as error:  # e.g. UnknownJobError: a disabled processor
                log.warning("suspenders: %s not stopped: %s", job, error)
        for job in sorted(before - held):
            if job in self._stopped:
                self._stopped.discard(job)
                try:
                    control.start_job(job)
                except Exception as error:
                    log.warning("suspenders: %s not started again: %s", job, error)

    def allows(self, output: str) -> bool:
        """Whether output ``output`` may deliver now (the delivery loop's gate)."""
        with self._lock:
            return f"output:{output}" not in self.held

    def status(self) -> dict[str, Any]:
        """JSON-ready, for ``status`` and heartbeats: each suspender's ``state``, last
        ``value`` and ``reason``, and the jobs held with why and since when."""
        with self._lock:
            held = {
                job: {"reason": reason, "since": self._since[job].isoformat()}
                for job, reason in sorted(self.held.items())
            }
        return {
            "suspenders": [
                {
                    "name": c.config.name,
                    "source": c.config.source,
                    "state": c.state,
                    "value": c.last_value,
                    "reason": c.reason(),
                }
                for c in self.cores
            ],
            "held": held,
        }

    def run(self, stop: threading.Event) -> None:
        """Step every :attr:`interval` seconds until ``stop`` is set; an error in one step
        is logged and the loop goes on. Releases every job at the end (a station that stops
        leaves no stale pause behind); a restarted job writes the pauses in force again at
        its first step."""
        self._stepped = False
        try:
            while not stop.is_set():
                try:
                    self.step()
                except Exception:
                    log.exception("suspenders: step failed; next in %.0f s", self.interval)
                if self.clock.wait(stop, self.interval):
                    break
        finally:
            try:
                write_state(state_path(self.home), {}, self.clock.now())
            except OSError as error:
                log.warning("could not clear %s: %s", state_path(self.home), error)
