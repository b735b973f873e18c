"""Helpers for schedule tests: build schedules and stations from plain dicts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fieldstation.config.schedule import ScheduleConfig
from fieldstation.config.station import StationSection

PLACES: dict[str, dict[str, Any]] = {
    "oxford": {
        "latitude": 51.752,
        "longitude": -1.2577,
        "elevation": 60,
        "timezone": "Europe/London",
    },
    "new_york": {
        "latitude": 40.7128,
        "longitude": -74.006,
        "elevation": 10,
        "timezone": "America/New_York",
    },
    "svalbard": {
        "latitude": 78.2,
        "longitude": 15.6,
        "elevation": 10,
        "timezone": "Arctic/Longyearbyen",
    },
    "sydney": {
        "latitude": -33.87,
        "longitude": 151.21,
        "elevation": 20,
        "timezone": "Australia/Sydney",
    },
    "a_coruna": {  # far west in its zone: astronomical dusk falls after midnight in May
        "latitude": 43.37,
        "longitude": -8.40,
        "elevation": 0,
        "timezone": "Europe/Madrid",
    },
    "quito": {
        "latitude": -0.18,
        "longitude": -78.47,
        "elevation": 2850,
        "timezone": "America/Guayaquil",
    },
}


def station(place: str) -> StationSection:
    """A station section at one of :data:`PLACES`."""
    return StationSection(id=place.replace("_", "-"), **PLACES[place])


def schedule(**fields: Any) -> ScheduleConfig:
    """A validated schedule from station-file style fields (durations as strings)."""
    return ScheduleConfig.model_validate(fields)


@pytest.fixture
def oxford() -> StationSection:
    return station("oxford")


@pytest.fixture
def at() -> Callable[[str], StationSection]:
    """``at("svalbard")``: a station section at a named place."""
    return station


@pytest.fixture
def make_schedule() -> Callable[..., ScheduleConfig]:
    """``make_schedule(windows=[...], duty_cycle={...})``: a validated schedule."""
    return schedule
