"""Health metrics of the station: host (psutil, /sys), database (outbox, activity) and jobs.

A value that cannot be measured (no thermal zone, no battery, no database yet) is ``None``,
never a made-up number. Host readings come from a :class:`HostMetrics` provider so tests and
hosts without the hardware can inject their own (omgrab's ``SystemMetricsProvider``).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as time_of_day
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

from fieldstation import __version__
from fieldstation.clock import Clock
from fieldstation.store import Database

__all__ = [
    "HostMetrics",
    "MetricsProvider",
    "PsutilHostMetrics",
    "StationMetrics",
    "collect_station_metrics",
    "local_day_start",
    "cpu_temperature",
]

THERMAL_ROOT = Path("/sys/class/thermal")
_CPU_ZONE_TYPES = ("x86_pkg_temp", "cpu", "soc", "coretemp", "k10temp", "zenpower")
"""Thermal zone types (substrings, lower case) that measure the CPU or SoC die itself: Intel's
package sensor ``x86_pkg_temp``, ``cpu-thermal`` / ``cpu_thermal`` (Raspberry Pi, many ARM
boards), ``soc_thermal`` / ``soc-thermal`` (Rockchip, Amlogic), AMD's ``k10temp``."""
_BOARD_ZONE_TYPES = ("acpitz",)
"""ACPI thermal zones: firmware-defined, often a motherboard or chipset sensor, not the CPU;
used only when no CPU zone exists."""


@runtime_checkable
class HostMetrics(Protocol):
    """Something that reads the host: a dict of named values (``None`` when absent)."""

    def read(self, home: Path) -> dict[str, Any]:
        """Host metrics for a station living in ``home`` (see :class:`PsutilHostMetrics`)."""
        ...


MetricsProvider = HostMetrics
"""Alias (omgrab's name for the role)."""


def cpu_temperature(root: Path = THERMAL_ROOT) -> float | None:
    """CPU temperature in °C from ``/sys/class/thermal/thermal_zone*/temp`` (millidegrees).

    Prefers a zone whose ``type`` names the CPU or SoC (``x86_pkg_temp``, ``cpu-thermal``,
    ``soc_thermal`` ...: :data:`_CPU_ZONE_TYPES`), then an ACPI zone (``acpitz``), then the
    first readable zone; among equals the lowest zone number. None when there is no thermal
    zone (VMs, most containers).
    """
    readings: list[tuple[int, int, float]] = []
    for zone in sorted(root.glob("thermal_zone*")):
        try:
            kind = (zone / "type").read_text().strip().lower()
            value = int((zone / "temp").read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue
        if any(k in kind for k in _CPU_ZONE_TYPES):
            rank = 0
        elif any(k in kind for k in _BOARD_ZONE_TYPES):
            rank = 1
        else:
            rank = 2
        readings.append((rank, _zone_number(zone.name), value))
    if not readings:
        return None
    return min(readings, key=lambda r: (r[0], r[1]))[2]


def _zone_number(name: str) -> int:
    """``thermal_zone12`` -> 12 (sorting by name would put 10 before 2)."""
    digits = name.removeprefix("thermal_zone")
    return int(digits) if digits.isdigit() else 1 << 30


class PsutilHostMetrics:
    """Host metrics from psutil, ``os.getloadavg`` and ``/sys/class/thermal``.

    Keys: ``load_1m/5m/15m`` (run-queue length), ``cpu_percent`` (since the previous read; None
    on the first read, which has no interval), ``cpu_count``, ``memory_total/available`` (bytes),
    ``memory_percent``, ``disk_total/free`` (bytes, the disk holding ``home``), ``disk_percent``,
    ``cpu_temp_c`` (°C or None), ``uptime_s`` (host, seconds since boot), ``process_rss``
    (bytes, this process).
    """

    def __init__(self, thermal_root: Path = THERMAL_ROOT) -> None:
        import psutil

        self._psutil = psutil
        self._thermal_root = thermal_root
        self._primed = False

    def read(self, home: Path) -> dict[str, Any]:
        ps = self._psutil
        cpu_percent: float | None = ps.cpu_percent(interval=None)
        if not self._primed:  # the first call has no interval to measure over
            cpu_percent, self._primed = None, True
        try:
            load: tuple[float, float, float] | tuple[None, None, None] = os.getloadavg()
        except OSError:
            load = (None, None, None)
        memory = ps.virtual_memory()
        disk: dict[str, Any] = {"disk_total": None, "disk_free": None, "disk_percent": None}
        try:
            usage = ps.disk_usage(str(_existing(home)))
            disk = {
                "disk_total": usage.total,
                "disk_free": usage.free,
                "disk_percent": usage.percent,
            }
        except OSError:
            pass
        return {
            "load_1m": load[0],
            "load_5m": load[1],
            "load_15m": load[2],
            "cpu_percent": cpu_percent,
            "cpu_count": ps.cpu_count(),
            "memory_total": memory.total,
            "memory_available": memory.available,
            "memory_percent": memory.percent,
            **disk,
            "cpu_temp_c": cpu_temperature(self._thermal_root),
            "uptime_s": round(time.time() - ps.boot_time(), 1),
            "process_rss": ps.Process().memory_info().rss,
        }


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (disk usage of a home not created yet)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@dataclass
class StationMetrics:
    """One snapshot of everything a heartbeat reports (JSON-ready via :meth:`as_dict`)."""

    host: dict[str, Any]
    outbox_pending: int | None
    outbox_oldest_age_s: float | None
    last_recording_age_s: float | None
    last_detection_age_s: float | None
    jobs: list[dict[str, Any]]
    deployment_id: int | None
    config_hash: str | None
    versions: dict[str, str]
    battery: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)
    """Metrics that could not be read, with the reason (e.g. a database error)."""
    detections_today: dict[str, Any] | None = None
    """``{"count": n, "since": start of the station's local day}`` (:func:`local_day_start`),
    None when the database could not be read."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "outbox": {"pending": self.outbox_pending, "oldest_age_s": self.outbox_oldest_age_s},
            "last_recording_age_s": self.last_recording_age_s,
            "last_detection_age_s": self.last_detection_age_s,
            "jobs": self.jobs,
            "deployment_id": self.deployment_id,
            "config_hash": self.config_hash,
            "versions": self.versions,
            "battery": self.battery,
            "errors": self.errors,
            "detections_today": self.detections_today,
        }


def versions() -> dict[str, str]:
    """Versions of fieldstation, Python and the OS kernel."""
    return {
        "fieldstation": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(terse=True),
    }


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else round((now - then).total_seconds(), 3)


def collect_station_metrics(
    *,
    db: Database,
    clock: Clock,
    home: Path,
    host: HostMetrics,
    job_states: Callable[[], list[dict[str, Any]]] | None = None,
    battery: Callable[[], dict[str, Any] | None] | None = None,
    tz: ZoneInfo | None = None,
) -> StationMetrics:
    """Read every metric once. Failures of one source are listed in ``errors``, not raised.
    ``tz``: the station's timezone, whose local day ``detections_today`` counts (None: UTC)."""
    from fieldstation.store.deployments import current_deployment
    from fieldstation.store.health import (
        detections_between,
        last_detection_at,
        last_recording_at,
        outbox_depth,
    )

    now = clock.now()
    errors: list[str] = []
    host_values: dict[str, Any] = {}
    try:
        host_values = host.read(home)
    except Exception as error:  # a broken sensor must not stop the heartbeat
        errors.append(f"host: {type(error).__name__}: {error}")
    pending = oldest_age = rec_age = det_age = None
    today: dict[str, Any] | None = None
    deployment_id: int | None = None
    chash: str | None = None
    try:
        with db.session() as session:
            depth = outbox_depth(session)
            pending = depth.pending
            oldest_age = _age(now, depth.oldest_created_at)
            rec_age = _age(now, last_recording_at(session))
            det_age = _age(now, last_detection_at(session))
            since = local_day_start(now, tz or ZoneInfo("UTC"))
            count = detections_between(session, since, now + timedelta(microseconds=1))
            today = {"count": count, "since": since.isoformat()}
            deployment = current_deployment(session)
            if deployment is not None:
                deployment_id, chash = deployment.id, deployment.config_hash
    except Exception as error:  # reported as status 'failing' by the heartbeat
        errors.append(f"database: {type(error).__name__}: {error}")
    jobs: list[dict[str, Any]] = []
    if job_states is not None:
        try:
            jobs = [dict(j) for j in job_states()]
        except Exception as error:
            errors.append(f"jobs: {error}")
    battery_values = None
    if battery is not None:
        try:
            battery_values = battery()
        except Exception as error:
            errors.append(f"battery: {error}")
    return StationMetrics(
        host=host_values,
        outbox_pending=pending,
        outbox_oldest_age_s=oldest_age,
        last_recording_age_s=rec_age,
        last_detection_age_s=det_age,
        jobs=jobs,
        deployment_id=deployment_id,
        config_hash=chash,
        versions=versions(),
        battery=battery_values,
        errors=errors,
        detections_today=today,
    )


def local_day_start(now: datetime, tz: ZoneInfo) -> datetime:
    """The start (aware, in ``tz``) of the local day of ``now`` in ``tz``: local midnight, or
    the first existing instant of a day whose midnight a DST change skips."""
    day = now.astimezone(tz).date()
    start = datetime.combine(day, time_of_day(0), tzinfo=tz)
    # a skipped midnight (a spring-forward at 00:00) round-trips to the next valid time
    return start.astimezone(UTC).astimezone(tz)
