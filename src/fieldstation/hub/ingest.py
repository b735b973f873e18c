"""MQTT ingest: a paho-mqtt 2.x MQTT 5 client on the shared subscription
``$share/{group}/{prefix}/+/+``, so N hub processes of one group split the messages.

Guarantees (decision record 0081):

- **ack after commit**: the client runs with ``manual_ack=True``; a PUBLISH is acknowledged
  (PUBACK) only after the transaction holding its rows has committed. A hub killed at any
  instant leaves its unacknowledged messages with the broker, which delivers them again when
  the hub reconnects (persistent session: ``clean_start=False`` and a Session Expiry Interval).
- **idempotent**: rows are written by :func:`fieldstation.hub.store.store_batch`, keyed on the
  message id with ``INSERT ... ON CONFLICT DO NOTHING``: a redelivered message stores nothing.
- **batched**: messages are committed up to ``batch_size`` at a time (or after ``batch_wait``
  seconds), then acknowledged in the order received (MQTT 5 §4.6).
- **dead letters**: unknown schema versions, unknown kinds and malformed bodies are stored in
  ``dead_letters`` with the reason, then acknowledged.
- **presence**: retained ``{prefix}/{station}/status`` (``online``/``offline``) is read on a
  second, ordinary subscription (brokers send no retained messages on shared subscriptions)
  and sets ``stations.online``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, NamedTuple

from fieldstation.hub.config import MqttIngestConfig
from fieldstation.hub.db import HubDatabase
from fieldstation.hub.store import Incoming, set_station_status, store_batch
from fieldstation.messages import MessageError, parse_status

__all__ = ["MqttIngest", "apply_credentials", "shared_topic"]

log = logging.getLogger(__name__)

STATION_MAX = 200
"""Longest station id the fleet database holds (``stations.id``, ``String(200)``)."""
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
"""Seconds between attempts to commit a batch the database refused (then 5 s each)."""


def shared_topic(config: MqttIngestConfig) -> str:
    """``$share/{group}/{prefix}/+/+``."""
    return f"$share/{config.group}/{config.prefix}/+/+"


def apply_credentials(client: Any, config: MqttIngestConfig) -> None:
    """Give a paho ``client`` the hub's broker user, password (revealed now: raises
    :class:`~fieldstation.config.secrets.SecretError`), TLS and reconnect delays (1 s doubling
    to 30 s)."""
    if config.username is not None:
        password = config.password.reveal() if config.password else None
        client.username_pw_set(config.username, password)
    if config.tls:
        ca = config.ca_file
        client.tls_set(ca_certs=str(ca) if ca is not None else None)
    client.reconnect_delay_set(1, 30)


class _Delivery(NamedTuple):
    """One PUBLISH as the network thread hands it over (a tuple: cheap per message)."""

    generation: int
    mid: int
    qos: int
    topic: str
    payload: bytes


class MqttIngest:
    """Subscribe, store, acknowledge. ``run(stop)`` blocks until ``stop`` is set.

    ``ready`` is set once the broker has granted both subscriptions; ``stored``, ``dead`` and
    ``duplicates`` count what this process did. Raises nothing from ``run`` for broker or
    database outages: it reconnects (paho, 1 s doubling to 30 s) and retries the batch.
    """

    def __init__(self, config: MqttIngestConfig, db: HubDatabase) -> None:
        self.config = config
        self.db = db
        self.client_id = config.effective_client_id()
        self.ready = threading.Event()
        self.stored = 0
        self.dead = 0
        self.duplicates = 0
        self._queue: queue.SimpleQueue[_Delivery] = queue.SimpleQueue()
        self._generation = 0
        self._lock = threading.Lock()
        self._client = self._make_client()

    def _make_client(self) -> Any:
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        apply_credentials(client, self.config)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = int(self.config.session_expiry)
        # unacknowledged deliveries the broker may have outstanding: two batches' worth, so a
        # batch fills while the previous one commits (brokers may cap it lower)
        properties.ReceiveMaximum = min(65535, max(100, 2 * self.config.batch_size))
        self._connect_properties = properties
        return client

    # --- paho callbacks (network thread) ---------------------------------------------------
    def _on_connect(
        self, client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            log.error(
                "broker %s:%s refused the hub: %s", self.config.host, self.config.port, reason
            )
            return
        from paho.mqtt.subscribeoptions import SubscribeOptions

        with self._lock:
            self._generation += 1
        options = SubscribeOptions(qos=1)
        client.subscribe(
            [
                (shared_topic(self.config), options),
                (f"{self.config.prefix}/+/status", SubscribeOptions(qos=1)),
            ]
        )
        log.info("connected to %s:%s as %s", self.config.host, self.config.port, self.client_id)

    def _on_connect_fail(self, _client: Any, _userdata: Any) -> None:
        log.error(
            "cannot connect to the broker at %s:%s%s: retrying",
            self.config.host,
            self.config.port,
            " over TLS (is its certificate trusted? set mqtt.ca_file for a private CA)"
            if self.config.tls
            else "",
        )

    def _on_subscribe(self, _c: Any, _u: Any, _mid: Any, reasons: Any, _p: Any) -> None:
        failed = [code for code in reasons if code.is_failure]
        if failed:
            log.error("subscription refused by the broker: %s", failed)
            return
        self.ready.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason == "Session taken over":
            log.error(
                "another client connected with client_id %r and took this hub's session: give "
                "every hub process its own mqtt.client_id",
                self.client_id,
            )
        elif reason.is_failure:
            log.warning("broker connection lost (%s): reconnecting", reason)

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        self._queue.put(
            _Delivery(self._generation, message.mid, message.qos, message.topic, message.payload)
        )

    # --- worker ----------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Connect, then store and acknowledge batches until ``stop`` is set; disconnects."""
        self._client.connect_async(
            self.config.host,
            self.config.port,
            keepalive=int(self.config.keepalive),
            clean_start=False,
            properties=self._connect_properties,
        )
        self._client.loop_start()
        try:
            while not stop.is_set():
                batch = self._take_batch(stop)
                if batch:
                    self._commit_and_ack(batch, stop)
        finally:
            self._client.disconnect()
            self._client.loop_stop()

    def _take_batch(self, stop: threading.Event) -> list[_Delivery]:
        """Up to ``batch_size`` deliveries: what is queued now, then what comes within
        ``batch_wait`` seconds of the first one."""
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        size = self.config.batch_size
        take = self._queue.get_nowait
        deadline = time.monotonic() + self.config.batch_wait
        while len(batch) < size:
            try:
                batch.append(take())  # a backlog: no clock, no wait
                continue
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _commit_and_ack(self, batch: list[_Delivery], stop: threading.Event) -> None:
        attempt = 0
        while True:
            try:
                self._commit(batch)
                break
            except Exception as error:  # the database is away: keep the batch, unacknowledged
                delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                log.error(
                    "fleet database refused a batch of %d messages (%s): retrying in %g s; "
                    "nothing is acknowledged until it commits",
                    len(batch),
                    str(error).splitlines()[0][:200],
                    delay,
                )
                attempt += 1
                if stop.wait(delay):
                    return  # not acknowledged: the broker delivers them again
        with self._lock:
            generation = self._generation
        for delivery in batch:
            # a delivery of an older connection is not acknowledged: its packet id may now
            # name another message; the broker sends it again and it is a duplicate then
            if delivery.generation == generation and delivery.qos > 0:
                self._client.ack(delivery.mid, delivery.qos)

    def _commit(self, batch: list[_Delivery]) -> None:
        prefix = self.config.prefix + "/"
        incoming: list[Incoming] = []
        statuses: dict[str, bool] = {}
        for delivery in batch:
            rest = delivery.topic.removeprefix(prefix)
            station, _, kind = rest.partition("/")
            if kind == "status":
                if not station or len(station) > STATION_MAX:
                    # no station row can hold it (the database would refuse the batch for
                    # ever): ignored, as the broker's ACL should have refused it
                    log.warning("ignored the status of a station id of %d characters", len(station))
                    continue
                try:
                    statuses[station] = parse_status(delivery.payload) == "online"
                except MessageError as error:
                    log.warning("ignored status of %r: %s", station, error.reason)
                continue
            incoming.append(Incoming(delivery.payload, f"mqtt:{delivery.topic}", station or None))
        if incoming:
            result = store_batch(self.db, incoming, via=f"mqtt:{self.client_id}")
            self.stored += result.stored
            self.dead += result.dead
            self.duplicates += result.duplicates
            for reason in result.reasons or []:
                log.warning("dead letter: %s", reason)
        for station, online in statuses.items():
            set_station_status(self.db, station, online)
