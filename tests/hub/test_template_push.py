"""A config template pushed to 3 real stations (``fieldstation run`` each, real Mosquitto,
real ``hub run`` on PostgreSQL) is in force on all 3: each answers ``done`` with its config
hash in force, and the heartbeats report that hash. Needs the station's remote configuration
(``fieldstation.commands.config_apply``); skipped on a tree without it."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from sqlalchemy import select

from fieldstation.hub.db import open_hub_database
from fieldstation.hub.models import HubCommand, Station
from fieldstation.testing.broker import MosquittoBroker

from .test_mqtt_ingest import wait_until

pytest.importorskip("fieldstation.commands.config_apply", reason="the station's remote config")

STATIONS = ("hedge-01", "hedge-02", "hedge-03")


@pytest.mark.slow
def test_a_template_pushed_to_three_stations_is_in_force_on_all_three(
    tmp_path: Path, broker: MosquittoBroker, postgres_url: str, fleet_tools: Any
) -> None:
    config = fleet_tools.commands_hub_file(tmp_path, postgres_url, broker)
    hub = fleet_tools.hub_cli(config)
    line = hub("keygen")
    files = {}
    for name in STATIONS:
        path = fleet_tools.station_file(tmp_path / name, name, broker, hub_key=line)
        files[name] = tomllib.loads(path.read_text())
    # the template: the same file with the detector's band changed (one job restarts)
    template = dict(files[STATIONS[0]])
    template["processors"] = [dict(template["processors"][0], high="6kHz")]
    (tmp_path / "hedge.toml").write_text(tomli_w.dumps(template))
    hub("template", "set", "hedge", str(tmp_path / "hedge.toml"))
    for name in STATIONS:
        hub("template", "member", "hedge", name, f"station.home={files[name]['station']['home']}")
    db = open_hub_database(postgres_url)
    hub_process = fleet_tools.Process("hub", "run", str(config))
    stations = []
    try:
        hub_process.wait_for("mqtt ingest subscribed")
        for name in STATIONS:
            stations.append(fleet_tools.Process("run", str(tmp_path / name / "station.toml")))

        def hashes() -> dict[str, str | None]:
            with db.session() as session:
                return dict(session.execute(select(Station.id, Station.config_hash)).all())

        before = wait_until(
            lambda: (h := hashes()) and all(h.get(n) for n in STATIONS) and h, 120, "heartbeats"
        )
        assert len(set(before.values())) == 3  # each file differs (id, home)
        queued = dict(row.split() for row in hub("template", "push", "hedge").splitlines())
        pushed_at = time.monotonic()

        def commands() -> dict[str, HubCommand]:
            with db.session() as session:
                rows = session.scalars(select(HubCommand).where(HubCommand.id.in_(queued.values())))
                return {r.station: r for r in rows}

        done = wait_until(
            lambda: (
                (c := commands()) and all(r.state in ("done", "refused") for r in c.values()) and c
            ),
            120,
            "3 answers",
        )
        assert {n: r.state for n, r in done.items()} == dict.fromkeys(STATIONS, "done"), {
            n: r.reason for n, r in done.items()
        }
        for name, row in done.items():
            assert row.config_hash and row.config_hash != before[name]
        # the heartbeats report the new hash (in force)
        wait_until(
            lambda: all(hashes()[n] == done[n].config_hash for n in STATIONS), 60, "heartbeats"
        )
        print(f"in force on 3 stations {time.monotonic() - pushed_at:.1f} s after the push")
    finally:
        for process in stations:
            process.stop()
        db.dispose()
        assert hub_process.stop() == 0, "".join(hub_process.lines[-30:])
