"""TLS with a private CA: HTTP ``ca_file`` against a real local HTTPS server, and MQTT's
"certificate not trusted" against a real Mosquitto serving TLS (certificates made with openssl)."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from fieldstation.clock import SystemClock
from fieldstation.config import StationConfig
from fieldstation.config.station import ConfigError
from fieldstation.home import StationHome
from fieldstation.outbox.delivery import DeliveryLoop
from fieldstation.store import Database
from fieldstation.store import outbox as store
from fieldstation.testing.broker import MosquittoBroker, MosquittoMissingError

from .conftest import PrivateCA


def _enqueue(db: Database, destination: str, n: int) -> list[str]:
    with db.session() as session:
        return store.enqueue_many(
            session,
            [store.NewMessage("detection", {"n": i}, [destination]) for i in range(n)],
            now=SystemClock().now(),
            station_id="default",
        )


def _errors(db: Database) -> set[str | None]:
    with db.session() as session:
        return {d.last_error for d, _ in store.list_deliveries(session, limit=1000)}


@pytest.fixture
def https_server(private_ca: PrivateCA) -> Iterator[tuple[str, list[str]]]:
    """An HTTPS endpoint on 127.0.0.1 with a certificate of the private CA; yields its URL
    and the message ids it accepted."""
    accepted: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            accepted.extend(m["id"] for m in body["messages"])
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(private_ca.cert, private_ca.key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}/ingest", accepted
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def test_http_ca_file_trusts_a_private_ca_and_without_it_the_reason_is_clear(
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
    https_server: tuple[str, list[str]],
    private_ca: PrivateCA,
) -> None:
    url, accepted = https_server
    untrusting = make_station([{"name": "api", "kind": "http", "url": url, "timeout": "5s"}])
    ids = _enqueue(db, "api", 5)
    with DeliveryLoop(untrusting, db, SystemClock(), home) as loop:
        assert loop.run_once() == 0
    assert accepted == []
    (error,) = _errors(db)
    assert error is not None and error.startswith("certificate not trusted: "), error
    assert url in error and "ca_file" in error and "'api'" in error

    trusting = make_station(
        [{"name": "api", "kind": "http", "url": url, "ca_file": str(private_ca.ca)}],
        backoff_max="1s",
    )
    with DeliveryLoop(trusting, db, SystemClock(), home) as loop:
        deadline = time.monotonic() + 20
        while loop.run_once() == 0:  # the first retry is up to 1 s away
            assert time.monotonic() < deadline, _errors(db)
            time.sleep(0.1)
    assert accepted == ids


def test_http_ca_file_with_verify_off_is_refused(
    make_station: Callable[..., StationConfig], tmp_path: Path
) -> None:
    output = {
        "name": "api",
        "kind": "http",
        "url": "https://example.org/",
        "ca_file": str(tmp_path / "ca.pem"),
        "verify": False,
    }
    with pytest.raises(ConfigError, match="ca_file is set but verify = false"):
        make_station([output])


def test_http_unreadable_ca_file_makes_the_output_unavailable_with_the_reason(
    make_station: Callable[..., StationConfig], home: StationHome, db: Database, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-ca.pem"
    config = make_station(
        [{"name": "api", "kind": "http", "url": "https://127.0.0.1:9/", "ca_file": str(missing)}]
    )
    _enqueue(db, "api", 1)
    with DeliveryLoop(config, db, SystemClock(), home) as loop:
        assert loop.run_once() == 0
    (error,) = _errors(db)
    assert error is not None and error.startswith("output unavailable: ")
    assert f"ca_file {missing} is not a readable PEM CA bundle" in error


@pytest.fixture
def tls_broker(tmp_path: Path, private_ca: PrivateCA, require: Any) -> Iterator[MosquittoBroker]:
    """A real Mosquitto serving MQTT over TLS only, with the private CA's certificate."""
    try:
        broker = MosquittoBroker(
            tmp_path / "broker",
            extra_config=f"certfile {private_ca.cert}\nkeyfile {private_ca.key}\n",
        )
    except MosquittoMissingError as error:
        require("mosquitto", str(error))
    with broker as running:
        yield running


def test_mqtt_tls_untrusted_certificate_says_so_and_ca_file_fixes_it(
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
    tls_broker: MosquittoBroker,
    private_ca: PrivateCA,
) -> None:
    output: dict[str, Any] = {
        "name": "broker",
        "kind": "mqtt",
        "host": tls_broker.host,
        "port": tls_broker.port,
        "tls": True,
        "connect_timeout": "2s",
        "reconnect_max": "1s",
    }
    ids = _enqueue(db, "broker", 5)
    with DeliveryLoop(make_station([output]), db, SystemClock(), home) as loop:
        assert loop.run_once() == 0
    (error,) = _errors(db)
    where = f"the broker at {tls_broker.host}:{tls_broker.port}"
    assert error is not None, error
    assert f"certificate not trusted: {where} presented a certificate" in error, error
    assert "cannot reach" not in error and "ca_file" in error and "'broker'" in error

    output["ca_file"] = str(private_ca.ca)
    config = make_station([output], backoff_max="1s")
    with DeliveryLoop(config, db, SystemClock(), home) as loop:
        deadline = time.monotonic() + 20
        while loop.run_once() < len(ids):  # the first retry is up to 1 s away
            assert time.monotonic() < deadline, _errors(db)
            time.sleep(0.1)
