"""Must show (issue 8): heartbeats taken while the broker is unreachable for a simulated day
reach a real Mosquitto afterwards, all of them, in order, with real metric values."""

from __future__ import annotations

import json
import threading
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import func, select

from fieldstation.clock import SystemClock, VirtualClock
from fieldstation.config import parse_config, template_text
from fieldstation.health.heartbeat import Heartbeat
from fieldstation.health.network import NetworkMonitor
from fieldstation.home import StationHome
from fieldstation.outbox.delivery import DeliveryLoop
from fieldstation.store import Database
from fieldstation.store.models import Delivery
from fieldstation.testing.broker import MosquittoBroker, MosquittoMissingError, free_port

BEATS = 288  # a day at the default 5 min interval


def subscriber(port: int, received: list[dict[str, Any]], ready: threading.Event) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-heartbeat-sub")
    lock = threading.Lock()

    def on_connect(c: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
        c.subscribe("fieldstation/default/heartbeat", qos=1)

    def on_message(c: Any, u: Any, msg: Any) -> None:
        with lock:
            received.append(json.loads(msg.payload))

    client.on_connect = on_connect
    client.on_subscribe = lambda *a: ready.set()
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def test_offline_day_reaches_a_real_broker_in_order(
    home: StationHome, db: Database, tmp_path: Path, require: Any
) -> None:
    port = free_port()
    try:  # started later: the broker is down all day
        broker = MosquittoBroker(tmp_path / "broker", port=port)
    except MosquittoMissingError as error:  # only a missing binary skips; a failed start fails
        require("mosquitto", str(error))
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home.root)
    data["outputs"] = [{"name": "broker", "kind": "mqtt", "host": "127.0.0.1", "port": port}]
    config = parse_config(data)
    # the simulated day ends now, so the real-time delivery afterwards sees fresh messages
    clock = VirtualClock(datetime.now(UTC) - timedelta(seconds=BEATS * 300))
    monitor = NetworkMonitor(config, clock, db=db)  # probes the broker from the outputs
    heartbeat = Heartbeat(config, db, clock, home, lambda: [], network_up=monitor.is_up)
    offline = DeliveryLoop(config, db, clock, home, network_up=monitor.is_up_for)
    try:
        for beat in range(BEATS):  # the broker is not running all day
            monitor.probe_once()
            heartbeat.beat_once()
            if beat % 12 == 0 and not monitor.is_up():  # the outbox polls: no attempt
                assert offline.run_once() == 0
            clock.advance(config.heartbeat.interval)
    finally:
        offline.close()
    assert monitor.changes == 1 and not monitor.is_up()
    with db.session() as session:
        assert session.scalar(select(func.sum(Delivery.attempts))) == 0

    received: list[dict[str, Any]] = []
    ready = threading.Event()
    with broker:
        sub = subscriber(port, received, ready)
        loop = DeliveryLoop(config, db, SystemClock(), home, network_up=monitor.is_up_for)
        try:
            assert ready.wait(10)
            while not monitor.is_up():
                assert monitor.probe_once().ok
            deadline = time.monotonic() + 30
            while len(received) < BEATS and time.monotonic() < deadline:
                loop.run_once()
                time.sleep(0.05)
        finally:
            loop.close()
            sub.loop_stop()
            sub.disconnect()
    assert len(received) == BEATS
    assert [m["body"]["seq"] for m in received] == list(range(1, BEATS + 1))
    times = [m["created_at"] for m in received]
    assert times == sorted(times) and len(set(times)) == BEATS
    memory = {m["body"]["metrics"]["host"]["memory_total"] for m in received}
    assert memory == {psutil.virtual_memory().total}
    assert all(m["body"]["metrics"]["host"]["disk_total"] > 0 for m in received)
    assert received[-1]["body"]["metrics"]["outbox"]["pending"] >= BEATS - 1
    assert all(m["body"]["network_up"] is False for m in received[3:])
