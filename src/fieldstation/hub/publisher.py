"""The command publisher of ``fieldstation hub run``: queued fleet commands go to
``{prefix}/{station}/cmd`` (QoS 1) once the station's retained status says ``online``.

Every ``interval`` seconds (:meth:`CommandPublisher.tick`): commands past their expiry become
``expired``; then, for the stations whose status is ``online`` (``stations.online``, set by
ingest from the retained status topic), the queued commands and the delivered ones not
accepted within ``republish_after`` seconds are claimed (marked delivered, one conditional
UPDATE each: hub processes sharing a database do not both send one) and published. A command
for an offline station waits, however long, until it returns or the command expires. A copy
lost on the way (the station reconnecting as it was sent) is sent again; the station keeps
command ids, so a second copy is refused as a replay and never applied twice.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from fieldstation.clock import Clock
from fieldstation.hub.commands import claim_for_publishing, expire_commands
from fieldstation.hub.config import HubCommandsConfig, MqttIngestConfig
from fieldstation.hub.db import HubDatabase
from fieldstation.hub.ingest import apply_credentials
from fieldstation.messages.commands import command_topic

__all__ = ["CommandPublisher"]

log = logging.getLogger(__name__)


class CommandPublisher:
    """Publishes queued commands to online stations. ``start()`` connects (``ready`` is set
    once the broker accepted the connection), ``tick()`` does one round, ``run(stop)`` both
    until ``stop`` is set; ``published`` counts the copies sent. The MQTT client id is the
    ingest's with ``-cmd`` appended (clean session: nothing waits for it)."""

    def __init__(
        self,
        mqtt: MqttIngestConfig,
        config: HubCommandsConfig,
        db: HubDatabase,
        clock: Clock,
    ) -> None:
        import paho.mqtt.client as paho

        self.mqtt, self.config, self.db, self.clock = mqtt, config, db, clock
        self.ready = threading.Event()
        self.published = 0
        self.client_id = mqtt.effective_client_id() + "-cmd"
        self._client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv5
        )
        apply_credentials(self._client, mqtt)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the command publisher: %s", reason)
            return
        self.ready.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.ready.clear()
        if reason.is_failure:
            log.warning("command publisher lost the broker (%s): reconnecting", reason)

    def start(self) -> None:
        """Connect in the background (paho's network thread; reconnects by itself)."""
        self._client.connect_async(
            self.mqtt.host, self.mqtt.port, keepalive=int(self.mqtt.keepalive)
        )
        self._client.loop_start()

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    def tick(self) -> list[str]:
        """One round at ``clock.now()``: expire, then claim and publish what is due for the
        online stations (nothing while the broker connection is down). Returns the ids
        published."""
        now = self.clock.now()
        expired = expire_commands(self.db, now)
        if expired:
            log.info("%d command(s) expired before their station accepted them", expired)
        if not self.ready.is_set():
            return []
        claimed = claim_for_publishing(
            self.db, now=now, republish_after=self.config.republish_after
        )
        for command_id, station, wire in claimed:
            self._client.publish(command_topic(self.mqtt.prefix, station), wire, qos=1)
            self.published += 1
            log.info("command %s published to %s", command_id, station)
        return [command_id for command_id, _, _ in claimed]

    def run(self, stop: threading.Event) -> None:
        """:meth:`start`, then :meth:`tick` every ``interval`` seconds until ``stop``."""
        self.start()
        try:
            while not stop.is_set():
                try:
                    self.tick()
                except Exception as error:  # the database may be away: next round
                    log.error("command publisher round failed: %s", error)
                self.clock.wait(stop, self.config.interval)
        finally:
            self.close()
