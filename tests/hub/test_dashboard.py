"""The dashboard (Starlette app in-process, real fleet database on SQLite and PostgreSQL):
log-in with argon2 passwords, CSRF on every form, roles, the fleet JSON (presence from the
status, silent from the rules, heartbeat figures), the detections explorer's keyset pages,
counts per day and CSV export, acknowledging alerts."""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fieldstation.clock import VirtualClock
from fieldstation.hub.alerts import AlertRules, apply_conditions, evaluate, station_states
from fieldstation.hub.db import HubDatabase, open_hub_database
from fieldstation.hub.http import create_app
from fieldstation.hub.store import Incoming, set_station_status, store_batch
from fieldstation.hub.users import UserError, add_user
from fieldstation.hub.web import Dashboard
from fieldstation.messages import build_envelope

T0 = datetime(2026, 6, 1, 4, 0, tzinfo=UTC)
PASSWORD = "correct horse battery"


def heartbeat(station: str, at: datetime, *, disk_percent: float = 40.0, jobs: Any = None) -> bytes:
    body = {
        "status": "ok",
        "reasons": [],
        "seq": 1,
        "interval": 60.0,
        "network_up": True,
        "station_uptime_s": 60.0,
        "config_hash_in_force": "abc123def456",
        "metrics": {
            "host": {"cpu_percent": 3.0, "disk_free": 12_000_000_000, "disk_percent": disk_percent},
            "outbox": {"pending": 7, "oldest_age_s": 3.0},
            "last_recording_age_s": 4.0,
            "last_detection_age_s": 30.0,
            "jobs": jobs or [{"name": "recorder:mic", "state": "running", "restarts": 0}],
            "deployment_id": 1,
            "config_hash": "abc123def456",
            "versions": {"fieldstation": "0.1.0"},
            "battery": {"percent": 81.0},
            "errors": [],
        },
    }
    return build_envelope(
        kind="heartbeat", station=station, body=body, created_at=at, message_id=str(uuid.uuid4())
    ).to_json()


def detections(station: str, at: datetime, labels: list[str], recording: int = 1) -> bytes:
    body = {
        "recording_id": recording,
        "sensor": "mic",
        "recording_started_at": at.isoformat(),
        "processor": "energy",
        "model": "energy",
        "model_version": "1",
        "detections": [
            {
                "label": label,
                "score": 0.5,
                "start": float(k),
                "end": k + 0.5,
                "detected_at": (at + timedelta(seconds=k)).isoformat(),
            }
            for k, label in enumerate(labels)
        ],
    }
    return build_envelope(
        kind="detection", station=station, body=body, created_at=at, message_id=str(uuid.uuid4())
    ).to_json()


def store(db: HubDatabase, *payloads: bytes) -> None:
    result = store_batch(db, [Incoming(p, "test") for p in payloads], via="test", now=T0)
    assert result.dead == 0, result.reasons


@pytest.fixture
def db(hub_url: str) -> Iterator[HubDatabase]:
    database = open_hub_database(hub_url)
    yield database
    database.dispose()


def client_for(db: HubDatabase, clock: VirtualClock) -> Any:
    from starlette.testclient import TestClient

    app = create_app(
        db, dashboard=Dashboard(secret="s" * 40, rules=AlertRules(silent_after=600), clock=clock)
    )
    return TestClient(app, follow_redirects=False)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def log_in(client: Any, name: str, password: str = PASSWORD) -> Any:
    form = client.get("/login")
    return client.post(
        "/login",
        data={"name": name, "password": password, "csrf": csrf_of(form.text), "next": "/"},
    )


def test_log_in_csrf_and_roles(db: HubDatabase) -> None:
    add_user(db, "vera", PASSWORD, "viewer")
    add_user(db, "otto", PASSWORD, "operator")
    add_user(db, "ada", PASSWORD, "admin")
    with pytest.raises(UserError, match="exists"):
        add_user(db, "vera", PASSWORD, "admin")
    with pytest.raises(UserError, match="role"):
        add_user(db, "zed", PASSWORD, "root")
    clock = VirtualClock(T0)
    client = client_for(db, clock)
    # nothing without a log-in: pages redirect, the API says 401; ingest still answers
    assert client.get("/").status_code == 303
    assert client.get("/").headers["location"].startswith("/login")
    assert client.get("/api/fleet").status_code == 401
    assert client.get("/health").text == "ok"
    # a form without the session's CSRF token is refused, a wrong password too
    fresh = client_for(db, clock)
    refused = fresh.post("/login", data={"name": "vera", "password": PASSWORD, "csrf": "x"})
    assert refused.status_code == 403
    assert log_in(client, "vera", "wrong password").status_code == 401
    assert log_in(client, "nobody").status_code == 401
    answer = log_in(client, "vera")
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    assert "fieldstation_hub" in answer.headers["set-cookie"]
    assert "samesite=strict" in answer.headers["set-cookie"].lower()
    assert client.get("/").status_code == 200
    assert client.get("/users").status_code == 403  # admin only
    # a viewer cannot acknowledge, even with a good token
    set_station_status(db, "st-1", False, now=T0)
    clock.advance(3600)
    apply_conditions(db, evaluate(station_states(db), clock.now(), AlertRules()), clock.now())
    page = client.get("/alerts")
    assert "st-1" in page.text and "Acknowledge" not in page.text
    alert_id = int(re.search(r'data-alert="(\d+)"', page.text).group(1))  # type: ignore[union-attr]
    token = csrf_of(page.text)
    assert client.post(f"/alerts/{alert_id}/ack", data={"csrf": token}).status_code == 403
    # an operator can, with the token only
    operator = client_for(db, clock)
    log_in(operator, "otto")
    page = operator.get("/alerts")
    assert "Acknowledge" in page.text
    assert operator.post(f"/alerts/{alert_id}/ack", data={"csrf": "forged"}).status_code == 403
    done = operator.post(f"/alerts/{alert_id}/ack", data={"csrf": csrf_of(page.text)})
    assert done.status_code == 303
    listed = operator.get("/api/alerts").json()["alerts"]
    assert listed[0]["acknowledged_by"] == "otto" and listed[0]["closed_at"] is None
    # admin sees the users page; log-out needs the token, and ends the session
    admin = client_for(db, clock)
    log_in(admin, "ada")
    users = admin.get("/users")
    assert users.status_code == 200 and "otto" in users.text and "operator" in users.text
    assert admin.post("/logout", data={"csrf": "no"}).status_code == 403
    assert admin.post("/logout", data={"csrf": csrf_of(users.text)}).status_code == 303
    assert admin.get("/api/fleet").status_code == 401


def test_fleet_page_shows_presence_silence_health_and_figures(db: HubDatabase) -> None:
    add_user(db, "vera", PASSWORD, "viewer")
    clock = VirtualClock(T0 + timedelta(hours=2))
    # quiet: heartbeats but no recording for 2 h (silent); gone: offline; busy: detections
    store(db, heartbeat("quiet", T0 + timedelta(hours=2) - timedelta(seconds=30)))
    set_station_status(db, "quiet", True, now=T0)
    set_station_status(db, "gone", False, now=T0 + timedelta(hours=1))
    store(
        db,
        heartbeat("busy", T0 + timedelta(hours=2) - timedelta(seconds=10), disk_percent=95.0),
        detections("busy", T0 + timedelta(hours=1), ["wren", "robin"]),
    )
    client = client_for(db, clock)
    log_in(client, "vera")
    stations = {s["id"]: s for s in client.get("/api/fleet").json()["stations"]}
    assert stations["quiet"]["presence"] == "online" and stations["quiet"]["activity"] == "silent"
    assert stations["gone"]["presence"] == "offline"
    busy = stations["busy"]
    assert busy["health"] == "ok" and busy["disk_percent"] == 95.0
    assert busy["battery_percent"] == 81.0 and busy["outbox_pending"] == 7
    assert busy["config_hash"] == "abc123def456"
    assert busy["last_detection_at"].startswith("2026-06-01T05:00:01")
    html = client.get("/").text
    assert 'data-station="gone"' in html and "offline" in html
    station = client.get("/stations/busy")
    assert station.status_code == 200 and "<svg" in station.text and "wren" in station.text
    assert client.get("/stations/none").status_code == 404


def test_the_fleet_is_read_once_per_polling_period_for_every_viewer(db: HubDatabase) -> None:
    from fieldstation.hub.web.app import FLEET_POLL, FLEET_STALE

    add_user(db, "vera", PASSWORD, "viewer")
    clock = VirtualClock(T0 + timedelta(hours=1))
    store(db, heartbeat("one", T0 + timedelta(hours=1)))
    client = client_for(db, clock)
    log_in(client, "vera")
    page = client.get("/").text
    assert f"every {FLEET_POLL:g} s" in page and f"liveFleet({FLEET_POLL * 1000:.0f})" in page
    assert f"never older than {FLEET_STALE:g} s" in page and 'data-station="one"' in page

    def fleet() -> list[str]:
        return [s["id"] for s in client.get("/api/fleet").json()["stations"]]

    store(db, heartbeat("two", T0 + timedelta(hours=1)))
    # within the period: the snapshot already made (one read for every viewer of this hub)
    assert fleet() == ["one"]
    # older than the period: served at once, and a new one made after that response
    clock.advance(FLEET_POLL)
    assert fleet() == ["one"]
    answer = client.get("/api/fleet").json()
    assert [s["id"] for s in answer["stations"]] == ["one", "two"]
    assert answer["now"] == clock.now().isoformat()
    # older than FLEET_STALE (nobody looked): made before answering
    store(db, heartbeat("three", T0 + timedelta(hours=1)))
    clock.advance(FLEET_STALE)
    assert fleet() == ["one", "three", "two"]
    assert 'data-station="three"' in client.get("/").text


def test_detections_explorer_keyset_pages_counts_and_csv(db: HubDatabase) -> None:
    add_user(db, "vera", PASSWORD, "viewer")
    # 250 detections over 3 days, 2 stations; equal timestamps across messages on purpose
    payloads = []
    for i in range(125):
        at = T0 + timedelta(hours=i // 2 * 1)
        payloads.append(detections(f"st-{i % 2}", at, ["wren", "robin"], recording=i))
    store(db, *payloads)
    client = client_for(db, VirtualClock(T0))
    log_in(client, "vera")
    seen: list[str] = []
    url = "/detections"
    pages = 0
    while url:
        page = client.get(url)
        assert page.status_code == 200
        rows = re.findall(r"<tr><td>(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)</td>", page.text)
        seen += rows
        pages += 1
        older = re.search(r'id="older" href="([^"]+)"', page.text)
        url = older.group(1).replace("&amp;", "&") if older else ""
    assert pages == 3 and len(seen) == 250
    assert seen == sorted(seen, reverse=True)
    # CSV: every row once, filters applied
    text = client.get("/detections.csv").text
    lines = list(csv.DictReader(io.StringIO(text)))
    assert len(lines) == 250 and len({r["id"] for r in lines}) == 250
    wren = list(
        csv.DictReader(io.StringIO(client.get("/detections.csv?label=wren&station=st-0").text))
    )
    assert len(wren) == 63 and {r["label"] for r in wren} == {"wren"}
    # counts per day: 2 messages x 2 detections an hour from 04:00 on day 1 to 18:00 on day 3
    from fieldstation.hub.fleet import DetectionFilter, detection_counts_per_day

    counts = detection_counts_per_day(db, DetectionFilter())
    assert counts == [("2026-06-01", 80), ("2026-06-02", 96), ("2026-06-03", 74)]
    page = client.get("/detections?since=2026-06-03T00:00&label=robin")
    assert "2026-06-03" in page.text and "2026-06-02 " not in page.text


def test_the_session_secret_is_made_once_private_and_shared(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from fieldstation.hub.web import session_secret

    home = tmp_path / "hub-home"
    with ThreadPoolExecutor(8) as pool:
        secrets = set(pool.map(lambda _: session_secret(home), range(16)))
    assert len(secrets) == 1 and len(secrets.pop()) >= 40
    assert (home / "session-secret").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in home.iterdir()] == ["session-secret"]
