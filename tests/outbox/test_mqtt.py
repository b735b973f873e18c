"""MQTT delivery against a real Mosquitto: PUBACK, broker outages, SIGKILLed deliverers,
the retained status and the last will."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fieldstation.clock import SystemClock
from fieldstation.config import StationConfig
from fieldstation.health.network import NetworkMonitor
from fieldstation.home import StationHome
from fieldstation.outbox.delivery import DeliveryLoop
from fieldstation.store import Database
from fieldstation.store import outbox as store
from fieldstation.testing.broker import MosquittoBroker, SilentBroker, Subscriber

STATION = "st1"


def _mqtt_output(broker: MosquittoBroker, **extra: object) -> dict[str, object]:
    return {
        "name": "broker",
        "kind": "mqtt",
        "host": broker.host,
        "port": broker.port,
        "reconnect_max": "1s",
        "connect_timeout": "1s",
        "ack_timeout": "5s",
        **extra,
    }


def _station_file(home: StationHome, broker: MosquittoBroker, batch_size: int = 200) -> Path:
    """A station file with one MQTT output, for the delivering subprocess."""
    path = home.root / "station.toml"
    path.write_text(
        f"""
[station]
id = "{STATION}"
latitude = 51.75
longitude = -1.26
timezone = "UTC"
home = "{home.root}"

[[outputs]]
name = "broker"
kind = "mqtt"
host = "{broker.host}"
port = {broker.port}
reconnect_max = "1s"
connect_timeout = "1s"
ack_timeout = "5s"

[outbox]
batch_size = {batch_size}
backoff_initial = "0.2s"
backoff_max = "1s"
"""
    )
    return path


@pytest.fixture
def subscriber(broker: MosquittoBroker) -> Iterator[Subscriber]:
    sub = Subscriber(broker.host, broker.port, f"fieldstation/{STATION}/#")
    assert sub.subscribed.wait(10), "the test subscriber could not subscribe"
    yield sub
    sub.close()


def _enqueue(db: Database, n: int, start: int = 0, kind: str = "detection") -> list[str]:
    ids: list[str] = []
    with db.session() as session:
        for first in range(start, start + n, 1000):
            items = [
                store.NewMessage(kind, {"n": i}, ["broker"])
                for i in range(first, min(start + n, first + 1000))
            ]
            ids += store.enqueue_many(session, items, now=SystemClock().now(), station_id=STATION)
    return ids


def _counts(db: Database) -> dict[str, int]:
    with db.session() as session:
        return store.status(session).counts.get("broker", {})


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _status(sub: Subscriber) -> list[str]:
    return sub.payloads.get(f"fieldstation/{STATION}/status", [])


def test_sent_only_on_puback_and_status_online_offline(
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
    broker: MosquittoBroker,
    subscriber: Subscriber,
) -> None:
    config = make_station([_mqtt_output(broker)], batch_size=100)
    config.station.id = STATION
    ids = _enqueue(db, 250, kind="heartbeat")
    loop = DeliveryLoop(config, db, SystemClock(), home)
    assert loop.run_once() == 250
    assert _counts(db)["sent"] == 250
    assert subscriber.wait_for(lambda s: len(s.ids) == 250, 10)
    assert set(subscriber.ids) == set(ids)
    assert f"fieldstation/{STATION}/heartbeat" in subscriber.payloads
    assert _status(subscriber)[-1] == "online"
    loop.close()
    assert subscriber.wait_for(lambda s: _status(s)[-1:] == ["offline"], 10)


def test_broker_down_keeps_messages_pending_then_delivers(
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
    broker: MosquittoBroker,
    subscriber: Subscriber,
) -> None:
    config = make_station([_mqtt_output(broker)], backoff_initial="0.2s", backoff_max="1s")
    config.station.id = STATION
    broker.stop()
    ids = _enqueue(db, 50)
    clock = SystemClock()
    loop = DeliveryLoop(config, db, clock, home)
    assert loop.run_once() == 0
    counts = _counts(db)
    assert counts["pending"] == 50 and counts["sent"] == 0
    with db.session() as session:
        errors = {d.last_error for d, _ in store.list_deliveries(session, limit=100)}
    assert len(errors) == 1 and "mqtt unavailable" in str(errors.pop())
    broker.start()
    _wait(lambda: loop.run_once() >= 0 and _counts(db)["sent"] == 50, 20, "delivery")
    assert subscriber.wait_for(lambda s: set(ids) <= set(s.ids), 10)
    loop.close()


def _sent(db: Database, ids: list[str]) -> bool:
    with db.session() as session:
        rows = store.list_deliveries(session, state="sent", destination="broker", limit=10_000)
    return set(ids) <= {m.message_id for _, m in rows}


@pytest.mark.slow
def test_reconnects_within_seconds_when_the_network_comes_back(
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
    broker: MosquittoBroker,
) -> None:
    """A broker down for 17 s: paho's own reconnect wait has grown to 16 s by then (1, 2, 4,
    8, 16 s; ``reconnect_max`` 60 s), so on its own it would reconnect about 14 s after the
    broker is back. The network monitor sees the broker's port answer again, the worker's gate
    opens and the messenger connects at once: messages enqueued during the outage are
    delivered within 5 s of the broker's return."""
    output = _mqtt_output(broker, reconnect_max="60s", connect_timeout="5s")
    config = make_station([output], backoff_initial="0.2s", backoff_max="1s")
    config.station.id = STATION
    net = config.network
    net.interval, net.timeout, net.down_after, net.up_after, net.backoff_max = 0.2, 0.5, 1, 1, 0.4
    clock = SystemClock()
    monitor = NetworkMonitor(config, clock, db=db)
    loop = DeliveryLoop(config, db, clock, home, network_up=monitor.is_up_for, poll_interval=0.1)
    stop = threading.Event()
    threads = [
        threading.Thread(target=monitor.run, args=(stop,), name="network-under-test"),
        threading.Thread(target=loop.run, args=(stop,), name="delivery-under-test"),
    ]
    for thread in threads:
        thread.start()
    try:
        before = _enqueue(db, 5)
        _wait(lambda: _sent(db, before), 20, "delivery before the outage")
        broker.stop()
        down_at = time.monotonic()
        target = config.outputs[0]
        _wait(lambda: not monitor.is_up_for(target), 10, "the monitor to see the broker down")
        during = _enqueue(db, 5)
        time.sleep(max(0.0, down_at + 17 - time.monotonic()))  # the outage itself
        assert not _sent(db, during)
        broker.start()
        back_at = time.monotonic()
        _wait(lambda: _sent(db, during), 30, "delivery after the broker came back")
        delay = time.monotonic() - back_at
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    print(f"\ndelivered {delay:.1f} s after the broker came back")
    assert delay <= 5.0, f"delivered {delay:.1f} s after the broker came back"


def _deliverer(station_file: Path) -> subprocess.Popen[bytes]:
    """The delivering process: ``python -m fieldstation.outbox station.toml`` (log beside)."""
    with open(station_file.with_name("deliverer.log"), "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "fieldstation.outbox", str(station_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _sigkill(process: subprocess.Popen[bytes]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    assert process.returncode == -signal.SIGKILL


def test_last_will_offline_when_the_station_is_killed(
    home: StationHome,
    db: Database,
    broker: MosquittoBroker,
    subscriber: Subscriber,
) -> None:
    process = _deliverer(_station_file(home, broker))
    try:
        assert subscriber.wait_for(lambda s: _status(s)[-1:] == ["online"], 20), "never online"
    finally:
        _sigkill(process)
    assert subscriber.wait_for(lambda s: _status(s)[-1:] == ["offline"], 10), "no last will"


def test_sigterm_stops_cleanly_and_says_offline(
    home: StationHome,
    db: Database,
    broker: MosquittoBroker,
    subscriber: Subscriber,
) -> None:
    process = _deliverer(_station_file(home, broker))
    try:
        assert subscriber.wait_for(lambda s: _status(s)[-1:] == ["online"], 20), "never online"
        ids = _enqueue(db, 30)
        assert subscriber.wait_for(lambda s: set(ids) <= set(s.ids), 20)
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            _sigkill(process)
    assert subscriber.wait_for(lambda s: _status(s)[-1:] == ["offline"], 10)
    assert _counts(db)["sent"] == 30


@pytest.mark.slow
def test_10000_messages_survive_broker_restart_and_two_sigkills(
    home: StationHome,
    db: Database,
    broker: MosquittoBroker,
    subscriber: Subscriber,
    record_property: Callable[[str, object], None],
) -> None:
    """At-least-once: every id arrives although the broker stops and the deliverer is killed."""
    station_file = _station_file(home, broker)
    ids = _enqueue(db, 5000)
    process = _deliverer(station_file)
    kills = 0
    try:
        _wait(lambda: _counts(db)["sent"] >= 1500, 30, "first 1500 sent")
        _sigkill(process)  # 1st SIGKILL, mid-stream
        kills += 1
        ids += _enqueue(db, 5000, start=5000)  # the station goes on writing meanwhile
        process = _deliverer(station_file)
        _wait(lambda: _counts(db)["sent"] >= 4000, 30, "4000 sent")
        broker.stop()  # outage: the deliverer keeps retrying, nothing is marked sent
        stalled = _counts(db)["sent"]
        time.sleep(1.5)
        assert _counts(db)["sent"] - stalled <= 400  # at most the batches in flight settle
        broker.start()
        _wait(lambda: _counts(db)["sent"] >= 7000, 30, "7000 sent after the broker restart")
        _sigkill(process)  # 2nd SIGKILL
        kills += 1
        process = _deliverer(station_file)
        _wait(lambda: _counts(db)["sent"] == 10000, 40, "all 10000 sent")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(10)
    assert kills == 2
    counts = _counts(db)
    assert counts == {"pending": 0, "sent": 10000, "dead": 0, "dropped": 0}
    assert subscriber.wait_for(lambda s: set(ids) <= set(s.ids), 30), (
        f"lost: {len(set(ids) - set(subscriber.ids))} of {len(ids)}"
    )
    assert set(subscriber.ids) == set(ids)  # nothing unknown either
    duplicates = subscriber.duplicates
    record_property("duplicates", duplicates)
    print(f"\n10000 messages: 0 lost, {duplicates} duplicates (at-least-once)")
    # Each interruption re-sends at most two batches: the batch in flight (acknowledged by the
    # broker but not yet committed as sent, or cut off by the outage), and after a broker
    # outage the copy paho itself re-sends on reconnect (its queue holds one batch at most).
    interruptions, batch = kills + 1, 200  # two SIGKILLs, one broker stop
    assert duplicates <= 2 * batch * interruptions, f"{duplicates} duplicates"


def test_no_puback_means_not_sent(
    make_station: Callable[..., StationConfig], home: StationHome, db: Database
) -> None:
    silent = SilentBroker()
    try:
        output = {
            "name": "broker",
            "kind": "mqtt",
            "host": "127.0.0.1",
            "port": silent.port,
            "protocol": "3.1.1",
            "ack_timeout": "0.5s",
        }
        config = make_station([output])
        _enqueue(db, 20)
        with DeliveryLoop(config, db, SystemClock(), home) as loop:
            assert loop.run_once() == 0
    finally:
        silent.close()
    assert silent.received >= 20  # the messages were published...
    counts = _counts(db)
    assert counts["sent"] == 0 and counts["pending"] == 20  # ...but never acknowledged
    with db.session() as session:
        errors = {d.last_error for d, _ in store.list_deliveries(session)}
    assert errors == {"no PUBACK within 0.5 s"}


def test_unacknowledged_batches_do_not_pile_up_in_paho(
    make_station: Callable[..., StationConfig], home: StationHome, db: Database
) -> None:
    """A link that takes PUBLISHes but never acknowledges them (a half-dead connection): the
    batch stays in paho's bounded queue, later passes are refused there instead of adding
    copies, and the messages wait in the database for the outbox to re-send them."""
    silent = SilentBroker()
    try:
        output = {
            "name": "broker",
            "kind": "mqtt",
            "host": "127.0.0.1",
            "port": silent.port,
            "protocol": "3.1.1",
            "ack_timeout": "0.3s",
        }
        config = make_station([output], batch_size=20, backoff_initial="0.1s", backoff_max="0.1s")
        _enqueue(db, 60)
        with DeliveryLoop(config, db, SystemClock(), home) as loop:
            for _ in range(4):
                assert loop.run_once() == 0
                time.sleep(0.15)  # past the backoff
            messenger = loop.workers["broker"].messenger
            held = len(messenger._client._out_messages)  # type: ignore[attr-defined]
            published = silent.received
    finally:
        silent.close()
    queue_limit = 20 + 2  # one batch, plus the presence messages
    # on the wire: what paho holds (one batch and "online") and the will topic in CONNECT,
    # not four copies of the batch
    assert published <= queue_limit + 1
    assert held <= queue_limit
    assert getattr(messenger, "queue_limit", None) == queue_limit
    with db.session() as session:
        rows = store.list_deliveries(session, limit=100)
    assert {d.state for d, _ in rows} == {"pending"}
    errors = {d.last_error for d, _ in rows if d.attempts > 1}
    assert errors and all("paho refused the publish" in str(e) for e in errors)


def test_broker_helper_tells_a_missing_binary_from_a_failed_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a missing mosquitto may skip a test; one that cannot start must fail it."""
    import socket

    from fieldstation.testing import broker as broker_mod

    busy = socket.create_server(("127.0.0.1", 0))  # the port is taken: mosquitto cannot bind
    try:
        failing = broker_mod.MosquittoBroker(tmp_path / "b1", port=busy.getsockname()[1])
        with pytest.raises(broker_mod.BrokerError, match="did not start") as raised:
            failing.start(timeout=3)
        assert not isinstance(raised.value, broker_mod.MosquittoMissingError)
    finally:
        busy.close()
    monkeypatch.setattr(broker_mod.shutil, "which", lambda name: None)
    monkeypatch.setattr(broker_mod, "Path", lambda *a: tmp_path / "no-such-mosquitto")
    with pytest.raises(broker_mod.MosquittoMissingError, match="not installed"):
        broker_mod.MosquittoBroker(tmp_path / "b2")
