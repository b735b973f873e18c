"""A real station (recorder, energy detector, supervisor) with an alert rule and an Apprise
output: its detections become notifications at a local JSON endpoint."""

from __future__ import annotations

import copy
import threading
import tomllib
from pathlib import Path

import pytest

from fieldstation.config import parse_config, template_text
from fieldstation.runtime.station import Station

from .conftest import JsonHook


@pytest.mark.slow
def test_a_running_station_notifies_through_apprise(tmp_path: Path, hook: JsonHook) -> None:
    data = copy.deepcopy(tomllib.loads(template_text()))
    data["station"]["home"] = str(tmp_path / "home")
    data["sensors"][0].update(sample_rate="16kHz", chunk="2s", speed=4.0, min_free="1MB")
    data["processors"][0].update(poll_interval="0.2s", high="7kHz")
    data["retention"]["min_free"] = "1MB"
    data["runtime"].update(outbox_poll="0.2s", stop_timeout="3s")
    data["outputs"] = [{"name": "notify", "kind": "apprise", "urls": [hook.url]}]
    data["alerts"] = [{"name": "first", "on": "detection", "condition": "first_ever"}]
    data["jobs"] = [{"name": "alerts", "kind": "alerts", "interval": "0.5s"}]
    station = Station(parse_config(data), control=False, tick=0.1)
    stop = threading.Event()
    runner = threading.Thread(target=station.run, args=(stop,))
    runner.start()
    try:
        assert station.ready.wait(60)
        assert hook.got.wait(120), "no notification reached the endpoint"
        assert station.supervisor is not None
        assert station.supervisor.job("job:alerts")["state"] == "running"
    finally:
        stop.set()
        runner.join(60)
    first = hook.received[0]
    assert first["title"].endswith("at Embedded default station")
    assert first["message"].startswith("First ever: ")
    assert first["type"] == "info"
