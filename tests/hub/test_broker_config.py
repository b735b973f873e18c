"""``fieldstation hub broker-config`` against a REAL Mosquitto started with the files it
writes: each station publishes under its own id only (never to a ``cmd`` topic: only the hub
sends fleet commands, and a station reads its own), the hub reads all, anonymous and
wrong-password clients are refused."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from fieldstation.hub.broker import BrokerConfigError, mosquitto_hash, write_broker_config
from fieldstation.testing.broker import MosquittoBroker, MosquittoMissingError

CLI = [sys.executable, "-m", "fieldstation.cli"]


def test_the_password_hash_is_mosquittos() -> None:
    # produced by `mosquitto_passwd -b pw u1 secretpw` (Mosquitto 2.0.11)
    stored = (
        "$7$101$xBcWz/0J/pFt5RFl$zfjMMTDpLC9RBkdDHVih0Cce0MQ5CvtA0aokX/sxTN3m2TlZnxPQzgg0HKNb/"
        "yZyFfcD6w3A1LVoNWZ5bdv3NA=="
    )
    import base64

    salt = base64.b64decode(stored.split("$")[3])
    assert mosquitto_hash("secretpw", salt=salt) == stored


def test_ids_that_are_not_one_topic_level_are_refused(tmp_path: Path) -> None:
    for bad in ("a/b", "a+", "#", "with space", "hub"):
        with pytest.raises(BrokerConfigError):
            write_broker_config(tmp_path, [bad])


class Client:
    """A paho MQTT 5 client with a user and password; ``messages`` gets (topic, payload)."""

    def __init__(self, broker: MosquittoBroker, user: str | None, password: str | None) -> None:
        import paho.mqtt.client as mqtt

        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connected: queue.Queue[Any] = queue.Queue()
        self.acks: dict[int, Any] = {}
        self.acked = threading.Condition()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"c-{user}", protocol=mqtt.MQTTv5
        )
        if user is not None:
            self.client.username_pw_set(user, password)
        self.client.on_connect = lambda c, u, f, reason, p: self.connected.put(reason)
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))

        def on_publish(c: Any, u: Any, mid: int, reason: Any, p: Any) -> None:
            with self.acked:
                self.acks[mid] = reason
                self.acked.notify_all()

        self.client.on_publish = on_publish
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.reason = self.connected.get(timeout=30)

    def publish(self, topic: str, payload: bytes) -> Any:
        """Publish at QoS 1; the broker's PUBACK reason code."""
        info = self.client.publish(topic, payload, qos=1)
        with self.acked:
            assert self.acked.wait_for(lambda: info.mid in self.acks, 30)
            return self.acks[info.mid]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_a_station_may_publish_only_under_its_own_id(tmp_path: Path, require: Any) -> None:
    folder = tmp_path / "broker-config"
    made = subprocess.run(
        [*CLI, "hub", "broker-config", str(folder), "st-a", "st-b"], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    assert (folder / "credentials" / "st-a.password").stat().st_mode & 0o077 == 0
    password = {
        u: (folder / "credentials" / f"{u}.password").read_text().strip()
        for u in ("hub", "st-a", "st-b")
    }
    # again, with a third station: nobody's password changes
    subprocess.run([*CLI, "hub", "broker-config", str(folder), "st-a", "st-b", "st-c"], check=True)
    assert (folder / "credentials" / "st-a.password").read_text().strip() == password["st-a"]
    extra = f"allow_anonymous false\npassword_file {folder / 'passwd'}\nacl_file {folder / 'acl'}\n"
    try:
        broker = MosquittoBroker(tmp_path / "mosquitto", extra_config=extra)
    except MosquittoMissingError as error:
        require("mosquitto", str(error))
    clients: list[Client] = []
    with broker:
        hub = Client(broker, "hub", password["hub"])
        clients.append(hub)
        assert not hub.reason.is_failure
        hub.client.subscribe("$share/fleet/fieldstation/+/+", qos=1)
        hub.client.subscribe("fieldstation/+/status", qos=1)
        station = Client(broker, "st-a", password["st-a"])
        clients.append(station)
        try:
            # wait until the subscriptions are in place: a first message arrives
            assert not station.publish("fieldstation/st-a/status", b"online").is_failure
            assert hub.messages.get(timeout=30) == ("fieldstation/st-a/status", b"online")
            refused = station.publish("fieldstation/st-b/detection", b"forged")
            assert refused.is_failure and refused.value == 0x87  # Not authorized
            assert station.publish("other/st-a/x", b"outside").is_failure
            # its own Home Assistant discovery configs, and nobody else's
            assert not station.publish("homeassistant/sensor/st-a/status/config", b"{}").is_failure
            assert station.publish("homeassistant/sensor/st-b/status/config", b"{}").is_failure
            assert not station.publish("fieldstation/st-a/detection", b"mine").is_failure
            # in order from one publisher: the forged one would have come before "mine"
            got: list[tuple[str, bytes]] = []
            while ("fieldstation/st-a/detection", b"mine") not in got:
                got.append(hub.messages.get(timeout=30))
            assert all(payload in (b"online", b"mine") for _, payload in got), got
            # fleet commands: only the hub writes {prefix}/+/cmd; a station reads its own
            # (Mosquitto 2.0 drops a client's connection after a refused publish: the victims
            # below never publish, so their subscriptions stay)
            subscribed: queue.Queue[Any] = queue.Queue()
            victims = {}
            for name in ("st-b", "st-c"):
                secret = (folder / "credentials" / f"{name}.password").read_text().strip()
                victims[name] = Client(broker, name, secret)
                clients.append(victims[name])
                victims[name].client.on_subscribe = lambda c, u, m, codes, p: subscribed.put(codes)
                victims[name].client.subscribe(f"fieldstation/{name}/cmd", qos=1)
            for _ in victims:
                assert not subscribed.get(timeout=30)[0].is_failure
            assert station.publish("fieldstation/st-b/cmd", b"forged").value == 0x87
            assert station.publish("fieldstation/st-a/cmd", b"self-made").value == 0x87
            assert not hub.publish("fieldstation/st-b/cmd", b"from the hub").is_failure
            assert not hub.publish("fieldstation/st-c/cmd", b"yours").is_failure
            # the forged copy was refused before the hub's was sent: it would have come first
            assert victims["st-b"].messages.get(timeout=30) == (
                "fieldstation/st-b/cmd",
                b"from the hub",
            )
            assert victims["st-c"].messages.get(timeout=30) == ("fieldstation/st-c/cmd", b"yours")
            # no password, or a wrong one, or another station's: refused at CONNECT
            for user, secret in ((None, None), ("st-a", "wrong"), ("st-a", password["st-b"])):
                stranger = Client(broker, user, secret)
                clients.append(stranger)
                assert stranger.reason.is_failure
        finally:
            for client in clients:
                client.close()
