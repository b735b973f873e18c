"""Home Assistant MQTT discovery: the retained config messages that make a station a device.

Pure payload builder, no I/O: :func:`discovery_messages` returns the ``(topic, payload)`` pairs
the MQTT messenger publishes (retained, QoS 1) each time it connects, when the output sets
``home_assistant = true``. Home Assistant then shows the station as one device with the
sensors of :data:`SENSORS`, read from the messages the station already sends
(``{prefix}/{station}/heartbeat``, ``.../detection``) by a ``value_template``,
and available while the station's retained presence (``{prefix}/{station}/status``, ``online``
/ ``offline``, also the connection's last will) says ``online``.

Topics: ``{discovery_prefix}/sensor/{node}/{object}/config``, with ``node`` the station id
made safe for Home Assistant (``[a-zA-Z0-9_-]``: other characters become ``_``). Keys are
Home Assistant's full names (not the abbreviations), documented at
https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery and
https://www.home-assistant.io/integrations/sensor.mqtt/ .

A template that finds no value renders ``None``, the payload Home Assistant's MQTT sensor takes
for "unknown" (``PAYLOAD_NONE`` in homeassistant/components/mqtt/const.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from fieldstation.outbox.messenger import message_topic, status_topic

__all__ = [
    "DiscoveryMessage",
    "SensorSpec",
    "SENSORS",
    "discovery_messages",
    "node_id",
    "sensor_config",
]

PAYLOAD_AVAILABLE = "online"
"""What the station publishes, retained, on its status topic while connected."""
PAYLOAD_NOT_AVAILABLE = "offline"
"""What the station (or the broker, as its last will) publishes when it is gone."""
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


@dataclass(frozen=True)
class SensorSpec:
    """One Home Assistant sensor read from one kind of station message.

    ``object_id``: part of the discovery topic and of the unique id; ``kind``: the message
    kind whose topic is the sensor's ``state_topic``; ``value_template``: Jinja2 over the
    envelope (``value_json``); ``extra``: further discovery keys (``device_class``,
    ``unit_of_measurement``, ``state_class``, ``options``, ...).
    """

    object_id: str
    name: str
    kind: str
    value_template: str
    extra: dict[str, Any] = field(default_factory=dict)


SENSORS: tuple[SensorSpec, ...] = (
    SensorSpec(
        "status",
        "Status",
        "heartbeat",
        "{{ value_json.body.status }}",
        {
            "device_class": "enum",
            "options": ["ok", "degraded", "failing"],
            "icon": "mdi:heart-pulse",
        },
    ),
    SensorSpec(
        "last_detection",
        "Last detection",
        "detection",
        # the best-scoring label of the newest detection message (never empty: the station
        # sends a detection message only for a run that found something)
        "{{ (value_json.body.detections | sort(attribute='score') | last).label }}",
        {"icon": "mdi:bird"},
    ),
    SensorSpec(
        "last_detection_at",
        "Last detection at",
        "detection",
        "{{ value_json.body.detections | map(attribute='detected_at') | max }}",
        {"device_class": "timestamp"},
    ),
    SensorSpec(
        "detections",
        "Detections today",
        "heartbeat",
        # the station's local day so far, counted by the station at each heartbeat
        "{{ value_json.body.metrics.detections_today.count"
        " if value_json.body.metrics.detections_today else None }}",
        {
            "state_class": "total",
            "last_reset_value_template": "{{ value_json.body.metrics.detections_today.since"
            " if value_json.body.metrics.detections_today else None }}",
            "unit_of_measurement": "detections",
            "icon": "mdi:counter",
        },
    ),
    SensorSpec(
        "disk_free",
        "Disk free",
        "heartbeat",
        "{{ value_json.body.metrics.host.disk_free | default(None) }}",
        {
            "device_class": "data_size",
            "unit_of_measurement": "B",
            "state_class": "measurement",
            "entity_category": "diagnostic",
        },
    ),
    SensorSpec(
        "battery",
        "Battery",
        "heartbeat",
        "{{ value_json.body.metrics.battery.percent if value_json.body.metrics.battery"
        " else None }}",
        {"device_class": "battery", "unit_of_measurement": "%", "state_class": "measurement"},
    ),
)
"""The sensors of a station (status, last detection and its time, detections today: the
station's local day so far, disk free in bytes, battery charge in %)."""


@dataclass(frozen=True)
class DiscoveryMessage:
    """One retained discovery config: ``topic`` and its JSON ``payload`` (text)."""

    topic: str
    payload: str


def node_id(station_id: str) -> str:
    """``station_id`` with every character outside ``[a-zA-Z0-9_-]`` replaced by ``_`` (Home
    Assistant's discovery topic accepts only those in node and object ids)."""
    return _UNSAFE.sub("_", station_id)


def sensor_config(
    spec: SensorSpec, *, station_id: str, prefix: str, sw_version: str
) -> dict[str, Any]:
    """The discovery config (a JSON-ready dict) of sensor ``spec`` of station ``station_id``
    whose messages go to topics under ``prefix``."""
    node = node_id(station_id)
    return {
        "name": spec.name,
        "unique_id": f"fieldstation_{node}_{spec.object_id}",
        "object_id": f"{node}_{spec.object_id}",
        "state_topic": message_topic(prefix, station_id, spec.kind),
        "value_template": spec.value_template,
        "qos": 1,
        "availability_topic": status_topic(prefix, station_id),
        "payload_available": PAYLOAD_AVAILABLE,
        "payload_not_available": PAYLOAD_NOT_AVAILABLE,
        "device": {
            "identifiers": [f"fieldstation_{node}"],
            "name": station_id,
            "manufacturer": "fieldstation",
            "model": "fieldstation station",
            "sw_version": sw_version,
        },
        "origin": {"name": "fieldstation", "sw_version": sw_version},
        **spec.extra,
    }


def discovery_messages(
    *,
    station_id: str,
    prefix: str,
    discovery_prefix: str = "homeassistant",
    kinds: Collection[str] | None = None,
    sw_version: str | None = None,
) -> list[DiscoveryMessage]:
    """The retained discovery configs of station ``station_id`` (one per sensor of
    :data:`SENSORS`).

    ``prefix``: the output's topic prefix; ``discovery_prefix``: Home Assistant's (its MQTT
    integration's setting, ``homeassistant`` by default); ``kinds``: the message kinds the
    output receives (None: all): a sensor whose kind the output never gets is left out, so
    no sensor stays unknown for ever; ``sw_version``: default the installed fieldstation's.
    """
    if sw_version is None:
        from fieldstation import __version__

        sw_version = __version__
    node = node_id(station_id)
    messages = []
    for spec in SENSORS:
        if kinds is not None and spec.kind not in kinds:
            continue
        config = sensor_config(spec, station_id=station_id, prefix=prefix, sw_version=sw_version)
        messages.append(
            DiscoveryMessage(
                topic=f"{discovery_prefix}/sensor/{node}/{spec.object_id}/config",
                payload=json.dumps(config, separators=(",", ":")),
            )
        )
    return messages
