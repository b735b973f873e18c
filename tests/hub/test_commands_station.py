"""Fleet commands end to end: a real ``fieldstation hub run`` (PostgreSQL, real Mosquitto)
and a real station (``fieldstation run`` with ``[commands]``): a command queued with ``hub
command`` while the station is stopped is applied when it starts; a job restart is done; the
station's config hash in force reaches the commands table.

Needs the station side of the command channel (``fieldstation.config.commands``); skipped on
a tree without it."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from fieldstation.hub.db import open_hub_database
from fieldstation.hub.models import HubCommand
from fieldstation.testing.broker import MosquittoBroker, free_port

from .test_mqtt_ingest import wait_until

pytest.importorskip("fieldstation.config.commands", reason="the station side of commands")


@pytest.mark.slow
def test_a_real_station_applies_hub_commands_queued_while_it_was_stopped(
    tmp_path: Path, broker: MosquittoBroker, postgres_url: str, fleet_tools: Any
) -> None:
    config = fleet_tools.commands_hub_file(tmp_path, postgres_url, broker)
    hub = fleet_tools.hub_cli(config)
    line = hub("keygen")
    ping = hub("command", "hedge-07", "ping")  # the station is not running yet
    station_toml = fleet_tools.station_file(tmp_path / "hedge-07", "hedge-07", broker, hub_key=line)
    db = open_hub_database(postgres_url)
    hub_process = fleet_tools.Process("hub", "run", str(config))
    station = None

    def row(command_id: str) -> HubCommand:
        with db.session() as session:
            found = session.get(HubCommand, command_id)
            assert found is not None
            return found

    try:
        hub_process.wait_for("mqtt ingest subscribed")
        station = fleet_tools.Process("run", str(station_toml))
        done = wait_until(lambda: row(ping).state == "done" and row(ping), 90, "ping done")
        assert done.config_hash and done.reason is None
        restart = hub("command", "hedge-07", "restart", "job=processor:energy")
        wait_until(lambda: row(restart).state == "done", 60, "restart done")
        assert row(restart).details == {
            "job": "processor:energy",
            "state": row(restart).details["state"],
        }
        bad = hub("command", "hedge-07", "restart", "job=processor:nothing")
        refused = wait_until(lambda: row(bad).state == "refused" and row(bad), 60, "refused")
        assert "nothing" in (refused.reason or "")
    finally:
        if station is not None:
            station.stop()
        db.dispose()
        assert hub_process.stop() == 0, "".join(hub_process.lines[-30:])


@pytest.mark.slow
def test_a_real_http_station_polls_its_commands_and_answers(
    tmp_path: Path, hub_url: str, fleet_tools: Any
) -> None:
    """No broker between them: the station's ``http`` output posts to ``/ingest`` and polls
    ``/commands`` with its token (SQLite and PostgreSQL)."""
    port = free_port()
    config = tmp_path / "hub.toml"
    config.write_text(
        f'home = "{tmp_path / "hub-home"}"\ndatabase = "{hub_url}"\n[http]\nport = {port}\n'
    )
    hub = fleet_tools.hub_cli(config)
    line = hub("keygen")
    token_file = tmp_path / "token"
    token_file.write_text(hub("token", "add", "hedge-08") + "\n")
    token_file.chmod(0o600)
    ping = hub("command", "hedge-08", "ping")
    from types import SimpleNamespace

    no_broker = SimpleNamespace(host="127.0.0.1", port=1)  # its mqtt output is replaced below
    station_toml = fleet_tools.station_file(tmp_path / "hedge-08", "hedge-08", no_broker)
    data = tomllib.loads(station_toml.read_text())
    base = f"http://127.0.0.1:{port}"
    data["outputs"] = [
        {
            "name": "hub",
            "kind": "http",
            "url": base + "/ingest",
            "token": f"file:{token_file}",
            "commands_url": base + "/commands",
        }
    ]
    data["commands"] = {"enabled": True, "hub_keys": {"hub": line}, "poll_interval": "0.5s"}
    station_toml.write_text(tomli_w.dumps(data))
    db = open_hub_database(hub_url)
    hub_process = fleet_tools.Process("hub", "run", str(config))
    station = None
    try:
        hub_process.wait_for("http ingest on")
        station = fleet_tools.Process("run", str(station_toml))

        def state() -> str:
            with db.session() as session:
                found = session.get(HubCommand, ping)
                assert found is not None
                return found.state

        wait_until(lambda: state() == "done", 90, "ping done over HTTP")
    finally:
        if station is not None:
            station.stop()
        db.dispose()
        assert hub_process.stop() == 0, "".join(hub_process.lines[-30:])
