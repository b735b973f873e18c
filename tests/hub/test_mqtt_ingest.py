"""MQTT ingest against a real Mosquitto and a real database (SQLite file, PostgreSQL): two hub
processes on one shared subscription split the messages; one is SIGKILLed mid-stream and
restarted; every message published is stored exactly once."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from fieldstation.hub.db import open_hub_database
from fieldstation.hub.models import DeadLetter, Detection, IngestedMessage, Reading, Station
from fieldstation.messages import build_envelope
from fieldstation.testing.broker import MosquittoBroker

CLI = [sys.executable, "-m", "fieldstation.cli"]
T0 = datetime(2026, 6, 1, 4, 0, tzinfo=UTC)


class HubProcess:
    """``fieldstation hub run CONFIG`` as a real subprocess; ``ready`` once subscribed."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.process = subprocess.Popen(
            [*CLI, "hub", "run", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            if "mqtt ingest subscribed" in line:
                self.ready.set()

    def wait_ready(self, timeout: float = 60) -> None:
        if not self.ready.wait(timeout):
            raise AssertionError("hub did not subscribe:\n" + "".join(self.lines[-30:]))

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        return self.process.returncode


def hub_config(folder: Path, name: str, url: str, broker: MosquittoBroker) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(
        f'home = "{folder / name}"\ndatabase = "{url}"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nclient_id = "{name}"\n'
        'group = "fleet"\nbatch_size = 50\nbatch_wait = "0.02s"\n'
        "[http]\nenabled = false\n"
    )
    return path


def envelopes(n: int, stations: int = 20) -> Iterator[tuple[str, str, bytes]]:
    """``n`` messages as (id, topic, payload): detections (2 items each), events, readings."""
    for i in range(n):
        station = f"st-{i % stations:02d}"
        created = T0 + timedelta(seconds=i)
        kind = ("detection", "event", "readings")[i % 3]
        if kind == "detection":
            body: dict[str, Any] = {
                "recording_id": i,
                "sensor": "mic",
                "recording_started_at": created.isoformat(),
                "processor": "energy",
                "model": "energy",
                "model_version": "1",
                "detections": [
                    {
                        "label": f"label-{i % 7}",
                        "score": 0.5 + k / 10,
                        "start": float(k),
                        "end": k + 0.5,
                        "low_hz": 1000.0,
                        "high_hz": 7000.0,
                        "detected_at": (created + timedelta(seconds=k)).isoformat(),
                        "extra": {},
                    }
                    for k in range(2)
                ],
            }
        elif kind == "event":
            body = {
                "event": "job_restarted",
                "severity": "warning",
                "source": "processor:energy",
                "message": f"restart {i}",
                "data": {"i": i},
                "event_id": i,
            }
        else:
            body = {
                "sensor": "host",
                "measured_at": created.isoformat(),
                "period": 60.0,
                "values": {"load": 0.5, "temperature": None},
                "units": {"load": "1", "temperature": "Cel"},
            }
        message_id = f"msg-{i:06d}"
        envelope = build_envelope(
            kind=kind, station=station, body=body, message_id=message_id, created_at=created
        )
        yield message_id, f"fieldstation/{station}/{kind}", envelope.to_json()


class Publisher:
    """A real paho MQTT 5 publisher (QoS 1); ``publish`` returns once the broker has it."""

    def __init__(self, broker: MosquittoBroker) -> None:
        import paho.mqtt.client as mqtt

        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="publisher", protocol=mqtt.MQTTv5
        )
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> Any:
        return self.client.publish(topic, payload, qos=1, retain=retain)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)  # polling the database for the rows we expect
    raise AssertionError(f"not within {timeout} s: {what}")


@pytest.mark.slow
def test_two_hubs_split_the_load_and_a_killed_one_loses_and_duplicates_nothing(
    tmp_path: Path, broker: MosquittoBroker, hub_url: str
) -> None:
    db = open_hub_database(hub_url)  # migrated here once, before the hubs race to do it
    total = 3000
    a = HubProcess(hub_config(tmp_path, "hub-a", hub_url, broker))
    b = HubProcess(hub_config(tmp_path, "hub-b", hub_url, broker))
    publisher = Publisher(broker)
    hubs = [a, b]

    def stored(via: str | None = None) -> int:
        with db.session() as s:
            query = select(func.count()).select_from(IngestedMessage)
            if via is not None:
                query = query.where(IngestedMessage.received_via == via)
            return int(s.scalar(query) or 0)

    try:
        a.wait_ready()
        b.wait_ready()
        publisher.publish("fieldstation/st-00/status", b"online", retain=True)
        messages = list(envelopes(total))
        first = total // 3
        for _, topic, payload in messages[:first]:
            publisher.publish(topic, payload)
        # both are storing: kill A while the stream goes on (its unacknowledged messages stay
        # with the broker, queued for its session)
        wait_until(lambda: stored("mqtt:hub-a") > 0 and stored("mqtt:hub-b") > 0, 60, "split")
        for _, topic, payload in messages[first : first + 200]:
            publisher.publish(topic, payload)
        a.kill()
        killed_at = stored()
        for _, topic, payload in messages[first + 200 :]:
            info = publisher.publish(topic, payload)
        info.wait_for_publish(60)
        publisher.publish("fieldstation/st-01/status", b"offline", retain=True).wait_for_publish(30)
        a = HubProcess(hub_config(tmp_path, "hub-a", hub_url, broker))  # same client id
        hubs = [a, b]
        a.wait_ready()
        wait_until(lambda: stored() >= total, 120, f"{total} messages stored")
        assert killed_at < total
        with db.session() as s:
            ids = s.scalars(select(IngestedMessage.message_id)).all()
            assert len(ids) == len(set(ids)) == total  # none lost, none twice
            assert set(ids) == {message_id for message_id, _, _ in messages}
            detections = s.scalar(select(func.count(Detection.id)))
            assert detections == 2 * len([m for m in messages if m[1].endswith("/detection")])
            per_message = s.execute(
                select(Detection.message_id, func.count()).group_by(Detection.message_id)
            ).all()
            assert {count for _, count in per_message} == {2}
            readings = s.scalar(select(func.count(Reading.id)))
            assert readings == 2 * len([m for m in messages if m[1].endswith("/readings")])
            by = dict(
                s.execute(
                    select(IngestedMessage.received_via, func.count()).group_by(
                        IngestedMessage.received_via
                    )
                ).all()
            )
            assert by.get("mqtt:hub-a", 0) > 0 and by.get("mqtt:hub-b", 0) > 0, by
            assert s.scalar(select(func.count(DeadLetter.id))) == 0
            presence = {st.id: st.online for st in s.scalars(select(Station))}
        assert presence["st-00"] is True
        wait_until(lambda: _online(db, "st-01") is False, 30, "st-01 offline")
    finally:
        publisher.close()
        for hub in hubs:
            hub.stop()
        db.dispose()


def _online(db: Any, station: str) -> bool | None:
    with db.session() as s:
        return s.scalar(select(Station.online).where(Station.id == station))


@pytest.mark.slow
def test_a_malformed_mqtt_message_is_acked_into_dead_letters(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    db = open_hub_database(url)
    hub = HubProcess(hub_config(tmp_path, "hub-a", url, broker))
    publisher = Publisher(broker)
    try:
        hub.wait_ready()
        publisher.publish("fieldstation/st-09/detection", b'{"schema": 3, "id": "x"}')
        publisher.publish("fieldstation/st-09/detection", b"not json")

        def letters() -> list[str]:
            with db.session() as s:
                return list(s.scalars(select(DeadLetter.reason)))

        found = wait_until(lambda: len(letters()) == 2 and letters(), 30, "2 dead letters")
        assert any("unknown schema version 3" in reason for reason in found)
        assert any("not JSON" in reason for reason in found)
        assert hub.stop() == 0
        # acknowledged: a restarted hub gets nothing again
        hub = HubProcess(hub_config(tmp_path, "hub-a", url, broker))
        hub.wait_ready()
        publisher.publish("fieldstation/st-09/detection", b"later").wait_for_publish(30)
        wait_until(lambda: len(letters()) == 3, 30, "third dead letter")
        assert len(letters()) == 3
    finally:
        publisher.close()
        hub.stop()
        db.dispose()
