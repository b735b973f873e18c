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
"""A PostgreSQL server where the tests may create and drop databases (trust auth); when it
does not answer, the tests start a throw-away server of their own
(:class:`fieldstation.testing.postgres.PostgresServer`)."""


def _answers(url: str) -> str | None:
    """None when the server at ``url`` takes a connection, else why not."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return None
    except OperationalError as error:
        return str(error).splitlines()[0]
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_admin(require: Any) -> Iterator[str]:
    """The URL of a PostgreSQL maintenance database: :data:`PG_ADMIN` when it answers, else
    a throw-away server started for the session (Debian's ``postgresql`` binaries); requires
    ``postgres`` (skip, or fail under ``FIELDSTATION_REQUIRE``) when neither works."""
    from fieldstation.testing.postgres import PostgresMissingError, PostgresServer

    why = _answers(PG_ADMIN)
    if why is None:
        yield PG_ADMIN
        return
    try:
        server = PostgresServer()
    except PostgresMissingError as error:
        require("postgres", f"PostgreSQL not reachable at {PG_ADMIN} ({why}) and {error}")
    with server:
        yield server.url


@pytest.fixture
def postgres_url(postgres_admin: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database (random name), dropped after the test."""
    from sqlalchemy import create_engine, text

    admin = create_engine(postgres_admin, isolation_level="AUTOCOMMIT")
    name = f"fs_hub_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield postgres_admin.rsplit("/", 1)[0] + "/" + name
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
