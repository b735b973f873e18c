"""Slow sensors (w1 thermometers in a fake sysfs folder, a BME280 on the fake I2C bus, a
replayed real CSV series, this machine's own health) through ``run_readings``: rows in one
batch per period, one outbox message per sensor per period, in the same transaction."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from fieldstation.job import ConfigurationError
from fieldstation.recording.rows import run_readings
from fieldstation.sensors.readings import bme280 as bme
from fieldstation.store.models import Message, Reading
from fieldstation.store.readings import delete_older_than, latest_values
from fieldstation.testing.i2c import FakeBME280, FakeBus, daily_weather

PERIOD = 60


def seattle_csv() -> Path:
    import vega_datasets

    return Path(vega_datasets.__file__).parent / "_data" / "seattle-temps.csv"


def thermometers(root: Path) -> Path:
    """A fake ``/sys/bus/w1/devices``: one good DS18B20, one with a failed CRC, one that
    reset before converting (85 °C)."""
    files = {
        "28-000005e2fdc3": "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n"
        "72 01 4b 46 7f ff 0e 10 57 t=23125\n",
        "28-000005e2fdc4": "72 01 4b 46 7f ff 0e 10 57 : crc=12 NO\n"
        "72 01 4b 46 7f ff 0e 10 57 t=23125\n",
        "28-000005e2fdc5": "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n"
        "50 05 4b 46 7f ff 0c 10 1c t=85000\n",
    }
    for device, text in files.items():
        (root / device).mkdir(parents=True)
        (root / device / "w1_slave").write_text(text)
    (root / "w1_bus_master1").mkdir()
    return root


@pytest.fixture
def counted_inserts() -> Iterator[list[str]]:
    """Every INSERT statement into ``readings`` any engine runs (one executemany each)."""
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO READINGS"):
            seen.append(statement)

    event.listen(Engine, "before_cursor_execute", before)
    yield seen
    event.remove(Engine, "before_cursor_execute", before)


def stored(db: Any, sensor: str) -> tuple[list[Reading], list[dict[str, Any]]]:
    with db.session() as session:
        rows = list(
            session.scalars(select(Reading).where(Reading.sensor == sensor).order_by(Reading.id))
        )
        payloads = [
            json.loads(p)
            for p in session.scalars(
                select(Message.payload).where(Message.kind == "readings").order_by(Message.id)
            )
        ]
    return rows, [p for p in payloads if p["body"]["sensor"] == sensor]


def run_ten_minutes(ctx: Any, name: str, **kwargs: Any) -> Any:
    start = ctx.clock.now()
    run_readings(ctx, name, until=start + timedelta(minutes=10), **kwargs)
    return start


def check_batches(rows: list[Reading], messages: list[dict[str, Any]], start: Any) -> None:
    """10 periods: one message each, at start + k * 60 s, whose values are the period's rows."""
    times = [start + timedelta(seconds=PERIOD * k) for k in range(10)]
    assert [m["body"]["measured_at"] for m in messages] == [t.isoformat() for t in times]
    assert len({m["id"] for m in messages}) == 10
    for message, at in zip(messages, times, strict=True):
        body = message["body"]
        assert body["period"] == PERIOD
        mine = {r.quantity: r.value for r in rows if r.measured_at == at}
        assert mine == {q: v for q, v in body["values"].items() if v is not None}
        assert {r.unit for r in rows if r.measured_at == at} <= set(body["units"].values())
    assert {r.measured_at for r in rows} <= set(times)


def test_w1_thermometers_store_good_values_and_reject_crc_and_power_on_values(
    make_station, make_ctx, db, tmp_path, counted_inserts
):  # type: ignore[no-untyped-def]
    root = thermometers(tmp_path / "w1")
    ctx, progress = make_ctx(
        make_station({"name": "soil", "kind": "w1", "root": str(root), "period": "60s"})
    )
    start = run_ten_minutes(ctx, "soil")
    rows, messages = stored(db, "soil")
    check_batches(rows, messages, start)
    assert {(r.quantity, r.unit, r.value) for r in rows} == {
        ("temperature_28-000005e2fdc3", "Cel", 23.125)
    }
    assert len(rows) == 10
    assert messages[0]["body"]["values"] == {
        "temperature_28-000005e2fdc3": 23.125,
        "temperature_28-000005e2fdc4": None,  # CRC NO
        "temperature_28-000005e2fdc5": None,  # 85 °C power-on value
    }
    assert len(counted_inserts) == 10  # one batch per period, not one INSERT per value
    assert len(progress.of("readings")) == 10


def test_bme280_on_the_fake_bus_stores_compensated_values(
    make_station, make_ctx, db, counted_inserts
):  # type: ignore[no-untyped-def]
    ctx, _ = make_ctx(
        make_station(
            {"name": "air", "kind": "i2c", "chip": "bme280", "bus": "fake", "period": "1m"}
        )
    )
    chip = FakeBME280(ctx.clock)
    from fieldstation.sensors.readings.bme280 import BME280Sensor

    sensor = BME280Sensor(FakeBus({0x76: chip}).opener(), 0x76, PERIOD, ctx.clock)
    start = run_ten_minutes(ctx, "air", sensor=sensor)
    rows, messages = stored(db, "air")
    check_batches(rows, messages, start)
    assert len(rows) == 30 and len(counted_inserts) == 10
    assert len(chip.measurements) == 10
    for (at, adc_t, adc_p, adc_h), message in zip(chip.measurements, messages, strict=True):
        t, p, h = bme.compensate(adc_t, adc_p, adc_h, chip.calibration)
        assert message["body"]["values"] == {"temperature": t, "pressure": p, "humidity": h}
        want_t, want_p, want_h = daily_weather(at)
        assert abs(t - want_t) <= 0.01 and abs(p - want_p) <= 0.01 and abs(h - want_h) <= 0.01
    assert messages[0]["body"]["units"] == {
        "temperature": "Cel",
        "pressure": "hPa",
        "humidity": "%",
    }


def test_replayed_seattle_temperatures_are_the_real_series_in_celsius(
    make_station, make_ctx, db, counted_inserts
):  # type: ignore[no-untyped-def]
    from vega_datasets import data  # pandas reads the same file another way

    series = data.seattle_temps()["temp"].tolist()
    ctx, _ = make_ctx(
        make_station(
            {
                "name": "seattle",
                "kind": "replay_csv",
                "path": str(seattle_csv()),
                "columns": ["temp"],
                "quantities": ["temperature"],
                "units": ["Cel"],
                "convert": "degF_to_Cel",
                "period": "60s",
            }
        )
    )
    start = run_ten_minutes(ctx, "seattle")
    rows, messages = stored(db, "seattle")
    check_batches(rows, messages, start)
    assert [r.value for r in rows] == pytest.approx([(f - 32) * 5 / 9 for f in series[:10]])
    assert len(counted_inserts) == 10


def test_a_replay_that_ends_stops_the_job_when_asked(make_station, make_ctx, db):  # type: ignore[no-untyped-def]
    from vega_datasets import data

    total = len(data.seattle_temps())
    ctx, progress = make_ctx(
        make_station(
            {
                "name": "seattle",
                "kind": "replay_csv",
                "path": str(seattle_csv()),
                "columns": ["temp"],
                "units": ["degF"],
                "start_row": total - 5,
                "period": "1h",
            }
        )
    )
    run_readings(ctx, "seattle", stop_when_exhausted=True)
    rows, messages = stored(db, "seattle")
    assert len(rows) == len(messages) == 5
    assert rows[-1].measured_at == rows[0].measured_at + timedelta(hours=4)


def test_system_sensor_measures_this_machine(make_station, make_ctx, db, home):  # type: ignore[no-untyped-def]
    ctx, _ = make_ctx(make_station({"name": "sys", "kind": "system", "period": "60s"}))
    start = run_ten_minutes(ctx, "sys")
    rows, messages = stored(db, "sys")
    check_batches(rows, messages, start)
    last = {q: r.value for (_, q), r in latest_values_of(db, "sys").items()}
    assert {"load_1m", "memory_used", "disk_free", "disk_used"} <= set(last)
    assert last["disk_free"] > 0 and 0 < last["memory_used"] < 100
    assert messages[0]["body"]["units"]["disk_free"] == "By"


def latest_values_of(db: Any, sensor: str) -> dict[tuple[str, str], Reading]:
    with db.session() as session:
        found = latest_values(session, sensor)
        for row in found.values():
            session.expunge(row)
    return found


def test_latest_values_and_retention(make_station, make_ctx, db, tmp_path):  # type: ignore[no-untyped-def]
    root = thermometers(tmp_path / "w1")
    ctx, _ = make_ctx(
        make_station({"name": "soil", "kind": "w1", "root": str(root), "period": "60s"})
    )
    start = run_ten_minutes(ctx, "soil")
    latest = latest_values_of(db, "soil")
    assert [r.measured_at for r in latest.values()] == [start + timedelta(minutes=9)]
    with db.session() as session:
        assert delete_older_than(session, start + timedelta(minutes=5)) == 5
    rows, _ = stored(db, "soil")
    assert min(r.measured_at for r in rows) == start + timedelta(minutes=5)


def test_a_stream_sensor_is_not_run_as_rows(make_station, make_ctx):  # type: ignore[no-untyped-def]
    ctx, _ = make_ctx(
        make_station({"name": "imu", "kind": "i2c", "chip": "mpu6050", "bus": "fake"})
    )
    with pytest.raises(ConfigurationError, match="no 'period'"):
        run_readings(ctx, "imu")
