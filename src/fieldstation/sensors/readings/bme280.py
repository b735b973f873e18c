"""Bosch BME280 (temperature, humidity, pressure) on I2C through smbus2, in forced mode.

Each period the sensor is triggered once (forced mode, ``ctrl_meas`` mode ``01``), the raw
20/20/16-bit ADC values are read in one burst (``0xF7``..``0xFE``) and compensated with the
calibration words read at open (``0x88``..``0xA1``, ``0xE1``..``0xE7``) by the integer formulas
of the datasheet: Bosch Sensortec, *BME280 Combined humidity and pressure sensor*, document
BST-BME280-DS002, section 4.2.3 "Compensation formulas" (32-bit temperature and humidity,
64-bit pressure), also given in section 8.2 of the appendix. Their C integer arithmetic is kept
exactly: right shifts of negative numbers are arithmetic (as in Python) and the one division
truncates toward zero (:func:`_cdiv`).
"""

from __future__ import annotations

import contextlib
import math
import struct
from dataclasses import dataclass
from typing import Any

from fieldstation.clock import Clock
from fieldstation.sensors.base import DeviceError, SensorConfigError
from fieldstation.sensors.readings.periodic import PeriodicSensor

__all__ = [
    "CHIP_ID",
    "Calibration",
    "BME280Sensor",
    "compensate_humidity",
    "compensate_pressure",
    "compensate_temperature",
    "parse_calibration",
]

CHIP_ID = 0x60
REG_CHIP_ID = 0xD0
REG_RESET = 0xE0
REG_CALIB_TP = 0x88  # 0x88..0xA1: 26 bytes (T1..T3, P1..P9, -, H1)
REG_CALIB_H = 0xE1  # 0xE1..0xE7: 7 bytes (H2..H6)
REG_CTRL_HUM = 0xF2
REG_STATUS = 0xF3
REG_CTRL_MEAS = 0xF4
REG_CONFIG = 0xF5
REG_DATA = 0xF7  # 0xF7..0xFE: press msb, lsb, xlsb, temp msb, lsb, xlsb, hum msb, lsb
OVERSAMPLING_X1 = 0b001
MODE_FORCED = 0b01
STATUS_MEASURING = 0x08


@dataclass(frozen=True)
class Calibration:
    """The trimming parameters ``dig_T1``..``dig_H6`` (datasheet table 16)."""

    T1: int
    T2: int
    T3: int
    P1: int
    P2: int
    P3: int
    P4: int
    P5: int
    P6: int
    P7: int
    P8: int
    P9: int
    H1: int
    H2: int
    H3: int
    H4: int
    H5: int
    H6: int


def _signed12(value: int) -> int:
    return value - 4096 if value & 0x800 else value


def parse_calibration(tp: bytes, h: bytes) -> Calibration:
    """Calibration from the 26 bytes at ``0x88`` and the 7 bytes at ``0xE1`` (table 16:
    little-endian words; ``dig_H4``/``dig_H5`` are signed 12-bit values sharing ``0xE5``)."""
    if len(tp) != 26 or len(h) != 7:
        raise ValueError("BME280 calibration needs 26 bytes at 0x88 and 7 bytes at 0xE1")
    t1, t2, t3, p1, p2, p3, p4, p5, p6, p7, p8, p9 = struct.unpack("<HhhHhhhhhhhh", tp[:24])
    h1 = tp[25]
    h2 = struct.unpack("<h", h[0:2])[0]
    h3 = h[2]
    h4 = _signed12((h[3] << 4) | (h[4] & 0x0F))
    h5 = _signed12((h[5] << 4) | (h[4] >> 4))
    h6 = struct.unpack("<b", h[6:7])[0]
    return Calibration(t1, t2, t3, p1, p2, p3, p4, p5, p6, p7, p8, p9, h1, h2, h3, h4, h5, h6)


def _cdiv(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def compensate_temperature(adc_t: int, c: Calibration) -> tuple[int, int]:
    """``(T, t_fine)``: T in 0.01 °C (5123 = 51.23 °C) from the 20-bit ``adc_T``
    (BST-BME280-DS002 4.2.3, ``BME280_compensate_T_int32``)."""
    var1 = (((adc_t >> 3) - (c.T1 << 1)) * c.T2) >> 11
    var2 = (((((adc_t >> 4) - c.T1) * ((adc_t >> 4) - c.T1)) >> 12) * c.T3) >> 14
    t_fine = var1 + var2
    return (t_fine * 5 + 128) >> 8, t_fine


def compensate_pressure(adc_p: int, t_fine: int, c: Calibration) -> int:
    """Pressure in Pa as unsigned Q24.8 (24674867 = 96386.2 Pa) from the 20-bit ``adc_P``
    (BST-BME280-DS002 4.2.3, ``BME280_compensate_P_int64``); 0 when the calibration would
    divide by zero."""
    var1 = t_fine - 128000
    var2 = var1 * var1 * c.P6
    var2 = var2 + ((var1 * c.P5) << 17)
    var2 = var2 + (c.P4 << 35)
    var1 = ((var1 * var1 * c.P3) >> 8) + ((var1 * c.P2) << 12)
    var1 = (((1 << 47) + var1) * c.P1) >> 33
    if var1 == 0:
        return 0
    p = 1048576 - adc_p
    p = _cdiv(((p << 31) - var2) * 3125, var1)
    var1 = (c.P9 * (p >> 13) * (p >> 13)) >> 25
    var2 = (c.P8 * p) >> 19
    return ((p + var1 + var2) >> 8) + (c.P7 << 4)


def compensate_humidity(adc_h: int, t_fine: int, c: Calibration) -> int:
    """Relative humidity in %RH as unsigned Q22.10 (47445 = 46.333 %RH) from the 16-bit
    ``adc_H`` (BST-BME280-DS002 4.2.3, ``bme280_compensate_H_int32``), clamped to 0..100 %."""
    v = t_fine - 76800
    v = (((adc_h << 14) - (c.H4 << 20) - (c.H5 * v)) + 16384) >> 15
    v = v * (
        (
            (
                (
                    (
                        (((t_fine - 76800) * c.H6) >> 10)
                        * ((((t_fine - 76800) * c.H3) >> 11) + 32768)
                    )
                    >> 10
                )
                + 2097152
            )
            * c.H2
            + 8192
        )
        >> 14
    )
    v = v - (((((v >> 15) * (v >> 15)) >> 7) * c.H1) >> 4)
    v = max(0, min(v, 419430400))
    return v >> 12


def compensate(adc_t: int, adc_p: int, adc_h: int, c: Calibration) -> tuple[float, float, float]:
    """``(temperature °C, pressure hPa, humidity %RH)`` of one raw measurement."""
    t, t_fine = compensate_temperature(adc_t, c)
    p = compensate_pressure(adc_p, t_fine, c)
    h = compensate_humidity(adc_h, t_fine, c)
    return t / 100.0, p / 256.0 / 100.0, h / 1024.0


class BME280Sensor(PeriodicSensor):
    """A BME280 at ``address`` on an smbus2-like ``bus`` (``read_byte_data``,
    ``write_byte_data``, ``read_i2c_block_data``, ``close``), one forced measurement per
    ``period`` seconds: fields ``temperature`` (Cel), ``pressure`` (hPa), ``humidity`` (%).

    ``open_bus()`` gives the bus at each open (a real ``smbus2.SMBus(n)`` or a fake one).
    Raises :class:`DeviceError` when the chip does not answer (I2C ``OSError``) and
    :class:`SensorConfigError` when another chip answers at the address."""

    fields = ("temperature", "pressure", "humidity")
    units = ("Cel", "hPa", "%")

    def __init__(
        self, open_bus: Any, address: int, period: float, clock: Clock | None = None
    ) -> None:
        super().__init__(period, clock)
        self._open_bus = open_bus
        self.address = address
        self.bus: Any = None
        self.calibration: Calibration | None = None

    def options(self) -> dict[str, object]:
        return {"chip": "bme280", "address": self.address}

    def open_device(self) -> None:
        try:
            self.bus = self._open_bus()
            chip = self.bus.read_byte_data(self.address, REG_CHIP_ID)
            if chip != CHIP_ID:
                raise SensorConfigError(
                    f"the chip at I2C address {self.address:#04x} has id {chip:#04x}, not a "
                    f"BME280 ({CHIP_ID:#04x}): check 'address' (0x76 or 0x77) and 'chip'"
                )
            tp = bytes(self.bus.read_i2c_block_data(self.address, REG_CALIB_TP, 26))
            h = bytes(self.bus.read_i2c_block_data(self.address, REG_CALIB_H, 7))
            self.calibration = parse_calibration(tp, h)
            self.bus.write_byte_data(self.address, REG_CTRL_HUM, OVERSAMPLING_X1)
            self.bus.write_byte_data(self.address, REG_CONFIG, 0)
        except OSError as error:
            self.close_device()
            raise DeviceError(f"BME280 at {self.address:#04x}: {error}") from error
        except BaseException:  # not the chip we were told of: give the bus back too
            self.close_device()
            raise

    def close_device(self) -> None:
        if self.bus is not None:
            with contextlib.suppress(OSError):
                self.bus.close()
            self.bus = None

    def measure(self) -> list[float] | None:
        assert self.calibration is not None and self.bus is not None
        ctrl = (OVERSAMPLING_X1 << 5) | (OVERSAMPLING_X1 << 2) | MODE_FORCED
        try:
            self.bus.write_byte_data(self.address, REG_CTRL_MEAS, ctrl)
            # x1 oversampling of the three: at most 9.3 ms (datasheet 9.1); polled on status
            for _ in range(100):
                if not self.bus.read_byte_data(self.address, REG_STATUS) & STATUS_MEASURING:
                    break
                self.clock.sleep(0.002)
            else:
                raise DeviceError(f"BME280 at {self.address:#04x}: measurement never ended")
            d = self.bus.read_i2c_block_data(self.address, REG_DATA, 8)
        except OSError as error:
            raise DeviceError(f"BME280 at {self.address:#04x}: {error}") from error
        adc_p = (d[0] << 12) | (d[1] << 4) | (d[2] >> 4)
        adc_t = (d[3] << 12) | (d[4] << 4) | (d[5] >> 4)
        adc_h = (d[6] << 8) | d[7]
        t, p, h = compensate(adc_t, adc_p, adc_h, self.calibration)
        if adc_t == 0x80000:  # "skipped" value: no measurement
            return [math.nan, math.nan, math.nan]
        return [t, p, h]
