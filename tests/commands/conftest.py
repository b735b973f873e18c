"""Fixtures of the command tests: ``station_tools`` (a fast station file, a real station,
:class:`~fieldstation.runtime.station.Station`, run in a thread, a command inbox that trusts
one hub key) and ``publish_command`` (a command published as the hub does)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

WAIT = 90.0
"""Seconds: generous, a busy 2-core machine starts and stops a station (its processes) slowly."""


def fast_station_data(
    home: Path,
    outputs: list[dict[str, Any]] | None = None,
    *,
    heartbeat: tuple[str, str] = ("1s", "1h"),
    liveness_grace: str = "1s",
    stop_timeout: str = "3s",
    speed: float | None = None,
) -> dict[str, Any]:
    """The default station file (a dict) living in ``home``, fast: 16 kHz 2 s chunks (read at
    ``speed`` times real time when given), the energy processor polling every 0.2 s, 1 MB free
    space floors, quick supervisor settings; ``heartbeat``: its interval and summary interval;
    ``outputs`` replace the template's."""
    import tomllib

    from fieldstation.config import template_text

    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home)
    data["sensors"][0].update(sample_rate="16kHz", chunk="2s", min_free="1MB")
    if speed is not None:
        data["sensors"][0]["speed"] = speed
    data["processors"][0].update(poll_interval="0.2s", high="7kHz")
    data["retention"]["min_free"] = "1MB"
    data["heartbeat"].update(interval=heartbeat[0], summary_interval=heartbeat[1])
    data["runtime"].update(
        backoff_initial="0.05s",
        backoff_max="0.3s",
        liveness_grace=liveness_grace,
        stop_timeout=stop_timeout,
        status_interval="0.5s",
        outbox_poll="0.2s",
    )
    if outputs is not None:
        data["outputs"] = outputs
    return data


@contextmanager
def running_station(data: dict[str, Any]) -> Iterator[Any]:
    """A :class:`Station` of ``data`` run in a thread (no control socket), yielded once ready;
    stopped after, with the config-apply threads it started."""
    from fieldstation.commands.config_apply import station_threads
    from fieldstation.config import parse_config
    from fieldstation.runtime.station import Station

    station = Station(parse_config(data), control=False, tick=0.1)
    stop = threading.Event()
    runner = threading.Thread(target=station.run, args=(stop,), name="station")
    runner.start()
    try:
        assert station.ready.wait(WAIT), "the station did not start"
        yield station
    finally:
        stop.set()
        runner.join(WAIT)
        for thread in station_threads(station):
            thread.join(30)
        assert not runner.is_alive(), "the station did not stop"


def make_inbox(
    config: Any,
    db: Any,
    clock: Any,
    hub_key: Any,
    config_hash: Callable[[], str | None] = lambda: None,
) -> Any:
    """A :class:`~fieldstation.commands.inbox.CommandInbox` of station ``default`` trusting
    ``hub_key`` (a private key) as key id ``hub``, answering to ``config``'s outputs."""
    from fieldstation.commands.inbox import CommandInbox
    from fieldstation.messages.commands import public_key_text

    return CommandInbox(
        db,
        station_id="default",
        hub_keys={"hub": public_key_text(hub_key)},
        clock=clock,
        answer_to=config.destinations_for("command_result"),
        events_to=config.destinations_for("event"),
        config_hash=config_hash,
    )


@pytest.fixture
def publish_command(broker: Any) -> Callable[[str, bytes], None]:
    """``publish_command(station, payload)``: publish one command on ``station``'s command
    topic (prefix ``fieldstation``) of the test's broker at QoS 1, as the hub would, and wait
    for the broker's PUBACK."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from fieldstation.messages.commands import command_topic

    def publish(station: str, payload: bytes) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-hub")
        client.connect(broker.host, broker.port)
        client.loop_start()
        try:
            info = client.publish(command_topic("fieldstation", station), payload, qos=1)
            info.wait_for_publish(WAIT)
            assert info.is_published()
        finally:
            client.disconnect()
            client.loop_stop()

    return publish


@pytest.fixture
def station_tools() -> Any:
    """:func:`fast_station_data` (``data``), :func:`running_station` (``running``) and
    :func:`make_inbox` (``inbox``) for the command tests (a conftest module cannot be
    imported under ``--import-mode=importlib``)."""
    from types import SimpleNamespace

    return SimpleNamespace(data=fast_station_data, running=running_station, inbox=make_inbox)
