"""HTTP outputs with ``commands_url``: the commands job polls a real local endpoint (an
``http.server`` in a thread) with the output's bearer token and hands what it gets to the
inbox; the station config's ``[commands]`` section."""

from __future__ import annotations

import json
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from sqlalchemy import select

from fieldstation.clock import VirtualClock
from fieldstation.commands.executor import CommandExecutor
from fieldstation.commands.inbox import CommandInbox
from fieldstation.commands.job import CommandsJob
from fieldstation.config import ConfigError, parse_config, template_text
from fieldstation.home import StationHome
from fieldstation.messages import CommandResultBody, parse_message
from fieldstation.messages.commands import generate_private_key, public_key_text, sign_command
from fieldstation.outbox.http import CommandPollError, HttpOutputConfig, poll_commands
from fieldstation.store import open_database
from fieldstation.store.models import Message

HUB_KEY = generate_private_key()
TOKEN = "s3cret-token"


class Hub:
    """A command endpoint: GET /commands?station=ID with the right bearer token answers
    ``{"commands": [...]}`` (the queue for that station); anything else 401/404."""

    def __init__(self) -> None:
        self.queued: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, str | None]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                url = urlparse(self.path)
                station = parse_qs(url.query).get("station", [""])[0]
                hub.requests.append((station, self.headers.get("Authorization")))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._answer(401, {"error": "unauthorized"})
                elif url.path != "/commands":
                    self._answer(404, {"error": "not found"})
                else:
                    self._answer(200, {"commands": hub.queued.get(station, [])})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def hub() -> Iterator[Hub]:
    server = Hub()
    yield server
    server.close()


def station_data(home: StationHome, url: str, **commands: Any) -> dict[str, Any]:
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home.root)
    data["outputs"].append(
        {
            "name": "hub",
            "kind": "http",
            "url": f"{url}/ingest",
            "token": "env:TEST_HUB_TOKEN",
            "commands_url": f"{url}/commands",
        }
    )
    data["commands"] = {"enabled": True, "hub_keys": {"hub": public_key_text(HUB_KEY)}, **commands}
    return data


def test_the_commands_job_polls_the_hub_and_runs_what_it_gets(
    hub: Hub, home: StationHome, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_HUB_TOKEN", TOKEN)
    config = parse_config(station_data(home, hub.url, poll_interval="30s"))
    output = next(o for o in config.outputs if o.name == "hub")
    assert isinstance(output, HttpOutputConfig)
    db = open_database(home.database)
    try:
        inbox = CommandInbox(
            db,
            station_id="default",
            hub_keys=config.commands.hub_keys,
            clock=clock,
            answer_to=config.destinations_for("command_result"),
            events_to=config.destinations_for("event"),
        )
        executor = CommandExecutor(db, _Station(config), clock)
        job = CommandsJob(
            inbox,
            executor,
            clock,
            pollers={"hub": lambda: poll_commands(output, station_id="default")},
            poll_interval=config.commands.poll_interval,
        )
        ping = sign_command(
            HUB_KEY,
            key_id="hub",
            station="default",
            command="ping",
            args={},
            issued_at=clock.now(),
            ttl=3600,
        )
        hub.queued["default"] = [ping.wire()]
        hub.queued["other"] = [{"not": "ours"}]
        assert job.poll_due() == 1
        assert hub.requests == [("default", f"Bearer {TOKEN}")]
        assert job.poll_due() == 0  # not due again before poll_interval
        clock.advance(30)
        assert job.poll_due() == 1  # the hub still lists it (not yet accepted there): a replay
        executor.run_pending()
        with db.session() as session:
            payloads = session.scalars(
                select(Message.payload).where(Message.kind == "command_result")
            ).all()
        bodies = [parse_message(p.encode()).body for p in payloads]
        assert all(isinstance(b, CommandResultBody) for b in bodies)
        states = [(b.state, b.details.get("replay")) for b in bodies]  # type: ignore[union-attr]
        assert states == [("accepted", None), ("refused", True), ("done", None)]
    finally:
        db.dispose()


def test_poll_failures_say_why(
    hub: Hub, home: StationHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_HUB_TOKEN", "wrong")
    output = parse_config(station_data(home, hub.url)).outputs[-1]
    assert isinstance(output, HttpOutputConfig)
    with pytest.raises(CommandPollError, match="HTTP 401"):
        poll_commands(output, station_id="default")
    closed = output.model_copy(update={"commands_url": "http://127.0.0.1:9/commands"})
    with pytest.raises(CommandPollError, match="127.0.0.1:9"):
        poll_commands(closed, station_id="default")


def test_commands_config_is_checked(home: StationHome) -> None:
    data = station_data(home, "http://127.0.0.1:1")
    data["commands"]["hub_keys"] = {"hub": "ed25519:bm90IGEga2V5"}
    with pytest.raises(ConfigError, match="hub_keys.hub: not an Ed25519 public key"):
        parse_config(data)
    data["commands"] = {"enabled": True}
    with pytest.raises(ConfigError, match="needs commands.hub_keys"):
        parse_config(data)
    data["commands"] = {}
    assert not parse_config(data).commands.enabled  # off by default


class _Station:
    def __init__(self, config: Any) -> None:
        self.config = config
        self.config_hash = "h" * 64
        self.started_at = 0.0

    def start_job(self, name: str) -> dict[str, Any]:
        raise AssertionError(name)

    stop_job = restart_job = start_job
