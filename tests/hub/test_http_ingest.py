"""HTTP ingest: the station's own HTTP output (``HttpMessenger``) posting to a real
``fieldstation hub run`` subprocess (uvicorn) with per-station bearer tokens."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from fieldstation.hub.db import open_hub_database
from fieldstation.hub.models import Detection, IngestedMessage, Station
from fieldstation.messages import build_envelope
from fieldstation.outbox.http import HttpMessenger, HttpOutputConfig
from fieldstation.outbox.messenger import OutgoingMessage
from fieldstation.testing.broker import free_port

CLI = [sys.executable, "-m", "fieldstation.cli"]
T0 = datetime(2026, 6, 1, 4, 0, tzinfo=UTC)


@pytest.fixture
def hub(tmp_path: Path, hub_url: str) -> Iterator[tuple[Path, str, str]]:
    """A running hub (HTTP only) on a free loopback port: (config, endpoint URL, db URL)."""
    port = free_port()
    config = tmp_path / "hub.toml"
    config.write_text(f'home = "{tmp_path}"\ndatabase = "{hub_url}"\n[http]\nport = {port}\n')
    process = subprocess.Popen([*CLI, "hub", "run", str(config)], stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    listening = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "http ingest on" in line:
                listening.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert listening.wait(60), "".join(lines)
        # "http ingest on" is printed before uvicorn binds: wait for the port to answer
        with httpx.Client() as client:
            for _ in range(600):
                try:
                    client.get(f"http://127.0.0.1:{port}/health")
                    break
                except httpx.TransportError:
                    threading.Event().wait(0.05)
        yield config, f"http://127.0.0.1:{port}/ingest", hub_url
    finally:
        process.terminate()
        process.wait(30)


def token_for(config: Path, station: str) -> str:
    made = subprocess.run(
        [*CLI, "hub", "token", "add", station, "--config", str(config)],
        capture_output=True,
        text=True,
        check=True,
    )
    token = made.stdout.strip()
    assert token.startswith("fsh_") and len(token) > 40
    return token


def batch(station: str, n: int) -> list[OutgoingMessage]:
    out = []
    for i in range(n):
        created = T0 + timedelta(seconds=i)
        envelope = build_envelope(
            kind="detection",
            station=station,
            message_id=f"{station}-{i}",
            created_at=created,
            body={
                "recording_id": i,
                "sensor": "mic",
                "recording_started_at": created.isoformat(),
                "processor": "energy",
                "model": "energy",
                "model_version": None,
                "detections": [
                    {
                        "label": "energy",
                        "score": 0.7,
                        "start": 0.0,
                        "end": 1.0,
                        "low_hz": None,
                        "high_hz": None,
                        "detected_at": created.isoformat(),
                        "extra": {"snr_db": 14.0},
                    }
                ],
            },
        )
        out.append(
            OutgoingMessage(
                delivery_id=i,
                message_id=envelope.id,
                kind="detection",
                priority=3,
                payload=envelope.to_json().decode(),
                created_at=created,
            )
        )
    return out


def messenger(tmp_path: Path, url: str, station: str, token: str) -> HttpMessenger:
    secret = tmp_path / f"token-{station}"
    secret.write_text(token + "\n")
    secret.chmod(0o600)
    config = HttpOutputConfig.model_validate(
        {"name": "hub", "kind": "http", "url": url, "token": f"file:{secret}"}
    )
    return HttpMessenger(config, station_id=station)


@pytest.mark.slow
def test_http_ingest_needs_the_station_token_and_stores_once(
    tmp_path: Path, hub: tuple[Path, str, str]
) -> None:
    config, url, db_url = hub
    token = token_for(config, "hedge-07")
    other = token_for(config, "hedge-08")
    messages = batch("hedge-07", 5)

    wrong = messenger(tmp_path, url, "hedge-07", other)  # another station's token
    results = wrong.send(messages)
    wrong.close()
    assert {r.outcome for r in results} == {"reject"}
    assert results[0].error is not None and results[0].error.startswith("HTTP 401")
    assert "fieldstation hub token add hedge-07" in results[0].error
    none = httpx.post(url, content=b'{"station":"hedge-07","messages":[]}')
    assert none.status_code == 401 and none.headers["WWW-Authenticate"].startswith("Bearer")

    right = messenger(tmp_path, url, "hedge-07", token)
    assert {r.outcome for r in right.send(messages)} == {"sent"}
    assert {r.outcome for r in right.send(messages)} == {"sent"}  # posted twice: stored once
    right.close()

    db = open_hub_database(db_url, migrate=False)
    try:
        with db.session() as s:
            ids = s.scalars(select(IngestedMessage.message_id)).all()
            assert sorted(ids) == sorted(m.message_id for m in messages)
            assert s.scalar(select(func.count(Detection.id))) == 5
            assert {v for v in s.scalars(select(IngestedMessage.received_via))} == {"http"}
            assert s.get(Station, "hedge-07") is not None
    finally:
        db.dispose()
    # a token is good only for its own station's envelopes
    spoof = httpx.post(
        url,
        content=b'{"station":"hedge-08","messages":[]}',
        headers={"Authorization": f"Bearer {token}"},
    )
    assert spoof.status_code == 401
    bad = httpx.post(url, content=b"nope", headers={"Authorization": f"Bearer {token}"})
    assert bad.status_code == 400 and "not JSON" in bad.text
    revoked = subprocess.run(
        [*CLI, "hub", "token", "revoke", "hedge-08", "--config", str(config)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "1 token(s) of 'hedge-08' revoked" in revoked.stdout
    never_used = httpx.post(  # hedge-08's token was never cached: refused at once
        url,
        content=b'{"station":"hedge-08","messages":[]}',
        headers={"Authorization": f"Bearer {other}"},
    )
    assert never_used.status_code == 401


@pytest.mark.slow
def test_a_real_station_delivers_to_the_hub_over_http(
    tmp_path: Path, hub: tuple[Path, str, str]
) -> None:
    """A real station (recorder, energy detector, heartbeats, the http output with a hub token)
    runs until the hub holds its detections; every message the station marked sent to the hub
    is stored there exactly once."""
    import time

    from fieldstation.config import parse_config
    from fieldstation.runtime.station import Station
    from fieldstation.store import open_database
    from fieldstation.store.models import Delivery, Message

    from .test_messages import station_data

    config_path, url, db_url = hub
    secret = tmp_path / "hub-token"
    secret.write_text(token_for(config_path, "default") + "\n")
    secret.chmod(0o600)
    home = tmp_path / "station"
    data = station_data(home)
    data["outputs"] = [{"name": "hub", "kind": "http", "url": url, "token": f"file:{secret}"}]
    station = Station(parse_config(data), control=False, tick=0.1)
    stop = threading.Event()
    runner = threading.Thread(target=station.run, args=(stop,))
    fleet = open_hub_database(db_url, migrate=False)

    def fleet_kinds() -> set[str]:
        with fleet.session() as s:
            return set(s.scalars(select(IngestedMessage.kind).distinct()))

    runner.start()
    try:
        assert station.ready.wait(60)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not {"detection", "heartbeat", "recording"} <= (
            fleet_kinds()
        ):
            time.sleep(0.2)  # polling the fleet database for the rows we expect
    finally:
        stop.set()
        runner.join(60)
    try:
        assert {"detection", "heartbeat", "recording", "readings"} <= fleet_kinds()
        local = open_database(home / "station.db", migrate=False)
        try:
            with local.session() as s:
                sent = set(
                    s.scalars(
                        select(Message.message_id)
                        .join(Delivery)
                        .where(Delivery.destination == "hub", Delivery.state == "sent")
                    )
                )
                dead = s.scalar(select(func.count(Delivery.id)).where(Delivery.state == "dead"))
        finally:
            local.dispose()
        with fleet.session() as s:
            stored = s.scalars(select(IngestedMessage.message_id)).all()
        assert sent and sent <= set(stored)
        assert len(stored) == len(set(stored))
        assert dead == 0
    finally:
        fleet.dispose()
