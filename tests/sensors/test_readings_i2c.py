"""I2C sensors on the fake register-level bus: BME280 compensation against Bosch's numbers,
chip checks, the MPU-6050 FIFO and its overflow (a fault the recorder must see)."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from fieldstation.sensors.base import DeviceError, SensorConfigError
from fieldstation.sensors.i2c import I2CConfig
from fieldstation.sensors.readings import bme280 as bme
from fieldstation.sensors.readings.bme280 import BME280Sensor
from fieldstation.sensors.readings.mpu6050 import MPU6050Sensor, scale_samples
from fieldstation.testing.i2c import EXAMPLE_CALIBRATION, FakeBME280, FakeBus, FakeMPU6050


def float_compensation(adc_t: int, adc_p: int, adc_h: int, c: bme.Calibration) -> Any:
    """The double-precision formulas of BST-BME280-DS002 section 8.1 (an independent check of
    the integer ones the driver uses): (°C, Pa, %RH)."""
    var1 = (adc_t / 16384.0 - c.T1 / 1024.0) * c.T2
    var2 = ((adc_t / 131072.0 - c.T1 / 8192.0) * (adc_t / 131072.0 - c.T1 / 8192.0)) * c.T3
    t_fine = var1 + var2
    temperature = t_fine / 5120.0
    var1 = t_fine / 2.0 - 64000.0
    var2 = var1 * var1 * c.P6 / 32768.0
    var2 = var2 + var1 * c.P5 * 2.0
    var2 = var2 / 4.0 + c.P4 * 65536.0
    var1 = (c.P3 * var1 * var1 / 524288.0 + c.P2 * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * c.P1
    p = 1048576.0 - adc_p
    p = (p - var2 / 4096.0) * 6250.0 / var1
    var1 = c.P9 * p * p / 2147483648.0
    var2 = p * c.P8 / 32768.0
    pressure = p + (var1 + var2 + c.P7) / 16.0
    h = t_fine - 76800.0
    h = (adc_h - (c.H4 * 64.0 + c.H5 / 16384.0 * h)) * (
        c.H2 / 65536.0 * (1.0 + c.H6 / 67108864.0 * h * (1.0 + c.H3 / 67108864.0 * h))
    )
    h = h * (1.0 - c.H1 * h / 524288.0)
    return temperature, pressure, min(100.0, max(0.0, h))


def test_bme280_integer_compensation_matches_boschs_worked_example() -> None:
    c = EXAMPLE_CALIBRATION
    t, t_fine = bme.compensate_temperature(519888, c)
    assert (t, t_fine) == (2508, 128422)  # 25.08 °C, BMP280 datasheet 3.12
    assert bme.compensate_pressure(415148, t_fine, c) / 256 == pytest.approx(100653.27, abs=0.05)


@pytest.mark.parametrize(
    ("adc_t", "adc_p", "adc_h"),
    list(itertools.product([400000, 519888, 560000], [300000, 415148, 480000], [20000, 30000])),
)
def test_bme280_integer_and_floating_point_formulas_agree(
    adc_t: int, adc_p: int, adc_h: int
) -> None:
    c = EXAMPLE_CALIBRATION
    t, p, h = bme.compensate(adc_t, adc_p, adc_h, c)
    ft, fp, fh = float_compensation(adc_t, adc_p, adc_h, c)
    assert t == pytest.approx(ft, abs=0.01)
    assert p * 100 == pytest.approx(fp, abs=0.5)
    assert h == pytest.approx(fh, abs=0.05)


def test_bme280_calibration_is_read_from_the_registers(clock: Any) -> None:
    chip = FakeBME280(clock)
    sensor = BME280Sensor(FakeBus({0x76: chip}).opener(), 0x76, 60, clock)
    sensor.open()
    assert sensor.calibration == EXAMPLE_CALIBRATION  # incl. the 12-bit H4/H5 sharing 0xE5
    block = sensor.read()
    assert block is not None and block.data.shape == (1, 3) and block.data.dtype == np.float64
    assert sensor.describe().rate == 1 and sensor.describe().options["period"] == 60
    sensor.close()


def test_wrong_or_missing_chips(clock: Any) -> None:
    mpu = FakeMPU6050(clock)
    with pytest.raises(SensorConfigError, match="not a BME280"):
        BME280Sensor(FakeBus({0x76: mpu}).opener(), 0x76, 60, clock).open()
    with pytest.raises(DeviceError, match="Remote I/O"):
        BME280Sensor(FakeBus({}).opener(), 0x76, 60, clock).open()
    with pytest.raises(DeviceError):
        MPU6050Sensor(FakeBus({}).opener(), clock=clock).open()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"chip": "bme280", "rate": 200}, "'rate' is for chip = 'mpu6050'"),
        ({"chip": "mpu6050", "period": "1m"}, "'period' is for slow chips"),
        ({"chip": "mpu6050", "rate": 400}, "use one of"),
        ({"chip": "bme280", "period": "0.5s"}, "at least 1 s"),
        ({"chip": "mpu6050", "rate": 1000, "block": 0.2}, "overflow"),
    ],
)
def test_i2c_config_errors_name_the_key(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        I2CConfig(name="x", kind="i2c", bus="fake", **entry)


def test_mpu6050_fifo_delivers_every_sample_once(clock: Any) -> None:
    chip = FakeMPU6050(clock)
    sensor = MPU6050Sensor(FakeBus({0x68: chip}).opener(), rate=250, clock=clock, block=0.1)
    sensor.open()
    blocks = [sensor.read() for _ in range(50)]
    assert all(b is not None for b in blocks)
    starts = [b.start_frame for b in blocks if b is not None]
    sizes = [b.frames for b in blocks if b is not None]
    assert starts == list(np.cumsum([0, *sizes[:-1]]))
    data = np.concatenate([b.data for b in blocks if b is not None])
    np.testing.assert_array_equal(data, scale_samples(chip.samples(0, len(data)), 2, 250))
    first, last = blocks[0], blocks[-1]
    assert first is not None and last is not None
    assert last.captured_at - first.captured_at == timedelta(seconds=last.start_frame / 250)
