"""The working sensor behind ``replay_csv`` (see :mod:`fieldstation.sensors.replay_csv`)."""

from __future__ import annotations

import csv
import math

from fieldstation.clock import Clock
from fieldstation.sensors.base import config_error
from fieldstation.sensors.readings.periodic import PeriodicSensor
from fieldstation.sensors.replay_csv import ReplayCsvConfig

__all__ = ["CsvReplaySensor", "load_series"]


def load_series(config: ReplayCsvConfig) -> list[list[float]]:
    """The values of ``config.columns`` of every data row (converted; NaN for an empty cell).

    Raises a :class:`~fieldstation.sensors.base.SensorConfigurationError` naming the key when
    the file cannot be read, a column is missing, a cell is not a number or no row is left."""
    where = f"sensor {config.name!r}"
    try:
        path = config.resolved_path()
    except ValueError as error:
        raise config_error(f"{where}: {error}") from None
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in config.columns if c not in header]
            if missing:
                raise config_error(
                    f"{where}: columns {missing} are not in {path} (it has "
                    f"{', '.join(header) or 'no header'}); fix 'columns'"
                )
            rows: list[list[float]] = []
            for number, row in enumerate(reader, start=2):
                values = []
                for column in config.columns:
                    cell = (row.get(column) or "").strip()
                    if not cell:
                        values.append(math.nan)
                        continue
                    try:
                        value = float(cell)
                    except ValueError:
                        raise config_error(
                            f"{where}: {path} line {number}, column {column!r}: "
                            f"{cell!r} is not a number; fix the file or 'columns'"
                        ) from None
                    if config.convert == "degF_to_Cel":
                        value = (value - 32.0) * 5.0 / 9.0
                    values.append(value)
                rows.append(values)
    except OSError as error:
        raise config_error(f"{where}: path {path} cannot be read ({error})") from None
    rows = rows[config.start_row :]
    if not rows:
        raise config_error(f"{where}: no data rows in {path} after start_row")
    return rows


class CsvReplaySensor(PeriodicSensor):
    """Row k of the series is measurement k (one per period); ends after the last row unless
    ``loop``."""

    def __init__(self, config: ReplayCsvConfig, clock: Clock | None = None) -> None:
        super().__init__(config.period, clock)
        self.config = config
        self.series = load_series(config)
        self.fields = tuple(config.quantities or config.columns)
        self.units = tuple(config.units)
        self._row = 0

    def options(self) -> dict[str, object]:
        return {"path": str(self.config.resolved_path()), "rows": len(self.series)}

    def open_device(self) -> None:
        self._row = 0

    def measure(self) -> list[float] | None:
        if self._row >= len(self.series):
            if not self.config.loop:
                return None
            self._row = 0
        values = self.series[self._row]
        self._row += 1
        return list(values)
