"""Replay of a measured series from a CSV file as a slow readings sensor (needs no hardware).

Row *k* of the file (after ``start_row``) is measurement *k*: one row per ``period`` seconds on
the station's clock (so a day of hourly values replays in a minute with ``period = "1s"`` on a
virtual clock, or in real time with ``period = "1h"``). Rows are stamped with the station's
time, not with the file's own (like audio replay, decision record 0021, the series is played,
not resampled). ``columns`` are the value columns, stored as quantities ``quantities`` (default:
the column names) in ``units``; ``convert = "degF_to_Cel"`` turns Fahrenheit into Celsius
(``(F - 32) * 5 / 9``). An empty cell is a missing value (no row). Without ``loop`` the
sensor ends after the last row.

Example, the hourly Seattle temperatures of 2010 in the ``vega_datasets`` wheel
(``vega_datasets/_data/seattle-temps.csv``, columns ``date,temp``, °F)::

    [[sensors]]
    name = "air"
    kind = "replay_csv"
    path = "package:vega_datasets/_data/seattle-temps.csv"
    columns = ["temp"]
    quantities = ["temperature"]
    units = ["Cel"]
    convert = "degF_to_Cel"
    period = "1h"
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from fieldstation.config.plugins import Plugin
from fieldstation.sensors.readings.config import SlowSensorConfig

__all__ = ["PACKAGE_PREFIX", "ReplayCsvConfig", "plugin"]

PACKAGE_PREFIX = "package:"
"""``path`` prefix naming a file inside an installed Python package."""


class ReplayCsvConfig(SlowSensorConfig):
    """A measured series replayed from a CSV file, one row per period."""

    media: ClassVar[str] = "readings"

    path: Path = Field(
        description="The CSV file (first line: column names), or 'package:<module>/<file>' for "
        "a file inside an installed Python package (e.g. "
        "'package:vega_datasets/_data/seattle-temps.csv')."
    )
    columns: list[str] = Field(min_length=1, description="Value columns to replay.")
    quantities: list[str] | None = Field(
        default=None, description="Quantity name of each column; default the column names."
    )
    units: list[str] = Field(description="Unit of each quantity (after conversion), e.g. 'Cel'.")
    convert: Literal["none", "degF_to_Cel"] = Field(
        default="none", description="Conversion of the values: none, or degF_to_Cel."
    )
    start_row: int = Field(default=0, ge=0, description="Data rows skipped at the start.")
    loop: bool = Field(default=False, description="Start again at the first row at the end.")

    def resolved_path(self) -> Path:
        """The CSV file: ``path``, or for ``package:<module>/<file>`` that file inside the
        installed package ``module`` (found without importing it). Raises ``ValueError``
        naming the package when it is not installed."""
        text = str(self.path)
        if not text.startswith(PACKAGE_PREFIX):
            return self.path.expanduser()
        module, _, inner = text[len(PACKAGE_PREFIX) :].partition("/")
        spec = importlib.util.find_spec(module) if module else None
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(
                f"path: package {module!r} is not installed (pip install {module}), or give "
                "the CSV file's own path"
            )
        return Path(next(iter(spec.submodule_search_locations))) / inner

    @model_validator(mode="after")
    def _check(self) -> ReplayCsvConfig:
        if len(self.units) != len(self.columns):
            raise ValueError(
                f"units: {len(self.units)} unit(s) for {len(self.columns)} column(s); give one "
                "unit per column"
            )
        if self.quantities is not None and len(self.quantities) != len(self.columns):
            raise ValueError("quantities: give one quantity name per column (or omit it)")
        return self


def _create(config: ReplayCsvConfig, **context: Any) -> Any:
    """Build a :class:`fieldstation.sensors.readings.csvreplay.CsvReplaySensor` (context:
    ``clock``). Raises a configuration error when the file or a column is missing."""
    from fieldstation.sensors.readings.csvreplay import CsvReplaySensor

    return CsvReplaySensor(config, clock=context.get("clock"))


def _preflight(config: ReplayCsvConfig) -> list[str]:
    try:
        path = config.resolved_path()
    except ValueError as error:
        return [str(error)]
    if not path.is_file():
        return [f"path: {path} is not a file; give the CSV series to replay"]
    return []


plugin = Plugin(
    config_model=ReplayCsvConfig, factory=_create, description=__doc__ or "", preflight=_preflight
)
