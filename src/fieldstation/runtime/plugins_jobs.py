"""The station's jobs from job plugins (:mod:`fieldstation.config.jobs`): one supervised
thread job per enabled ``[[jobs]]`` entry, plus the alerts job when ``[[alerts]]`` has rules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fieldstation.config.jobs import JobConfig, JobPlugin, load_job_plugin

__all__ = ["plugin_entries", "plugin_thread_jobs"]


def plugin_thread_jobs(
    station: Any, db: Any, clock: Any, home: Any
) -> list[tuple[str, Callable[[Any], None], float]]:
    """``(name, run(stop), liveness seconds)`` of each enabled ``[[jobs]]`` entry (job
    ``job:<name>``), plus ``job:alerts`` when the station has ``[[alerts]]`` and no job of
    kind ``alerts``. Each worker is built by its plugin's factory inside ``run``, so a job
    restarted by the supervisor starts from a fresh object; its ``close()`` (if any) is called
    when ``run`` ends."""
    entries = _entries(station)
    specs: list[tuple[str, Callable[[Any], None], float]] = []
    for entry in entries:
        plugin = load_job_plugin(entry.kind)

        def run(stop: Any, entry: JobConfig = entry, plugin: JobPlugin = plugin) -> None:
            worker = plugin.factory(entry, station=station, db=db, clock=clock, home=home)
            try:
                worker.run(stop)
            finally:
                close = getattr(worker, "close", None)
                if close is not None:
                    close()

        specs.append((f"job:{entry.name}", run, plugin.liveness))
    return specs


def _entries(station: Any) -> list[JobConfig]:
    entries: list[JobConfig] = [job for job in station.jobs if job.enabled]
    if station.alerts and not any(job.kind == "alerts" for job in station.jobs):
        entries.append(load_job_plugin("alerts").config_model(name="alerts", kind="alerts"))
    return entries


def plugin_entries(station: Any) -> list[str]:
    """Names of the plugin jobs' entries of ``station`` (a station config) that run: each is
    job ``job:<name>`` (see :func:`plugin_thread_jobs`)."""
    return [entry.name for entry in _entries(station)]
