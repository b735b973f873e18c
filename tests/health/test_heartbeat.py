"""Heartbeats: real metrics, status rules, and a simulated offline day delivered in order."""

from __future__ import annotations

import json
import socket
import threading
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import func, select

from fieldstation.clock import VirtualClock
from fieldstation.config import StationConfig, parse_config, template_text
from fieldstation.health.heartbeat import Heartbeat, derive_status
from fieldstation.health.metrics import StationMetrics, cpu_temperature
from fieldstation.health.network import NetworkMonitor
from fieldstation.home import StationHome
from fieldstation.outbox.delivery import DeliveryLoop
from fieldstation.store import Database
from fieldstation.store.models import Delivery, Message
from fieldstation.testing.rows import add_detection, add_model_run, add_recording

DAY = 86400.0


def station(home: StationHome, **sections: Any) -> StationConfig:
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home.root)
    data.update(sections)
    return parse_config(data)


class FakeHost:
    """Injected host metrics (the HostMetrics protocol)."""

    def __init__(self, **values: Any) -> None:
        self.values = {"disk_free": 50_000_000_000, "memory_percent": 30.0, **values}

    def read(self, home: Path) -> dict[str, Any]:
        return dict(self.values)


def metrics(**kwargs: Any) -> StationMetrics:
    base: dict[str, Any] = {
        "host": {"disk_free": 50_000_000_000, "memory_percent": 30.0, "cpu_temp_c": None},
        "outbox_pending": 0,
        "outbox_oldest_age_s": None,
        "last_recording_age_s": None,
        "last_detection_age_s": None,
        "jobs": [{"name": "recorder:mic", "state": "running", "restarts": 0}],
        "deployment_id": 1,
        "config_hash": "x",
        "versions": {},
    }
    base.update(kwargs)
    return StationMetrics(**base)


def test_status_rules(home: StationHome) -> None:
    config = station(home)
    assert derive_status(metrics(), config) == ("ok", [])
    restarting = [{"name": "processor:energy", "state": "restarting", "restarts": 2}]
    status, reasons = derive_status(metrics(jobs=restarting), config)
    assert status == "degraded" and reasons == ["job processor:energy restarting"]
    failed = [{"name": "recorder:mic", "state": "failed", "restarts": 5}]
    assert derive_status(metrics(jobs=failed), config)[0] == "failing"
    # below the sensor's min_free (200 MB in the default station) recording stops: failing
    assert derive_status(metrics(host={"disk_free": 100_000_000}), config)[0] == "failing"
    # below retention.min_free (1 GB) but above the sensor guard: degraded
    assert derive_status(metrics(host={"disk_free": 500_000_000}), config)[0] == "degraded"
    assert derive_status(metrics(outbox_oldest_age_s=7200.0), config)[0] == "degraded"
    assert derive_status(metrics(battery={"percent": 10.0}), config)[0] == "degraded"
    assert derive_status(metrics(), config, network_up=False)[0] == "degraded"
    assert derive_status(metrics(errors=["database: locked"]), config)[0] == "failing"


def test_heartbeat_reports_the_config_hash_in_force(home: StationHome, db: Database) -> None:
    """The hash of the config actually in force (``Station.config_hash``, which a remote
    configuration changes), read at every beat."""
    in_force = ["a" * 64]
    beat = Heartbeat(station(home), db, VirtualClock(), home, hash_in_force=lambda: in_force[0])
    assert beat.beat_once()["config_hash_in_force"] == "a" * 64
    in_force[0] = "b" * 64
    assert beat.beat_once()["config_hash_in_force"] == "b" * 64


def test_heartbeat_reports_real_metrics(home: StationHome, db: Database) -> None:
    clock = VirtualClock()
    config = station(home)
    jobs = [{"name": "recorder:mic", "state": "running", "restarts": 1}]
    body = Heartbeat(config, db, clock, home, lambda: jobs).beat_once()
    host = body["metrics"]["host"]
    assert host["memory_total"] == psutil.virtual_memory().total
    assert host["disk_total"] == psutil.disk_usage(str(home.root)).total
    assert host["cpu_count"] == psutil.cpu_count()
    assert host["cpu_temp_c"] == cpu_temperature()  # None where there is no thermal zone
    assert host["cpu_percent"] is None  # the first read has no interval to measure over
    assert body["metrics"]["jobs"] == jobs
    assert body["metrics"]["outbox"]["pending"] == 0
    assert body["metrics"]["battery"] is None  # disabled in the default station
    # the status follows from these real values and the thresholds; make them decide it
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home.root)
    data["sensors"][0]["min_free"] = 0
    data["retention"] = {"min_free": 0}
    data["heartbeat"] = {"memory_percent_degraded": 100, "temperature_degraded": 1000}
    relaxed = parse_config(data)
    healthy = Heartbeat(relaxed, db, clock, home, lambda: jobs).beat_once()
    assert (healthy["status"], healthy["reasons"]) == ("ok", [])
    total = psutil.disk_usage(str(home.root)).total  # free space is always below the total
    data["retention"] = {"min_free": total}
    data["heartbeat"] = {"memory_percent_degraded": 0.001, "temperature_degraded": 1000}
    strict = Heartbeat(parse_config(data), db, clock, home, lambda: jobs).beat_once()
    host = strict["metrics"]["host"]
    assert strict["status"] == "degraded"
    assert strict["reasons"] == [
        f"disk free {host['disk_free']} B below retention.min_free",
        f"memory {host['memory_percent']:.0f} % used",
    ]


def _zones(root: Path, *zones: tuple[str, str] | None) -> Path:
    """A fake ``/sys/class/thermal``: ``thermal_zoneN`` with ``type`` and ``temp`` (m°C) for
    each (type, millidegrees); None makes an unreadable zone (no files)."""
    root.mkdir()
    for index, zone in enumerate(zones):
        folder = root / f"thermal_zone{index}"
        folder.mkdir()
        if zone is not None:
            (folder / "type").write_text(zone[0] + "\n")
            (folder / "temp").write_text(zone[1] + "\n")
    return root


def test_cpu_temperature_prefers_the_cpu_zone_over_acpitz(tmp_path: Path) -> None:
    assert cpu_temperature(tmp_path / "none") is None
    # a PC: the ACPI zone comes first but is a board sensor; the package sensor is the CPU
    pc = _zones(tmp_path / "pc", ("acpitz", "31000"), None, ("x86_pkg_temp", "48500"))
    assert cpu_temperature(pc) == 48.5
    # a Raspberry Pi / Rockchip board, with a Wi-Fi zone listed first
    pi = _zones(tmp_path / "pi", ("iwlwifi_1", "40000"), ("cpu-thermal", "55250"))
    assert cpu_temperature(pi) == 55.25
    soc = _zones(tmp_path / "soc", ("acpitz", "30000"), ("soc_thermal", "61000"))
    assert cpu_temperature(soc) == 61.0
    # no CPU zone: the ACPI zone beats an unrelated one, then the first readable zone
    board = _zones(tmp_path / "board", ("iwlwifi_1", "40000"), ("acpitz", "33000"))
    assert cpu_temperature(board) == 33.0
    other = _zones(tmp_path / "other", None, ("pch_skylake", "45000"), ("iwlwifi_1", "40000"))
    assert cpu_temperature(other) == 45.0


class DayClock(VirtualClock):
    """Sets ``stop`` once a simulated day has passed (so ``Heartbeat.run`` ends)."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__()
        self.stop = stop
        self.end = self.now() + timedelta(seconds=DAY)

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        result = super().wait(event, timeout)
        if self.now() >= self.end - timedelta(seconds=1):
            self.stop.set()
            return True
        return result


def listener(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    return sock


def test_offline_day_of_heartbeats_delivered_in_order(
    home: StationHome, db: Database, http_ingest: Any
) -> None:
    """The hub (HTTP) is unreachable all day: the local file still receives every heartbeat
    as it is written, the hub output makes no attempt, and gets them all, in order, after."""
    probe = listener()
    port = probe.getsockname()[1]
    probe.close()  # the hub is unreachable all day
    hub = http_ingest(port)
    config = station(
        home,
        network={"down_after": 1, "up_after": 1},
        outputs=[
            {"name": "local", "kind": "file", "path": "outbox.jsonl"},
            {"name": "hub", "kind": "http", "url": hub.url, "timeout": "5s"},
        ],
    )
    stop = threading.Event()
    clock = DayClock(stop)
    monitor = NetworkMonitor(config, clock, db=db)  # probes the hub's endpoint
    assert [str(t) for t in monitor.targets] == [f"127.0.0.1:{port}"]
    assert not monitor.probe_once().ok and not monitor.is_up()
    loop = DeliveryLoop(config, db, clock, home, network_up=monitor.is_up_for)
    heartbeat = Heartbeat(config, db, clock, home, lambda: [], network_up=monitor.is_up)
    heartbeat.run(stop)  # a whole simulated day, interval 5 min
    assert loop.run_once() == 289  # while down: 288 beats + the network_down event, to the file
    with db.session() as session:
        query = select(Message.kind, func.count(Message.id)).group_by(Message.kind)
        kinds = {str(kind): int(n) for kind, n in session.execute(query).all()}
        by_state = dict(
            session.execute(
                select(
                    Delivery.destination + ":" + Delivery.state, func.count(Delivery.id)
                ).group_by(Delivery.destination, Delivery.state)
            ).all()
        )
        hub_attempts = session.scalar(
            select(func.sum(Delivery.attempts)).where(Delivery.destination == "hub")
        )
    assert kinds["heartbeat"] == 288
    assert by_state == {"local:sent": 289, "hub:pending": 289}
    assert hub_attempts == 0 and hub.requests == 0  # no attempt on the network output
    local_while_down = (home.root / "outbox.jsonl").read_text().splitlines()
    assert len(local_while_down) == 289

    hub.start()  # the network comes back
    assert monitor.probe_once().ok and monitor.is_up()
    delivered = 0
    for _ in range(20):
        delivered += loop.run_once()
        if delivered >= 291:  # 289 + network_up, to both outputs
            break
    loop.close()
    assert delivered == 291
    lines = [json.loads(line) for line in (home.root / "outbox.jsonl").read_text().splitlines()]
    for received in (lines, hub.messages):
        beats = [m for m in received if m["kind"] == "heartbeat"]
        assert len(beats) == 288
        assert [b["body"]["seq"] for b in beats] == list(range(1, 289))
        times = [b["created_at"] for b in beats]
        assert times == sorted(times) and len(set(times)) == 288
        assert {b["body"]["network_up"] for b in beats} == {False}
        assert {b["body"]["status"] for b in beats} <= {"degraded", "failing"}
        assert all("network down" in b["body"]["reasons"] for b in beats)
        memory = {b["body"]["metrics"]["host"]["memory_total"] for b in beats}
        assert memory == {psutil.virtual_memory().total}
        pending = [b["body"]["metrics"]["outbox"]["pending"] for b in beats]
        assert pending[0] >= 1 and pending == sorted(pending)  # the outbox grew during the day
        events = [m["body"]["event"] for m in received if m["kind"] == "event"]
        assert events == ["network_down", "network_up"]
        assert [b["body"]["metrics"]["jobs"] for b in beats[:1]] == [[]]
    assert {json.loads(x)["id"] for x in local_while_down} < {m["id"] for m in hub.messages}


def test_heartbeat_without_destination_writes_nothing(home: StationHome, db: Database) -> None:
    config = station(home, outputs=[])
    body = Heartbeat(config, db, VirtualClock(), home, None, host=FakeHost()).beat_once()
    assert body["status"] == "ok"
    with db.session() as session:
        assert session.scalar(select(func.count(Message.id))) == 0


def test_activity_ages_and_database_failure(home: StationHome, db: Database) -> None:
    from contextlib import contextmanager

    from sqlalchemy.exc import OperationalError

    from fieldstation.store.deployments import start_deployment

    clock = VirtualClock()
    config = station(home)
    with db.session() as session:
        dep = start_deployment(
            session,
            station_id="default",
            config_hash="h" * 64,
            config={},
            version="t",
            now=clock.now(),
        )
        rec = add_recording(session, deployment_id=dep.id, started_at=clock.now())
        run = add_model_run(session, rec.id, started_at=clock.now())
        add_detection(
            session, run, label="bat", score=0.5, detected_at=clock.now() + timedelta(seconds=30)
        )
    clock.advance(600)
    heartbeat = Heartbeat(config, db, clock, home, None, host=FakeHost())
    body = heartbeat.beat_once()
    m = body["metrics"]
    assert m["last_recording_age_s"] == 600 and m["last_detection_age_s"] == 570
    assert m["deployment_id"] == dep.id and m["config_hash"] == "h" * 64
    assert body["config_hash_in_force"] != "h" * 64
    assert m["outbox"]["pending"] == 0  # the first heartbeat is written after measuring

    class BrokenDatabase:
        @contextmanager
        def session(self) -> Any:
            raise OperationalError("SELECT", {}, Exception("disk I/O error"))
            yield

    broken = Heartbeat(config, BrokenDatabase(), clock, home, None, host=FakeHost())  # type: ignore[arg-type]
    body = broken.build()
    assert body["status"] == "failing" and "disk I/O error" in body["reasons"][0]
    assert body["metrics"]["outbox"]["pending"] is None  # unknown, not zero


def test_enabled_battery_without_hardware_reports_null(home: StationHome, db: Database) -> None:
    config = station(home, battery={"enabled": True, "bus": 99})
    body = Heartbeat(config, db, VirtualClock(), home, None, host=FakeHost()).beat_once()
    assert body["metrics"]["battery"] is None  # absent INA219: null, never a made-up value
    assert body["status"] == "ok"


def test_heartbeat_honours_the_outbox_cap(
    home: StationHome, db: Database, clock: VirtualClock
) -> None:
    """Under ``block`` a full outbox refuses the beat; under ``drop_oldest`` it drops bulk."""
    from fieldstation.store.outbox import OutboxFullError, enqueue

    def fill(config: StationConfig) -> None:
        with db.session() as session:
            for i in range(5):
                enqueue(
                    session,
                    kind="recording",
                    body={"pad": "x" * 300, "i": i},
                    destinations=["local"],
                    now=clock.now(),
                    station_id="default",
                )

    blocking = station(home, outbox={"max_bytes": 1500, "when_full": "block"})
    fill(blocking)
    beat = Heartbeat(blocking, db, clock, home, host=FakeHost())
    with pytest.raises(OutboxFullError):
        beat.beat_once()
    with db.session() as session:
        assert session.scalar(select(func.count()).where(Message.kind == "heartbeat")) == 0

    dropping = station(home, outbox={"max_bytes": 1500, "when_full": "drop_oldest"})
    Heartbeat(dropping, db, clock, home, host=FakeHost()).beat_once()
    with db.session() as session:
        assert session.scalar(select(func.count()).where(Message.kind == "heartbeat")) == 1
        dropped = session.scalar(select(func.count()).where(Delivery.state == "dropped"))
        assert dropped and dropped >= 1


def test_status_rules_for_job_states_and_problems(home: StationHome) -> None:
    config = station(home)
    bad = [{"name": "recorder:mic", "state": "config_error", "reason": "path: x.wav missing"}]
    assert derive_status(metrics(jobs=bad), config) == (
        "failing",
        ["job recorder:mic config_error: path: x.wav missing"],
    )
    hung = [{"name": "outbox", "state": "hung", "reason": "hung: busy for 901 s"}]
    assert derive_status(metrics(jobs=hung), config)[0] == "failing"
    # running, but cannot record: degraded with the reason, until the device returns
    waiting = [
        {"name": "recorder:usb", "state": "running", "problem": "device error: no input 'usb'"}
    ]
    assert derive_status(metrics(jobs=waiting), config) == (
        "degraded",
        ["job recorder:usb: device error: no input 'usb'"],
    )
    fine = [{"name": "recorder:usb", "state": "running", "problem": None}]
    assert derive_status(metrics(jobs=fine), config) == ("ok", [])
    # states the supervisor never sets are not "ok" by name any more
    assert derive_status(metrics(jobs=[{"name": "x", "state": "idle"}]), config)[0] == "degraded"


def test_refused_heartbeats_are_one_warning_not_a_traceback_per_beat(
    home: StationHome, db: Database, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    from fieldstation.store.outbox import enqueue

    config = station(
        home, outbox={"max_bytes": 1500, "when_full": "block"}, heartbeat={"interval": "1m"}
    )
    with db.session() as session:
        for i in range(5):
            enqueue(
                session,
                kind="recording",
                body={"pad": "x" * 300, "i": i},
                destinations=["local"],
                now=clock.now(),
                station_id="default",
            )
    beat = Heartbeat(config, db, clock, home, host=FakeHost())
    stop = threading.Event()
    original = clock.wait
    turns = []

    def wait(event: threading.Event, timeout: float | None) -> bool:
        turns.append(timeout)
        if len(turns) == 10:
            stop.set()
        return original(event, timeout)

    clock.wait = wait  # type: ignore[method-assign]
    with caplog.at_level("DEBUG", logger="fieldstation.health.heartbeat"):
        beat.run(stop)
    assert beat.refused == 10
    records = [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    assert len(records) == 1 and records[0].levelname == "WARNING"
    assert records[0].exc_info is None and "outbox full" in records[0].getMessage()


def test_status_and_heartbeat_judge_jobs_by_one_rule(home: StationHome) -> None:
    """``status`` (its health) and the heartbeat give the same lines for the same jobs."""
    from fieldstation.progress import judge_jobs
    from fieldstation.runtime.station import _health

    jobs = [
        {"name": "recorder:mic", "state": "config_error", "reason": "path: x.wav missing"},
        {"name": "recorder:usb", "state": "running", "problem": "device error: gone"},
        {"name": "processor:energy", "state": "backoff", "reason": "exited with 1"},
        {"name": "outbox", "state": "running", "problem": None},
    ]
    failing, degraded = judge_jobs(jobs)
    assert failing == ["job recorder:mic config_error: path: x.wav missing"]
    assert degraded == [
        "job recorder:usb: device error: gone",
        "job processor:energy backoff: exited with 1",
    ]
    assert derive_status(metrics(jobs=jobs), station(home)) == ("failing", failing + degraded)
    health = _health(jobs, None)  # no supervisor yet: "starting" comes first
    assert health["health"] == "unhealthy" and health["problems"][1:] == failing + degraded
    # an ordered shutdown stops jobs on purpose: not a problem then
    assert judge_jobs([{"name": "x", "state": "stopped"}], stopping=True) == ([], [])
    assert judge_jobs([{"name": "x", "state": "stopped"}]) == ([], ["job x stopped"])
