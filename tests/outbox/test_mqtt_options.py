"""MQTT options against a real Mosquitto: username/password from a secret file, TLS with a
private CA, MQTT v5 content type and message expiry."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fieldstation.clock import SystemClock
from fieldstation.config import StationConfig
from fieldstation.home import StationHome
from fieldstation.outbox.delivery import DeliveryLoop
from fieldstation.store import Database
from fieldstation.store import outbox as store
from fieldstation.testing.broker import MosquittoBroker, free_port


def _enqueue(db: Database, n: int) -> list[str]:
    with db.session() as session:
        return store.enqueue_many(
            session,
            [store.NewMessage("summary", {"n": i}, ["broker"]) for i in range(n)],
            now=SystemClock().now(),
            station_id="default",
        )


def _counts(db: Database) -> dict[str, int]:
    with db.session() as session:
        return store.status(session).counts["broker"]


def test_username_and_password_from_a_secret_file(
    tmp_path: Path,
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
) -> None:
    passwords = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), "station", "right horse"], check=True
    )
    secret = tmp_path / "mqtt-password"
    secret.write_text("right horse\n")
    secret.chmod(0o600)
    wrong = tmp_path / "wrong-password"
    wrong.write_text("battery staple\n")
    wrong.chmod(0o600)
    extra = f"password_file {passwords}\n"
    with MosquittoBroker(tmp_path / "broker", extra_config=extra) as broker:
        broker.config_file.write_text(
            broker.config_file.read_text().replace("allow_anonymous true", "allow_anonymous false")
        )
        broker.restart()
        output = {
            "name": "broker",
            "kind": "mqtt",
            "host": broker.host,
            "port": broker.port,
            "username": "station",
            "connect_timeout": "1s",
        }
        _enqueue(db, 5)
        bad = make_station([{**output, "password": f"file:{wrong}"}], backoff_initial="0.1s")
        with DeliveryLoop(bad, db, SystemClock(), home) as loop:
            assert loop.run_once() == 0
        with db.session() as session:
            (delivery, _), *_ = store.list_deliveries(session)
        assert "refused" in str(delivery.last_error) and "mqtt unavailable" in str(
            delivery.last_error
        )
        good = make_station([{**output, "password": f"file:{secret}"}], backoff_initial="0.1s")
        with DeliveryLoop(good, db, SystemClock(), home) as loop:
            SystemClock().sleep(0.2)  # past the backoff of the refused attempt
            assert loop.run_once() == 5


def _make_ca(folder: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl CLI, EC P-256)."""
    ca_key, ca, key, csr, cert = (
        folder / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-subj", "/CN=test-ca", "-days", "1")
    run("req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    san = folder / "san.cnf"
    san.write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", cert, "-days", "1", "-extfile", san,
    )  # fmt: skip
    key.chmod(0o644)
    return {"ca": ca, "cert": cert, "key": key}


def test_tls_with_a_private_ca(
    tmp_path: Path,
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
) -> None:
    files = _make_ca(tmp_path)
    tls_port = free_port()
    extra = (
        f"listener {tls_port} 127.0.0.1\ncafile {files['ca']}\n"
        f"certfile {files['cert']}\nkeyfile {files['key']}\n"
    )
    with MosquittoBroker(tmp_path / "broker", extra_config=extra) as broker:
        config = make_station(
            [
                {
                    "name": "broker",
                    "kind": "mqtt",
                    "host": "127.0.0.1",
                    "port": tls_port,
                    "tls": True,
                    "ca_file": str(files["ca"]),
                }
            ]
        )
        assert broker.running
        _enqueue(db, 20)
        with DeliveryLoop(config, db, SystemClock(), home) as loop:
            assert loop.run_once() == 20
        assert _counts(db)["sent"] == 20


def test_mqtt5_content_type_and_message_expiry(
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
    broker: MosquittoBroker,
) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    received: list[Any] = []
    ready, got = threading.Event(), threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    sub.on_connect = lambda c, *a: c.subscribe("fieldstation/default/summary", qos=1)
    sub.on_subscribe = lambda *a: ready.set()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        received.append(message)
        got.set()

    sub.on_message = on_message
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    try:
        assert ready.wait(10)
        config = make_station(
            [
                {
                    "name": "broker",
                    "kind": "mqtt",
                    "host": broker.host,
                    "port": broker.port,
                    "message_expiry": "1h",
                }
            ]
        )
        _enqueue(db, 1)
        with DeliveryLoop(config, db, SystemClock(), home) as loop:
            assert loop.run_once() == 1
        assert got.wait(10)
    finally:
        sub.disconnect()
        sub.loop_stop()
    properties = received[0].properties
    assert properties.ContentType == "application/json"
    assert 3590 <= properties.MessageExpiryInterval <= 3600


def test_mqtt311_delivers_without_v5_properties(
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
    broker: MosquittoBroker,
) -> None:
    """protocol = "3.1.1": delivered, with no v5 properties even if message_expiry is set
    (seen by a v5 subscriber, which would receive them)."""
    import json

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    received: list[Any] = []
    ready = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    sub.on_connect = lambda c, *a: c.subscribe("fieldstation/default/summary", qos=1)
    sub.on_subscribe = lambda *a: ready.set()
    sub.on_message = lambda client, userdata, message: received.append(message)
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    try:
        assert ready.wait(10)
        config = make_station(
            [{"name": "broker", "kind": "mqtt", "host": broker.host, "port": broker.port,
              "protocol": "3.1.1", "message_expiry": "1h"}]
        )  # fmt: skip
        ids = _enqueue(db, 10)
        with DeliveryLoop(config, db, SystemClock(), home) as loop:
            assert loop.run_once() == 10
            assert loop.workers["broker"].messenger.protocol == "3.1.1"  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while len(received) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sub.disconnect()
        sub.loop_stop()
    assert [json.loads(m.payload)["id"] for m in received] == ids
    for message in received:
        assert not hasattr(message.properties, "ContentType")
        assert not hasattr(message.properties, "MessageExpiryInterval")


class V311OnlyBroker:
    """A tiny MQTT 3.1.1-only broker on a loopback port: a CONNECT asking for protocol level 5
    gets CONNACK return code 1 (unacceptable protocol version, MQTT 3.1.1 §3.2.2.3) and the
    connection is closed; a 3.1.1 CONNECT (level 4) is accepted, each QoS 1 PUBLISH is
    acknowledged (PUBACK) and recorded with its topic, payload and whether it carried
    anything between packet id and payload (v5 properties would)."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connects: list[int] = []
        self.published: list[tuple[str, bytes]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            worker = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            worker.start()
            self._threads.append(worker)

    @staticmethod
    def _read_packet(conn: Any) -> tuple[int, bytes] | None:
        def exactly(n: int) -> bytes:
            data = b""
            while len(data) < n:
                chunk = conn.recv(n - len(data))
                if not chunk:
                    raise ConnectionError("closed")
                data += chunk
            return data

        try:
            header = exactly(1)[0]
            length, shift = 0, 0
            while True:  # remaining length: a variable byte integer
                byte = exactly(1)[0]
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            return header, exactly(length)
        except (ConnectionError, OSError):
            return None

    def _serve(self, conn: Any) -> None:
        conn.settimeout(5)
        with conn:
            packet = self._read_packet(conn)
            if packet is None or packet[0] >> 4 != 1:  # not a CONNECT
                return
            body = packet[1]
            name_length = int.from_bytes(body[:2], "big")
            level = body[2 + name_length]
            self.connects.append(level)
            if level != 4:
                conn.sendall(b"\x20\x02\x00\x01")  # CONNACK: unacceptable protocol version
                return
            conn.sendall(b"\x20\x02\x00\x00")  # CONNACK: accepted
            while not self._stop.is_set():
                packet = self._read_packet(conn)
                if packet is None:
                    return
                header, body = packet
                kind = header >> 4
                if kind == 3:  # PUBLISH
                    qos = (header >> 1) & 3
                    topic_length = int.from_bytes(body[:2], "big")
                    topic = body[2 : 2 + topic_length].decode()
                    rest = body[2 + topic_length :]
                    if qos:
                        packet_id, rest = rest[:2], rest[2:]
                        conn.sendall(b"\x40\x02" + packet_id)  # PUBACK
                    self.published.append((topic, rest))
                elif kind == 12:  # PINGREQ
                    conn.sendall(b"\xd0\x00")
                elif kind == 14:  # DISCONNECT
                    return

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for thread in self._threads:
            thread.join(5)


def test_v5_refused_by_a_311_broker_falls_back_once(
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import json
    import logging

    broker = V311OnlyBroker()
    try:
        output = {
            "name": "broker",
            "kind": "mqtt",
            "host": "127.0.0.1",
            "port": broker.port,
            "message_expiry": "1h",  # v5 only: dropped with the fallback
            "connect_timeout": "5s",
            "ack_timeout": "5s",
        }
        config = make_station([output])
        ids = _enqueue(db, 10)
        with (
            caplog.at_level(logging.WARNING, logger="fieldstation.outbox.mqtt"),
            DeliveryLoop(config, db, SystemClock(), home) as loop,
        ):
            assert loop.run_once() == 10
            more = _enqueue(db, 5)
            assert loop.run_once() == 5  # the same (3.1.1) connection goes on
    finally:
        broker.close()
    assert broker.connects[0] == 5 and set(broker.connects[1:]) == {4}
    assert len(broker.connects) == 2  # one v5 attempt, then 3.1.1 for good
    fallbacks = [r for r in caplog.records if "refused MQTT v5" in r.getMessage()]
    assert len(fallbacks) == 1 and "falling back to MQTT 3.1.1" in fallbacks[0].getMessage()
    messages = [p for t, p in broker.published if t == "fieldstation/default/summary"]
    assert [json.loads(p)["id"] for p in messages] == ids + more  # plain payloads: no properties
    assert (b"online") in [p for t, p in broker.published if t.endswith("/status")]
    assert _counts(db)["sent"] == 15
