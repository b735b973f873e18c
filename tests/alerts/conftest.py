"""Fixtures of the alert tests: real local endpoints (an HTTP server taking Apprise's JSON
notifications, an SMTP server) and a station with rows written straight into its database."""

from __future__ import annotations

import copy
import json
import threading
import tomllib
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from fieldstation.clock import VirtualClock
from fieldstation.config import StationConfig, parse_config, template_text
from fieldstation.home import StationHome
from fieldstation.store import Database
from fieldstation.store.deployments import start_deployment
from fieldstation.store.models import Event, Reading
from fieldstation.testing import rows


class JsonHook:
    """A real HTTP server on 127.0.0.1 taking Apprise ``json://`` notifications: each POST's
    JSON is appended to :attr:`received` and answered 200. :meth:`stop` closes the port
    (connections are refused); :meth:`start` opens it again on the same port."""

    def __init__(self) -> None:
        self.port = 0
        self.received: list[dict[str, Any]] = []
        self.got = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> JsonHook:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.received.append(data)
                hook.got.set()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"


@pytest.fixture
def hook() -> Iterator[JsonHook]:
    """A started :class:`JsonHook`, stopped after the test."""
    server = JsonHook().start()
    yield server
    server.stop()


def station_config(home: StationHome, **sections: Any) -> StationConfig:
    """The default station in ``home`` (named "Hedge 7") with ``sections`` replaced."""
    data = copy.deepcopy(tomllib.loads(template_text()))
    data["station"]["home"] = str(home.root)
    data["station"]["name"] = "Hedge 7"
    data["station"]["timezone"] = "Europe/London"
    data.update(sections)
    return parse_config(data)


class Stored:
    """Writes detections, events and readings straight into the station database."""

    def __init__(self, db: Database, clock: VirtualClock) -> None:
        self.db = db
        self.clock = clock
        with db.session() as session:
            self.deployment_id = start_deployment(
                session,
                station_id="default",
                config_hash="x" * 64,
                config={},
                version="test",
                now=clock.now(),
            ).id

    def detection(
        self,
        label: str,
        score: float = 0.9,
        at: datetime | None = None,
        sensor: str = "mic",
        thumbnail: str | None = None,
    ) -> int:
        when = at or self.clock.now()
        extra = {"thumbnails": {"motion": thumbnail}} if thumbnail else {}
        with self.db.session() as session:
            rec = rows.add_recording(
                session,
                deployment_id=self.deployment_id,
                started_at=when,
                sensor=sensor,
                extra=extra,
            )
            run = rows.add_model_run(session, rec.id, started_at=when)
            return rows.add_detection(session, run, label=label, score=score, detected_at=when).id

    def event(self, kind: str, severity: str = "error", message: str = "it broke") -> int:
        with self.db.session() as session:
            event = Event(
                created_at=self.clock.now(),
                kind=kind,
                severity=severity,
                source="recorder:mic",
                message=message,
                data={},
            )
            session.add(event)
            session.flush()
            return event.id

    def reading(self, quantity: str, value: float, unit: str = "Cel") -> None:
        with self.db.session() as session:
            session.add(
                Reading(
                    deployment_id=self.deployment_id,
                    sensor="bme",
                    quantity=quantity,
                    unit=unit,
                    measured_at=self.clock.now(),
                    value=value,
                )
            )


@pytest.fixture
def stored(db: Database, clock: VirtualClock) -> Stored:
    return Stored(db, clock)
