"""Fixtures of the hub tests: a fresh fleet database per test (SQLite file, or a PostgreSQL
database with a random name on 127.0.0.1:5432, dropped after), a real Mosquitto."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fieldstation.testing.broker import MosquittoBroker, MosquittoMissingError

PG_ADMIN = os.environ.get(
    "FIELDSTATION_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
"""A PostgreSQL server where the tests may create and drop databases (trust auth)."""


@pytest.fixture
def postgres_url(require: Any) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database (random name), dropped after the test.
    Skips (``require("postgres")``) when the server does not answer."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"fs_hub_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as error:
        admin.dispose()
        require("postgres", f"PostgreSQL not reachable at {PG_ADMIN}: {error}")
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def hub_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh fleet database URL: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def broker(tmp_path: Path, require: Any) -> Iterator[MosquittoBroker]:
    """A real Mosquitto on a free loopback port (persistent), stopped after the test."""
    try:
        broker = MosquittoBroker(tmp_path / "broker")
    except MosquittoMissingError as error:
        require("mosquitto", str(error))
    with broker as running:
        yield running
