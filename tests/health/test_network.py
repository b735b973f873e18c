"""Network monitor: hysteresis on a real loopback TCP endpoint, backoff, events, outbox gate."""

from __future__ import annotations

import random
import socket
import threading
import time
import tomllib
from typing import Any

import pytest
from sqlalchemy import func, select

from fieldstation.clock import VirtualClock
from fieldstation.config import StationConfig, parse_config, template_text
from fieldstation.health.network import NetworkMonitor, Target, TargetError, targets_of
from fieldstation.home import StationHome
from fieldstation.outbox.delivery import DeliveryLoop
from fieldstation.store import Database
from fieldstation.store.models import Delivery, Event
from fieldstation.store.outbox import enqueue


def station(home: StationHome, **sections: Any) -> StationConfig:
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home.root)
    data.update(sections)
    return parse_config(data)


def listener(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    return sock


def event_kinds(db: Database) -> list[str]:
    with db.session() as session:
        return list(session.scalars(select(Event.kind).order_by(Event.id)))


def test_hysteresis_with_a_real_endpoint_that_goes_away_and_comes_back(
    home: StationHome, db: Database, clock: VirtualClock
) -> None:
    server = listener()
    port = server.getsockname()[1]
    config = station(
        home,
        network={"down_after": 3, "up_after": 2, "timeout": 1},
        outputs=[{"name": "broker", "kind": "mqtt", "host": "127.0.0.1", "port": port}],
    )
    monitor = NetworkMonitor(config, clock, db=db)
    assert monitor.targets == [Target("127.0.0.1", port)]
    try:
        assert monitor.probe_once().ok and monitor.is_up()
    finally:
        server.close()
    for expected_up in (True, True, False, False):  # down only on the 3rd failure
        result = monitor.probe_once()
        assert not result.ok and "refused" in str(result.errors[f"127.0.0.1:{port}"]).lower()
        assert monitor.is_up() is expected_up
    assert event_kinds(db) == ["network_down"]
    server = listener(port)
    try:
        assert monitor.probe_once().ok and not monitor.is_up()  # one success is not enough
        assert monitor.probe_once().ok and monitor.is_up()
        assert monitor.probe_once().ok and monitor.is_up()
    finally:
        server.close()
    assert event_kinds(db) == ["network_down", "network_up"]
    assert monitor.changes == 2


def _attempts(db: Database) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.coalesce(func.sum(Delivery.attempts), 0))) or 0)


def _message(db: Database, clock: VirtualClock, n: int) -> None:
    with db.session() as session:
        enqueue(
            session,
            kind="summary",
            body={"n": n},
            destinations=["hub"],
            now=clock.now(),
            station_id="default",
            message_id=f"m{n}",
        )


def test_real_endpoint_real_loop_hysteresis_and_no_attempts_while_down(
    home: StationHome, db: Database, clock: VirtualClock, http_ingest: Any
) -> None:
    """A real HTTP endpoint goes away and comes back; the real delivery loop sends to it.
    down after 3 failed probes, up after 2 good ones; while down the loop makes no attempt."""
    hub = http_ingest(0).start()
    config = station(
        home,
        network={"down_after": 3, "up_after": 2, "timeout": 1},
        outputs=[{"name": "hub", "kind": "http", "url": hub.url, "timeout": "2s"}],
        outbox={"backoff_initial": "1s", "backoff_max": "2s"},
    )
    monitor = NetworkMonitor(config, clock, db=db)  # probes the hub's own endpoint
    loop = DeliveryLoop(config, db, clock, home, network_up=monitor.is_up_for)
    try:
        assert monitor.probe_once().ok and monitor.is_up()
        _message(db, clock, 0)
        assert loop.run_once() == 1 and [m["id"] for m in hub.messages] == ["m0"]

        hub.stop()  # the endpoint goes away: connections are refused
        _message(db, clock, 1)
        for expected_up in (True, True, False):  # down only on the 3rd failed probe
            assert not monitor.probe_once().ok
            assert monitor.is_up() is expected_up
            if expected_up:  # still believed up: the loop tries, and fails
                before = _attempts(db)
                assert loop.run_once() == 0 and _attempts(db) == before + 1
            clock.advance(2)  # past any backoff: a message would be due
        assert event_kinds(db) == ["network_down"]
        attempts_when_down, requests_when_down = _attempts(db), hub.requests
        for n in range(2, 7):  # a while down: messages pile up, none is attempted
            _message(db, clock, n)
            assert not monitor.probe_once().ok and not monitor.is_up()
            assert loop.run_once() == 0
            clock.advance(2)
        assert _attempts(db) == attempts_when_down and hub.requests == requests_when_down

        hub.start()  # the endpoint comes back on the same port
        assert monitor.probe_once().ok and not monitor.is_up()  # one success is not enough
        assert loop.run_once() == 0 and _attempts(db) == attempts_when_down
        assert monitor.probe_once().ok and monitor.is_up()  # the 2nd: up
        assert loop.run_once() == 8  # m1..m6 and the network_down / network_up events
    finally:
        loop.close()
    summaries = [m["id"] for m in hub.messages if m["kind"] == "summary"]
    assert summaries == [f"m{n}" for n in range(7)]
    assert event_kinds(db) == ["network_down", "network_up"]
    assert monitor.changes == 2


def test_real_delivery_loop_waits_while_down(
    home: StationHome, db: Database, clock: VirtualClock
) -> None:
    server = listener()
    port = server.getsockname()[1]
    server.close()
    config = station(home, network={"down_after": 1, "up_after": 1})
    monitor = NetworkMonitor(config, clock, targets=[f"127.0.0.1:{port}"], db=db)
    sent: list[str] = []

    class Recorder:
        def send(self, batch: Any) -> list[Any]:
            from fieldstation.outbox.messenger import Result

            sent.extend(m.message_id for m in batch)
            return [Result.sent() for _ in batch]

        def close(self) -> None:
            pass

    loop = DeliveryLoop(
        config, db, clock, home, network_up=monitor.is_up_for, messengers={"local": Recorder()}
    )
    try:
        with db.session() as session:
            enqueue(
                session,
                kind="summary",
                body={},
                destinations=["local"],
                now=clock.now(),
                station_id="default",
                message_id="m1",
            )
        monitor.probe_once()
        assert loop.run_once() == 0 and sent == []
        server = listener(port)
        try:
            monitor.probe_once()
        finally:
            server.close()
        assert loop.run_once() >= 1 and "m1" in sent
    finally:
        loop.close()


def test_backoff_with_jitter_while_down(home: StationHome, clock: VirtualClock) -> None:
    config = station(
        home, network={"interval": 10, "backoff_max": 100, "down_after": 1, "up_after": 2}
    )
    outcomes = iter([False] * 6 + [True, True, True])
    monitor = NetworkMonitor(
        config,
        clock,
        targets=["example.invalid:1"],
        probe=lambda t, s: None if next(outcomes) else "refused",
        rng=random.Random(7),
    )
    stop = threading.Event()
    delays: list[float] = []
    original = clock.wait

    def wait(event: threading.Event, timeout: float | None) -> bool:
        delays.append(float(timeout or 0))
        if len(delays) == 9:
            stop.set()
        return original(event, timeout)

    clock.wait = wait  # type: ignore[method-assign]
    monitor.run(stop)
    down = delays[:6]
    for level, delay in enumerate(down, start=1):
        cap = min(10 * 2**level, 100)
        assert cap / 2 <= delay <= cap
    assert len(set(down)) == len(down)  # jittered
    assert delays[6:] == [10, 10, 10]  # a success probes again after 'interval'
    assert monitor.is_up()


def test_targets_from_outputs_and_config(home: StationHome) -> None:
    config = station(
        home,
        network={"targets": ["10.0.0.1:22"]},
        outputs=[
            {"name": "broker", "kind": "mqtt", "host": "mqtt.example.org", "port": 8883},
            {"name": "hub", "kind": "http", "url": "https://hub.example.org/ingest"},
            {"name": "local", "kind": "file"},
        ],
    )
    assert [str(t) for t in targets_of(config)] == [
        "mqtt.example.org:8883",
        "hub.example.org:443",
        "10.0.0.1:22",
    ]
    with pytest.raises(TargetError, match="host:port"):
        Target.parse("nohostport")


def test_no_target_means_up(home: StationHome, clock: VirtualClock) -> None:
    monitor = NetworkMonitor(station(home), clock)
    assert monitor.targets == [] and monitor.probe_once().ok and monitor.is_up()


def test_disabled_loops_wait_for_stop(home: StationHome, db: Database) -> None:
    from fieldstation.health.heartbeat import Heartbeat
    from fieldstation.health.summary import Summarizer

    config = station(
        home, network={"enabled": False}, heartbeat={"enabled": False, "summary_interval": 0}
    )
    clock = VirtualClock()
    workers = [
        NetworkMonitor(config, clock).run,
        Heartbeat(config, db, clock, home, None).run,
        Summarizer(config, db, clock).run,
    ]
    stop = threading.Event()
    threads = [threading.Thread(target=w, args=(stop,)) for w in workers]
    for t in threads:
        t.start()
    time.sleep(0.05)
    assert all(t.is_alive() for t in threads)  # a supervised thread that ends looks crashed
    stop.set()
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads)
    assert clock.monotonic() == 0  # and they did not spin the clock


def test_each_network_output_waits_on_its_own_target(
    home: StationHome, db: Database, clock: VirtualClock, http_ingest: Any
) -> None:
    """One hub unreachable, the other up: only the unreachable one is held back."""
    near = http_ingest(0).start()
    gone = http_ingest(0).start()
    gone.stop()  # its port is closed: connections are refused
    config = station(
        home,
        network={"down_after": 1, "up_after": 1},
        outputs=[
            {"name": "near", "kind": "http", "url": near.url},
            {"name": "far", "kind": "http", "url": gone.url},
        ],
    )
    monitor = NetworkMonitor(config, clock, db=db)
    result = monitor.probe_once()
    assert result.ok and monitor.is_up()  # the network as a whole is up (one target answers)
    near_output, far_output = config.outputs
    assert monitor.is_up_for(near_output) and not monitor.is_up_for(far_output)
    with db.session() as session:
        enqueue(
            session,
            kind="event",
            body={},
            destinations=["near", "far"],
            now=clock.now(),
            station_id="default",
            message_id="m1",
        )
    with DeliveryLoop(config, db, clock, home, network_up=monitor.is_up_for) as loop:
        assert loop.run_once() == 1
    assert [m["id"] for m in near.messages] == ["m1"]
    with db.session() as session:
        (far,) = session.scalars(select(Delivery).where(Delivery.destination == "far")).all()
    assert far.state == "pending" and far.attempts == 0  # no attempt on the unreachable hub
