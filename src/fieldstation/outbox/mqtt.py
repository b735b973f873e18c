"""MQTT messenger (paho-mqtt 2.x, QoS 1, sent on PUBACK)."""

from __future__ import annotations

import logging
import ssl
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from fieldstation.config.outputs import OutputConfig
from fieldstation.config.plugins import Plugin
from fieldstation.config.secrets import SecretRef
from fieldstation.config.units import Seconds
from fieldstation.messages.commands import command_topic
from fieldstation.outbox.homeassistant import DiscoveryMessage, discovery_messages
from fieldstation.outbox.messenger import (
    OutgoingMessage,
    Result,
    certificate_problem,
    message_topic,
    status_topic,
)

__all__ = ["MqttMessenger", "MqttOutputConfig", "connect_failure", "plugin"]

log = logging.getLogger(__name__)

PRESENCE_SLACK = 2
"""Queue room above one batch for the retained ``online`` / ``offline`` presence messages."""
_UNSUPPORTED_PROTOCOL_VERSION = 0x84
"""CONNACK reason "Unsupported Protocol Version" (MQTT 5.0, 3.2.2.2); paho maps a 3.1.1
broker's return code 1 ("unacceptable protocol version", MQTT 3.1.1, 3.2.2.3) to it."""
# MQTT v5 PUBACK reason codes that will not get better by retrying (MQTT 5.0, 3.4.2.1).
_PERMANENT_REASONS = {0x87: "not authorized", 0x90: "topic name invalid", 0x99: "payload format"}


class MqttOutputConfig(OutputConfig):
    """An MQTT broker; topics are ``{prefix}/{station}/{kind}``."""

    needs_network: ClassVar[bool] = True
    """Waits while the network monitor says the network is down."""

    host: str = Field(description="Broker host name or address.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port.")
    prefix: str = Field(default="fieldstation", description="Topic prefix.")
    client_id: str | None = Field(default=None, description="Default: fieldstation-<station id>.")
    username: str | None = Field(default=None, description="User name.")
    password: SecretRef | None = Field(default=None, description="'env:NAME' or 'file:PATH'.")
    tls: bool = Field(default=False, description="Connect with TLS.")
    ca_file: Path | None = Field(default=None, description="CA bundle for TLS.")
    keepalive: Seconds = Field(default=60.0, gt=0, description="MQTT keepalive.")
    protocol: str = Field(
        default="5",
        pattern="^(3.1.1|5)$",
        description="'5' (falls back to 3.1.1 when the broker refuses v5) or '3.1.1'.",
    )
    message_expiry: Seconds | None = Field(default=None, description="MQTT v5 message expiry.")
    connect_timeout: Seconds = Field(
        default=5.0, gt=0, description="How long a batch waits for a connection before retrying."
    )
    ack_timeout: Seconds = Field(
        default=30.0, gt=0, description="How long a batch waits for its PUBACKs; later: retry."
    )
    reconnect_max: Seconds = Field(
        default=10.0,
        ge=1,
        description="Longest pause between reconnection attempts (1 s first, doubling); when "
        "the network monitor sees the broker's network come back, it reconnects at once.",
    )
    max_inflight: int = Field(
        default=1000, ge=1, le=65535, description="QoS 1 messages awaiting PUBACK at once."
    )
    home_assistant: bool = Field(
        default=False,
        description="Publish Home Assistant MQTT discovery configs (retained) on every connection, "
        "so the station appears as a device with sensors (docs/home-assistant.md).",
    )
    discovery_prefix: str = Field(
        default="homeassistant",
        pattern=r"^[^#+\s]+$",
        description="Home Assistant's discovery prefix (its MQTT integration's setting).",
    )


class MqttMessenger:
    """One persistent MQTT connection (paho's network thread, reconnecting with backoff).

    On connect it publishes, with ``home_assistant = true``, the retained Home Assistant
    discovery configs (:mod:`fieldstation.outbox.homeassistant`), then a retained ``online`` to
    ``{prefix}/{station}/status``; the
    connection's last will is a retained ``offline`` there, so the broker announces a station
    that dies without saying goodbye; :meth:`close` publishes ``offline`` itself. ``send``
    publishes a whole batch at QoS 1 (pipelined, up to ``max_inflight`` unacknowledged), then
    waits for the PUBACKs: a message is ``sent`` only when its PUBACK arrived. paho's own queue
    of unacknowledged messages is bounded to one batch (``batch_size`` + :data:`PRESENCE_SLACK`;
    ``max_inflight`` when no batch size is given): a batch cut off by a dropped link is re-sent
    by paho on reconnect, and until it drains new publishes are refused (``retry``), so the
    outbox re-sends from the database instead of piling copies up in memory. With MQTT v5 each
    message carries content type ``application/json`` and, if configured, a message expiry.
    MQTT v5 is asked for, not assumed (``protocol = "5"``, the default): when the broker's
    CONNACK refuses the protocol version (a 3.1.1-only broker), the messenger reconnects with
    3.1.1, without those properties, and logs it once. When the delivery worker sees the
    network come back it calls :meth:`network_back`: a client still waiting out paho's
    reconnect delay is replaced by one that connects at once. A connection attempt that fails
    on the broker's TLS certificate says "certificate not trusted" with the broker and the
    ``ca_file`` option (:func:`connect_failure`). Waits use the injected clock.
    """

    needs_network: ClassVar[bool] = True

    def __init__(
        self,
        config: MqttOutputConfig,
        *,
        station_id: str,
        clock: Any,
        batch_size: int | None = None,
        commands: Any = None,
    ) -> None:
        self.config = config
        self.commands = commands
        """The station's :class:`~fieldstation.commands.inbox.CommandInbox`, or None. When
        given, the client subscribes to ``{prefix}/{station}/cmd`` (QoS 1) in a persistent
        session (MQTT v5: clean start off and a session expiry of the inbox's
        ``session_expiry``; 3.1.1: clean session off), so commands published while the
        station is away are delivered when it connects again; each is acknowledged only
        once the inbox stored it (decision record 0140)."""
        self.station_id = station_id
        self.clock = clock
        self.discovery: list[DiscoveryMessage] = []
        """Home Assistant discovery configs published (retained) on every connection."""
        if config.home_assistant:
            self.discovery = discovery_messages(
                station_id=station_id,
                prefix=config.prefix,
                discovery_prefix=config.discovery_prefix,
                kinds=config.kinds,
            )
        self.queue_limit = (
            (batch_size or config.max_inflight) + PRESENCE_SLACK + len(self.discovery)
        )
        """Most QoS 1 messages paho holds unacknowledged (in flight or queued) at once."""
        self._v5 = config.protocol == "5"
        self._status_topic = status_topic(config.prefix, station_id)
        self._connected = threading.Event()
        self._connack = threading.Event()
        """Set when a CONNACK accepted the connection or refused MQTT v5 (wakes a waiting send)."""
        self._v5_refused = threading.Event()
        self._lock = threading.Lock()
        self._acks: dict[int, Any] = {}
        self._waiting: set[int] = set()
        self._batch_done = threading.Event()
        self._last_error = "not connected yet"
        self._closed = False
        self._properties = self._publish_properties()
        self._client: Any = None
        """The paho client in use; callbacks of a replaced client are ignored."""
        self._new_client()

    @property
    def protocol(self) -> str:
        """The protocol in use: ``"5"``, or ``"3.1.1"`` (configured, or after the fallback)."""
        return "5" if self._v5 else "3.1.1"

    def _new_client(self) -> None:
        """Make a configured paho client for the protocol in use the current one
        (``self._client``) and start it connecting in the background."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        config = self.config
        persistent = self.commands is not None
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id or f"fieldstation-{self.station_id}",
            protocol=MQTTProtocolVersion.MQTTv5 if self._v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if self._v5 else not persistent,
        )
        connect_properties = None
        if persistent:
            client.on_message = self._on_message
            client.manual_ack_set(True)  # acknowledged once stored (:meth:`_on_message`)
            if self._v5:
                from paho.mqtt.packettypes import PacketTypes
                from paho.mqtt.properties import Properties

                connect_properties = Properties(PacketTypes.CONNECT)
                connect_properties.SessionExpiryInterval = int(self.commands.session_expiry)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        client.max_inflight_messages_set(config.max_inflight)
        # bounded: a batch left unacknowledged by a dropped link stays in paho's memory (paho
        # re-sends it on reconnect); an unbounded queue would take every re-publish of it too
        client.max_queued_messages_set(self.queue_limit)
        client.reconnect_delay_set(1, max(1, int(config.reconnect_max)))
        client.will_set(self._status_topic, "offline", qos=1, retain=True)
        if config.username is not None:
            password = config.password.reveal() if config.password is not None else None
            client.username_pw_set(config.username, password)
        if config.tls:
            client.tls_set(ca_certs=str(config.ca_file) if config.ca_file else None)
        self._client = client  # before connecting: callbacks of other clients are ignored
        if self._v5:
            client.connect_async(
                config.host,
                config.port,
                keepalive=int(config.keepalive),
                clean_start=not persistent,
                properties=connect_properties,
            )
        else:
            client.connect_async(config.host, config.port, keepalive=int(config.keepalive))
        client.loop_start()

    def _retire_client(self) -> None:
        """Stop the current client: no more reconnects, its network thread ended. Public paho
        API only: ``disconnect`` ends a pending reconnect wait, ``loop_stop`` joins the thread
        (at most about a second, or the end of a connection attempt under way). Messages it
        held unacknowledged stay pending in the outbox and are re-sent from the database."""
        old, self._client = self._client, None  # its late callbacks are ignored from now on
        if old is None:
            return
        old.disconnect()  # no-op when the link is already gone; stops its reconnects
        old.loop_stop()
        self._connected.clear()
        self._connack.clear()

    def _fall_back_to_311(self) -> None:
        """The broker refused MQTT v5: replace the client by a 3.1.1 one (delivery thread).

        Happens at most once per messenger; logged once. 3.1.1 has no properties, so messages
        go without content type and message expiry.
        """
        self._retire_client()
        self._v5 = False
        self._properties = None
        self._v5_refused.clear()
        log.warning(
            "mqtt %s:%s: the broker refused MQTT v5 (CONNACK: unsupported protocol version); "
            "falling back to MQTT 3.1.1 without content type and message expiry "
            '(set protocol = "3.1.1" on this output to skip the v5 attempt)',
            self.config.host,
            self.config.port,
        )
        self._last_error = "the broker refused MQTT v5; reconnecting with MQTT 3.1.1"
        self._new_client()

    def network_back(self) -> None:
        """The network (this broker's probe target) is back after being down: connect now.

        paho retries a lost connection by itself, waiting 1 s doubling up to ``reconnect_max``
        between attempts, so after a long outage its next attempt may still be that far off
        when the broker is back. Called by the delivery worker when the network gate opens
        again: a client still waiting to reconnect is replaced by a fresh one that connects
        at once. No-op while connected or after :meth:`close`.
        """
        if self._closed or self._connected.is_set():
            return
        log.info(
            "mqtt %s:%s: network back, reconnecting now (%s)",
            self.config.host,
            self.config.port,
            self._last_error,
        )
        self._retire_client()
        self._new_client()

    def _publish_properties(self) -> Any:
        if not self._v5:
            return None
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        class PackedOnce(Properties):  # type: ignore[misc]
            """The same properties go with every message: pack them once, not per publish."""

            _packed: bytes | None = None

            def pack(self) -> bytes:
                packed = self._packed
                if packed is None:
                    packed = super().pack()
                    object.__setattr__(self, "_packed", packed)
                return packed

        properties = PackedOnce(PacketTypes.PUBLISH)
        properties.ContentType = "application/json"
        if self.config.message_expiry:
            properties.MessageExpiryInterval = int(self.config.message_expiry)
        return properties

    @property
    def connected(self) -> bool:
        """True while the connection to the broker is up."""
        return self._connected.is_set()

    # paho callbacks (network thread) -------------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if client is not self._client:  # a replaced client (fallback, reconnect now)
            return
        if reason.is_failure:
            if self._v5 and getattr(reason, "value", None) == _UNSUPPORTED_PROTOCOL_VERSION:
                # a 3.1.1-only broker answers a v5 CONNECT with return code 1, which paho
                # reports as v5 reason 0x84; the delivery thread switches to 3.1.1
                self._last_error = "the broker refused MQTT v5 (unsupported protocol version)"
                client.disconnect()  # no reconnect with v5
                self._v5_refused.set()
                self._connack.set()
                return
            self._last_error = f"broker refused the connection: {reason}"
            log.warning("mqtt %s:%s: %s", self.config.host, self.config.port, self._last_error)
            return
        refused = 0
        for config in self.discovery:  # without properties: a retained config must not expire
            info = client.publish(config.topic, config.payload, qos=1, retain=True)
            refused += info.rc not in (0, 4)  # 4: queued while reconnecting
        if refused:
            log.warning(
                "mqtt %s:%s: %d Home Assistant discovery configs not queued (paho's queue is "
                "full); they are published again on the next connection",
                self.config.host,
                self.config.port,
                refused,
            )
        if self.commands is not None:
            client.subscribe(command_topic(self.config.prefix, self.station_id), qos=1)
        client.publish(self._status_topic, "online", qos=1, retain=True)
        self._connected.set()
        self._connack.set()
        log.info(
            "mqtt connected to %s:%s (MQTT %s)", self.config.host, self.config.port, self.protocol
        )

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        """A command (paho's network thread): handed to the inbox, acknowledged once stored.
        A database that refuses the write leaves it unacknowledged: the broker delivers it
        again on the next connection (and the hub re-publishes it)."""
        if client is not self._client or self.commands is None:
            return
        try:
            self.commands.receive(message.payload, f"mqtt:{self.config.name}")
        except Exception:
            log.exception("output %r: a command could not be stored", self.config.name)
            return
        client.ack(message.mid, message.qos)

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        if client is not self._client:
            return
        # paho calls this inside its ``except OSError`` around the connection attempt, so the
        # error being handled is the reason (an ssl.SSLError is an OSError)
        error = sys.exc_info()[1]
        reason = connect_failure(self.config, error)
        if reason != self._last_error and isinstance(error, ssl.SSLError):
            log.warning("output %r: %s", self.config.name, reason)
        self._last_error = reason

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if client is not self._client:
            return
        if self._connected.is_set():  # else keep why connecting failed (e.g. refused)
            self._last_error = f"connection to {self.config.host}:{self.config.port} lost: {reason}"
        self._connected.clear()
        if not self._v5_refused.is_set():
            self._connack.clear()
        self._batch_done.set()  # a waiting batch stops waiting for PUBACKs that won't come

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        if client is not self._client:  # message ids are per client
            return
        with self._lock:
            self._acks[mid] = reason
            if mid in self._waiting:
                self._waiting.discard(mid)
                if not self._waiting:
                    self._batch_done.set()

    # Messenger ---------------------------------------------------------------------------------
    def send(self, batch: Sequence[OutgoingMessage]) -> list[Result]:
        """Publish ``batch`` at QoS 1 and wait for the PUBACKs (see the class docstring)."""
        if not batch:
            return []
        if self._v5_refused.is_set():
            self._fall_back_to_311()
        if not self._connected.is_set():
            self.clock.wait(self._connack, self.config.connect_timeout)
            if self._v5_refused.is_set():
                self._fall_back_to_311()
                self.clock.wait(self._connack, self.config.connect_timeout)
        if not self._connected.is_set():
            return [Result.retry(f"mqtt unavailable: {self._last_error}")] * len(batch)
        with self._lock:
            self._acks.clear()
            self._waiting.clear()
            self._batch_done.clear()
        mids: list[int | None] = []
        prefix, station = self.config.prefix, self.station_id
        for message in batch:
            info = self._client.publish(
                message_topic(prefix, station, message.kind),
                message.payload.encode(),
                qos=1,
                properties=self._properties,
            )
            mids.append(info.mid if info.rc in (0, 4) else None)  # 4: queued while reconnecting
        with self._lock:
            self._waiting = {m for m in mids if m is not None and m not in self._acks}
            if not self._waiting:
                self._batch_done.set()
        self.clock.wait(self._batch_done, self.config.ack_timeout)
        with self._lock:
            acks = dict(self._acks)
            self._waiting.clear()
        return [self._result(mid, acks) for mid in mids]

    def _result(self, mid: int | None, acks: dict[int, Any]) -> Result:
        if mid is None:
            return Result.retry(
                f"paho refused the publish: its queue (limit {self.queue_limit}) still holds "
                "unacknowledged messages of an earlier batch; retried from the outbox later"
            )
        if mid not in acks:
            if not self._connected.is_set():
                return Result.retry(f"no PUBACK: {self._last_error}")
            return Result.retry(f"no PUBACK within {self.config.ack_timeout:g} s")
        reason = acks[mid]
        if reason is None or not getattr(reason, "is_failure", False):
            return Result.sent()
        value = getattr(reason, "value", None)
        if value in _PERMANENT_REASONS:
            return Result.reject(f"broker rejected the message: {reason}")
        return Result.retry(f"broker PUBACK: {reason}")

    def close(self) -> None:
        """Publish a retained ``offline``, disconnect cleanly, stop the network thread."""
        if self._closed:
            return
        self._closed = True
        if self._client is None:
            return
        if self._connected.is_set():
            info = self._client.publish(self._status_topic, "offline", qos=1, retain=True)
            done = threading.Event()
            for _ in range(20):  # up to ~1 s for the PUBACK of the goodbye
                if info.is_published() or not self._connected.is_set():
                    break
                self.clock.wait(done, 0.05)
        self._client.disconnect()
        self._client.loop_stop()


def connect_failure(config: MqttOutputConfig, error: BaseException | None) -> str:
    """Why a connection attempt to the broker of ``config`` failed, in words an operator acts on.

    ``error``: the exception of the attempt (None: unknown). A TLS certificate the station does
    not trust says "certificate not trusted" and names the broker and the ``ca_file`` option
    (:func:`~fieldstation.outbox.messenger.certificate_problem`); another TLS failure says
    "TLS handshake ... failed"; anything else is "cannot reach the broker" with the OS error.
    """
    where = f"{config.host}:{config.port}"
    certificate = certificate_problem(
        error, server=f"the broker at {where}", output=config.name, ca_file=config.ca_file
    )
    if certificate is not None:
        return certificate
    if isinstance(error, ssl.SSLError):
        return (
            f"TLS handshake with the broker at {where} failed ({error.reason or error}); "
            f"check tls and ca_file on output {config.name!r} and the broker's TLS listener"
        )
    if error is None:
        return f"cannot reach the broker at {where}"
    return f"cannot reach the broker at {where}: {error}"


def _create(
    config: MqttOutputConfig,
    *,
    station_id: str,
    clock: Any = None,
    batch_size: int | None = None,
    commands: Any = None,
    **context: object,
) -> MqttMessenger:
    """Build the messenger and start connecting (in the background); ``batch_size`` (the
    outbox's) bounds paho's queue (:attr:`MqttMessenger.queue_limit`)."""
    if clock is None:
        from fieldstation.clock import SystemClock

        clock = SystemClock()
    return MqttMessenger(
        config, station_id=station_id, clock=clock, batch_size=batch_size, commands=commands
    )


plugin = Plugin(config_model=MqttOutputConfig, factory=_create, description=__doc__ or "")
