"""The embedded default station and the commented template written by ``fieldstation init``.

Both come from one file, ``default.toml`` beside this module, so the template always validates
and ``fieldstation run`` with no config runs exactly what ``init`` writes.
"""

from __future__ import annotations

import tomllib
from importlib.resources import files

from fieldstation.config.base import check_name
from fieldstation.config.station import StationConfig, parse_config

__all__ = ["default_config", "template_text"]


def template_text(station_id: str | None = None) -> str:
    """The commented station file; ``station_id`` replaces the default id (and the station's
    ``name``, which would otherwise still say "Embedded default station") when given.

    Raises ``ValueError`` (saying what a station id may hold) when ``station_id`` is not a
    valid name, so the file written always validates.
    """
    if station_id is not None:
        check_name(station_id, "station id")
    text = files("fieldstation.config").joinpath("default.toml").read_text(encoding="utf-8")
    if station_id is not None:
        text = text.replace('id = "default"', f'id = "{station_id}"', 1)
        text = text.replace('name = "Embedded default station"', f'name = "{station_id}"', 1)
    return text


def default_config() -> StationConfig:
    """The embedded default station: synthetic audio, energy detector, file output, heartbeat."""
    return parse_config(tomllib.loads(template_text()))
