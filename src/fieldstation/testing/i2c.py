"""A fake I2C bus with register-level models of a BME280 and an MPU-6050, for tests and demos.

:class:`FakeBus` answers the smbus2 calls the sensors use (``read_byte_data``,
``write_byte_data``, ``read_i2c_block_data``, ``write_i2c_block_data``, ``close``) like
``smbus2.SMBus``: an address with no chip raises ``OSError`` (errno 121, ``EREMOTEIO``, what
the Linux I2C driver gives when nobody acknowledges). Both chips live on the injected clock, so
a test on a :class:`~fieldstation.clock.VirtualClock` runs at CPU speed, and both are
deterministic:

- :class:`FakeMPU6050` samples at its configured rate (``1000 / (1 + SMPLRT_DIV)`` Hz) from the
  moment its FIFO is reset: sample *n* is taken at ``reset + n / rate`` on the clock's monotonic
  time and is row *n* of :meth:`FakeMPU6050.samples` (a synthetic motion: gravity on Z, slow
  sinusoidal tilts and turns, a fixed pseudo-random noise; or ``motion``, a recorded array of
  raw samples replayed in a loop). The 1024-byte FIFO overflows like the chip's (oldest
  samples dropped, ``INT_STATUS`` bit 4 set until read).
- :class:`FakeBME280` carries the calibration of Bosch's worked example (BMP280 datasheet
  BST-BMP280-DS001 3.12 for T and P) and typical humidity words; a forced measurement latches
  the raw ADC values whose compensation (the driver's datasheet formulas) is closest to
  ``weather(t)`` (a mild daily cycle, or any function of the clock's UTC time).
"""

from __future__ import annotations

import errno
import math
import struct
from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np

from fieldstation.clock import Clock
from fieldstation.sensors.readings import bme280 as bme
from fieldstation.sensors.readings import mpu6050 as mpu

__all__ = ["EXAMPLE_CALIBRATION", "FakeBME280", "FakeBus", "FakeMPU6050", "daily_weather"]


class FakeChip:
    """A chip on a :class:`FakeBus`: 256 byte registers; subclasses hook reads and writes."""

    def __init__(self) -> None:
        self.regs = bytearray(256)

    def read(self, register: int) -> int:
        return self.regs[register]

    def write(self, register: int, value: int) -> None:
        self.regs[register] = value & 0xFF

    def read_block(self, register: int, length: int) -> list[int]:
        return [self.read((register + i) & 0xFF) for i in range(length)]


class FakeBus:
    """An smbus2-compatible bus holding fake chips by address (``chips``)."""

    def __init__(self, chips: dict[int, FakeChip] | None = None) -> None:
        self.chips: dict[int, FakeChip] = dict(chips or {})
        self.closed = False
        self.transactions = 0

    def _chip(self, address: int) -> FakeChip:
        self.transactions += 1
        chip = self.chips.get(address)
        if chip is None:
            raise OSError(errno.EREMOTEIO, f"Remote I/O error (no device at {address:#04x})")
        return chip

    def read_byte_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        return self._chip(i2c_addr).read(register)

    def write_byte_data(
        self, i2c_addr: int, register: int, value: int, force: bool | None = None
    ) -> None:
        self._chip(i2c_addr).write(register, value)

    def read_i2c_block_data(
        self, i2c_addr: int, register: int, length: int, force: bool | None = None
    ) -> list[int]:
        if not 0 < length <= 32:
            raise ValueError("SMBus block reads are 1 to 32 bytes")
        return self._chip(i2c_addr).read_block(register, length)

    def write_i2c_block_data(
        self, i2c_addr: int, register: int, data: list[int], force: bool | None = None
    ) -> None:
        chip = self._chip(i2c_addr)
        for i, value in enumerate(data):
            chip.write((register + i) & 0xFF, value)

    def close(self) -> None:
        self.closed = True

    def opener(self) -> Callable[[], FakeBus]:
        """A function giving this bus (the sensors' ``open_bus``)."""

        def open_bus() -> FakeBus:
            self.closed = False
            return self

        return open_bus


NOISE_PERIOD = 1 << 16


class FakeMPU6050(FakeChip):
    """Register model of an MPU-6050 (WHO_AM_I, SMPLRT_DIV, CONFIG, FIFO_EN, USER_CTRL,
    INT_STATUS, FIFO_COUNT, FIFO_R_W) sampling on ``clock``'s monotonic time.

    ``motion``: optional raw samples ``(n, 6)`` int16 to replay in a loop instead of the
    synthetic motion. ``lost``: samples dropped by FIFO overflows so far."""

    def __init__(self, clock: Clock, motion: np.ndarray | None = None, seed: int = 0) -> None:
        super().__init__()
        self.clock = clock
        self.regs[mpu.WHO_AM_I] = mpu.CHIP_ID
        self.regs[mpu.REG_PWR_MGMT_1] = 0x40  # asleep after power-on
        self.motion = None if motion is None else np.asarray(motion, dtype=np.int16)
        rng = np.random.default_rng(seed)
        self._noise = rng.integers(-6, 7, size=(NOISE_PERIOD, 6)).astype(np.int64)
        self._reset_at: float | None = None  # monotonic time of the last FIFO reset
        self._produced = 0  # samples taken since the reset (entered the FIFO or dropped)
        self._next = 0  # index of the next sample to enter the FIFO bytes
        self._fifo = bytearray()
        self.lost = 0
        self._overflowed = False

    @property
    def rate(self) -> float:
        """Sample rate, Hz: gyro output rate (1 kHz with the DLPF on, else 8 kHz) / (1 + div)."""
        dlpf = self.regs[mpu.REG_CONFIG] & 0x07
        base = 1000.0 if 0 < dlpf < 7 else 8000.0
        return base / (1 + self.regs[mpu.REG_SMPLRT_DIV])

    def samples(self, start: int, stop: int) -> np.ndarray:
        """Raw samples ``[start, stop)`` since the FIFO reset, ``(n, 6)`` int16 (accel X, Y,
        Z at the configured full scale, gyro X, Y, Z)."""
        n = np.arange(start, stop, dtype=np.int64)
        if self.motion is not None:
            return self.motion[n % len(self.motion)]
        t = n / self.rate
        afs = self.regs[mpu.REG_ACCEL_CONFIG] >> 3 & 3
        fs = self.regs[mpu.REG_GYRO_CONFIG] >> 3 & 3
        g = 16384.0 / (1 << afs)
        dps = 131.0 / (1 << fs)
        two_pi = 2 * np.pi
        physical = np.stack(
            [
                0.30 * np.sin(two_pi * 0.13 * t) * g,
                0.20 * np.sin(two_pi * 0.07 * t + 1.0) * g,
                (1.0 - 0.05 * np.cos(two_pi * 0.21 * t)) * g,
                40.0 * np.sin(two_pi * 0.5 * t) * dps,
                25.0 * np.cos(two_pi * 0.3 * t) * dps,
                10.0 * np.sin(two_pi * 0.05 * t + 2.0) * dps,
            ],
            axis=1,
        )
        raw = np.rint(physical).astype(np.int64) + self._noise[n % NOISE_PERIOD]
        return np.clip(raw, -32768, 32767).astype(np.int16)

    def _fifo_running(self) -> bool:
        return (
            self._reset_at is not None
            and bool(self.regs[mpu.REG_USER_CTRL] & mpu.USER_CTRL_FIFO_EN)
            and self.regs[mpu.REG_FIFO_EN] == mpu.FIFO_EN_ACCEL_GYRO
            and not self.regs[mpu.REG_PWR_MGMT_1] & 0x40
        )

    def _update(self) -> None:
        """Take the samples due by now into the FIFO (dropping the oldest on overflow)."""
        if not self._fifo_running():
            return
        assert self._reset_at is not None
        due = math.floor((self.clock.monotonic() - self._reset_at) * self.rate + 1e-6)
        if due <= self._produced:
            return
        self._produced = due
        capacity = mpu.FIFO_BYTES // mpu.SAMPLE_BYTES
        pending = len(self._fifo) // mpu.SAMPLE_BYTES + (due - self._next)
        if pending > capacity:
            drop = pending - capacity
            self._overflowed = True
            self.lost += drop
            in_fifo = len(self._fifo) // mpu.SAMPLE_BYTES
            from_fifo = min(drop, in_fifo)
            del self._fifo[: from_fifo * mpu.SAMPLE_BYTES]
            self._next += drop - from_fifo
        if due > self._next:
            self._fifo += self.samples(self._next, due).astype(">i2").tobytes()
            self._next = due

    def write(self, register: int, value: int) -> None:
        super().write(register, value)
        if register == mpu.REG_USER_CTRL and value & mpu.USER_CTRL_FIFO_RESET:
            self.regs[register] = value & ~mpu.USER_CTRL_FIFO_RESET & 0xFF
            self._fifo.clear()
            self._reset_at = self.clock.monotonic()
            self._produced = self._next = 0
        elif register == mpu.REG_PWR_MGMT_1 and value & 0x80:  # DEVICE_RESET
            self.__init__(self.clock, self.motion)  # type: ignore[misc]

    def read(self, register: int) -> int:
        if register in (mpu.REG_FIFO_COUNT_H, mpu.REG_FIFO_COUNT_H + 1):
            self._update()
            count = min(len(self._fifo), mpu.FIFO_BYTES)
            return count >> 8 if register == mpu.REG_FIFO_COUNT_H else count & 0xFF
        if register == mpu.REG_INT_STATUS:
            self._update()
            flags = mpu.INT_FIFO_OFLOW if self._overflowed else 0
            self._overflowed = False  # cleared by the read
            return flags
        if register == mpu.REG_FIFO_R_W:
            if not self._fifo:
                return 0xFF  # reading an empty FIFO gives garbage on the chip
            return self._fifo.pop(0)
        return super().read(register)

    def read_block(self, register: int, length: int) -> list[int]:
        if register == mpu.REG_FIFO_R_W:  # the FIFO register does not auto-increment
            self._update()
            out = list(self._fifo[:length])
            del self._fifo[:length]
            return out + [0xFF] * (length - len(out))
        if register == mpu.REG_FIFO_COUNT_H and length == 2:
            self._update()
            count = min(len(self._fifo), mpu.FIFO_BYTES)
            return [count >> 8, count & 0xFF]
        return super().read_block(register, length)


EXAMPLE_CALIBRATION = bme.Calibration(
    T1=27504, T2=26435, T3=-1000,
    P1=36477, P2=-10685, P3=3024, P4=2855, P5=140, P6=-7, P7=15500, P8=-14600, P9=6000,
    H1=75, H2=362, H3=0, H4=313, H5=50, H6=30,
)  # fmt: skip
"""Bosch's worked example (BMP280 datasheet 3.12: adc_T 519888 → 25.08 °C, adc_P 415148 →
100653.27 Pa) and humidity words typical of real BME280s."""


def daily_weather(when: datetime) -> tuple[float, float, float]:
    """``(°C, hPa, %RH)`` of a mild day: 12 ± 6 °C peaking at 14:00 UTC, 1013 ± 4 hPa over
    three days, humidity falling as it warms (65 ± 20 %)."""
    hours = when.hour + when.minute / 60 + when.second / 3600
    day = 2 * math.pi * (hours - 8) / 24
    days = when.timestamp() / 86400
    return (
        12.0 + 6.0 * math.sin(day),
        1013.0 + 4.0 * math.sin(2 * math.pi * days / 3),
        65.0 - 20.0 * math.sin(day),
    )


def _invert(function: Callable[[int], float], target: float, bits: int) -> int:
    """The raw value in ``[0, 2**bits)`` whose ``function`` (monotonic) is closest to
    ``target`` (bisection)."""
    lo, hi = 0, (1 << bits) - 1
    rising = function(hi) > function(lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if (function(mid) < target) == rising:
            lo = mid
        else:
            hi = mid
    return lo if abs(function(lo) - target) <= abs(function(hi) - target) else hi


class FakeBME280(FakeChip):
    """Register model of a BME280 (chip id, reset, calibration, ctrl_hum, status, ctrl_meas,
    config, data): a forced measurement latches the raw values of ``weather(clock.now())``.

    ``measurements``: ``(UTC time, adc_T, adc_P, adc_H)`` of every measurement taken."""

    def __init__(
        self,
        clock: Clock,
        weather: Callable[[datetime], tuple[float, float, float]] = daily_weather,
        calibration: bme.Calibration = EXAMPLE_CALIBRATION,
    ) -> None:
        super().__init__()
        self.clock = clock
        self.weather = weather
        self.calibration = c = calibration
        self.regs[bme.REG_CHIP_ID] = bme.CHIP_ID
        tp = struct.pack(
            "<HhhHhhhhhhhh", c.T1, c.T2, c.T3, c.P1, c.P2, c.P3, c.P4, c.P5, c.P6, c.P7, c.P8, c.P9
        ) + bytes([0, c.H1])
        h4, h5 = c.H4 & 0xFFF, c.H5 & 0xFFF
        h = (
            struct.pack("<hB", c.H2, c.H3)
            + bytes([h4 >> 4, (h4 & 0x0F) | ((h5 & 0x0F) << 4), h5 >> 4])
            + struct.pack("<b", c.H6)
        )
        self.regs[bme.REG_CALIB_TP : bme.REG_CALIB_TP + 26] = tp
        self.regs[bme.REG_CALIB_H : bme.REG_CALIB_H + 7] = h
        self.regs[bme.REG_DATA : bme.REG_DATA + 8] = bytes([0x80, 0, 0, 0x80, 0, 0, 0x80, 0])
        self.measurements: list[tuple[datetime, int, int, int]] = []

    def raw_for(self, temperature: float, pressure: float, humidity: float) -> tuple[int, int, int]:
        """The raw ``(adc_T, adc_P, adc_H)`` whose compensation is closest to ``temperature``
        (°C), ``pressure`` (hPa) and ``humidity`` (%RH)."""
        c = self.calibration
        adc_t = _invert(lambda a: bme.compensate_temperature(a, c)[0] / 100, temperature, 20)
        t_fine = bme.compensate_temperature(adc_t, c)[1]
        adc_p = _invert(lambda a: bme.compensate_pressure(a, t_fine, c) / 25600, pressure, 20)
        adc_h = _invert(lambda a: bme.compensate_humidity(a, t_fine, c) / 1024, humidity, 16)
        return adc_t, adc_p, adc_h

    def _measure(self) -> None:
        now = self.clock.now()
        adc_t, adc_p, adc_h = self.raw_for(*self.weather(now))
        self.measurements.append((now, adc_t, adc_p, adc_h))
        self.regs[bme.REG_DATA : bme.REG_DATA + 8] = bytes(
            [
                adc_p >> 12, (adc_p >> 4) & 0xFF, (adc_p & 0x0F) << 4,
                adc_t >> 12, (adc_t >> 4) & 0xFF, (adc_t & 0x0F) << 4,
                adc_h >> 8, adc_h & 0xFF,
            ]
        )  # fmt: skip

    def write(self, register: int, value: int) -> None:
        if register == bme.REG_RESET:
            if value == 0xB6:
                self.__init__(self.clock, self.weather, self.calibration)  # type: ignore[misc]
            return
        super().write(register, value)
        if register == bme.REG_CTRL_MEAS and value & 0x03 == bme.MODE_FORCED:
            self._measure()  # done at once: status never shows "measuring"
            self.regs[register] = value & ~0x03 & 0xFF  # back to sleep mode

    def read(self, register: int) -> int:
        if register == bme.REG_STATUS:
            return 0
        return super().read(register)


def station_bus(clock: Clock, **chips: Any) -> FakeBus:
    """A :class:`FakeBus` with a :class:`FakeBME280` at 0x76 and a :class:`FakeMPU6050` at
    0x68 on ``clock`` (``bme280=``/``mpu6050=`` replace either; None removes it)."""
    found: dict[int, FakeChip] = {}
    bme_chip = chips.get("bme280", FakeBME280(clock))
    mpu_chip = chips.get("mpu6050", FakeMPU6050(clock))
    if bme_chip is not None:
        found[0x76] = bme_chip
    if mpu_chip is not None:
        found[0x68] = mpu_chip
    return FakeBus(found)
