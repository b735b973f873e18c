"""A real station (``Station`` in a thread: synthetic mic, energy detector, an MQTT output) and
a real Mosquitto: commands published to ``{prefix}/{station}/cmd`` by a test client are
answered on ``{prefix}/{station}/command_result``; a command published while the station is
stopped is applied when it starts (its persistent MQTT session, decision record 0140); a
forged one is refused and reported."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fieldstation.messages import CommandResultBody, parse_message
from fieldstation.messages.commands import (
    generate_private_key,
    public_key_text,
    sign_command,
)
from fieldstation.testing.broker import MosquittoBroker, Subscriber

STATION = "cmdtest"
PREFIX = "fieldstation"
HUB_KEY = generate_private_key()
WAIT = 90.0
"""Generous: a busy 2-core machine starts a station (and its processes) slowly."""


def station_data(home: Path, broker: MosquittoBroker, station_tools: Any) -> dict[str, Any]:
    output = {"name": "hub", "kind": "mqtt", "host": broker.host, "port": broker.port}
    output["keepalive"] = "5s"
    data = station_tools.data(
        home,
        [output],
        heartbeat=("5s", "30s"),
        liveness_grace="2s",
        stop_timeout="5s",
    )
    data["station"]["id"] = STATION
    data["commands"] = {"enabled": True, "hub_keys": {"hub-2026": public_key_text(HUB_KEY)}}
    return data


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
def test_commands_over_mqtt_reach_a_real_station(
    tmp_path: Path, broker: MosquittoBroker, station_tools: Any, publish_command: Any
) -> None:
    data = station_data(tmp_path / "home", broker, station_tools)
    sub = Subscriber(broker.host, broker.port, f"{PREFIX}/{STATION}/#", client_id="test-results")
    try:
        assert sub.subscribed.wait(WAIT)
        with station_tools.running(data) as station:
            wait_status(sub, "online")  # subscribed to its cmd topic before it said online
            supervisor = station.supervisor
            assert supervisor is not None
            pid = supervisor.job("processor:energy")["pid"]

            ping_id, ping = command("ping", {})
            publish_command(STATION, ping)
            wait_states(sub, ping_id, ["accepted", "done"])
            (done,) = [b for b in answers(sub, ping_id) if b.state == "done"]
            assert done.config_hash_in_force == station.config_hash
            assert done.details["uptime_s"] > 0

            restart_id, restart = command("restart", {"job": "processor:energy"})
            publish_command(STATION, restart)
            wait_states(sub, restart_id, ["accepted", "done"])
            deadline = time.monotonic() + WAIT
            while supervisor.job("processor:energy")["pid"] in (pid, None):
                assert time.monotonic() < deadline, "processor:energy was not restarted"
                time.sleep(0.1)  # polling the supervisor's snapshot for the new process

            # reprocess runs in a child of the fork server (the supervisor stays light)
            reprocess_id, reprocess = command("reprocess", {"model": "energy", "since": "1h"})
            publish_command(STATION, reprocess)
            wait_states(sub, reprocess_id, ["accepted", "done"])
            (finished,) = [b for b in answers(sub, reprocess_id) if b.state == "done"]
            assert finished.details["processor"] == "energy" and finished.details["failed"] == 0

            forged_id, forged = command(
                "restart", {"job": "processor:energy"}, generate_private_key()
            )
            publish_command(STATION, forged)
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
        publish_command(STATION, later)
        with station_tools.running(data):
            wait_states(sub, later_id, ["accepted", "done"])
        assert states(sub, ping_id) == ["accepted", "done"]  # not run again after the restart
        assert states(sub, restart_id) == ["accepted", "done"]
    finally:
        sub.close()
