"""Home Assistant MQTT discovery: the configs against Home Assistant's documented schema of an
MQTT sensor, retained on a real Mosquitto, and their value templates rendered (Jinja2, as Home
Assistant does) against the real messages the station sends."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Literal

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fieldstation import __version__
from fieldstation.clock import SystemClock, VirtualClock
from fieldstation.config import StationConfig
from fieldstation.health.heartbeat import Heartbeat
from fieldstation.home import StationHome
from fieldstation.messages import parse_message
from fieldstation.outbox.delivery import DeliveryLoop
from fieldstation.outbox.homeassistant import SENSORS, discovery_messages, node_id
from fieldstation.outbox.mqtt import MqttMessenger, MqttOutputConfig
from fieldstation.store import Database
from fieldstation.store import outbox as store
from fieldstation.testing.broker import MosquittoBroker

STATION = "hedge.07"
"""A station id with a character Home Assistant's discovery topics do not take ('.')."""

# --- Home Assistant's MQTT sensor discovery schema, transcribed -----------------------------
# Keys and rules from https://www.home-assistant.io/integrations/sensor.mqtt/ (configuration
# variables), https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery (discovery
# topic, device and origin blocks) and homeassistant/components/mqtt/sensor.py
# (validate_sensor_state_and_device_class_config), homeassistant/components/sensor/const.py
# (device classes, DEVICE_CLASS_UNITS, NON_NUMERIC_DEVICE_CLASSES).

_DISCOVERY_TOPIC = re.compile(
    r"^(?P<prefix>[^/#+]+)/(?P<component>sensor)/(?:(?P<node>[a-zA-Z0-9_-]+)/)?"
    r"(?P<object>[a-zA-Z0-9_-]+)/config$"
)
"""``<discovery_prefix>/<component>/[<node_id>/]<object_id>/config`` (mqtt/discovery.py)."""


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


SENSOR_DEVICE_CLASSES = _words(
    """apparent_power aqi area atmospheric_pressure battery blood_glucose_concentration
    carbon_dioxide carbon_monoxide current data_rate data_size date distance duration energy
    energy_distance energy_storage enum frequency gas humidity illuminance irradiance moisture
    monetary nitrogen_dioxide nitrogen_monoxide nitrous_oxide ozone ph pm1 pm10 pm25 power
    power_factor precipitation precipitation_intensity pressure reactive_power signal_strength
    sound_pressure speed sulphur_dioxide temperature timestamp volatile_organic_compounds
    volatile_organic_compounds_parts voltage volume volume_flow_rate volume_storage water weight
    wind_direction wind_speed"""
)
"""SensorDeviceClass (sensor/const.py)."""
NON_NUMERIC_DEVICE_CLASSES = {"date", "enum", "timestamp"}
DEVICE_CLASS_UNITS: dict[str, frozenset[str]] = {  # the classes used here (sensor/const.py)
    "battery": frozenset({"%"}),
    "data_size": _words(
        "bit kbit Mbit Gbit B kB MB GB TB PB EB ZB YB KiB MiB GiB TiB PiB EiB ZiB YiB"
    ),
}


StateClass = Literal["measurement", "measurement_angle", "total", "total_increasing"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HaDevice(_Strict):
    """The ``device`` block (mqtt/schemas.py MQTT_ENTITY_DEVICE_INFO_SCHEMA)."""

    identifiers: list[str] | str | None = None
    connections: list[list[str]] | None = None
    name: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    model_id: str | None = None
    sw_version: str | None = None
    hw_version: str | None = None
    serial_number: str | None = None
    suggested_area: str | None = None
    configuration_url: str | None = None
    via_device: str | None = None

    @model_validator(mode="after")
    def _identified(self) -> HaDevice:
        assert self.identifiers or self.connections, "a device needs identifiers or connections"
        return self


class HaOrigin(_Strict):
    """The ``origin`` block (mqtt/schemas.py MQTT_ORIGIN_INFO_SCHEMA)."""

    name: str
    sw_version: str | None = None
    support_url: str | None = None


class HaAvailability(_Strict):
    topic: str
    payload_available: str = "online"
    payload_not_available: str = "offline"
    value_template: str | None = None


class HaMqttSensor(_Strict):
    """An MQTT sensor's discovery config, full key names (abbreviations are not used here)."""

    state_topic: str
    name: str | None = None
    unique_id: str | None = None
    object_id: str | None = None
    default_entity_id: str | None = None
    value_template: str | None = None
    last_reset_value_template: str | None = None
    unit_of_measurement: str | None = None
    device_class: str | None = None
    state_class: StateClass | None = None
    options: list[str] | None = None
    suggested_display_precision: int | None = Field(default=None, ge=0)
    expire_after: int | None = Field(default=None, ge=0)
    force_update: bool = False
    qos: Literal[0, 1, 2] = 0
    encoding: str = "utf-8"
    icon: str | None = Field(default=None, pattern=r"^[a-z0-9-]+:[a-z0-9-]+$")
    entity_category: Literal["config", "diagnostic"] | None = None
    entity_picture: str | None = None
    enabled_by_default: bool = True
    json_attributes_topic: str | None = None
    json_attributes_template: str | None = None
    availability_topic: str | None = None
    availability_template: str | None = None
    availability_mode: Literal["all", "any", "latest"] = "latest"
    availability: list[HaAvailability] | None = None
    payload_available: str = "online"
    payload_not_available: str = "offline"
    device: HaDevice | None = None
    origin: HaOrigin | None = None
    platform: Literal["mqtt"] | None = None

    @model_validator(mode="after")
    def _home_assistant_rules(self) -> HaMqttSensor:
        """mqtt/sensor.py validate_sensor_state_and_device_class_config and the schema's
        exclusive groups."""
        assert not (self.availability and self.availability_topic), (
            "availability and availability_topic are exclusive"
        )
        if self.device_class is not None and self.device_class not in SENSOR_DEVICE_CLASSES:
            raise ValueError(f"unknown sensor device_class {self.device_class}")
        if self.state_class and self.device_class in NON_NUMERIC_DEVICE_CLASSES:
            raise ValueError(f"state_class with non-numeric device_class {self.device_class}")
        if self.device_class == "enum" and not self.options:
            raise ValueError("device_class enum needs options")
        if self.options is not None:
            if self.device_class not in (None, "enum"):
                raise ValueError("options only with device_class enum")
            if self.state_class or self.unit_of_measurement:
                raise ValueError("options exclude state_class and unit_of_measurement")
        if self.device_class in DEVICE_CLASS_UNITS and (
            self.unit_of_measurement not in DEVICE_CLASS_UNITS[self.device_class]
        ):
            raise ValueError(f"unit {self.unit_of_measurement} invalid for {self.device_class}")
        if self.last_reset_value_template is not None and self.state_class != "total":
            raise ValueError("last_reset_value_template needs state_class total")
        return self


# --- helpers ---------------------------------------------------------------------------------

_JINJA = ImmutableSandboxedEnvironment()
"""Home Assistant renders templates in an immutable sandbox; the filters used are Jinja2's."""


def render(template: str, payload: str) -> str:
    """What Home Assistant's ``render_with_possible_json_value`` gives for ``payload``."""
    return _JINJA.from_string(template).render(value=payload, value_json=json.loads(payload))


def _config(**extra: Any) -> MqttOutputConfig:
    return MqttOutputConfig.model_validate(
        {"name": "ha", "kind": "mqtt", "host": "127.0.0.1", **extra}
    )


# --- the payloads ----------------------------------------------------------------------------


def test_every_config_matches_home_assistants_sensor_schema() -> None:
    messages = discovery_messages(station_id=STATION, prefix="fieldstation", sw_version="1.2.3")
    assert len(messages) == len(SENSORS) == 6
    unique_ids = set()
    for message in messages:
        match = _DISCOVERY_TOPIC.match(message.topic)
        assert match, message.topic
        assert match["prefix"] == "homeassistant" and match["node"] == "hedge_07"
        config = json.loads(message.payload)
        sensor = HaMqttSensor.model_validate(config)  # raises on an unknown key or a broken rule
        assert sensor.state_topic.startswith(f"fieldstation/{STATION}/")
        assert sensor.availability_topic == f"fieldstation/{STATION}/status"
        assert (sensor.payload_available, sensor.payload_not_available) == ("online", "offline")
        assert sensor.device is not None and sensor.device.identifiers == ["fieldstation_hedge_07"]
        assert sensor.device.name == STATION and sensor.device.sw_version == "1.2.3"
        assert sensor.qos == 1
        unique_ids.add(sensor.unique_id)
    assert len(unique_ids) == len(messages)
    by_object = {m.topic.split("/")[3]: json.loads(m.payload) for m in messages}
    assert set(by_object) == {
        "status",
        "last_detection",
        "last_detection_at",
        "detections",
        "disk_free",
        "battery",
    }
    assert by_object["battery"]["device_class"] == "battery"
    assert by_object["disk_free"]["unit_of_measurement"] == "B"
    assert by_object["last_detection_at"]["device_class"] == "timestamp"


def test_the_schema_refuses_what_home_assistant_refuses() -> None:
    """The transcribed schema can fail: a typo, a unit of the wrong class, state_class on a
    timestamp are refused."""
    good = json.loads(discovery_messages(station_id="s", prefix="p")[0].payload)
    HaMqttSensor.model_validate(good)
    for broken in (
        {**good, "stat_topic": "x"},
        {**good, "device_class": "battery", "unit_of_measurement": "V", "options": None},
        {**good, "device_class": "timestamp", "state_class": "measurement", "options": None},
        {**good, "options": None},  # enum without options
    ):
        with pytest.raises(ValueError):
            HaMqttSensor.model_validate(broken)


def test_only_sensors_of_kinds_the_output_receives() -> None:
    kinds = ["heartbeat", "event"]
    messages = discovery_messages(station_id="s1", prefix="fs", kinds=kinds)
    assert {json.loads(m.payload)["state_topic"] for m in messages} == {"fs/s1/heartbeat"}
    assert {m.topic.split("/")[3] for m in messages} == {
        "status",
        "detections",  # today's count comes with the heartbeat
        "disk_free",
        "battery",
    }
    assert discovery_messages(station_id="s1", prefix="fs", kinds=["readings"]) == []


def test_default_sw_version_and_node_id() -> None:
    config = json.loads(discovery_messages(station_id="a", prefix="p")[0].payload)
    assert config["device"]["sw_version"] == __version__
    assert node_id("st-1_a.b c") == "st-1_a_b_c"


def test_options_on_the_mqtt_output() -> None:
    assert _config().home_assistant is False
    on = _config(home_assistant=True, discovery_prefix="ha")
    assert (on.home_assistant, on.discovery_prefix) == (True, "ha")
    with pytest.raises(ValueError):
        _config(discovery_prefix="home/#")


# --- a real broker, real messages -------------------------------------------------------------


class _Retained:
    """A plain paho subscriber keeping the last payload per topic and whether it was retained
    (discovery configs are not envelopes, so the envelope-counting test subscriber does not fit)."""

    def __init__(self, broker: MosquittoBroker, topic: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.last: dict[str, tuple[str, bool]] = {}
        self.changed = threading.Condition()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ha-test-{id(self)}")
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the test subscriber could not subscribe"

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self.changed:
            self.last[message.topic] = (message.payload.decode(), bool(message.retain))
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def ha_station(
    make_station: Callable[..., StationConfig], broker: MosquittoBroker
) -> StationConfig:
    output = {
        "name": "broker",
        "kind": "mqtt",
        "host": broker.host,
        "port": broker.port,
        "reconnect_max": "1s",
        "connect_timeout": "5s",
        "ack_timeout": "5s",
        "home_assistant": True,
    }
    config = make_station([output], batch_size=10)
    config.station.id = STATION
    return config


@pytest.fixture
def retained(broker: MosquittoBroker) -> Iterator[_Retained]:
    sub = _Retained(broker, "#")
    yield sub
    sub.close()


def _detection_body() -> dict[str, Any]:
    at = "2026-06-01T04:12:09+00:00"
    item = {"start": 0.0, "end": 3.0, "low_hz": None, "high_hz": None, "extra": {}}
    return {
        "recording_id": 7,
        "sensor": "mic",
        "recording_started_at": "2026-06-01T04:12:00+00:00",
        "processor": "birdnet",
        "model": "birdnet",
        "model_version": "2.4",
        "detections": [
            {**item, "label": "Erithacus rubecula", "score": 0.71, "detected_at": at},
            {
                **item,
                "label": "Turdus merula",
                "score": 0.93,
                "detected_at": "2026-06-01T04:12:03+00:00",
            },
            {**item, "label": "Parus major", "score": 0.40, "detected_at": at},
        ],
    }


def _summary_body() -> dict[str, Any]:
    return {
        "period_start": "2026-06-01T00:00:00+00:00",
        "period_end": "2026-06-02T00:00:00+00:00",
        "interval": 86400.0,
        "recordings": 288,
        "recorded_s": 86400.0,
        "detections": 42,
        "labels": [],
        "late": False,
    }


def test_a_subscriber_sees_retained_configs_whose_templates_read_the_real_messages(
    ha_station: StationConfig,
    home: StationHome,
    db: Database,
    broker: MosquittoBroker,
    retained: _Retained,
) -> None:
    battery = {"voltage": 12.4, "current": 0.3, "power": 3.72, "percent": 87.5}
    beat = Heartbeat(ha_station, db, SystemClock(), home, battery=lambda: battery).beat_once()
    with db.session() as session:
        now = datetime.now(UTC)
        store.enqueue_many(
            session,
            [
                store.NewMessage("detection", _detection_body(), ["broker"]),
                store.NewMessage("summary", _summary_body(), ["broker"]),
            ],
            now=now,
            station_id=STATION,
        )
    loop = DeliveryLoop(ha_station, db, SystemClock(), home)
    try:
        assert loop.run_once() == 3
        configs = {
            m.topic: json.loads(m.payload)
            for m in discovery_messages(station_id=STATION, prefix="fieldstation")
        }
        states = {config["state_topic"] for config in configs.values()}
        assert retained.wait_for(
            lambda: (
                set(configs) | states <= set(retained.last)
                and retained.last.get(f"fieldstation/{STATION}/status", ("",))[0] == "online"
            )
        ), f"seen: {sorted(retained.last)}"
        for topic, config in configs.items():
            assert json.loads(retained.last[topic][0]) == config
        values = {}
        for topic, config in configs.items():
            message, _ = retained.last[config["state_topic"]]
            parse_message(message)  # a real, valid station message
            values[topic.split("/")[3]] = render(config["value_template"], message)
        assert values == {
            "status": beat["status"],
            "last_detection": "Turdus merula",
            "last_detection_at": "2026-06-01T04:12:09+00:00",
            "detections": str(beat["metrics"]["detections_today"]["count"]),  # not the 42
            # of the summary: today's count, from the heartbeat
            "disk_free": str(beat["metrics"]["host"]["disk_free"]),
            "battery": "87.5",
        }
        assert int(values["disk_free"]) > 0
        heartbeat, _ = retained.last[f"fieldstation/{STATION}/heartbeat"]
        reset = configs["homeassistant/sensor/hedge_07/detections/config"]
        since = render(reset["last_reset_value_template"], heartbeat)
        assert since == beat["metrics"]["detections_today"]["since"]
    finally:
        loop.close()
    # a late subscriber (Home Assistant starting after the station) still gets every config
    late = _Retained(broker, "homeassistant/#")
    try:
        assert late.wait_for(lambda: set(configs) <= set(late.last))
        assert all(late.last[t][1] for t in configs), "the configs must be retained"
    finally:
        late.close()


def test_without_a_battery_the_battery_sensor_is_unknown(
    make_station: Callable[..., StationConfig], db: Database, home: StationHome
) -> None:
    """No battery: the template renders ``None``, Home Assistant's payload for "unknown"."""
    config = make_station([])
    body = Heartbeat(config, db, VirtualClock(), home).build()
    envelope = json.dumps(
        {
            "schema": 1,
            "id": "x",
            "kind": "heartbeat",
            "station": "s",
            "created_at": "2026-06-01T00:00:00+00:00",
            "body": body,
        }
    )
    parse_message(envelope)
    template = {s.object_id: s.value_template for s in SENSORS}
    assert render(template["battery"], envelope) == "None"
    no_disk = json.loads(envelope)
    no_disk["body"]["metrics"]["host"] = {}
    assert render(template["disk_free"], json.dumps(no_disk)) == "None"


def _heartbeat_envelope(body: dict[str, Any]) -> str:
    envelope = json.dumps(
        {
            "schema": 1,
            "id": "x",
            "kind": "heartbeat",
            "station": "s",
            "created_at": "2026-06-01T00:00:00+00:00",
            "body": body,
        }
    )
    parse_message(envelope)  # a valid station message
    return envelope


def test_detections_today_counts_the_stations_local_day_on_virtual_time(
    make_station: Callable[..., StationConfig], db: Database, home: StationHome
) -> None:
    """The "Detections today" sensor is the station's local day so far (its timezone), not a summary
    period: at 03:00 UTC in New York (UTC-4) the day began at 04:00 UTC the day before; a
    reprocessed recording counts once; the count starts again at local midnight."""
    from datetime import timedelta

    from fieldstation.store.deployments import start_deployment
    from fieldstation.testing import rows

    config = make_station([])
    config.station.timezone = "America/New_York"
    clock = VirtualClock(datetime(2026, 6, 2, 3, 0, tzinfo=UTC))  # 23:00 on June 1 in New York
    with db.session() as session:
        deployment = start_deployment(
            session,
            station_id="s",
            config_hash="x" * 64,
            config={},
            version="test",
            now=clock.now(),
        ).id

        def recording(at: datetime, labels: int, reruns: int = 0) -> None:
            rec = rows.add_recording(session, deployment_id=deployment, started_at=at)
            for _ in range(1 + reruns):  # each rerun: a re-analysis finding the same again
                run = rows.add_model_run(session, rec.id, started_at=at)
                for i in range(labels):
                    rows.add_detection(
                        session, run, label="owl", score=0.9, detected_at=at, start=float(i)
                    )

        recording(datetime(2026, 6, 1, 3, 59, tzinfo=UTC), 5)  # 23:59 on May 31 local
        recording(datetime(2026, 6, 1, 4, 0, tzinfo=UTC), 2)  # 00:00 on June 1 local
        recording(datetime(2026, 6, 1, 23, 30, tzinfo=UTC), 3, reruns=1)  # counted once
        recording(datetime(2026, 6, 2, 2, 0, tzinfo=UTC), 1)  # 22:00 local, past UTC midnight
    template = {s.object_id: s for s in SENSORS}["detections"]
    beat = Heartbeat(config, db, clock, home).build()
    assert beat["metrics"]["detections_today"] == {
        "count": 6,
        "since": "2026-06-01T00:00:00-04:00",
    }
    envelope = _heartbeat_envelope(beat)
    assert render(template.value_template, envelope) == "6"
    reset = template.extra["last_reset_value_template"]
    assert render(reset, envelope) == "2026-06-01T00:00:00-04:00"
    clock.advance(timedelta(hours=1, minutes=30).total_seconds())  # 00:30 on June 2 local
    beat = Heartbeat(config, db, clock, home).build()
    assert beat["metrics"]["detections_today"] == {
        "count": 0,
        "since": "2026-06-02T00:00:00-04:00",
    }
    # a station whose database could not be read: the sensor is unknown, not 0
    del beat["metrics"]["detections_today"]
    envelope = _heartbeat_envelope(beat)
    assert render(template.value_template, envelope) == "None"
    assert render(reset, envelope) == "None"


def test_messenger_publishes_configs_only_when_asked(broker: MosquittoBroker) -> None:
    """Off by default: no discovery; on: the configs come before ``online``, and paho's
    queue has room for them."""
    plain = MqttMessenger(
        _config(host=broker.host, port=broker.port), station_id="s", clock=SystemClock()
    )
    on = MqttMessenger(
        _config(host=broker.host, port=broker.port, home_assistant=True, client_id="x"),
        station_id="s2",
        clock=SystemClock(),
        batch_size=10,
    )
    try:
        assert plain.discovery == []
        assert len(on.discovery) == 6 and on.queue_limit == 10 + 2 + 6
        sub = _Retained(broker, "homeassistant/#")
        try:
            assert sub.wait_for(lambda: len(sub.last) == 6)
            assert all(
                json.loads(p)["state_topic"].startswith("fieldstation/s2/")
                for p, _ in sub.last.values()
            )
        finally:
            sub.close()
    finally:
        plain.close()
        on.close()
