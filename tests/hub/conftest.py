"""Fixtures of the hub tests: a fresh fleet database per test (SQLite file, or a PostgreSQL
database with a random name on 127.0.0.1:5432, dropped after), a real Mosquitto."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fieldstation.testing.broker import MosquittoBroker
from fieldstation.testing.browser import chromium_driver


@pytest.fixture(params=["sqlite", "postgresql"])
def hub_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh fleet database URL: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def browser(require: Any) -> Iterator[Any]:
    """A headless Chromium driven by Selenium (Debian's ``chromium`` and ``chromium-driver``,
    :func:`fieldstation.testing.browser.chromium_driver`); requires ``chromium`` (skip, or fail
    under ``FIELDSTATION_REQUIRE``) when either is missing."""
    with chromium_driver(require, size=(1400, 900)) as driver:
        yield driver


class Process:
    """A ``fieldstation ...`` command as a real subprocess; its stderr lines are kept and
    :meth:`wait_for` blocks until one contains a text (the event, not a guessed time)."""

    CLI = [sys.executable, "-m", "fieldstation.cli"]

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.lines: list[str] = []
        self._seen = threading.Condition()
        self.process = subprocess.Popen(
            [*self.CLI, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()

    def wait_for(self, text: str, timeout: float = 90, *, after: int = 0) -> None:
        with self._seen:
            found = self._seen.wait_for(
                lambda: (
                    any(text in line for line in self.lines[after:])
                    or self.process.poll() is not None
                ),
                timeout,
            )
            if not found or not any(text in line for line in self.lines[after:]):
                raise AssertionError(
                    f"{' '.join(self.args)}: no {text!r}:\n" + "".join(self.lines[-40:])
                )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        return self.process.returncode


def station_file(
    home: Path,
    station: str,
    broker: MosquittoBroker,
    sensor: dict[str, Any] | None = None,
    *,
    hub_key: str | None = None,
) -> Path:
    """A fast station file: ``station`` publishing to ``broker`` (mqtt output), energy
    detector, heartbeats every second; the synthetic chirps sensor unless ``sensor`` (a
    ``[[sensors]]`` table) is given; with ``hub_key`` (the ``ed25519:...`` line ``hub keygen``
    prints), commands enabled and signed by key id ``hub``."""
    import tomllib

    import tomli_w

    from fieldstation.config import template_text

    data = tomllib.loads(template_text())
    data["station"].update(id=station, home=str(home))
    mic = data["sensors"][0]
    mic.update(sample_rate="16kHz", chunk="2s", min_free="1MB")
    if sensor is not None:
        data["sensors"][0] = {"name": "mic", "chunk": "2s", "min_free": "1MB", **sensor}
    data["processors"][0].update(poll_interval="0.2s", high="7kHz")
    data["retention"]["min_free"] = "1MB"
    data["heartbeat"].update(interval="1s", summary_interval="10s")
    data["runtime"].update(
        backoff_initial="0.05s",
        backoff_max="0.3s",
        liveness_grace="2s",
        stop_timeout="5s",
        status_interval="0.5s",
        outbox_poll="0.2s",
    )
    data["outputs"] = [
        {"name": "hub", "kind": "mqtt", "host": broker.host, "port": broker.port, "keepalive": "5s"}
    ]
    if hub_key is not None:
        data["commands"] = {"enabled": True, "hub_keys": {"hub": hub_key}}
    home.mkdir(parents=True, exist_ok=True)
    path = home / "station.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def hub_file(
    folder: Path, name: str, url: str, broker: MosquittoBroker, *, port: int, extra: str = ""
) -> Path:
    """A hub config: ``url`` database, MQTT ingest as ``name`` (group ``fleet``), HTTP and the
    dashboard on 127.0.0.1:``port``; ``extra`` TOML appended (e.g. an ``[alerts]`` table)."""
    path = folder / f"{name}.toml"
    path.write_text(
        f'home = "{folder / "hub-home"}"\ndatabase = "{url}"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nclient_id = "{name}"\n'
        'group = "fleet"\nbatch_size = 50\nbatch_wait = "0.02s"\n'
        f"[http]\nport = {port}\n" + extra
    )
    return path


def commands_hub_file(folder: Path, url: str, broker: MosquittoBroker) -> Path:
    """:func:`hub_file` ``hub-1`` on a free port, delivering commands every 0.2 s."""
    from fieldstation.testing.broker import free_port

    return hub_file(
        folder, "hub-1", url, broker, port=free_port(), extra='[commands]\ninterval = "0.2s"\n'
    )


def hub_cli(config: Path) -> Callable[..., str]:
    """``hub(*args)``: runs ``fieldstation hub ARGS -c config``, asserts it succeeded and
    returns its stripped standard output."""

    def hub(*args: str) -> str:
        done = subprocess.run(
            [*Process.CLI, "hub", *args, "-c", str(config)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    return hub


@pytest.fixture
def fleet_tools() -> Any:
    """:class:`Process`, :func:`station_file`, :func:`hub_file`, :func:`commands_hub_file` and
    :func:`hub_cli` for the fleet tests (a conftest module cannot be imported under
    ``--import-mode=importlib``)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        Process=Process,
        station_file=station_file,
        hub_file=hub_file,
        commands_hub_file=commands_hub_file,
        hub_cli=hub_cli,
    )
