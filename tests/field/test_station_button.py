"""A press reaches a REAL running station through its control API: a ``Station`` run
in-process with its recorder process, supervisor, control socket and field jobs; the button
and LED are gpiozero devices on the MockFactory (gpiozero's documented way: its default pin
factory), the Wi-Fi tools the fake ``nmcli``.

short press -> a ``marker`` event; double press -> the recorders stop, and start again;
long press -> the Wi-Fi hotspot; very long press -> the station stops, then the power-off
command runs. The LED shows recording (steady) and then Wi-Fi setup (blinking).

The thresholds are wide (short presses of 50 ms against a 2 s long press, double presses 0.1 s
apart in a 1 s window) so a loaded machine that delays the test thread cannot change a
pattern."""

from __future__ import annotations

import socket
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory
from sqlalchemy import select

from fieldstation.config import parse_config, template_text
from fieldstation.runtime.client import ControlClient
from fieldstation.runtime.station import Station
from fieldstation.store import open_database
from fieldstation.store.models import Event
from fieldstation.testing.nmcli import install


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    previous = Device.pin_factory
    factory = Device.pin_factory = MockFactory()
    yield factory
    factory.reset()
    Device.pin_factory = previous


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def station_config(home: Path, nmcli: Path, powered_off: Path) -> dict[str, Any]:
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home)
    data["sensors"][0].update(sample_rate="16kHz", chunk="2s", min_free="1MB")
    data["processors"] = []
    data["retention"]["min_free"] = "1MB"
    data["runtime"].update(
        backoff_initial="0.05s",
        backoff_max="0.3s",
        liveness_grace="1s",
        stop_timeout="3s",
        status_interval="0.5s",
    )
    data["field"] = {
        "button": {
            "enabled": True,
            "pin": 17,
            "debounce": "0.02s",
            "double_window": "1s",
            "long_press": "2s",
            "very_long_press": "5s",
            "poweroff_command": [
                sys.executable,
                "-c",
                "import pathlib, sys; pathlib.Path(sys.argv[1]).write_text('off')",
                str(powered_off),
            ],
        },
        "led": {"enabled": True, "pin": 27, "poll": "0.1s"},
        "network": {
            "enabled": True,
            "interface": "lo",
            "internet_targets": [closed_port()],
            "interval": "0.5s",
            "nmcli": str(nmcli),
        },
        "wifi": {"enabled": True, "address": "127.0.0.1", "port": 0, "offline_after": "1h"},
    }
    return data


def events(home: Path) -> list[Event]:
    db = open_database(home / "station.db", migrate=False)
    try:
        with db.session() as session:
            rows = list(session.scalars(select(Event).order_by(Event.id)))
            session.expunge_all()
            return rows
    finally:
        db.dispose()


@pytest.mark.slow
def test_each_press_reaches_the_running_station(tmp_path: Path, factory: MockFactory) -> None:
    home = tmp_path / "home"
    fake = install(
        tmp_path / "bin", {"networks": [{"ssid": "Farm", "signal": 70}], "active": "Farm"}
    )
    powered_off = tmp_path / "powered-off"
    config = parse_config(station_config(home, fake.executable, powered_off))
    station = Station(config, tick=0.1)
    stop = threading.Event()
    runner = threading.Thread(target=station.run, args=(stop,), name="station")
    runner.start()
    button, led = factory.pin(17), factory.pin(27)

    def press(held: float) -> None:
        button.drive_low()  # pull-up: pressed = low
        time.sleep(held)
        button.drive_high()

    try:
        assert station.ready.wait(60)
        client = ControlClient(home / "run" / "control.sock")

        def recorder() -> str:
            return str(client.status()["recording"]["sensors"]["mic"]["state"])

        wait_for(lambda: recorder() == "running", what="recorder running")
        wait_for(lambda: client.status()["recording"]["active"], what="recording")
        wait_for(lambda: led.state, what="LED steady on while recording")
        network = wait_for(
            lambda: client.status()["network"].get("wifi"), what="network level checked"
        )
        assert client.status()["network"]["level"] == "local"  # lo up, target closed
        assert network["ssid"] == "Farm" and network["signal"] == 70

        press(0.05)  # short: a marker event
        wait_for(lambda: [e for e in events(home) if e.kind == "marker"], what="the marker event")
        marker = [e for e in events(home) if e.kind == "marker"][0]
        assert marker.source == "button" and marker.data["press"] == "short"

        press(0.05)  # double: recorders stop
        time.sleep(0.1)
        press(0.05)
        wait_for(lambda: recorder() == "stopped", what="recorder stopped")
        press(0.05)  # double again: they start
        time.sleep(0.1)
        press(0.05)
        wait_for(lambda: recorder() == "running", what="recorder running again")

        press(3.0)  # long: Wi-Fi setup
        wait_for(lambda: fake.state()["hotspot"], what="hotspot")
        wait_for(lambda: client.status()["wifi"]["mode"] == "hotspot", what="status wifi")
        start = len(led.states)
        wait_for(lambda: len(led.states) - start >= 4, what="LED blinking for Wi-Fi setup")

        press(6.5)  # very long: shutdown, then power off
        runner.join(60)
        assert not runner.is_alive()
    finally:
        stop.set()
        runner.join(60)
    assert powered_off.read_text() == "off"
    kinds = [e.kind for e in events(home)]
    assert kinds.count("marker") == 1
    assert "wifi_hotspot" in kinds
    shutdown = [e for e in events(home) if e.kind == "shutdown_requested"]
    assert len(shutdown) == 1 and shutdown[0].data == {"reason": "button", "poweroff": True}
    assert not (home / "run" / "control.sock").exists()
