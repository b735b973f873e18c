"""Detection summaries (periods, restarts, waiting for processing) and the INA219 reader."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from fieldstation.clock import VirtualClock
from fieldstation.config import StationConfig, parse_config, template_text
from fieldstation.config.health import BatteryConfig
from fieldstation.health.battery import Ina219Battery, percent_from_curve
from fieldstation.health.summary import Summarizer, period_floor
from fieldstation.home import StationHome
from fieldstation.store import Database
from fieldstation.store.deployments import start_deployment
from fieldstation.store.models import Message, Recording
from fieldstation.testing import rows

T0 = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)


def station(home: StationHome, **sections: Any) -> StationConfig:
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home.root)
    data.update(sections)
    return parse_config(data)


def add_recording(
    db: Database, start: datetime, detections: list[tuple[str, float]], state: str = "processed"
) -> int:
    with db.session() as session:
        rec = rows.add_recording(session, deployment_id=1, started_at=start, state=state)
        run = rows.add_model_run(session, rec.id, started_at=start)
        for index, (label, score) in enumerate(detections):
            at = start + timedelta(seconds=index)
            rows.add_detection(session, run, label=label, score=score, start=index, detected_at=at)
        return rec.id


def summaries(db: Database) -> list[dict[str, Any]]:
    with db.session() as session:
        payloads = session.scalars(
            select(Message.payload).where(Message.kind == "summary").order_by(Message.id)
        )
        return [json.loads(p)["body"] for p in payloads]


@pytest.fixture
def deployed(db: Database) -> Database:
    with db.session() as session:
        start_deployment(
            session,
            station_id="default",
            config_hash="h",
            config={},
            version="t",
            now=T0 + timedelta(minutes=10),
        )
    return db


def test_summaries_per_label_and_period_survive_restarts(
    home: StationHome, deployed: Database
) -> None:
    db = deployed
    clock = VirtualClock(T0 + timedelta(minutes=20))
    config = station(home)  # hourly summaries
    add_recording(db, T0 + timedelta(minutes=15), [("bat", 0.9), ("bat", 0.5), ("bird", 0.2)])
    add_recording(db, T0 + timedelta(minutes=70), [("bird", 0.8)])
    assert Summarizer(config, db, clock).summarize_once() == 0  # the first hour is not over
    clock.advance(3600)  # 01:20
    assert Summarizer(config, db, clock).summarize_once() == 1
    first = summaries(db)[0]
    assert first["period_start"] == T0.isoformat()
    assert first["period_end"] == (T0 + timedelta(hours=1)).isoformat()
    assert first["labels"] == [
        {"label": "bat", "count": 2, "max_score": 0.9, "mean_score": pytest.approx(0.7)},
        {"label": "bird", "count": 1, "max_score": 0.2, "mean_score": 0.2},
    ]
    assert first["detections"] == 3 and first["recordings"] == 1 and not first["late"]
    clock.advance(3 * 3600)  # 04:20; a new process (restart) neither repeats nor skips
    assert Summarizer(config, db, clock).summarize_once() == 3
    assert Summarizer(config, db, clock).summarize_once() == 0
    bodies = summaries(db)
    assert [b["period_start"] for b in bodies] == [
        (T0 + timedelta(hours=h)).isoformat() for h in range(4)
    ]
    assert bodies[1]["labels"] == [
        {"label": "bird", "count": 1, "max_score": 0.8, "mean_score": 0.8}
    ]
    assert bodies[2]["labels"] == [] and bodies[2]["detections"] == 0


def test_summaries_give_each_slow_sensors_values_per_period(
    home: StationHome, deployed: Database
) -> None:
    from fieldstation.store.readings import NewReading, insert_readings

    db = deployed
    with db.session() as session:
        for minute, (temp, hum) in enumerate([(20.0, 50.0), (22.0, 55.0), (24.5, 60.0)]):
            at = T0 + timedelta(minutes=15 + 20 * minute)
            insert_readings(
                session,
                deployment_id=1,
                sensor="air",
                readings=[
                    NewReading("temperature", "Cel", at, temp),
                    NewReading("humidity", "%", at, hum),
                ],
            )
        insert_readings(  # the next hour: not in the first summary
            session,
            deployment_id=1,
            sensor="air",
            readings=[NewReading("temperature", "Cel", T0 + timedelta(minutes=61), 30.0)],
        )
    clock = VirtualClock(T0 + timedelta(minutes=80))
    assert Summarizer(station(home), db, clock).summarize_once() == 1
    assert summaries(db)[0]["readings"] == [
        {
            "sensor": "air",
            "quantity": "humidity",
            "unit": "%",
            "count": 3,
            "min": 50.0,
            "max": 60.0,
            "mean": 55.0,
        },
        {
            "sensor": "air",
            "quantity": "temperature",
            "unit": "Cel",
            "count": 3,
            "min": 20.0,
            "max": 24.5,
            "mean": pytest.approx(22.166667),
        },
    ]


def test_summary_waits_for_processing_at_most_one_period(
    home: StationHome, deployed: Database
) -> None:
    db = deployed
    clock = VirtualClock(T0 + timedelta(minutes=65))
    config = station(home)
    rid = add_recording(db, T0 + timedelta(minutes=50), [], state="recorded")
    assert Summarizer(config, db, clock).summarize_once() == 0  # waits for the processor
    with db.session() as session:
        rec = session.get(Recording, rid)
        assert rec is not None
        rec.state = "processed"
    add_recording(db, T0 + timedelta(minutes=55), [("bat", 0.4)])
    assert Summarizer(config, db, clock).summarize_once() == 1
    assert summaries(db)[0]["labels"][0]["count"] == 1
    # a stuck recording delays the next period by one interval, then it is sent as late
    add_recording(db, T0 + timedelta(minutes=100), [], state="processing")
    clock.advance(3600)  # 02:05: period 01-02 ended, recording still unprocessed
    assert Summarizer(config, db, clock).summarize_once() == 0
    clock.advance(3600)  # 03:05: period 01-02 goes out late; 02-03 waits its extra hour
    assert Summarizer(config, db, clock).summarize_once() == 1
    assert [b["late"] for b in summaries(db)] == [False, True]
    clock.advance(3600)  # 04:05
    assert Summarizer(config, db, clock).summarize_once() == 1
    assert summaries(db)[-1]["period_end"] == (T0 + timedelta(hours=3)).isoformat()


def test_summaries_off(home: StationHome, deployed: Database) -> None:
    config = station(home, heartbeat={"summary_interval": 0})
    clock = VirtualClock(T0 + timedelta(days=2))
    assert Summarizer(config, deployed, clock).summarize_once() == 0


def test_period_floor() -> None:
    when = datetime(2026, 6, 1, 13, 47, 12, tzinfo=UTC)
    assert period_floor(when, 3600) == datetime(2026, 6, 1, 13, tzinfo=UTC)
    assert period_floor(when, 86400) == datetime(2026, 6, 1, tzinfo=UTC)


class FakeBus:
    """An INA219 answering with fixed registers (MSB first), as the datasheet describes."""

    def __init__(self, shunt_raw: int, bus_raw: int) -> None:
        self.registers = {0x01: shunt_raw & 0xFFFF, 0x02: bus_raw}
        self.closed = False

    def read_i2c_block_data(self, address: int, register: int, length: int) -> list[int]:
        assert address == 0x40 and length == 2
        value = self.registers[register]
        return [value >> 8, value & 0xFF]

    def close(self) -> None:
        self.closed = True


def test_ina219_reading_and_percent() -> None:
    config = BatteryConfig(enabled=True)
    # bus voltage 12.5 V: 12.5 / 4 mV = 3125, shifted left by 3; shunt 5 mV = 500 * 10 µV
    bus = FakeBus(shunt_raw=500, bus_raw=3125 << 3)
    reading = Ina219Battery(config, VirtualClock(), open_bus=lambda n: bus).read()
    assert reading is not None
    assert reading.current == pytest.approx(0.05)  # 5 mV over 0.1 ohm
    assert reading.voltage == pytest.approx(12.505)
    assert reading.power == pytest.approx(12.505 * 0.05)
    assert reading.percent == pytest.approx(percent_from_curve(12.505, config.curve))
    charging = FakeBus(shunt_raw=-300, bus_raw=3125 << 3)
    reading = Ina219Battery(config, VirtualClock(), open_bus=lambda n: charging).read()
    assert reading is not None and reading.current == pytest.approx(-0.03)


def test_percent_curve() -> None:
    curve = [(11.8, 0.0), (12.2, 25.0), (13.0, 100.0)]
    assert percent_from_curve(11.0, curve) == 0.0
    assert percent_from_curve(12.0, curve) == pytest.approx(12.5)
    assert percent_from_curve(12.6, curve) == pytest.approx(62.5)
    assert percent_from_curve(14.0, curve) == 100.0
    assert percent_from_curve(12.0, []) is None


def test_absent_battery_is_none_and_retried_slowly() -> None:
    clock = VirtualClock()
    opened: list[int] = []

    def absent(bus: int) -> FakeBus:
        opened.append(bus)
        raise FileNotFoundError(f"/dev/i2c-{bus}")

    battery = Ina219Battery(BatteryConfig(enabled=True, retry_interval=600), clock, open_bus=absent)
    assert battery.read() is None and opened == [1]
    clock.advance(599)
    assert battery.read_dict() is None and opened == [1]  # not retried yet
    clock.advance(1)
    assert battery.read() is None and opened == [1, 1]
    assert battery.last_error is not None and "i2c-1" in battery.last_error
    assert Ina219Battery(BatteryConfig(), clock, open_bus=absent).read() is None  # disabled
    assert opened == [1, 1]


def test_battery_without_smbus2_installed() -> None:
    battery = Ina219Battery(BatteryConfig(enabled=True, bus=99), VirtualClock())
    assert battery.read() is None  # no smbus2 or no /dev/i2c-99: None, no crash


def test_progress_survives_the_outbox_purge(home: StationHome, deployed: Database) -> None:
    from sqlalchemy import update

    from fieldstation.store.models import Delivery
    from fieldstation.store.outbox import purge_settled

    db = deployed
    clock = VirtualClock(T0 + timedelta(hours=5, minutes=5))
    config = station(home)
    assert Summarizer(config, db, clock).summarize_once() == 5
    with db.session() as session:
        session.execute(update(Delivery).values(state="sent"))
        assert purge_settled(session, before=clock.now() + timedelta(days=1)) == 4
    clock.advance(3600)
    assert Summarizer(config, db, clock).summarize_once() == 1  # continues, no repeat
    starts = [b["period_start"] for b in summaries(db)]
    assert starts == [(T0 + timedelta(hours=h)).isoformat() for h in (4, 5)]
