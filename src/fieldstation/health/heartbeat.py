"""Heartbeats: a health snapshot every ``heartbeat.interval`` written to the outbox.

Heartbeats go through the outbox like any other message, so the ones taken while the network is
down are kept and delivered later, oldest first (issue 8). Each carries a status derived from the
metrics and the job states by :func:`derive_status`:

``failing`` (the station is losing data or cannot work) when any of:
  - a job is in state ``failed`` (restart intensity exhausted), ``config_error`` (it cannot
    run with this station file) or ``hung`` (a thread job whose loop stopped turning); the
    reason is given;
  - the database could not be read;
  - the free disk space is below the largest ``min_free`` of the enabled sensors, i.e. the
    recorders' disk guard stops chunks (``disk_low``).

``degraded`` (working, but someone should look) when any of:
  - a job says it cannot do its work (its ``problem``: e.g. a recorder waiting for an audio
    device that is gone, or for disk space), with that reason;
  - a job is in a state other than ``running`` and ``starting`` (``backoff``, ``stopping``,
    ``stopped``); the states are :class:`fieldstation.progress.JobState`;
  - the free disk space is below ``retention.min_free`` (retention cannot keep up);
  - the oldest undelivered outbox message is older than ``heartbeat.outbox_age_degraded``;
  - memory use above ``heartbeat.memory_percent_degraded``, CPU temperature above
    ``heartbeat.temperature_degraded``, battery charge below ``heartbeat.battery_percent_degraded``;
  - the network monitor reports the network down;
  - a host metric could not be read.

``ok`` otherwise. ``reasons`` lists every rule that fired.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Literal

from fieldstation.clock import Clock
from fieldstation.config import StationConfig, config_hash
from fieldstation.health.metrics import (
    HostMetrics,
    PsutilHostMetrics,
    StationMetrics,
    collect_station_metrics,
)
from fieldstation.home import StationHome
from fieldstation.messages import HeartbeatBody, HeartbeatMetrics, to_wire
from fieldstation.progress import judge_jobs
from fieldstation.store import Database
from fieldstation.store.outbox import OutboxFullError

__all__ = ["Heartbeat", "Status", "derive_status"]

log = logging.getLogger(__name__)

Status = Literal["ok", "degraded", "failing"]


def derive_status(
    metrics: StationMetrics,
    config: StationConfig,
    *,
    network_up: bool | None = None,
) -> tuple[Status, list[str]]:
    """The status and the reasons for it, by the rules in this module's docstring (those for
    job states are :func:`fieldstation.progress.judge_jobs`, shared with ``status``)."""
    failing, degraded = judge_jobs(metrics.jobs)
    for error in metrics.errors:
        (failing if error.startswith("database") else degraded).append(error)
    host = metrics.host
    free = host.get("disk_free")
    if free is not None:
        guards = [s.min_free for s in config.sensors if s.enabled]
        if guards and free < max(guards):
            failing.append(f"disk free {free} B below sensor min_free {max(guards)} B")
        elif free < config.retention.min_free:
            degraded.append(f"disk free {free} B below retention.min_free")
    hb = config.heartbeat
    age = metrics.outbox_oldest_age_s
    if age is not None and age > hb.outbox_age_degraded:
        degraded.append(f"oldest undelivered message {age:.0f} s old")
    memory = host.get("memory_percent")
    if memory is not None and memory > hb.memory_percent_degraded:
        degraded.append(f"memory {memory:.0f} % used")
    temp = host.get("cpu_temp_c")
    if temp is not None and temp > hb.temperature_degraded:
        degraded.append(f"CPU at {temp:.0f} C")
    charge = (metrics.battery or {}).get("percent")
    if charge is not None and charge < hb.battery_percent_degraded:
        degraded.append(f"battery at {charge:.0f} %")
    if network_up is False:
        degraded.append("network down")
    if failing:
        return "failing", failing + degraded
    if degraded:
        return "degraded", degraded
    return "ok", []


class Heartbeat:
    """Builds and enqueues heartbeats (outbox kind ``heartbeat``).

    ``job_states()`` returns one dict per job with at least ``name`` and ``state`` (a
    :class:`~fieldstation.progress.JobState` value) and, by convention, ``restarts``,
    ``reason`` and ``problem`` (see :func:`derive_status`); it is reported as given.
    Optional: ``host`` (a :class:`HostMetrics`, default psutil), ``battery()`` (a dict or None, e.g.
    :meth:`Ina219Battery.read_dict`), ``network_up()`` (e.g. :meth:`NetworkMonitor.is_up`),
    ``power()`` (the suspenders' state, :meth:`~fieldstation.power.job.Suspenders.status`).
    """

    def __init__(
        self,
        config: StationConfig,
        db: Database,
        clock: Clock,
        home: StationHome,
        job_states: Callable[[], list[dict[str, Any]]] | None = None,
        *,
        host: HostMetrics | None = None,
        battery: Callable[[], dict[str, Any] | None] | None = None,
        network_up: Callable[[], bool] | None = None,
        power: Callable[[], dict[str, Any] | None] | None = None,
        network_info: Callable[[], dict[str, Any] | None] | None = None,
        hash_in_force: Callable[[], str] | None = None,
    ) -> None:
        self.config = config
        self.hash_in_force = hash_in_force
        """The hash of the config actually in force (``Station.config_hash``, which a remote
        configuration changes); None: the hash of ``config``."""
        self.db = db
        self.clock = clock
        self.home = home
        self.job_states = job_states
        self.host = host if host is not None else PsutilHostMetrics()
        self.battery = battery
        self.network_up = network_up
        self.power = power
        """``power()``: the suspenders' state (``Suspenders.status``), sent as ``power``."""
        self.network_info = network_info
        """The network level and Wi-Fi link (``NetLevelMonitor.as_dict``), reported as
        ``metrics.host["network"]``."""
        self.config_hash = config_hash(config)
        self.sequence = 0
        self.refused = 0
        """Consecutive heartbeats the full outbox refused (``when_full = "block"``)."""
        self._started = clock.monotonic()
        """Heartbeats built by this object (restarts at 0 with the process)."""

    def build(self) -> dict[str, Any]:
        """The heartbeat body: ``status``, ``reasons``, ``seq``, ``interval`` (s),
        ``network_up`` (None without a monitor), ``station_uptime_s`` (since this object was
        built), ``config_hash_in_force`` and ``metrics`` (:meth:`StationMetrics.as_dict`)."""
        if self.battery is None and self.config.battery.enabled:
            from fieldstation.health.battery import Ina219Battery

            self.battery = Ina219Battery(self.config.battery, self.clock).read_dict
        metrics = collect_station_metrics(
            db=self.db,
            clock=self.clock,
            home=self.home.root,
            host=self.host,
            job_states=self.job_states,
            battery=self.battery,
            tz=self.config.station.tz,
        )
        in_force = self.hash_in_force() if self.hash_in_force is not None else self.config_hash
        metrics.config_hash = metrics.config_hash or in_force
        if self.network_info is not None:
            try:
                info = self.network_info()
                if info is not None:
                    metrics.host["network"] = info
            except Exception as error:  # reported, not fatal
                metrics.errors.append(f"network level: {error}")
        network = None
        if self.network_up is not None:
            try:
                network = bool(self.network_up())
            except Exception as error:  # a broken monitor is reported, not fatal
                metrics.errors.append(f"network: {error}")
        status, reasons = derive_status(metrics, self.config, network_up=network)
        self.sequence += 1
        power: dict[str, Any] = {}
        if self.power is not None:
            try:
                power["power"] = self.power()
            except Exception as error:  # reported, never fatal to the beat
                power["power"] = {"error": str(error)}
        return to_wire(
            HeartbeatBody(
                status=status,
                reasons=reasons,
                seq=self.sequence,
                interval=self.config.heartbeat.interval,
                network_up=network,
                station_uptime_s=round(self.clock.monotonic() - self._started, 3),
                config_hash_in_force=in_force,
                metrics=HeartbeatMetrics.model_validate(metrics.as_dict()),
                **power,
            )
        )

    def beat_once(self) -> dict[str, Any]:
        """Build one heartbeat and enqueue it for the outputs taking ``heartbeat``; returns it."""
        body = self.build()
        destinations = self.config.destinations_for("heartbeat")
        if destinations:
            from fieldstation.store.outbox import OutboxCap, enqueue

            with self.db.session() as session:
                enqueue(
                    session,
                    kind="heartbeat",
                    body=body,
                    destinations=destinations,
                    now=self.clock.now(),
                    station_id=self.config.station.id,
                    cap=OutboxCap.of(self.config.outbox),
                )
        return body

    def run(self, stop: threading.Event) -> None:
        """Beat every ``heartbeat.interval`` seconds until ``stop`` is set.

        Beats keep a fixed cadence on the monotonic clock; beats missed while the process was
        busy are skipped, not bunched. An error in one beat is logged and the loop goes on; a
        beat the full outbox refuses (``when_full = "block"``) is one WARNING line for the
        whole spell, not a traceback per beat.
        With ``heartbeat.enabled = false`` it only waits for ``stop``.
        """
        if not self.config.heartbeat.enabled:
            stop.wait()  # a supervised thread must not end before it is told to
            return
        interval = self.config.heartbeat.interval
        due = self.clock.monotonic()
        while not stop.is_set():
            try:
                self.beat_once()
                if self.refused:
                    log.info("heartbeats queued again after %d refused", self.refused)
                    self.refused = 0
            except OutboxFullError as error:  # expected under when_full = "block": no traceback
                self.refused += 1
                if self.refused == 1:
                    log.warning(
                        "heartbeats are not queued while the outbox is full: %s "
                        "(logged once until one is queued again)",
                        error,
                    )
                else:
                    log.debug("heartbeat %d refused: outbox full", self.refused)
            except Exception:
                log.exception("heartbeat failed; next one in %.0f s", interval)
            due += interval
            delay = due - self.clock.monotonic()
            if delay < 0:
                due, delay = self.clock.monotonic(), 0.0
            if self.clock.wait(stop, delay):
                break
