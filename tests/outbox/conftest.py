"""Fixtures of the outbox tests: station configs with given outputs, a real Mosquitto."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fieldstation.config import StationConfig, parse_config, template_text
from fieldstation.home import StationHome
from fieldstation.testing.broker import MosquittoBroker, MosquittoMissingError

MakeStation = Callable[..., StationConfig]


@pytest.fixture
def make_station(home: StationHome) -> MakeStation:
    """``make_station(outputs=[...], **outbox)``: the default station in ``home`` with these
    outputs and ``[outbox]`` values."""
    base = tomllib.loads(template_text())

    def make(outputs: list[dict[str, Any]], **outbox: Any) -> StationConfig:
        data = copy.deepcopy(base)
        data["station"]["home"] = str(home.root)
        data["outputs"] = outputs
        data["outbox"].update(outbox)
        return parse_config(data)

    return make


@pytest.fixture
def broker(tmp_path: Path, require: Any) -> Iterator[MosquittoBroker]:
    """A real Mosquitto on a free loopback port (persistent), stopped after the test.

    Skips (``require("mosquitto")``) only when the binary is missing; a broker that is
    installed but does not start fails the test with its log."""
    try:
        broker = MosquittoBroker(tmp_path / "broker")
    except MosquittoMissingError as error:
        require("mosquitto", str(error))
    with broker as running:
        yield running
