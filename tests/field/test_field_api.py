"""The control API's field routes on a running station (no jobs), the heartbeat's network
line, and the ``[field]`` config's checks."""

from __future__ import annotations

import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from fieldstation.clock import VirtualClock
from fieldstation.config import StationConfig, parse_config, template_text
from fieldstation.config.field import ButtonConfig, LedConfig
from fieldstation.health.heartbeat import Heartbeat
from fieldstation.home import StationHome
from fieldstation.messages import HeartbeatBody
from fieldstation.runtime.client import ControlClient, ControlError
from fieldstation.runtime.station import Station
from fieldstation.store import Database


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Station, ControlClient, threading.Event]]:
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(tmp_path / "home")
    station = Station(parse_config(data), jobs=[], threads=False, tick=0.1)
    stop = threading.Event()
    runner = threading.Thread(target=station.run, args=(stop,))
    runner.start()
    try:
        assert station.ready.wait(60)
        with ControlClient(station.home.control_socket) as client:
            yield station, client, stop
    finally:
        stop.set()
        runner.join(60)
    assert not runner.is_alive()


def test_mark_event_and_errors(running: tuple[Station, ControlClient, threading.Event]) -> None:
    station, client, stop = running
    answer = client.mark_event("a fox", data={"source": "button", "press": "short"})
    assert answer["kind"] == "marker" and answer["message"] == "a fox"
    with pytest.raises(ControlError) as error:
        client.wifi_setup()
    assert error.value.status == 409 and "not enabled" in str(error.value)
    transport = httpx.HTTPTransport(uds=str(station.home.control_socket))
    with httpx.Client(transport=transport, base_url="http://station") as raw:
        assert raw.post("/events", content=b"[1]").status_code == 400
        assert raw.post("/events", json={"message": ""}).status_code == 400
        assert raw.post("/events", json={"message": "x", "data": 3}).status_code == 400
        assert raw.post("/nothing", json={}).status_code == 404
    assert not stop.is_set()


def test_shutdown_stops_the_station(
    running: tuple[Station, ControlClient, threading.Event],
) -> None:
    station, client, stop = running
    assert client.shutdown(reason="test") == {"stopping": True, "poweroff": False}
    assert stop.wait(30)


def test_heartbeat_carries_the_network_level_and_wifi(
    config: StationConfig, db: Database, home: StationHome
) -> None:
    info = {
        "level": "local",
        "interface": "wlan0",
        "address": "192.168.1.20",
        "wifi": {"ssid": "Farm", "signal": 64, "dbm": None, "source": "nmcli"},
    }
    beat = Heartbeat(config, db, VirtualClock(), home, network_info=lambda: info)
    body = beat.build()
    assert body["metrics"]["host"]["network"] == info
    HeartbeatBody.model_validate(body)  # the message schema takes it as it is
    assert "network" not in Heartbeat(config, db, VirtualClock(), home).build()["metrics"]["host"]


def test_field_config_checks() -> None:
    with pytest.raises(ValidationError, match="very_long_press"):
        ButtonConfig(long_press=3, very_long_press=2)
    with pytest.raises(ValidationError):
        ButtonConfig(short="explode")  # type: ignore[arg-type]
    led = LedConfig(patterns={"error": {"on": 0.2, "off": 0.2}})  # type: ignore[dict-item]
    assert led.patterns["error"].on == 0.2 and led.patterns["idle"].off == 2.9


def test_a_button_without_gpio_is_a_config_error_not_a_restart_loop(tmp_path: Path) -> None:
    """Off a Raspberry Pi (no pin factory gpiozero can load) the ``field`` job reports
    ``config_error`` with what to do, and the rest of the station runs."""
    from gpiozero import Device

    if Device.pin_factory is not None:
        pytest.skip("a gpiozero pin factory is loaded here")
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(tmp_path / "home")
    data["field"] = {"button": {"enabled": True}}
    station = Station(parse_config(data), jobs=[], tick=0.1)
    stop = threading.Event()
    runner = threading.Thread(target=station.run, args=(stop,))
    runner.start()
    try:
        assert station.ready.wait(60)
        supervisor = station.supervisor
        assert supervisor is not None
        deadline = time.monotonic() + 60
        while supervisor.job("field")["state"] != "config_error":
            assert time.monotonic() < deadline, supervisor.job("field")
            time.sleep(0.05)
        job = supervisor.job("field")
        assert "BadPinFactory" in job["problem"] and "python3-lgpio" in job["problem"]
        assert supervisor.job("heartbeat")["state"] == "running"
    finally:
        stop.set()
        runner.join(60)
