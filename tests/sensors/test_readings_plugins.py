"""The readings sensor plugins: cheap to import, media ``readings``, slow or fast, w1 parsing,
replay_csv and serial config errors naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from fieldstation.config.plugins import load_plugin
from fieldstation.sensors.base import DeviceError, SensorConfigError
from fieldstation.sensors.readings.config import is_slow, period_of, rate_of_period

KINDS = ("system", "w1", "i2c", "serial", "replay_csv")
MODULES = [
    "fieldstation.sensors.system",
    "fieldstation.sensors.w1",
    "fieldstation.sensors.i2c",
    "fieldstation.sensors.serialport",
    "fieldstation.sensors.replay_csv",
]


def test_plugin_modules_import_no_heavy_library() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES)
        + "heavy = [m for m in ('numpy', 'pyarrow', 'serial', 'smbus2', 'pynmea2', 'psutil')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_is_a_readings_plugin(kind: str) -> None:
    plugin = load_plugin("sensors", kind)
    assert plugin.config_model.media == "readings"  # type: ignore[attr-defined]


def test_slow_or_fast_is_decided_by_the_period(tmp_path: Path) -> None:
    i2c = load_plugin("sensors", "i2c").config_model
    bme = i2c(name="a", kind="i2c", chip="bme280", bus="fake")
    mpu = i2c(name="b", kind="i2c", chip="mpu6050", bus="fake")
    assert is_slow(bme) and not is_slow(mpu)  # type: ignore[arg-type]
    assert rate_of_period(60) == 1 and rate_of_period(1) == 1
    from fieldstation.clock import VirtualClock

    clock = VirtualClock()
    fast = load_plugin("sensors", "i2c").factory(mpu, clock=clock)
    slow = load_plugin("sensors", "i2c").factory(bme, clock=clock)
    assert period_of(fast.describe()) is None and fast.describe().rate == 200
    assert period_of(slow.describe()) == 60 and slow.describe().rate == 1


W1_GOOD = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=-1250\n"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (W1_GOOD, -1.25),
        (W1_GOOD.replace("YES", "NO"), None),
        (W1_GOOD.replace("t=-1250", "t=85000"), None),
        ("", None),
        ("72 01 : crc=57 YES\n72 01 t=abc\n", None),
    ],
)
def test_w1_slave_parsing(text: str, value: float | None) -> None:
    from fieldstation.sensors.readings.w1 import parse_w1_slave

    assert parse_w1_slave(text) == value


def test_w1_without_thermometers_or_when_they_vanish(tmp_path: Path) -> None:
    from fieldstation.clock import VirtualClock
    from fieldstation.sensors.readings.w1 import W1Sensor
    from fieldstation.sensors.w1 import W1Config

    with pytest.raises(SensorConfigError, match="no DS18B20"):
        W1Sensor(W1Config(name="t", kind="w1", root=tmp_path), VirtualClock())
    (tmp_path / "28-01").mkdir()
    (tmp_path / "28-01" / "w1_slave").write_text(W1_GOOD)
    sensor = W1Sensor(W1Config(name="t", kind="w1", root=tmp_path), VirtualClock())
    sensor.open()
    block = sensor.read()
    assert block is not None and block.data.tolist() == [[-1.25]]
    (tmp_path / "28-01" / "w1_slave").unlink()
    with pytest.raises(DeviceError, match="no thermometer"):
        sensor.read()


@pytest.mark.parametrize(
    ("kind", "entry", "message"),
    [
        ("replay_csv", {"path": "x.csv", "columns": ["a", "b"], "units": ["C"]}, "one unit per"),
        ("serial", {"port": "/dev/x", "protocol": "keyvalue"}, "keys"),
        ("serial", {"port": "/dev/x", "protocol": "nmea", "keys": ["T"]}, "for protocol"),
        ("w1", {"period": "0.2s"}, "greater than or equal to 1"),
    ],
)
def test_config_errors_name_the_key(kind: str, entry: dict[str, Any], message: str) -> None:
    model = load_plugin("sensors", kind).config_model
    with pytest.raises(ValidationError, match=message):
        model(name="x", kind=kind, **entry)


def test_replay_csv_names_a_missing_column_or_file(tmp_path: Path) -> None:
    from fieldstation.clock import VirtualClock

    plugin = load_plugin("sensors", "replay_csv")
    path = tmp_path / "s.csv"
    path.write_text("date,temp\n2010-01-01,39.4\n2010-01-01,x\n")
    for columns, message in ((["rain"], "not in"), (["temp"], "line 3")):
        config = plugin.config_model(
            name="s", kind="replay_csv", path=path, columns=columns, units=["degF"]
        )
        with pytest.raises(SensorConfigError, match=message):
            plugin.factory(config, clock=VirtualClock())
    missing = plugin.config_model(
        name="s", kind="replay_csv", path=tmp_path / "no.csv", columns=["t"], units=["C"]
    )
    assert plugin.preflight is not None and "is not a file" in plugin.preflight(missing)[0]
    with pytest.raises(SensorConfigError, match="cannot be read"):
        plugin.factory(missing, clock=VirtualClock())
