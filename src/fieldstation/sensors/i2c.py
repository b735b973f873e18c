"""I2C sensors through smbus2: a Bosch BME280 (slow: temperature, humidity, pressure) or an
InvenSense MPU-6050 IMU (fast: accelerometer + gyroscope stream at 4-1000 Hz).

``chip = "bme280"`` takes one forced measurement per ``period`` and stores rows
(``run_readings``); ``chip = "mpu6050"`` streams ``rate`` Hz through the recorder into Arrow
chunk files. ``bus`` is the Linux I2C bus number (``/dev/i2c-<bus>``) or ``"fake"``: the
register-level models of :mod:`fieldstation.testing.i2c` on the station's clock (needs no
hardware; for tests and demos). Decision record 0073.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from fieldstation.config.plugins import Plugin
from fieldstation.config.units import Hertz, Seconds
from fieldstation.sensors.readings.config import MIN_PERIOD, ReadingsSensorConfig

__all__ = ["DEFAULT_ADDRESSES", "I2CConfig", "plugin"]

DEFAULT_ADDRESSES = {"bme280": 0x76, "mpu6050": 0x68}
MPU_RATES = (4, 5, 8, 10, 20, 25, 40, 50, 100, 125, 200, 250, 500, 1000)


class I2CConfig(ReadingsSensorConfig):
    """A BME280 or an MPU-6050 on an I2C bus."""

    media: ClassVar[str] = "readings"

    chip: Literal["bme280", "mpu6050"] = Field(description="bme280 or mpu6050.")
    bus: int | Literal["fake"] = Field(
        default=1, description="I2C bus number (/dev/i2c-N), or 'fake' (simulated chips)."
    )
    address: int | None = Field(
        default=None,
        ge=0x03,
        le=0x77,
        description="7-bit I2C address; default 0x76 (bme280) or 0x68 (mpu6050).",
    )
    period: Seconds | None = Field(
        default=None,
        description="bme280: seconds between measurements (at least 1 s; default 60 s).",
    )
    rate: Hertz | None = Field(
        default=None, description="mpu6050: sample rate, Hz (1000 / (1 + n), default 200)."
    )
    range_g: Literal[2, 4, 8, 16] = Field(default=2, description="mpu6050: accel full scale, ±g.")
    range_dps: Literal[250, 500, 1000, 2000] = Field(
        default=250, description="mpu6050: gyro full scale, ±°/s."
    )
    block: Seconds = Field(
        default=0.1, gt=0, le=0.4, description="mpu6050: seconds between FIFO reads."
    )

    @model_validator(mode="after")
    def _check(self) -> I2CConfig:
        if self.chip == "bme280":
            if self.rate is not None:
                raise ValueError(
                    "'rate' is for chip = 'mpu6050'; a bme280 is sampled every 'period' seconds"
                )
            if self.period is None:
                self.period = 60.0
            if self.period < MIN_PERIOD:
                raise ValueError(f"period {self.period:g} s: a bme280 period is at least 1 s")
        else:
            if self.period is not None:
                raise ValueError(
                    "'period' is for slow chips (bme280); an mpu6050 streams at 'rate' Hz"
                )
            if self.rate is None:
                self.rate = 200
            if self.rate not in MPU_RATES:
                raise ValueError(
                    f"rate {self.rate} Hz: the MPU-6050 samples at 1000 / (1 + n) Hz; use one "
                    f"of {', '.join(map(str, MPU_RATES))}"
                )
            if self.block * self.rate > 80:
                raise ValueError(
                    f"block {self.block:g} s at {self.rate} Hz would overflow the 85-sample "
                    f"FIFO: use block <= {80 / self.rate:g}"
                )
        return self

    def quantity_count(self) -> int | None:
        """bme280: temperature, humidity, pressure; mpu6050: 3 accelerations, 3 rotations."""
        return 3 if self.chip == "bme280" else 6

    def resolved_address(self) -> int:
        """``address``, or the chip's default."""
        return self.address if self.address is not None else DEFAULT_ADDRESSES[self.chip]


def bus_opener(config: I2CConfig, clock: Any) -> Any:
    """A function opening the config's bus: ``smbus2.SMBus(bus)``, or one fake station bus
    (:func:`fieldstation.testing.i2c.station_bus` on ``clock``) shared by every open."""
    if config.bus == "fake":
        from fieldstation.testing.i2c import station_bus

        return station_bus(clock).opener()
    number = int(config.bus)

    def open_bus() -> Any:
        import smbus2

        return smbus2.SMBus(number)

    return open_bus


def _create(config: I2CConfig, **context: Any) -> Any:
    """Build the working sensor (context: ``clock``; ``open_bus`` to inject a bus opener)."""
    from fieldstation.clock import SystemClock

    clock = context.get("clock") or SystemClock()
    open_bus = context.get("open_bus") or bus_opener(config, clock)
    if config.chip == "bme280":
        from fieldstation.sensors.readings.bme280 import BME280Sensor

        assert config.period is not None
        return BME280Sensor(open_bus, config.resolved_address(), config.period, clock)
    from fieldstation.sensors.readings.mpu6050 import MPU6050Sensor

    assert config.rate is not None
    return MPU6050Sensor(
        open_bus,
        config.resolved_address(),
        rate=config.rate,
        range_g=config.range_g,
        range_dps=config.range_dps,
        block=config.block,
        clock=clock,
    )


def _preflight(config: I2CConfig) -> list[str]:
    if config.bus == "fake":
        return []
    import os

    problems = []
    device = f"/dev/i2c-{config.bus}"
    if not os.path.exists(device):
        problems.append(
            f"bus: {device} does not exist; enable I2C (raspi-config, dtparam=i2c_arm=on) "
            "or set 'bus' to the right number"
        )
    try:
        import smbus2  # noqa: F401
    except ImportError:
        problems.append("bus: smbus2 is not installed (pip install smbus2)")
    return problems


plugin = Plugin(
    config_model=I2CConfig, factory=_create, description=__doc__ or "", preflight=_preflight
)
