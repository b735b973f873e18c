"""HTTP delivery against a real local server answering 500s, a slow response and a 400."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from fieldstation.clock import VirtualClock
from fieldstation.config import StationConfig
from fieldstation.home import StationHome
from fieldstation.outbox.delivery import DeliveryLoop
from fieldstation.store import Database
from fieldstation.store import outbox as store


class Ingest:
    """What the test server saw and how it answers: ``script`` gives the first answers
    ("500", "slow", "503", "429", "503-date": Retry-After as an HTTP-date 7 s on, "301" ...
    "308": a redirect to /v2/ingest); after it, a batch holding ``poison`` gets a 400, others
    a 200."""

    def __init__(self, script: list[str], poison: str | None, slow_s: float) -> None:
        self.script = script
        self.poison = poison
        self.slow_s = slow_s
        self.requests: list[dict[str, Any]] = []
        self.accepted: list[str] = []
        self.gets: list[str] = []
        self.lock = threading.Lock()


def _handler(ingest: Ingest) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            ids = [m["id"] for m in body["messages"]]
            with ingest.lock:
                ingest.requests.append(
                    {
                        "ids": ids,
                        "key": self.headers.get("Idempotency-Key"),
                        "auth": self.headers.get("Authorization"),
                        "station": body["station"],
                        "path": self.path,
                    }
                )
                action = ingest.script.pop(0) if ingest.script else None
            if action in ("301", "302", "303", "307", "308"):
                self._answer(int(action), {"moved": True}, {"Location": "/v2/ingest"})
            elif action == "503-date":
                self._answer_at(503, {"error": "maintenance"}, retry_in=7)
            elif action == "slow":
                time.sleep(ingest.slow_s)
                self._answer(200, {"ok": True})
            elif action in ("500", "503"):
                self._answer(int(action), {"error": "database is restarting"})
            elif action == "429":
                self._answer(429, {"error": "slow down"}, {"Retry-After": "7"})
            elif ingest.poison in ids:
                self._answer(400, {"error": "message body: field 'n' must be below 10"})
            else:
                with ingest.lock:
                    ingest.accepted += ids
                self._answer(200, {"ok": True})

        def _answer(
            self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
        ) -> None:
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout)

        def do_GET(self) -> None:  # noqa: N802 - a redirected POST must never become a GET
            with ingest.lock:
                ingest.gets.append(self.path)
            self._answer(200, {"ok": True})

        def _answer_at(self, status: int, body: dict[str, Any], retry_in: int) -> None:
            """Answer with a ``Date`` and a ``Retry-After`` HTTP-date ``retry_in`` s later."""
            from email.utils import formatdate

            now = int(time.time())
            data = json.dumps(body).encode()
            self.send_response_only(status)
            self.send_header("Date", formatdate(now, usegmt=True))
            self.send_header("Retry-After", formatdate(now + retry_in, usegmt=True))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[Callable[..., tuple[str, Ingest]]]:
    servers: list[ThreadingHTTPServer] = []

    def start(
        script: list[str], poison: str | None = None, slow_s: float = 1.0
    ) -> tuple[str, Ingest]:
        ingest = Ingest(script, poison, slow_s)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(ingest))
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/ingest", ingest

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def test_retries_500_and_slow_then_delivers_and_dead_letters_the_400_batch(
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
    clock: VirtualClock,
    server: Callable[..., tuple[str, Ingest]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FS_TEST_TOKEN", "s3cret")
    with db.session() as session:
        ids = store.enqueue_many(
            session,
            [store.NewMessage("detection", {"n": i}, ["api"]) for i in range(30)],
            now=clock.now(),
            station_id="default",
        )
    url, ingest = server(["500", "slow", "503"], poison=ids[14], slow_s=1.0)
    config = make_station(
        [
            {
                "name": "api",
                "kind": "http",
                "url": url,
                "token": "env:FS_TEST_TOKEN",
                "timeout": "0.3s",
            }
        ],
        batch_size=10,
        backoff_initial="1s",
        backoff_max="10s",
    )
    with DeliveryLoop(config, db, clock, home) as loop:
        assert loop.run_once() == 0  # 500
        clock.advance(10)
        assert loop.run_once() == 0  # slow: client timeout
        clock.advance(10)
        assert loop.run_once() == 0  # 503
        with db.session() as session:
            (delivery, _), *_ = store.list_deliveries(session, state="pending", limit=30)[-1:]
            errors = {
                d.last_error for d, _ in store.list_deliveries(session, limit=30) if d.attempts
            }
        assert delivery.attempts == 3
        assert errors == {'HTTP 503: {"error": "database is restarting"}'}
        clock.advance(10)
        assert loop.run_once() == 20  # batch 1 ok, batch 2 rejected (400), batch 3 ok

    first = ingest.requests[:4]
    assert all(r["ids"] == ids[:10] for r in first)
    assert len({r["key"] for r in first}) == 1  # the same batch keeps its Idempotency-Key
    assert {r["auth"] for r in ingest.requests} == {"Bearer s3cret"}
    assert {r["station"] for r in ingest.requests} == {"default"}
    assert sorted(ingest.accepted) == sorted(ids[:10] + ids[20:])
    with db.session() as session:
        report = store.status(session)
        dead = store.list_deliveries(session, state="dead", limit=100)
    assert report.counts["api"] == {"pending": 0, "sent": 20, "dead": 10, "dropped": 0}
    assert sorted(m.message_id for _, m in dead) == sorted(ids[10:20])
    assert {d.last_error for d, _ in dead} == {
        """HTTP 400: {"error": "message body: field 'n' must be below 10"}"""
    }


def test_connection_refused_is_retried(
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
    clock: VirtualClock,
) -> None:
    from fieldstation.testing.broker import free_port

    config = make_station(
        [{"name": "api", "kind": "http", "url": f"http://127.0.0.1:{free_port()}/"}]
    )
    with db.session() as session:
        store.enqueue(
            session, kind="event", body={}, destinations=["api"], now=clock.now(), station_id="s"
        )
    with DeliveryLoop(config, db, clock, home) as loop:
        assert loop.run_once() == 0
    with db.session() as session:
        ((delivery, _),) = store.list_deliveries(session)
    assert delivery.state == "pending" and delivery.attempts == 1
    assert delivery.last_error is not None and delivery.last_error.startswith("connection error")


def test_missing_token_file_keeps_the_batch_pending_with_one_clear_line(
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
    clock: VirtualClock,
    server: Callable[..., tuple[str, Ingest]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, ingest = server([])
    token = tmp_path / "token"
    config = make_station([{"name": "api", "kind": "http", "url": url, "token": f"file:{token}"}])
    with db.session() as session:
        store.enqueue(
            session, kind="event", body={}, destinations=["api"], now=clock.now(), station_id="s"
        )
    with DeliveryLoop(config, db, clock, home) as loop:
        assert loop.run_once() == 0
        assert "Traceback" not in caplog.text and "token unavailable" in caplog.text
        with db.session() as session:
            ((delivery, _),) = store.list_deliveries(session)
        assert delivery.state == "pending" and ingest.requests == []
        assert delivery.last_error is not None and "does not exist" in delivery.last_error
        token.write_text("s3cret\n")  # the file appears: the next attempt uses it
        token.chmod(0o600)
        clock.advance(3600)
        assert loop.run_once() == 1
    assert ingest.requests[0]["auth"] == "Bearer s3cret"


def test_429_waits_at_least_retry_after(
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
    clock: VirtualClock,
    server: Callable[..., tuple[str, Ingest]],
) -> None:
    url, ingest = server(["429"])
    config = make_station(
        [{"name": "api", "kind": "http", "url": url}], backoff_initial="1s", backoff_max="60s"
    )
    with db.session() as session:
        store.enqueue(
            session, kind="event", body={}, destinations=["api"], now=clock.now(), station_id="s"
        )
    with DeliveryLoop(config, db, clock, home) as loop:
        assert loop.run_once() == 0
        with db.session() as session:
            ((delivery, _),) = store.list_deliveries(session)
        assert (delivery.next_attempt_at - clock.now()).total_seconds() == 7.0
        assert delivery.last_error == 'HTTP 429: {"error": "slow down"}'
        clock.advance(6.9)
        assert loop.run_once() == 0 and len(ingest.requests) == 1
        clock.advance(0.1)
        assert loop.run_once() == 1


@pytest.mark.parametrize("code", ["307", "308"])
def test_307_and_308_are_followed_with_the_body(
    code: str,
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
    clock: VirtualClock,
    server: Callable[..., tuple[str, Ingest]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FS_TEST_TOKEN", "s3cret")
    url, ingest = server([code])
    config = make_station(
        [{"name": "api", "kind": "http", "url": url, "token": "env:FS_TEST_TOKEN"}]
    )
    with db.session() as session:
        ids = store.enqueue_many(
            session,
            [store.NewMessage("detection", {"n": i}, ["api"]) for i in range(3)],
            now=clock.now(),
            station_id="default",
        )
    with DeliveryLoop(config, db, clock, home) as loop:
        assert loop.run_once() == 3
    first, second = ingest.requests
    assert first["path"] == "/ingest" and second["path"] == "/v2/ingest"
    assert second["ids"] == ids and second["key"] == first["key"]  # the same body and key
    assert second["auth"] == "Bearer s3cret"  # same origin: the token follows
    assert ingest.accepted == ids and ingest.gets == []
    with db.session() as session:
        assert store.status(session).counts["api"]["sent"] == 3


@pytest.mark.parametrize("code", ["301", "302", "303"])
def test_body_losing_redirects_are_retried_with_a_clear_reason_never_dead(
    code: str,
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
    clock: VirtualClock,
    server: Callable[..., tuple[str, Ingest]],
) -> None:
    url, ingest = server([code])
    config = make_station([{"name": "api", "kind": "http", "url": url}], backoff_initial="1s")
    with db.session() as session:
        store.enqueue(
            session, kind="event", body={}, destinations=["api"], now=clock.now(), station_id="s"
        )
    with DeliveryLoop(config, db, clock, home) as loop:
        assert loop.run_once() == 0
        with db.session() as session:
            ((delivery, _),) = store.list_deliveries(session)
        assert delivery.state == "pending" and delivery.attempts == 1
        assert delivery.last_error is not None
        assert delivery.last_error.startswith(f"HTTP {code} redirect to /v2/ingest")
        assert "set the output's url to the new location" in delivery.last_error
        assert ingest.gets == [] and len(ingest.requests) == 1  # not followed as a GET
        clock.advance(1)
        assert loop.run_once() == 1  # the server answers normally again: delivered
    assert ingest.requests[-1]["path"] == "/ingest"


def test_retry_after_as_an_http_date(
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
    clock: VirtualClock,
    server: Callable[..., tuple[str, Ingest]],
) -> None:
    url, ingest = server(["503-date"])
    config = make_station(
        [{"name": "api", "kind": "http", "url": url}], backoff_initial="1s", backoff_max="60s"
    )
    with db.session() as session:
        store.enqueue(
            session, kind="event", body={}, destinations=["api"], now=clock.now(), station_id="s"
        )
    with DeliveryLoop(config, db, clock, home) as loop:
        assert loop.run_once() == 0
        with db.session() as session:
            ((delivery, _),) = store.list_deliveries(session)
        assert (delivery.next_attempt_at - clock.now()).total_seconds() == 7.0
        assert delivery.last_error == 'HTTP 503: {"error": "maintenance"}'
        clock.advance(7)
        assert loop.run_once() == 1


def test_retry_after_parsing() -> None:
    from datetime import UTC, datetime

    from fieldstation.outbox.http import retry_after_seconds

    now = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds("Mon, 01 Jun 2026 12:01:30 GMT", now) == 90.0
    assert retry_after_seconds("Mon, 01 Jun 2026 11:00:00 GMT", now) == 0.0  # in the past
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None
