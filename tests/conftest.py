"""Fixtures shared by every test module: station configs, homes, databases, clocks, samples."""

from __future__ import annotations

import contextlib
import copy
import importlib
import os
import tomllib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest

from fieldstation.clock import VirtualClock
from fieldstation.config import StationConfig, parse_config, template_text
from fieldstation.home import StationHome
from fieldstation.store import Database, open_database
from fieldstation.testing.broker import MosquittoBroker, MosquittoMissingError

SAMPLES = Path(
    os.environ.get("FIELDSTATION_SAMPLES", Path("~/.cache/fieldstation/samples").expanduser())
)

REQUIREMENTS = ("extras", "pulse", "samples", "mosquitto", "socat", "rtsp", "postgres", "chromium")
"""What a test may need that a machine may lack. ``FIELDSTATION_REQUIRE`` (a comma list of
these, e.g. ``extras,samples``) turns the skip of a test lacking one of them into a failure, so
CI cannot pass by silently skipping what it was set up to run."""


def required() -> frozenset[str]:
    """The requirements listed in ``FIELDSTATION_REQUIRE`` (read at each call).

    Raises ``ValueError`` naming an unknown entry (a typo would otherwise demand nothing)."""
    listed = {part.strip() for part in os.environ.get("FIELDSTATION_REQUIRE", "").split(",")}
    listed.discard("")
    unknown = sorted(listed - set(REQUIREMENTS))
    if unknown:
        raise ValueError(
            f"FIELDSTATION_REQUIRE: unknown requirement(s) {', '.join(unknown)}; "
            f"known: {', '.join(REQUIREMENTS)}"
        )
    return frozenset(listed)


class Require:
    """``require(what, reason)``: the test cannot run here because ``what`` (one of
    :data:`REQUIREMENTS`) is missing: it is skipped with ``reason``, or fails when
    ``FIELDSTATION_REQUIRE`` lists ``what``. Never returns.

    ``require.module(what, name, reason)``: import and return module ``name``, or
    ``require(what, ...)`` when it cannot be imported (``pytest.importorskip`` that obeys
    ``FIELDSTATION_REQUIRE``).
    """

    def __call__(self, what: str, reason: str) -> NoReturn:
        if what not in REQUIREMENTS:
            raise ValueError(f"unknown requirement {what!r}; known: {', '.join(REQUIREMENTS)}")
        if what in required():
            pytest.fail(f"{reason} (required: FIELDSTATION_REQUIRE lists {what!r})", pytrace=False)
        pytest.skip(reason)

    def module(self, what: str, name: str, reason: str | None = None) -> ModuleType:
        try:
            return importlib.import_module(name)
        except ImportError as error:
            self(what, f"{reason or f'{name} is not installed'} ({error})")


require = Require()
"""The :class:`Require` helper, for conftest code; tests take the ``require`` fixture."""


@pytest.fixture(name="require", scope="session")
def require_fixture() -> Require:
    """The :class:`Require` helper: ``require("pulse", "why")`` skips, or fails when
    ``FIELDSTATION_REQUIRE`` lists ``pulse``; ``require.module("extras", "birdnet")`` imports."""
    return require


def pytest_configure(config: pytest.Config) -> None:
    """Refuse an unknown name in ``FIELDSTATION_REQUIRE`` before anything runs."""
    try:
        required()
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None


def pytest_report_header(config: pytest.Config) -> str:
    """Show what this run demands (``FIELDSTATION_REQUIRE``)."""
    listed = ", ".join(sorted(required())) or "nothing (missing requirements skip)"
    return f"FIELDSTATION_REQUIRE: {listed}"


def default_data() -> dict[str, Any]:
    """The embedded default station file as a dict, to modify in a test."""
    return tomllib.loads(template_text())


def make_config(home: Path, **sections: Any) -> StationConfig:
    """The default station with ``home`` set and top-level sections replaced by ``sections``."""
    data = copy.deepcopy(default_data())
    data["station"]["home"] = str(home)
    data.update(sections)
    return parse_config(data)


@pytest.fixture
def home(tmp_path: Path) -> StationHome:
    """A fresh station home folder (created)."""
    return StationHome(tmp_path / "home").ensure()


@pytest.fixture
def config(home: StationHome) -> StationConfig:
    """The embedded default station living in ``home``."""
    return make_config(home.root)


@pytest.fixture
def db(home: StationHome) -> Iterator[Database]:
    """The migrated station database of ``home``."""
    database = open_database(home.database)
    yield database
    database.dispose()


@pytest.fixture
def clock() -> VirtualClock:
    """A virtual clock starting 2026-06-01 00:00 UTC."""
    return VirtualClock(datetime(2026, 6, 1, tzinfo=UTC))


def _samples(kind: str) -> list[Path]:
    folder = SAMPLES / kind
    files = (
        sorted(p for p in folder.glob("*") if p.suffix.lower() == ".wav") if folder.exists() else []
    )
    if not files:
        require("samples", f"no {kind} samples in {folder}: run scripts/fetch-sample-data")
    return files


@pytest.fixture
def bat_files() -> list[Path]:
    """The 9 real bat WAVs (skips when not fetched; fails if ``samples`` is required)."""
    return _samples("bats")


@pytest.fixture
def bird_files() -> list[Path]:
    """The real bird recording(s) (skips when not fetched; fails if ``samples`` is required)."""
    return _samples("birds")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 20 MB filesystem at ``tmp_path/disk`` (:mod:`fieldstation.testing.disk`);
    skipped with the reason where it cannot be mounted."""
    from fieldstation.testing.disk import SmallFilesystemUnavailable, small_filesystem

    mount = tmp_path / "disk"
    mount.mkdir()
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(small_filesystem(mount))
        except SmallFilesystemUnavailable as error:
            pytest.skip(str(error))
        yield mount


# --- PostgreSQL (the hub's fleet database, SQL exports) ---------------------------------------

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
    name = f"fs_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield postgres_admin.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


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


@pytest.fixture
def pulse(tmp_path: Path, require: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A PulseAudio virtual microphone (:class:`fieldstation.testing.pulse.PulseVirtualMic`)
    at the rate given by indirect parametrization (``request.param``), else the test module's
    ``PULSE_RATE`` (Hz; default 48000); requires ``pulse``."""
    from fieldstation.testing.pulse import PulseVirtualMic, pulse_available

    reason = pulse_available()
    if reason:
        require("pulse", reason)
    rate = getattr(request, "param", None) or getattr(request.module, "PULSE_RATE", 48000)
    with PulseVirtualMic(tmp_path / "pulse", rate=rate) as mic:
        yield mic
