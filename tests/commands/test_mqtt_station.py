"""A real station (``Station`` in a thread: synthetic mic, energy detector, an MQTT output) and
a real Mosquitto: commands published to ``{prefix}/{station}/cmd`` by a test client are
answered on ``{prefix}/{station}/command_result``; a command published while the station is
stopped is applied when it starts (its persistent MQTT session, decision record 0140); a
forged one is refused and reported."""

from __future__ import annotations

import json
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fieldstation.config import parse_config, template_text
from fieldstation.messages import CommandResultBody, parse_message
from fieldstation.messages.commands import (
    command_topic,
    generate_private_key,
    public_key_text,
    sign_command,
)
from fieldstation.runtime.station import Station
from fieldstation.testing.broker import MosquittoBroker, Subscriber

STATION = "cmdtest"
PREFIX = "fieldstation"
HUB_KEY = generate_private_key()
WAIT = 90.0
"""Generous: a busy 2-core machine starts a station (and its processes) slowly."""


def station_data(home: Path, broker: MosquittoBroker) -> dict[str, Any]:
    data = tomllib.loads(template_text())
    data["station"].update(id=STATION, home=str(home))
    data["sensors"][0].update(sample_rate="16kHz", chunk="2s", min_free="1MB")
    data["processors"][0].update(poll_interval="0.2s", high="7kHz")
    data["retention"]["min_free"] = "1MB"
    data["heartbeat"].update(interval="5s", summary_interval="30s")
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
    data["commands"] = {"enabled": True, "hub_keys": {"hub-2026": public_key_text(HUB_KEY)}}
    return data


@contextmanager
def running(data: dict[str, Any]) -> Iterator[Station]:
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
        assert not runner.is_alive()


def publish(broker: MosquittoBroker, payload: bytes) -> None:
    """Publish one command at QoS 1 as the hub would, and wait for the broker's PUBACK."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-hub")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        info = client.publish(command_topic(PREFIX, STATION), payload, qos=1)
        info.wait_for_publish(WAIT)
        assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def command(name: str, args: dict[str, Any], key: Any = HUB_KEY) -> tuple[str, bytes]:
    signed = sign_command(
        key,
        key_id="hub-2026",
        station=STATION,
        command=name,
        args=args,
        issued_at=datetime.now(UTC),
        ttl=3600.0,
    )
    return signed.id, signed.to_json()


def answers(sub: Subscriber, command_id: str) -> list[CommandResultBody]:
    """The command_result bodies of ``command_id`` received so far, parsed as the hub does."""
    topic = f"{PREFIX}/{STATION}/command_result"
    bodies = []
    for text in list(sub.payloads.get(topic, [])):
        body = parse_message(text.encode()).body
        assert isinstance(body, CommandResultBody)
        if body.command_id == command_id:
            bodies.append(body)
    return bodies


def states(sub: Subscriber, command_id: str) -> list[str]:
    return [b.state for b in answers(sub, command_id)]


def wait_states(sub: Subscriber, command_id: str, expected: list[str]) -> None:
    ok = sub.wait_for(lambda s: states(s, command_id)[: len(expected)] == expected, WAIT)
    assert ok, (command_id, states(sub, command_id))


def wait_status(sub: Subscriber, value: str) -> None:
    topic = f"{PREFIX}/{STATION}/status"
    ok = sub.wait_for(lambda s: (s.payloads.get(topic) or [""])[-1] == value, WAIT)
    assert ok, sub.payloads.get(topic)


@pytest.mark.slow
def test_commands_over_mqtt_reach_a_real_station(tmp_path: Path, broker: MosquittoBroker) -> None:
    data = station_data(tmp_path / "home", broker)
    sub = Subscriber(broker.host, broker.port, f"{PREFIX}/{STATION}/#", client_id="test-results")
    try:
        assert sub.subscribed.wait(WAIT)
        with running(data) as station:
            wait_status(sub, "online")  # subscribed to its cmd topic before it said online
            supervisor = station.supervisor
            assert supervisor is not None
            pid = supervisor.job("processor:energy")["pid"]

            ping_id, ping = command("ping", {})
            publish(broker, ping)
            wait_states(sub, ping_id, ["accepted", "done"])
            (done,) = [b for b in answers(sub, ping_id) if b.state == "done"]
            assert done.config_hash_in_force == station.config_hash
            assert done.details["uptime_s"] > 0

            restart_id, restart = command("restart", {"job": "processor:energy"})
            publish(broker, restart)
            wait_states(sub, restart_id, ["accepted", "done"])
            deadline = time.monotonic() + WAIT
            while supervisor.job("processor:energy")["pid"] in (pid, None):
                assert time.monotonic() < deadline, "processor:energy was not restarted"
                time.sleep(0.1)  # polling the supervisor's snapshot for the new process

            # reprocess runs in a child of the fork server (the supervisor stays light)
            reprocess_id, reprocess = command("reprocess", {"model": "energy", "since": "1h"})
            publish(broker, reprocess)
            wait_states(sub, reprocess_id, ["accepted", "done"])
            (finished,) = [b for b in answers(sub, reprocess_id) if b.state == "done"]
            assert finished.details["processor"] == "energy" and finished.details["failed"] == 0

            forged_id, forged = command(
                "restart", {"job": "processor:energy"}, generate_private_key()
            )
            publish(broker, forged)
            wait_states(sub, forged_id, ["refused"])
            (refused,) = answers(sub, forged_id)
            assert "bad signature" in (refused.reason or "")
            events = f"{PREFIX}/{STATION}/event"
            assert sub.wait_for(
                lambda s: any(
                    json.loads(t)["body"].get("event") == "command_refused"
                    for t in s.payloads.get(events, [])
                ),
                WAIT,
            )
        wait_status(sub, "offline")

        # published while the station is stopped: the broker keeps it in the station's session
        later_id, later = command("restart", {"job": "processor:energy"})
        publish(broker, later)
        with running(data):
            wait_states(sub, later_id, ["accepted", "done"])
        assert states(sub, ping_id) == ["accepted", "done"]  # not run again after the restart
        assert states(sub, restart_id) == ["accepted", "done"]
    finally:
        sub.close()
