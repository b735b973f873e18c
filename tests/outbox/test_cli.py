"""``fieldstation outbox status|list|retry|purge-dead -c FILE`` on a real station database."""

from __future__ import annotations

import json
import math
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fieldstation.cli import outbox_cmd
from fieldstation.clock import VirtualClock
from fieldstation.config import load_config
from fieldstation.home import StationHome
from fieldstation.outbox.delivery import DeliveryLoop
from fieldstation.store import Database
from fieldstation.store import outbox as store
from fieldstation.store.events import record_event


@pytest.fixture
def app() -> typer.Typer:
    application = typer.Typer()
    application.callback()(lambda: None)
    outbox_cmd.register(application)
    return application


@pytest.fixture
def station_file(home: StationHome) -> Path:
    path = home.root / "station.toml"
    path.write_text(
        f"""
[station]
id = "cli"
latitude = 0
longitude = 0
timezone = "UTC"
home = "{home.root}"

[[outputs]]
name = "local"
kind = "file"

[outbox]
max_bytes = "3KB"
when_full = "drop_oldest"
"""
    )
    return path


def test_status_list_retry_purge(
    app: typer.Typer,
    station_file: Path,
    db: Database,
    clock: VirtualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outbox_cmd.console, "width", 200)
    cap = store.OutboxCap(3000, "drop_oldest")
    with db.session() as session:
        for kind in ["event"] * 4 + ["recording"] * 4 + ["detection"] * 8:
            store.enqueue(
                session,
                kind=kind,
                body={"pad": "x" * 150},
                destinations=["local"],
                now=clock.now(),
                station_id="cli",
                cap=cap,
            )
        rows, _ = store.next_batch(session, "local", now=clock.now(), limit=2)
        store.mark_dead(session, [r.delivery_id for r in rows], reason="HTTP 400: no")
    runner = CliRunner()
    result = runner.invoke(app, ["outbox", "status", "-c", str(station_file), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    local = report["destinations"]["local"]
    assert local["dropped"] > 0 and local["dead"] == 2
    assert local["pending"] + local["dead"] + local["dropped"] == 16
    assert report["pending_bytes"] <= 3000 and report["max_bytes"] == 3000
    with db.session() as session:
        dropped = store.list_deliveries(session, state="dropped", limit=100)
    assert {m.kind for _, m in dropped} == {"recording", "detection"}  # never an event
    assert sum(m.kind == "recording" for _, m in dropped) == 4  # lowest priority went first

    table = runner.invoke(app, ["outbox", "status", "-c", str(station_file)])
    assert table.exit_code == 0 and "local" in table.stdout and "when full" in table.stdout
    listed = runner.invoke(app, ["outbox", "list", "-c", str(station_file), "--state", "dead"])
    assert listed.exit_code == 0 and "HTTP 400: no" in listed.stdout
    bad = runner.invoke(app, ["outbox", "list", "-c", str(station_file), "--state", "lost"])
    assert bad.exit_code == 2

    retried = runner.invoke(app, ["outbox", "retry", "-c", str(station_file)])
    assert retried.exit_code == 0 and "2 dead letters moved back" in retried.stdout
    with db.session() as session:
        rows, _ = store.next_batch(session, "local", now=datetime.now(UTC), limit=1)
        assert store.mark_dead(session, [r.delivery_id for r in rows], reason="again") == 1
    purged = runner.invoke(app, ["outbox", "purge-dead", "-c", str(station_file), "--yes"])
    assert purged.exit_code == 0 and "1 dead letter deleted" in purged.stdout
    with db.session() as session:
        assert store.status(session).counts["local"]["dead"] == 0


def test_missing_database_is_a_clear_error(app: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text(
        f'[station]\nid = "x"\nlatitude = 0\nlongitude = 0\ntimezone = "UTC"\n'
        f'home = "{tmp_path / "nohome"}"\n'
    )
    result = CliRunner().invoke(app, ["outbox", "status", "-c", str(path)])
    assert result.exit_code == 2
    assert "no station database" in result.output


def test_status_shows_dead_letter_reasons_with_counts(
    app: typer.Typer,
    station_file: Path,
    db: Database,
    clock: VirtualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outbox_cmd.console, "width", 200)
    with db.session() as session:
        for _ in range(6):
            store.enqueue(
                session, kind="event", body={}, destinations=["local"], now=clock.now(),
                station_id="cli",
            )  # fmt: skip
        rows, _ = store.next_batch(session, "local", now=clock.now(), limit=6)
        ids = [r.delivery_id for r in rows]
        store.mark_dead(session, ids[:3], reason="HTTP 400: field 'n' must be below 10")
        store.mark_dead(session, ids[3:4], reason="expired: older than max_age (3600 s)")
    runner = CliRunner()
    result = runner.invoke(app, ["outbox", "status", "-c", str(station_file), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dead_reasons"] == [
        {"destination": "local", "reason": "HTTP 400: field 'n' must be below 10", "count": 3},
        {"destination": "local", "reason": "expired: older than max_age (3600 s)", "count": 1},
    ]
    table = runner.invoke(app, ["outbox", "status", "-c", str(station_file)])
    assert table.exit_code == 0, table.output
    text = table.stdout
    assert "dead letters: top 2 reasons" in text
    lines = [line for line in text.splitlines() if "HTTP 400" in line or "expired:" in line]
    assert len(lines) == 2 and "3" in lines[0].split("HTTP 400")[0]
    assert "expired: older than max_age" in lines[1] and " 1 " in lines[1]


def test_status_names_a_stuck_output_until_a_new_loop_starts(
    app: typer.Typer,
    station_file: Path,
    db: Database,
    home: StationHome,
    clock: VirtualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An ``output_stuck`` event without a later ``output_moving`` shows in ``status`` (table
    and JSON); a new delivery loop (after the station's restart) ends the episode."""
    monkeypatch.setattr(outbox_cmd.console, "width", 200)
    with db.session() as session:
        record_event(
            session, kind="output_stuck", source="outbox", message="output 'local' is stuck",
            now=datetime.now(UTC), station_id="cli", destinations=["local"], severity="error",
            data={"destination": "local", "busy_s": 61.0, "limit_s": 60.0},
        )  # fmt: skip
    runner = CliRunner()
    report = runner.invoke(app, ["outbox", "status", "-c", str(station_file), "--json"])
    assert report.exit_code == 0, report.output
    assert list(json.loads(report.stdout)["stuck"]) == ["local"]
    table = runner.invoke(app, ["outbox", "status", "-c", str(station_file)])
    assert table.exit_code == 0 and "output 'local' is stuck" in table.stdout

    stop = threading.Event()
    stop.set()  # a loop that starts and stops at once still ends the episode
    # stuck_after: on an autojump VirtualClock a busy machine could make this loop look stuck
    DeliveryLoop(load_config(station_file), db, clock, home, stuck_after=math.inf).run(stop)
    report = runner.invoke(app, ["outbox", "status", "-c", str(station_file), "--json"])
    assert json.loads(report.stdout)["stuck"] == {}
    table = runner.invoke(app, ["outbox", "status", "-c", str(station_file)])
    assert "is stuck" not in table.stdout
