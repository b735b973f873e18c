"""Hub ingest load: simulated stations publish over a real Mosquitto to 1 and 2 hub processes.

``--stations`` stations (default 1,000) each send a heartbeat every 60 s and detections at
``--detections-per-hour`` (a detection message holds 1-3 detections), time accelerated: the
messages of ``--minutes`` simulated minutes are published as fast as two paho publishers can
(QoS 1). For each process count (``--processes 1 2``) a fresh fleet database and real
``fieldstation hub run`` processes (one shared subscription group) ingest them. Prints JSON:

- ``messages_per_s``: messages stored / seconds from the first publish to the last row;
- ``latency_p50_ms`` / ``latency_p99_ms``: publish -> row (the envelope's ``created_at`` is
  stamped right before its publish; the row's ``received_at`` when its batch is stored; one
  clock, one machine).

    python3 bench/hub.py [--database sqlite|postgres] [--stations 1000] [--minutes 10]
                         [--modes live drain] [--rate MSG_PER_S]

``--rate`` paces the live publishers (latency below saturation); flat out, the latency is mostly
time spent queued at the broker.

``--fleet-page``: the dashboard instead of ingest. A PostgreSQL fleet database is filled by
COPY with ``--stations`` stations and ``--fleet-detections`` detections (default 10 million),
a real ``hub run`` serves it, and a logged-in client times ``--requests`` requests of each
page (fleet HTML and JSON, detections explorer unfiltered / by station / by label, a station
page): p50 / p95 / max in ms, and the hub process's CPU per request (user + system, ms: the
figure that does not depend on what else runs on the machine). The fleet HTML and JSON are
then timed ``--cold-requests`` times more one polling period (2 s) apart, as one viewer polls
(each finds the snapshot expired: served, and a new one made after the response), and
``--idle-requests`` times after 6 s idle (the snapshot is made before answering: the worst
case). ``load_average_1_5_15`` before and after; ``met``: the fleet page and its JSON at
p95 <= 300 ms (issue 16).

    python3 bench/hub.py --fleet-page [--stations 1000] [--fleet-detections 10000000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text

from fieldstation.hub import rollup
from fieldstation.hub.db import open_hub_database
from fieldstation.hub.models import IngestedMessage
from fieldstation.hub.web.app import FLEET_POLL, FLEET_STALE
from fieldstation.testing.broker import MosquittoBroker

CLI = [sys.executable, "-m", "fieldstation.cli"]
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
STAMP = "2000-01-01T00:00:00.000000+00:00"
TARGET_PER_S = 5000.0
"""Issue 16: ingest messages/s with 2 hub processes on the 2-core machine."""


def heartbeat_body(station: int, seq: int) -> dict[str, Any]:
    return {
        "status": "ok",
        "reasons": [],
        "seq": seq,
        "interval": 60.0,
        "network_up": True,
        "station_uptime_s": 60.0 * seq,
        "config_hash_in_force": f"{station:08x}",
        "metrics": {
            "host": {"cpu_percent": 3.0, "memory_percent": 40.0, "disk_free": 12_000_000_000},
            "outbox": {"pending": 0, "oldest_age_s": None},
            "last_recording_age_s": 4.0,
            "last_detection_age_s": 30.0,
            "jobs": [{"name": "recorder:mic", "state": "running", "restarts": 0}],
            "deployment_id": 1,
            "config_hash": f"{station:08x}",
            "versions": {"fieldstation": "0.1.0"},
            "battery": None,
            "errors": [],
        },
    }


def detection_body(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "recording_id": i,
        "sensor": "mic",
        "recording_started_at": STAMP,
        "processor": "birdnet",
        "model": "birdnet",
        "model_version": "2.4",
        "detections": [
            {
                "label": f"species-{rng.randrange(300)}",
                "score": round(rng.random(), 3),
                "start": float(k * 3),
                "end": float(k * 3 + 3),
                "low_hz": None,
                "high_hz": None,
                "detected_at": STAMP,
                "extra": {},
            }
            for k in range(rng.randint(1, 3))
        ],
    }


def workload(stations: int, minutes: int, per_hour: float, seed: int = 1) -> list[tuple[str, str]]:
    """(topic, envelope JSON with STAMP where created_at goes), in simulated time order."""
    rng = random.Random(seed)
    out: list[tuple[str, str]] = []
    n = 0
    for minute in range(minutes):
        for s in range(stations):
            name = f"sim-{s:04d}"
            bodies = [("heartbeat", heartbeat_body(s, minute + 1))]
            expected = per_hour / 60.0
            count = int(expected) + (rng.random() < expected - int(expected))
            bodies += [("detection", detection_body(rng, n + k)) for k in range(count)]
            for kind, body in bodies:
                n += 1
                envelope = {
                    "schema": 1,
                    "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "kind": kind,
                    "station": name,
                    "created_at": STAMP,
                    "body": body,
                }
                out.append((f"fieldstation/{name}/{kind}", json.dumps(envelope)))
    return out


def publish_all(
    broker: MosquittoBroker, messages: list[tuple[str, str]], clients: int = 2, rate: float = 0
) -> None:
    """Publish with ``clients`` paho clients, QoS 1; ``rate`` messages/s in all (0: as fast
    as they can)."""
    import paho.mqtt.client as mqtt

    def run(part: list[tuple[str, str]], index: int) -> None:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{index}", protocol=mqtt.MQTTv5
        )
        client.max_inflight_messages_set(1000)
        client.connect(broker.host, broker.port)
        client.loop_start()
        last = None
        interval = clients / rate if rate > 0 else 0.0
        began = time.monotonic()
        for n, (topic, payload) in enumerate(part):
            if interval:
                ahead = began + n * interval - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)  # pacing the load generator (wall-clock by design)
            now = datetime.now(UTC).isoformat(timespec="microseconds")
            last = client.publish(topic, payload.replace(STAMP, now), qos=1)
        if last is not None:
            last.wait_for_publish(300)
        client.disconnect()
        client.loop_stop()

    threads = [threading.Thread(target=run, args=(messages[i::clients], i)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class Database:
    """A fresh fleet database: a SQLite file or a PostgreSQL database with a random name."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind = kind
        if kind == "sqlite":
            self.url = f"sqlite:///{folder / f'hub-{uuid.uuid4().hex[:6]}.db'}"
            self.name = None
        else:
            self.name = f"fs_hub_bench_{uuid.uuid4().hex[:10]}"
            with create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT").connect() as c:
                c.execute(text(f'CREATE DATABASE "{self.name}"'))
            self.url = PG_ADMIN.rsplit("/", 1)[0] + "/" + self.name

    def drop(self) -> None:
        if self.name:
            with create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT").connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


def start_hub(folder: Path, name: str, url: str, broker: MosquittoBroker) -> subprocess.Popen[str]:
    """Start ``fieldstation hub run`` as ``name`` (does not wait: see :func:`wait_subscribed`)."""
    config = folder / f"{name}.toml"
    config.write_text(
        f'database = "{url}"\n[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'client_id = "{name}"\ngroup = "bench"\n[http]\nenabled = false\n'
    )
    return subprocess.Popen([*CLI, "hub", "run", str(config)], stderr=subprocess.PIPE, text=True)


def wait_subscribed(process: subprocess.Popen[str]) -> None:
    """Block until ``process`` says it subscribed; then keep draining its stderr."""
    assert process.stderr is not None
    for line in process.stderr:
        if "mqtt ingest subscribed" in line:
            break
    else:
        raise RuntimeError(f"hub {process.args!r} exited before subscribing")
    threading.Thread(target=lambda: [None for _ in process.stderr or []], daemon=True).start()


def start_hubs(
    folder: Path, names: list[str], url: str, broker: MosquittoBroker
) -> list[subprocess.Popen[str]]:
    """Start every hub process at once, then wait until each has subscribed."""
    hubs = [start_hub(folder, name, url, broker) for name in names]
    for hub in hubs:
        wait_subscribed(hub)
    return hubs


def cpu_seconds(
    hubs: list[subprocess.Popen[str]], broker: MosquittoBroker, db: Any
) -> dict[str, float]:
    """CPU seconds (user + system) so far of the hub processes, Mosquitto, this process (the
    publishers) and the PostgreSQL backends connected to the fleet database (0 on SQLite)."""
    import psutil

    def of(pid: int) -> float:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:  # a backend that ended
            return 0.0
        return float(times.user + times.system)

    postgres = 0.0
    if db.dialect == "postgresql":
        with db.session() as s:
            pids = s.scalars(
                text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            ).all()
        postgres = sum(of(pid) for pid in pids)
    assert broker.process is not None
    return {
        "hubs": sum(of(hub.pid) for hub in hubs),
        "postgres": postgres,
        "broker": of(broker.process.pid),
        "bench": of(os.getpid()),
    }


def count(db: Any) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(IngestedMessage)) or 0)


def wait_stored(db: Any, total: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    stored = count(db)
    while stored < total and time.monotonic() < deadline:
        time.sleep(0.05)
        stored = count(db)
    return stored


def scenario(
    args: argparse.Namespace, processes: int, messages: list[tuple[str, str]], mode: str
) -> dict[str, Any]:
    """``live``: hubs running while the publishers send (they share the two cores with the
    hubs, Mosquitto and PostgreSQL); ``drain``: the messages are queued in the hubs' broker
    sessions first (hubs stopped), then the hubs start and empty them, which measures ingest
    alone: ``messages_per_s`` there counts from the first batch committed to the last (the
    hubs' start-up is in ``seconds_with_start_up``)."""
    total = len(messages)
    load = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        database = Database(args.database, folder)
        db = open_hub_database(database.url)
        hubs: list[subprocess.Popen[str]] = []
        try:
            with MosquittoBroker(folder / "broker") as broker:
                names = [f"hub-{i}" for i in range(processes)]
                hubs = start_hubs(folder, names, database.url, broker)
                published: float | None = None
                if mode == "drain":
                    for hub in hubs:  # SIGTERM: a clean disconnect; the sessions stay
                        hub.terminate()
                        hub.wait(30)
                    began = time.monotonic()
                    publish_all(broker, messages)
                    published = time.monotonic() - began
                    started = time.monotonic()
                    hubs = start_hubs(folder, names, database.url, broker)
                    cpu = cpu_seconds(hubs, broker, db)
                    stored = wait_stored(db, total, args.timeout)
                else:
                    cpu = cpu_seconds(hubs, broker, db)
                    started = time.monotonic()
                    publisher = threading.Thread(
                        target=publish_all, args=(broker, messages, 2, args.rate)
                    )
                    publisher.start()
                    stored = wait_stored(db, total, args.timeout)
                    publisher.join()
                elapsed = time.monotonic() - started
                used = {k: v - cpu[k] for k, v in cpu_seconds(hubs, broker, db).items()}
                with db.session() as s:
                    rows = s.execute(
                        select(IngestedMessage.created_at, IngestedMessage.received_at)
                    ).all()
        finally:
            for hub in hubs:
                hub.terminate()
                hub.wait(30)
            db.dispose()
            database.drop()
    result: dict[str, Any] = {
        "processes": processes,
        "mode": mode,
        "messages": total,
        "stored": stored,
        "load_average_before": load,
        # CPU seconds spent while the messages went through (user + system): what does not
        # depend on the rest of the machine's load; "bench" is the publishers (and polling)
        "cpu_s": {k: round(v, 2) for k, v in used.items()},
        "hub_cpu_us_per_message": round(1e6 * used["hubs"] / max(1, stored)),
        "postgres_cpu_us_per_message": round(1e6 * used["postgres"] / max(1, stored)),
    }
    if mode == "drain":
        first = min(r.received_at for r in rows)
        last = max(r.received_at for r in rows)
        after_first = sum(1 for r in rows if r.received_at > first)
        span = (last - first).total_seconds()
        result.update(
            seconds_with_start_up=round(elapsed, 2),
            seconds=round(span, 2),
            messages_per_s=round(after_first / span, 1) if span > 0 else None,
            published_per_s=round(total / published, 1) if published else None,
        )
    else:
        latencies = sorted((r.received_at - r.created_at).total_seconds() for r in rows)

        def pct(p: float) -> float:
            return round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1)

        result.update(
            seconds=round(elapsed, 2),
            messages_per_s=round(stored / elapsed, 1),
            latency_p50_ms=pct(0.50),
            latency_p99_ms=pct(0.99),
        )
    return result


def copy_rows(connection: Any, table: str, columns: str, lines: Any, block: int = 20000) -> None:
    """COPY ``lines`` (tab-separated text rows, no newline) into ``table`` in blocks."""
    with connection.cursor() as cursor, cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as cp:
        buffer: list[str] = []
        for line in lines:
            buffer.append(line)
            if len(buffer) >= block:
                cp.write("\n".join(buffer) + "\n")
                buffer.clear()
        if buffer:
            cp.write("\n".join(buffer) + "\n")


DETECTION_INDEXES = (
    ("ix_detections_station_detected", "station, detected_at"),
    ("ix_detections_label_detected", "label, detected_at"),
    ("ix_detections_detected_id", "detected_at, id"),
    ("ix_detections_message", "message_id"),
)


def build_fleet(url: str, stations: int, detections: int, per_message: int = 4) -> dict[str, float]:
    """Fill a migrated PostgreSQL fleet database by COPY: ``stations`` stations with their
    newest heartbeat figures, ``detections`` detections (``per_message`` per message) over the
    last 365 days, 300 labels, 2 % of stations with an open alert. The detections' indexes
    are dropped for the load and built after it (as a bulk import would). Returns seconds."""
    import psycopg

    rng = random.Random(7)
    now = datetime.now(UTC)
    t_now = now.timestamp()
    stamp = now.isoformat()
    timings: dict[str, float] = {}
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as connection:
        started = time.monotonic()
        jobs = json.dumps([{"name": "recorder:mic", "state": "running", "restarts": 0}])
        copy_rows(
            connection,
            "stations",
            "id, first_seen_at, last_seen_at, online, status_changed_at, last_heartbeat_at, "
            "health, config_hash, heartbeat_interval, reasons, disk_free, disk_percent, "
            "battery_percent, outbox_pending, jobs, last_recording_at, last_detection_at",
            (
                f"sim-{i:04d}\t{stamp}\t{stamp}\t{'t' if i % 50 else 'f'}\t{stamp}\t{stamp}\t"
                f"{'ok' if i % 20 else 'degraded'}\t{i:016x}\t60\t[]\t{12_000_000_000 + i}\t"
                f"{40 + i % 50}\t{50 + i % 50}\t{i % 7}\t{jobs}\t{stamp}\t{stamp}"
                for i in range(stations)
            ),
        )
        with connection.cursor() as cursor:
            for name, _ in DETECTION_INDEXES:
                cursor.execute(f"DROP INDEX {name}")
            cursor.execute(
                "ALTER TABLE detections DROP CONSTRAINT IF EXISTS detections_message_id_fkey"
            )
        messages = detections // per_message
        copy_rows(
            connection,
            "messages",
            "message_id, station, kind, schema_version, created_at, received_at, received_via",
            (
                f"m{i:09d}\tsim-{i % stations:04d}\tdetection\t1\t{stamp}\t{stamp}\tbench"
                for i in range(messages)
            ),
        )
        timings["messages_copy_s"] = round(time.monotonic() - started, 1)

        def rows() -> Any:
            for i in range(messages):
                station = f"sim-{i % stations:04d}"
                base = t_now - rng.random() * 365 * 86400
                for k in range(per_message):
                    at = datetime.fromtimestamp(base + k, UTC).isoformat()
                    yield (
                        f"m{i:09d}\t{station}\t{i}\tmic\tbirdnet\tbirdnet\t2.4\t"
                        f"species-{rng.randrange(300)}\t{rng.random():.3f}\t{k * 3}\t"
                        f"{k * 3 + 3}\t\\N\t\\N\t{at}\t{{}}"
                    )

        started = time.monotonic()
        copy_rows(
            connection,
            "detections",
            "message_id, station, recording_id, sensor, processor, model, model_version, label, "
            'score, start, "end", low_hz, high_hz, detected_at, extra',
            rows(),
        )
        timings["detections_copy_s"] = round(time.monotonic() - started, 1)
        started = (
            time.monotonic()
        )  # COPY bypassed the ingest's rollup: recount it, as an import would
        engine = create_engine(url)
        with engine.begin() as sa_connection:
            rollup.rebuild(sa_connection)
        engine.dispose()
        timings["rollup_s"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        with connection.cursor() as cursor:
            for name, columns in DETECTION_INDEXES:
                cursor.execute(f"CREATE INDEX {name} ON detections ({columns})")
            cursor.execute(
                "ALTER TABLE detections ADD CONSTRAINT detections_message_id_fkey FOREIGN KEY "
                "(message_id) REFERENCES messages (message_id) ON DELETE CASCADE"
            )
            for i in range(0, stations, 50):
                cursor.execute(
                    "INSERT INTO alerts (station, kind, subject, detail, opened_at) "
                    "VALUES (%s, 'offline', '', 'offline for 2 h', now())",
                    (f"sim-{i:04d}",),
                )
            cursor.execute("VACUUM ANALYZE")  # what autovacuum does after a bulk load
        timings["indexes_s"] = round(time.monotonic() - started, 1)
    return timings


def measure(client: Any, pid: int, path: str, requests: int, pause: float = 0.0) -> dict[str, Any]:
    """``requests`` GETs of ``path`` after 5 of warm-up, ``pause`` seconds before each: p50 /
    p95 / max (ms) and the hub process's CPU per request (user + system, ms)."""
    import psutil

    times = []
    cpu_before = 0.0
    for i in range(requests + 5):
        if i == 5:
            cpu = psutil.Process(pid).cpu_times()
            cpu_before = cpu.user + cpu.system
        if pause:
            time.sleep(pause)  # let the fleet snapshot expire (wall-clock by design)
        started = time.perf_counter()
        answer = client.get(path)
        elapsed = time.perf_counter() - started
        assert answer.status_code == 200, (path, answer.status_code)
        if i >= 5:  # warm-up
            times.append(elapsed * 1000)
    cpu = psutil.Process(pid).cpu_times()
    cpu_ms = (cpu.user + cpu.system - cpu_before) * 1000 / requests
    times.sort()
    return {
        "hub_cpu_ms_per_request": round(cpu_ms, 1),
        "p50_ms": round(times[len(times) // 2], 1),
        "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 1),
        "max_ms": round(times[-1], 1),
    }


def fleet_page(args: argparse.Namespace) -> dict[str, Any]:
    """Fleet page p50/p95 (and the other pages') against a real ``hub run`` process on
    PostgreSQL holding ``--stations`` stations and ``--fleet-detections`` detections."""
    import httpx

    from fieldstation.hub.users import add_user
    from fieldstation.testing.broker import free_port

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        database = Database("postgres", folder)
        process = None
        try:
            db = open_hub_database(database.url)
            add_user(db, "bench", "bench-password", "viewer")
            db.dispose()
            timings = build_fleet(database.url, args.stations, args.fleet_detections)
            port = free_port()
            config = folder / "hub.toml"
            config.write_text(
                f'home = "{folder / "home"}"\ndatabase = "{database.url}"\n[http]\nport = {port}\n'
            )
            process = subprocess.Popen(
                [*CLI, "hub", "run", str(config)], stderr=subprocess.PIPE, text=True
            )
            assert process.stderr is not None
            for line in process.stderr:
                if "dashboard on" in line:
                    break
            else:
                raise RuntimeError("hub exited before listening")
            threading.Thread(
                target=lambda: [None for _ in process.stderr or []], daemon=True
            ).start()
            base = f"http://127.0.0.1:{port}"
            pages: dict[str, Any] = {}
            load_before = [round(x, 2) for x in os.getloadavg()]
            with httpx.Client(base_url=base, timeout=60) as client:
                form = client.get("/login").text
                token = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
                logged = client.post(
                    "/login",
                    data={"name": "bench", "password": "bench-password", "csrf": token},
                )
                assert logged.status_code == 303, logged.text
                for path in (
                    "/",
                    "/api/fleet",
                    "/detections",
                    "/detections?station=sim-0042",
                    "/detections?label=species-7",
                    "/stations/sim-0042",
                ):
                    pages[path] = measure(client, process.pid, path, args.requests)
                # a viewer polling every period: each poll finds the snapshot expired (served,
                # then a new one made after the response); then the worst case, a request after
                # an idle spell longer than FLEET_STALE (made before answering)
                for path in ("/", "/api/fleet"):
                    pages[f"{path} (polled every {FLEET_POLL:g} s)"] = measure(
                        client, process.pid, path, args.cold_requests, pause=FLEET_POLL + 0.05
                    )
                for path in ("/", "/api/fleet"):
                    pages[f"{path} (after {FLEET_STALE:g} s idle)"] = measure(
                        client, process.pid, path, args.idle_requests, pause=FLEET_STALE + 0.05
                    )
        finally:
            if process is not None:
                process.terminate()
                process.wait(30)
            database.drop()
    return {
        "stations": args.stations,
        "detections": args.fleet_detections,
        "build": timings,
        "requests_per_page": args.requests,
        "polled_requests": args.cold_requests,
        "idle_requests": args.idle_requests,
        "load_average_1_5_15": {
            "before": load_before,
            "after": [round(x, 2) for x in os.getloadavg()],
        },
        "pages": pages,
        "targets": {"fleet_p95_ms": 300},
        "met": pages["/"]["p95_ms"] <= 300 and pages["/api/fleet"]["p95_ms"] <= 300,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=10, help="simulated minutes")
    parser.add_argument("--detections-per-hour", type=float, default=60.0)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--rate", type=float, default=0, help="live mode: messages/s in all (0: flat out)"
    )
    parser.add_argument("--modes", nargs="+", choices=["live", "drain"], default=["live", "drain"])
    parser.add_argument(
        "--fleet-page",
        action="store_true",
        help="instead of ingest: dashboard response times on a PostgreSQL fleet database "
        "filled by COPY (--stations, --fleet-detections)",
    )
    parser.add_argument("--fleet-detections", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=100, help="per page (--fleet-page)")
    parser.add_argument(
        "--cold-requests",
        type=int,
        default=20,
        help="fleet page and JSON requests, one per polling period (--fleet-page)",
    )
    parser.add_argument(
        "--idle-requests",
        type=int,
        default=10,
        help="fleet page and JSON requests, each after the snapshot went stale (--fleet-page)",
    )
    args = parser.parse_args()
    if args.fleet_page:
        print(json.dumps(fleet_page(args), indent=2))
        return
    messages = workload(args.stations, args.minutes, args.detections_per_hour)
    results = [scenario(args, n, messages, mode) for mode in args.modes for n in args.processes]
    two = {r["mode"]: r["messages_per_s"] or 0 for r in results if r["processes"] == 2}
    met = {f"{mode}_2_processes": rate >= TARGET_PER_S for mode, rate in two.items()}
    print(
        json.dumps(
            {
                "stations": args.stations,
                "simulated_minutes": args.minutes,
                "detections_per_hour": args.detections_per_hour,
                "database": args.database,
                "rate": args.rate or "max",
                "cpus": os.cpu_count(),
                "targets": {"messages_per_s_with_2_processes": TARGET_PER_S},
                "met": met,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
