"""Fixtures of the command tests: a real Mosquitto (as the outbox and hub tests use)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fieldstation.testing.broker import MosquittoBroker, MosquittoMissingError


@pytest.fixture
def broker(tmp_path: Path, require: Any) -> Iterator[MosquittoBroker]:
    """A real Mosquitto on a free loopback port (persistent), stopped after the test."""
    try:
        broker = MosquittoBroker(tmp_path / "broker")
    except MosquittoMissingError as error:
        require("mosquitto", str(error))
    with broker as running:
        yield running
