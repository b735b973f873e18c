"""The station's own health as readings: CPU temperature (when the board has a sensor), load,
memory and the disk holding the station home, through psutil.

Quantities: ``cpu_temperature`` (Cel; only when ``psutil.sensors_temperatures()`` finds one),
``load_1m`` (1-minute load average per CPU, 1), ``memory_used`` (%), ``disk_free`` (By) and
``disk_used`` (%) of ``path`` (default: the station home). Slow sensor: once per ``period``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from fieldstation.config.plugins import Plugin
from fieldstation.sensors.readings.config import SlowSensorConfig

__all__ = ["SystemConfig", "plugin"]


class SystemConfig(SlowSensorConfig):
    """CPU temperature, load, memory and disk of this machine."""

    media: ClassVar[str] = "readings"

    path: Path | None = Field(
        default=None, description="Folder whose disk is measured; default the station home."
    )

    def quantity_count(self) -> int | None:
        """Load, memory used, disk free and used, and the CPU temperature where there is one
        (five at most)."""
        return 5


def _create(config: SystemConfig, **context: Any) -> Any:
    """Build a :class:`fieldstation.sensors.readings.system.SystemSensor` (context: ``clock``,
    ``home``: the station home folder)."""
    from fieldstation.sensors.readings.system import SystemSensor

    path = config.path or context.get("home") or Path("/")
    return SystemSensor(config.period, Path(path), clock=context.get("clock"))


plugin = Plugin(config_model=SystemConfig, factory=_create, description=__doc__ or "")
