"""MQTT ingest over TLS with a private CA: trusted through ``mqtt.ca_file``; without it the hub
says why it cannot connect."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from fieldstation.hub.db import open_hub_database
from fieldstation.hub.models import IngestedMessage
from fieldstation.testing.broker import MosquittoBroker, MosquittoMissingError

from .test_mqtt_ingest import HubProcess, envelopes, hub_config, wait_until


def openssl(*args: str, cwd: Path) -> None:
    tool = shutil.which("openssl")
    assert tool is not None, "the openssl command is missing: apt-get install openssl"
    done = subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def tls_broker(tmp_path: Path, require: Any) -> Iterator[tuple[MosquittoBroker, Path]]:
    """Mosquitto with a TLS listener whose certificate a throw-away CA signed: (broker, CA)."""
    ca = tmp_path / "ca"
    ca.mkdir()
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    (ca / "ca.ext").write_text(
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
        "subjectKeyIdentifier=hash\n"
    )
    (ca / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    openssl("req", "-new", *ec, "-keyout", "ca.key", "-out", "ca.csr", "-subj", "/CN=hub CA",
            cwd=ca)  # fmt: skip
    openssl("x509", "-req", "-in", "ca.csr", "-signkey", "ca.key", "-out", "ca.pem", "-days",
            "2", "-extfile", "ca.ext", cwd=ca)  # fmt: skip
    openssl("req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj",
            "/CN=localhost", cwd=ca)  # fmt: skip
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
            cwd=ca)  # fmt: skip
    (ca / "server.key").chmod(0o644)
    try:
        broker = MosquittoBroker(
            tmp_path / "broker",
            extra_config=f"certfile {ca / 'server.pem'}\nkeyfile {ca / 'server.key'}\n",
        )
    except MosquittoMissingError as error:
        require("mosquitto", str(error))
    with broker as running:
        yield running, ca / "ca.pem"


@pytest.mark.slow
def test_mqtt_ingest_over_tls_with_a_private_ca(
    tmp_path: Path, tls_broker: tuple[MosquittoBroker, Path]
) -> None:
    broker, ca = tls_broker
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    db = open_hub_database(url)
    plain = hub_config(tmp_path, "hub-a", url, broker)
    plain.with_name("untrusted.toml").write_text(
        plain.read_text()
        .replace("[mqtt]\n", "[mqtt]\ntls = true\n")
        .replace('client_id = "hub-a"', 'client_id = "hub-untrusted"')
    )
    untrusted = HubProcess(plain.with_name("untrusted.toml"))
    trusted_config = plain.with_name("trusted.toml")
    trusted_config.write_text(
        plain.read_text().replace("[mqtt]\n", f'[mqtt]\ntls = true\nca_file = "{ca}"\n')
    )
    trusted = HubProcess(trusted_config)
    try:
        wait_until(
            lambda: any("is its certificate trusted?" in line for line in untrusted.lines),
            60,
            "the untrusted hub to say why",
        )
        assert not untrusted.ready.is_set()
        trusted.wait_ready()
        import paho.mqtt.client as mqtt

        publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        publisher.tls_set(ca_certs=str(ca))
        publisher.connect(broker.host, broker.port)
        publisher.loop_start()
        for _, topic, payload in envelopes(10):
            info = publisher.publish(topic, payload, qos=1)
        info.wait_for_publish(30)
        publisher.disconnect()
        publisher.loop_stop()

        def stored() -> int:
            with db.session() as s:
                return int(s.scalar(select(func.count()).select_from(IngestedMessage)) or 0)

        wait_until(lambda: stored() == 10, 30, "10 messages over TLS")
    finally:
        untrusted.stop()
        trusted.stop()
        db.dispose()
