"""Fleet commands on the hub (real fleet database on SQLite and PostgreSQL, real Mosquitto):
``hub keygen`` / ``hub command`` sign and queue, the publisher delivers only to an online
station and again until accepted, expires old ones; ``command_result`` answers (MQTT and HTTP
ingest) move a command forward only; ``GET /commands`` needs the station's token."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from fieldstation.clock import VirtualClock
from fieldstation.hub.commands import (
    CommandSigner,
    keygen,
    list_commands,
    queue_command,
    set_config_args,
)
from fieldstation.hub.config import HubCommandsConfig, MqttIngestConfig
from fieldstation.hub.db import HubDatabase, open_hub_database
from fieldstation.hub.http import create_app
from fieldstation.hub.models import HubCommand
from fieldstation.hub.publisher import CommandPublisher
from fieldstation.hub.store import Incoming, set_station_status, store_batch
from fieldstation.hub.tokens import add_token
from fieldstation.messages import build_envelope
from fieldstation.messages.commands import (
    CommandRefusedError,
    generate_private_key,
    load_public_key,
    public_key_text,
    verify_command,
)
from fieldstation.testing.broker import MosquittoBroker

from .test_mqtt_ingest import wait_until

CLI = [sys.executable, "-m", "fieldstation.cli"]
T0 = datetime(2026, 6, 1, 4, 0, tzinfo=UTC)


@pytest.fixture
def db(hub_url: str) -> Iterator[HubDatabase]:
    database = open_hub_database(hub_url)
    yield database
    database.dispose()


def result(station: str, command_id: str, state: str, at: datetime, **extra: Any) -> bytes:
    """A station's ``command_result`` envelope (a new message id each time, as a station
    that answers again would send)."""
    body = {"command_id": command_id, "command": "ping", "state": state, "at": at.isoformat()}
    return build_envelope(
        kind="command_result",
        station=station,
        body={**body, **extra},
        created_at=at,
        message_id=str(uuid.uuid4()),
    ).to_json()


def state_of(db: HubDatabase, command_id: str) -> HubCommand:
    with db.session() as session:
        row = session.get(HubCommand, command_id)
        assert row is not None
        return row


def test_hub_command_is_signed_with_the_key_hub_keygen_printed(tmp_path: Path) -> None:
    """The CLI in-process (typer's runner); ``hub run`` as a real process is below."""
    from typer.testing import CliRunner

    from fieldstation.cli.app import app

    def run(*args: str) -> Any:
        return CliRunner().invoke(app, ["hub", *args])

    config = tmp_path / "hub.toml"
    config.write_text(f'home = "{tmp_path / "home"}"\n[commands]\nkey_id = "hub-2026"\n')
    made = subprocess.run(  # a real process, as an operator runs it
        [*CLI, "hub", "keygen", "-c", str(config)], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    line = made.stdout.strip()
    assert line.startswith("ed25519:") and 'hub-2026 = "ed25519:' in made.stderr
    assert (tmp_path / "home" / "command-key.pem").stat().st_mode & 0o077 == 0
    again = run("keygen", "-c", str(config))
    assert again.stdout.strip() == line and "kept the existing" in again.stderr
    queued = run("command", "hedge-07", "restart", "job=processor:birds", "-c", str(config))
    assert queued.exit_code == 0, queued.output
    command_id = queued.stdout.strip()
    db = open_hub_database(f"sqlite:///{tmp_path / 'home' / 'hub.db'}")
    try:
        row = state_of(db, command_id)
        assert row.state == "queued" and row.created_by.startswith("cli:")
        command = verify_command(
            row.wire,
            public_keys={"hub-2026": load_public_key(line)},
            station_id="hedge-07",
            now=row.created_at + timedelta(seconds=1),
        )
        assert command.id == command_id and command.args == {"job": "processor:birds"}
        # another key does not verify it; another station refuses it
        with pytest.raises(CommandRefusedError, match="bad signature"):
            verify_command(
                row.wire,
                public_keys={"hub-2026": generate_private_key().public_key()},
                station_id="hedge-07",
                now=row.created_at,
            )
        with pytest.raises(CommandRefusedError, match="addressed to station"):
            verify_command(
                row.wire,
                public_keys={"hub-2026": load_public_key(line)},
                station_id="hedge-08",
                now=row.created_at,
            )
    finally:
        db.dispose()
    # bad input: an unknown command, arguments its model refuses, a secret in clear
    for args, needle in (
        (["frobnicate"], "unknown command"),
        (["pin", "recording_id=zero"], "recording_id"),
        (["restart", "job"], "KEY=VALUE"),
    ):
        refused = run("command", "hedge-07", *args, "-c", str(config))
        assert refused.exit_code == 2 and needle in refused.stderr, refused.output
    station_file = tmp_path / "station.toml"
    station_file.write_text('[[outputs]]\nname = "hub"\nkind = "mqtt"\npassword = "hunter2"\n')
    refused = run("command", "hedge-07", "set_config", "-f", str(station_file), "-c", str(config))
    assert refused.exit_code == 2 and "outputs[0].password" in refused.stderr
    listed = run("commands", "hedge-07", "-c", str(config))
    assert command_id in listed.stdout and "restart  queued" in listed.stdout


def test_set_config_args_carry_the_hash_and_refuse_secrets_in_clear() -> None:
    text = '[station]\nid = "a"\n[[outputs]]\nname = "h"\ntoken = "env:HUB_TOKEN"\n'
    args = set_config_args(text)
    import hashlib

    assert args["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    with pytest.raises(ValueError, match="not valid TOML"):
        set_config_args("[station\n")
    with pytest.raises(ValueError, match=r"alerts\.secret_urls"):
        set_config_args('[alerts]\nsecret_urls = ["env:A", "mailto://me:pw@x"]\n')


def signer(ttl: float = 3600.0) -> CommandSigner:
    return CommandSigner(generate_private_key(), "hub", ttl)


def test_answers_move_a_command_forward_only(db: HubDatabase) -> None:
    key = signer()
    first = queue_command(db, key, "st-1", "ping", {}, now=T0, created_by="otto")
    second = queue_command(db, key, "st-1", "ping", {}, now=T0, created_by="otto")

    def ingest(*payloads: bytes) -> None:
        stored = store_batch(db, [Incoming(p, "test") for p in payloads], via="test", now=T0)
        assert stored.dead == 0, stored.reasons

    ingest(result("st-1", first, "accepted", T0))
    assert state_of(db, first).state == "accepted"
    ingest(result("st-1", first, "done", T0, details={"uptime": 5.0}, config_hash_in_force="c1"))
    # the station answers "accepted" again (redelivered after an outage): still done
    ingest(result("st-1", first, "accepted", T0))
    row = state_of(db, first)
    assert (row.state, row.details, row.config_hash) == ("done", {"uptime": 5.0}, "c1")
    # a second copy refused as a replay (the station holds it) counts as accepted, never as
    # the command's refusal; after done it changes nothing
    replayed = queue_command(db, key, "st-1", "ping", {}, now=T0, created_by="otto")
    replay = {"reason": "already received at ...", "details": {"replay": True, "state": "done"}}
    ingest(result("st-1", replayed, "refused", T0, **replay))
    assert (state_of(db, replayed).state, state_of(db, replayed).reason) == ("accepted", None)
    ingest(result("st-1", replayed, "done", T0), result("st-1", replayed, "refused", T0, **replay))
    assert (state_of(db, replayed).state, state_of(db, replayed).reason) == ("done", None)
    # done then accepted in one batch: done stays; a refused after done changes nothing
    ingest(result("st-1", second, "done", T0), result("st-1", second, "accepted", T0))
    ingest(result("st-1", second, "refused", T0, reason="late"))
    assert state_of(db, second).state == "done" and state_of(db, second).reason is None
    # another station cannot answer for st-1's command
    third = queue_command(db, key, "st-1", "ping", {}, now=T0, created_by="otto")
    ingest(result("st-2", third, "refused", T0, reason="forged"))
    assert state_of(db, third).state == "queued"
    # a refusal without "accepted" (bad signature, expired) is final, with its reason
    ingest(result("st-1", third, "refused", T0, reason="expired at ..."))
    ingest(result("st-1", third, "accepted", T0))
    assert (state_of(db, third).state, state_of(db, third).reason) == ("refused", "expired at ...")
    assert [c["id"] for c in list_commands(db, "st-1")][0] in {first, second, third}


def test_a_refusal_of_a_forged_copy_does_not_end_the_genuine_command(db: HubDatabase) -> None:
    """A station refuses what it cannot verify and answers with the id the message claims; the
    hub ends its own command only when the refused message was the very one it sent (same
    digest), not a forged copy carrying its id."""
    import json

    from sqlalchemy import select

    from fieldstation.hub.models import HubCommand
    from fieldstation.messages.commands import command_digest

    key = signer()
    genuine = queue_command(db, key, "st-1", "ping", {}, now=T0, created_by="otto")
    with db.session() as session:
        wire = json.loads(session.scalar(select(HubCommand.wire).where(HubCommand.id == genuine)))
    forged = {**wire, "command": "restart", "args": {"job": "outbox"}}

    def ingest(payload: bytes) -> None:
        stored = store_batch(db, [Incoming(payload, "test")], via="test", now=T0)
        assert stored.dead == 0, stored.reasons

    details = {"stage": "verify", "digest": command_digest(forged)}
    ingest(result("st-1", genuine, "refused", T0, reason="bad signature", details=details))
    assert state_of(db, genuine).state == "queued"
    details = {"stage": "verify", "digest": command_digest(wire)}
    ingest(result("st-1", genuine, "refused", T0, reason="unknown key_id", details=details))
    assert (state_of(db, genuine).state, state_of(db, genuine).reason) == (
        "refused",
        "unknown key_id",
    )


def test_get_commands_needs_the_station_token_and_http_answers_count(db: HubDatabase) -> None:
    from starlette.testclient import TestClient

    clock = VirtualClock(T0)
    client = TestClient(create_app(db, clock=clock))
    key = signer(ttl=600)
    token = add_token(db, "st-1")
    other = add_token(db, "st-2")
    command_id = queue_command(db, key, "st-1", "ping", {}, now=T0, created_by="otto")
    assert client.get("/commands?station=st-1").status_code == 401
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get("/commands?station=st-1", headers={"Authorization": "Bearer x"}).status_code
    assert (
        client.get(
            "/commands?station=st-1", headers={"Authorization": f"Bearer {other}"}
        ).status_code
        == 401
    )
    assert client.get("/commands", headers=bearer).status_code == 400
    got = client.get("/commands?station=st-1", headers=bearer)
    assert got.status_code == 200
    (wire,) = got.json()["commands"]
    verify_command(
        json.dumps(wire), public_keys={"hub": key.key.public_key()}, station_id="st-1", now=T0
    )
    assert state_of(db, command_id).state == "delivered"
    # not accepted yet: the next poll gets it again (the station keeps ids)
    assert [
        c["id"] for c in client.get("/commands?station=st-1", headers=bearer).json()["commands"]
    ] == [command_id]
    # the station's HTTP output posts its answer; the command is no longer pending
    posted = client.post(
        "/ingest",
        headers=bearer,
        json={
            "station": "st-1",
            "messages": [json.loads(result("st-1", command_id, "accepted", T0))],
        },
    )
    assert posted.json() == {"stored": 1, "duplicates": 0, "dead": 0}
    assert state_of(db, command_id).state == "accepted"
    assert client.get("/commands?station=st-1", headers=bearer).json() == {"commands": []}
    # an expired command is not handed out
    queue_command(db, key, "st-1", "ping", {}, now=T0, created_by="otto")
    clock.advance(601)
    assert client.get("/commands?station=st-1", headers=bearer).json() == {"commands": []}


class FakeStation:
    """A paho MQTT 5 client subscribed to a station's ``cmd`` topic; ``received`` gets the
    payloads."""

    def __init__(self, broker: MosquittoBroker, station: str) -> None:
        import paho.mqtt.client as mqtt

        self.received: queue.Queue[bytes] = queue.Queue()
        subscribed: queue.Queue[Any] = queue.Queue()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"fake-{station}", protocol=mqtt.MQTTv5
        )
        self.client.on_message = lambda c, u, m: self.received.put(m.payload)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(
            f"fieldstation/{station}/cmd", qos=1
        )
        self.client.on_subscribe = lambda c, u, m, codes, p: subscribed.put(codes)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert not subscribed.get(timeout=30)[0].is_failure

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_the_publisher_waits_for_online_republishes_until_accepted_and_expires(
    db: HubDatabase, broker: MosquittoBroker
) -> None:
    clock = VirtualClock(T0)
    config = HubCommandsConfig(republish_after=60.0)
    publisher = CommandPublisher(
        MqttIngestConfig(host=broker.host, port=broker.port, client_id="hub-test"),
        config,
        db,
        clock,
    )
    station = FakeStation(broker, "st-1")
    key = signer(ttl=3600.0)
    try:
        publisher.start()
        assert publisher.ready.wait(30)
        command_id = queue_command(db, key, "st-1", "ping", {}, now=clock.now(), created_by="t")
        # unknown, then offline: it waits
        assert publisher.tick() == []
        set_station_status(db, "st-1", False, now=clock.now())
        clock.advance(600)
        assert publisher.tick() == []
        assert state_of(db, command_id).state == "queued"
        # online: published, the exact signed bytes
        set_station_status(db, "st-1", True, now=clock.now())
        assert publisher.tick() == [command_id]
        wire = station.received.get(timeout=30)
        assert wire.decode() == state_of(db, command_id).wire
        verify_command(
            wire, public_keys={"hub": key.key.public_key()}, station_id="st-1", now=clock.now()
        )
        assert (state_of(db, command_id).state, state_of(db, command_id).deliveries) == (
            "delivered",
            1,
        )
        # not again before republish_after; then again, the same bytes
        clock.advance(30)
        assert publisher.tick() == []
        clock.advance(31)
        assert publisher.tick() == [command_id]
        assert station.received.get(timeout=30) == wire
        # accepted: never again
        stored = store_batch(
            db, [Incoming(result("st-1", command_id, "accepted", clock.now()), "t")], via="t"
        )
        assert stored.stored == 1
        clock.advance(3000)
        assert publisher.tick() == []
        # a command whose station stays away expires, and is never published
        late = queue_command(db, key, "st-2", "ping", {}, now=clock.now(), created_by="t")
        clock.advance(3601)
        set_station_status(db, "st-2", True, now=clock.now())
        assert publisher.tick() == []
        assert state_of(db, late).state == "expired"
        assert state_of(db, command_id).state == "accepted"
        assert publisher.published == 2
    finally:
        station.close()
        publisher.close()


def test_keygen_keeps_an_existing_key(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    key, made = keygen(path)
    again, made_again = keygen(path)
    assert made and not made_again and public_key_text(key) == public_key_text(again)
    with pytest.raises(FileNotFoundError, match="hub keygen"):
        CommandSigner.load(tmp_path / "absent.pem")


@pytest.mark.slow
def test_a_running_hub_delivers_over_mqtt_and_ingests_the_answers(
    tmp_path: Path, broker: MosquittoBroker, postgres_url: str, fleet_tools: Any
) -> None:
    """``hub run`` (real process, PostgreSQL): a command queued with ``hub command`` while
    the station is away is published when its status says online; its answers, sent as a
    station sends them (``{prefix}/{station}/command_result``), move it to done."""
    import paho.mqtt.client as mqtt

    config = fleet_tools.commands_hub_file(tmp_path, postgres_url, broker)
    hub_cli = fleet_tools.hub_cli(config)
    hub_cli("keygen")
    command_id = hub_cli("command", "hedge-07", "ping")
    hub = fleet_tools.Process("hub", "run", str(config))
    station = FakeStation(broker, "hedge-07")
    db = open_hub_database(postgres_url)
    try:
        hub.wait_for("mqtt ingest subscribed")
        publisher = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="hedge-07-out", protocol=mqtt.MQTTv5
        )
        publisher.connect(broker.host, broker.port)
        publisher.loop_start()
        publisher.publish("fieldstation/hedge-07/status", b"online", qos=1, retain=True)
        wire = station.received.get(timeout=60)
        assert json.loads(wire)["id"] == command_id
        now = datetime.now(UTC)
        for state in ("accepted", "done", "accepted"):
            publisher.publish(
                "fieldstation/hedge-07/command_result",
                result("hedge-07", command_id, state, now, config_hash_in_force="h1"),
                qos=1,
            ).wait_for_publish(30)
        # a last message after them: once it is stored, the three answers were too
        marker = build_envelope(
            kind="event",
            station="hedge-07",
            body={
                "event": "marker",
                "severity": "info",
                "source": "test",
                "message": "m",
                "event_id": 1,
            },
            created_at=now,
            message_id="marker-1",
        ).to_json()
        publisher.publish("fieldstation/hedge-07/event", marker, qos=1).wait_for_publish(30)
        from fieldstation.hub.models import Event

        def marker_stored() -> bool:
            with db.session() as session:
                return (
                    session.scalars(select(Event.id).where(Event.event == "marker")).first()
                    is not None
                )

        wait_until(marker_stored, 60, "the marker event stored")
        row = state_of(db, command_id)
        assert (row.state, row.config_hash) == ("done", "h1")
        publisher.loop_stop()
        publisher.disconnect()
    finally:
        station.close()
        db.dispose()
        assert hub.stop() == 0, "".join(hub.lines[-30:])


def csrf_of(html: str) -> str:
    import re

    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def test_the_station_page_lists_commands_and_only_operators_queue_them(db: HubDatabase) -> None:
    from starlette.testclient import TestClient

    from fieldstation.hub.alerts import AlertRules
    from fieldstation.hub.users import add_user
    from fieldstation.hub.web import Dashboard

    password = "correct horse battery"
    add_user(db, "vera", password, "viewer")
    add_user(db, "otto", password, "operator")
    set_station_status(db, "st-1", True, now=T0)
    key = signer()
    clock = VirtualClock(T0)

    def logged_in(name: str) -> Any:
        client = TestClient(
            create_app(
                db,
                dashboard=Dashboard(secret="s" * 40, rules=AlertRules(), clock=clock, signer=key),
            ),
            follow_redirects=False,
        )
        form = client.get("/login")
        client.post(
            "/login",
            data={"name": name, "password": password, "csrf": csrf_of(form.text), "next": "/"},
        )
        return client

    done = queue_command(
        db, key, "st-1", "restart", {"job": "recorder:mic"}, now=T0, created_by="cli:ops"
    )
    store_batch(
        db,
        [Incoming(result("st-1", done, "refused", T0, reason="no job 'recorder:mic'"), "t")],
        via="t",
        now=T0,
    )
    viewer = logged_in("vera")
    page = viewer.get("/stations/st-1")
    assert page.status_code == 200 and f'data-command="{done}"' in page.text
    assert "refused" in page.text and "no job &#39;recorder:mic&#39;" in page.text
    assert 'id="queue-command"' not in page.text
    forbidden = viewer.post(
        "/stations/st-1/commands", data={"csrf": csrf_of(page.text), "command": "ping"}
    )
    assert forbidden.status_code == 403
    # the JSON the page polls carries the commands' states
    assert viewer.get("/api/stations/st-1").json()["commands"][0]["state"] == "refused"
    operator = logged_in("otto")
    page = operator.get("/stations/st-1")
    assert 'id="queue-command"' in page.text
    refused = operator.post("/stations/st-1/commands", data={"csrf": "forged", "command": "ping"})
    assert refused.status_code == 403
    queued = operator.post(
        "/stations/st-1/commands", data={"csrf": csrf_of(page.text), "command": "ping"}
    )
    assert queued.status_code == 303 and queued.headers["location"] == "/stations/st-1#commands"
    (ping,) = [c for c in list_commands(db, "st-1") if c["command"] == "ping"]
    assert (ping["state"], ping["created_by"]) == ("queued", "otto")
    # bad input comes back on the page, nothing queued
    bad = operator.post(
        "/stations/st-1/commands",
        data={"csrf": csrf_of(page.text), "command": "set_config", "config": 'password = "x"\n'},
    )
    assert bad.status_code == 303 and "error=" in bad.headers["location"]
    shown = operator.get(bad.headers["location"])
    assert "secret in clear" in shown.text
    assert len(list_commands(db, "st-1")) == 2
    # the fleet page counts each station's pending and (recently) failed commands
    (row,) = operator.get("/api/fleet").json()["stations"]
    assert (row["commands_pending"], row["commands_failed"]) == (1, 1)
    assert "1 pending · " in operator.get("/").text
    clock.advance(86401)
    (row,) = operator.get("/api/fleet").json()["stations"]
    assert (row["commands_pending"], row["commands_failed"]) == (1, 0)


TEMPLATE = """# the hedgerow stations
[station]
id = "placeholder"
name = "hedgerow"

[[outputs]]
name = "hub"
kind = "mqtt"
host = "broker.example.org"
password = "env:MQTT_PASSWORD"
"""


def test_a_template_is_pushed_to_its_members_with_their_overrides(db: HubDatabase) -> None:
    import hashlib
    import tomllib

    from fieldstation.hub.templates import TemplateError, push_template, set_member, set_template

    key = signer()
    with pytest.raises(TemplateError, match="secret in clear"):
        set_template(db, "hedge", TEMPLATE.replace("env:MQTT_PASSWORD", "hunter2"), now=T0, by="t")
    set_template(db, "hedge", TEMPLATE, now=T0, by="t")
    set_member(db, "hedge", "hedge-01", {"station.latitude": 51.5}, now=T0)
    set_member(
        db,
        "hedge",
        "hedge-02",
        {"station.latitude": 52.25, "outputs.0.password": "file:/etc/fs/mqtt"},
        now=T0,
    )
    for bad, needle in (
        ({"outputs.0.password": "plain"}, "secret in clear"),
        ({"outputs.5.host": "x"}, "not an item"),
        ({"station.name.first": "x"}, "is a value"),
    ):
        with pytest.raises(TemplateError, match=needle):
            set_member(db, "hedge", "hedge-03", bad, now=T0)
    with pytest.raises(TemplateError, match="no member hedge-09"):
        push_template(db, key, "hedge", now=T0, by="t", stations=["hedge-09"])
    queued = push_template(db, key, "hedge", now=T0, by="otto")
    assert sorted(queued) == ["hedge-01", "hedge-02"]
    for station, latitude, password in (
        ("hedge-01", 51.5, "env:MQTT_PASSWORD"),
        ("hedge-02", 52.25, "file:/etc/fs/mqtt"),
    ):
        command = verify_command(
            state_of(db, queued[station]).wire,
            public_keys={"hub": key.key.public_key()},
            station_id=station,
            now=T0,
        )
        text = command.args["config"]
        assert command.args["sha256"] == hashlib.sha256(text.encode()).hexdigest()
        data = tomllib.loads(text)
        assert data["station"] == {"id": station, "name": "hedgerow", "latitude": latitude}
        assert data["outputs"][0]["password"] == password
    # the list shows the file's hash and size, not the file
    listed = {c["id"]: c for c in list_commands(db)}
    assert set(listed[queued["hedge-01"]]["args"]) == {"sha256", "bytes"}


def test_hub_template_commands(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fieldstation.cli.app import app

    def run(*args: str) -> Any:
        result = CliRunner().invoke(app, ["hub", *args, "-c", str(config)])
        return result

    config = tmp_path / "hub.toml"
    config.write_text(f'home = "{tmp_path / "home"}"\n')
    (tmp_path / "hedge.toml").write_text(TEMPLATE)
    assert run("keygen").exit_code == 0
    assert run("template", "set", "hedge", str(tmp_path / "hedge.toml")).exit_code == 0
    assert run("template", "member", "hedge", "hedge-01", "station.latitude=51.5").exit_code == 0
    refused = run("template", "member", "hedge", "hedge-02", "outputs.0.password=plain")
    assert refused.exit_code == 2 and "secret in clear" in refused.stderr
    shown = run("template", "show", "hedge", "hedge-01")
    assert 'id = "hedge-01"' in shown.stdout and "latitude = 51.5" in shown.stdout
    pushed = run("template", "push", "hedge")
    assert pushed.exit_code == 0, pushed.output
    station, command_id = pushed.stdout.split()
    assert station == "hedge-01"
    assert f"{command_id}" in run("commands").stdout
    assert run("template", "push", "nothing").exit_code == 2
