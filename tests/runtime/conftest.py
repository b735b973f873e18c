"""Fixtures of the runtime tests: station configs with fast supervisor settings."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fieldstation.config import StationConfig, parse_config, template_text

StationFactory = Callable[..., StationConfig]


def station_config(home: Path, **sections: Any) -> StationConfig:
    """The embedded default station living in ``home`` with top-level ``sections`` replaced."""
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home)
    data.update(sections)
    return parse_config(data)


@pytest.fixture
def make_station() -> StationFactory:
    """``make_station(home_path, **sections)`` -> StationConfig."""
    return station_config
