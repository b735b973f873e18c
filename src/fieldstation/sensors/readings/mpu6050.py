"""InvenSense MPU-6050 accelerometer + gyroscope on I2C (smbus2): a fast readings stream.

Set-up (InvenSense *MPU-6000 and MPU-6050 Register Map and Descriptions*, RM-MPU-6000A-00
rev. 4.2): wake (``PWR_MGMT_1`` 0x6B = 0x01, PLL on the X gyro), digital low-pass filter on
(``CONFIG`` 0x1A, DLPF_CFG 1..6, so the gyroscope output rate is 1 kHz), sample rate
``1000 / (1 + SMPLRT_DIV)`` Hz (0x19), full scales (``GYRO_CONFIG`` 0x1B, ``ACCEL_CONFIG``
0x1C), then the FIFO (``FIFO_EN`` 0x23 = accelerometer + 3 gyro axes, ``USER_CTRL`` 0x6A FIFO
reset then enable). Every sample the chip takes enters the FIFO as 12 bytes (accel X, Y, Z,
gyro X, Y, Z, big-endian int16); :meth:`MPU6050Sensor.read` drains it, so the stream is gapless
and its frame index counts the chip's own samples: timestamps come from sample counts.

The FIFO holds 1024 bytes (85 samples, 0.42 s at 200 Hz): when the reader falls behind it
overflows (``INT_STATUS`` 0x3A bit 4); the FIFO is then reset and the next block is marked
``discontinuity`` (samples were lost; the recorder starts a new session).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from fieldstation.clock import Clock, SystemClock
from fieldstation.sensors.base import (
    Block,
    DeviceError,
    SensorConfigError,
    SensorHealth,
    StreamDescription,
)
from fieldstation.sensors.pacing import frame_time

__all__ = [
    "ACCEL_RANGES",
    "FIELDS",
    "GYRO_RANGES",
    "RATES",
    "UNITS",
    "MPU6050Sensor",
    "scale_samples",
]

WHO_AM_I = 0x75
CHIP_ID = 0x68
REG_SMPLRT_DIV = 0x19
REG_CONFIG = 0x1A
REG_GYRO_CONFIG = 0x1B
REG_ACCEL_CONFIG = 0x1C
REG_FIFO_EN = 0x23
REG_INT_STATUS = 0x3A
REG_USER_CTRL = 0x6A
REG_PWR_MGMT_1 = 0x6B
REG_FIFO_COUNT_H = 0x72
REG_FIFO_R_W = 0x74
FIFO_EN_ACCEL_GYRO = 0x78  # XG, YG, ZG, ACCEL
USER_CTRL_FIFO_EN = 0x40
USER_CTRL_FIFO_RESET = 0x04
INT_FIFO_OFLOW = 0x10
DLPF_CFG = 1  # 188 Hz accel / gyro bandwidth, gyro output rate 1 kHz
SAMPLE_BYTES = 12
FIFO_BYTES = 1024
READ_CHUNK = 24  # two samples per SMBus block read (at most 32 bytes)
STANDARD_GRAVITY = 9.80665

RATES = (4, 5, 8, 10, 20, 25, 40, 50, 100, 125, 200, 250, 500, 1000)
"""Sample rates (Hz) the chip gives exactly with the low-pass filter on: 1000 / (1 + div)."""
ACCEL_RANGES = {2: 0, 4: 1, 8: 2, 16: 3}
"""Accelerometer full scale (± g) → AFS_SEL; sensitivity 16384 / 2**AFS_SEL LSB/g."""
GYRO_RANGES = {250: 0, 500: 1, 1000: 2, 2000: 3}
"""Gyroscope full scale (± °/s) → FS_SEL; sensitivity 131 / 2**FS_SEL LSB/(°/s)."""
FIELDS = ("accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z")
UNITS = ("m/s2", "m/s2", "m/s2", "deg/s", "deg/s", "deg/s")


def scale_samples(raw: np.ndarray, range_g: int, range_dps: int) -> np.ndarray:
    """Raw int16 samples ``(n, 6)`` (accel X, Y, Z, gyro X, Y, Z) to float32 physical units:
    acceleration in m/s² (``raw / (16384 / 2**AFS_SEL) * 9.80665``), angular rate in °/s
    (``raw / (131 / 2**FS_SEL)``)."""
    accel = np.float64(STANDARD_GRAVITY) / (16384.0 / (1 << ACCEL_RANGES[range_g]))
    gyro = 1.0 / (131.0 / (1 << GYRO_RANGES[range_dps]))
    factors = np.array([accel] * 3 + [gyro] * 3, dtype=np.float64)
    return (raw.astype(np.float64) * factors).astype(np.float32)


class MPU6050Sensor:
    """An MPU-6050 at ``address`` on an smbus2-like bus (``open_bus()`` gives it at each open):
    frames ``(6,)`` float32 (:data:`FIELDS`, :data:`UNITS`) at ``rate`` Hz (one of
    :data:`RATES`), handed out about every ``block`` seconds of the clock.

    Raises :class:`SensorConfigError` for a rate the chip cannot give or another chip at the
    address; :class:`DeviceError` when the bus fails (I2C ``OSError``)."""

    def __init__(
        self,
        open_bus: Any,
        address: int = 0x68,
        rate: int = 200,
        range_g: int = 2,
        range_dps: int = 250,
        block: float = 0.1,
        clock: Clock | None = None,
    ) -> None:
        if rate not in RATES:
            raise SensorConfigError(
                f"rate {rate} Hz: the MPU-6050 samples at 1000 / (1 + n) Hz; "
                f"use one of {', '.join(map(str, RATES))}"
            )
        self._open_bus = open_bus
        self.address = address
        self.rate = rate
        self.range_g = range_g
        self.range_dps = range_dps
        self.clock = clock or SystemClock()
        self._block = max(1, round(block * rate))
        self._base = (0, self.clock.now(), 0.0)  # (frame, its UTC time, its monotonic time)
        self.bus: Any = None
        self._frame = 0
        self._open = False
        self._discontinuity = False
        self._health = SensorHealth()

    def describe(self) -> StreamDescription:
        """A fast readings stream: ``rate`` Hz, frames ``(6,)`` float32, Arrow chunks."""
        return StreamDescription(
            media="readings",
            rate=self.rate,
            shape=(len(FIELDS),),
            dtype="float32",
            format="arrows",
            codec="arrow",
            fields=FIELDS,
            units=UNITS,
            options={
                "chip": "mpu6050",
                "range_g": self.range_g,
                "range_dps": self.range_dps,
            },
        )

    def _reset_fifo(self) -> None:
        self.bus.write_byte_data(self.address, REG_USER_CTRL, USER_CTRL_FIFO_RESET)
        self.bus.write_byte_data(self.address, REG_USER_CTRL, USER_CTRL_FIFO_EN)

    def open(self) -> None:
        """Configure the chip and start its FIFO; frame 0 is the first sample after now."""
        try:
            self.bus = self._open_bus()
            who = self.bus.read_byte_data(self.address, WHO_AM_I)
            if who != CHIP_ID:
                raise SensorConfigError(
                    f"the chip at I2C address {self.address:#04x} says WHO_AM_I {who:#04x}, "
                    f"not an MPU-6050 ({CHIP_ID:#04x}): check 'address' (0x68 or 0x69)"
                )
            w = self.bus.write_byte_data
            w(self.address, REG_PWR_MGMT_1, 0x01)
            w(self.address, REG_CONFIG, DLPF_CFG)
            w(self.address, REG_SMPLRT_DIV, 1000 // self.rate - 1)
            w(self.address, REG_GYRO_CONFIG, GYRO_RANGES[self.range_dps] << 3)
            w(self.address, REG_ACCEL_CONFIG, ACCEL_RANGES[self.range_g] << 3)
            w(self.address, REG_FIFO_EN, FIFO_EN_ACCEL_GYRO)
            self._reset_fifo()
            self.bus.read_byte_data(self.address, REG_INT_STATUS)  # clears the flags
        except OSError as error:
            self._release()
            raise DeviceError(f"MPU-6050 at {self.address:#04x}: {error}") from error
        except BaseException:  # not the chip we were told of: give the bus back too
            self._release()
            raise
        self._frame = 0
        self._base = (0, self.clock.now(), self.clock.monotonic())
        self._discontinuity = False
        self._open = True
        self._health = SensorHealth(state="open")

    def _release(self) -> None:
        if self.bus is not None:
            with contextlib.suppress(OSError):
                self.bus.close()
            self.bus = None

    def _fifo_count(self) -> int:
        high, low = self.bus.read_i2c_block_data(self.address, REG_FIFO_COUNT_H, 2)
        return (high << 8) | low

    def read(self) -> Block | None:
        """The samples in the FIFO once about ``block`` seconds more have passed: a
        :class:`Block` ``(n, 6)`` float32 whose ``start_frame`` counts the samples read since
        open, captured at ``open time + start_frame / rate``. Never None. Raises
        :class:`DeviceError` when the bus fails, ``RuntimeError`` before :meth:`open`."""
        if not self._open:
            raise RuntimeError("read() before open()")
        frame0, _, mono0 = self._base
        delay = mono0 + (self._frame + self._block - frame0) / self.rate - self.clock.monotonic()
        if delay > 0:
            self.clock.sleep(delay)
        try:
            while True:
                if self.bus.read_byte_data(self.address, REG_INT_STATUS) & INT_FIFO_OFLOW:
                    self._overflow()
                count = self._fifo_count() // SAMPLE_BYTES
                if count:
                    break
                self.clock.sleep(1.0 / self.rate)
            raw = bytearray()
            want = count * SAMPLE_BYTES
            while len(raw) < want:
                n = min(READ_CHUNK, want - len(raw))
                raw += bytes(self.bus.read_i2c_block_data(self.address, REG_FIFO_R_W, n))
        except OSError as error:
            self._health.state = "error"
            self._health.error = str(error)
            raise DeviceError(f"MPU-6050 at {self.address:#04x}: {error}") from error
        samples = np.frombuffer(bytes(raw), dtype=">i2").reshape(count, 6)
        data = scale_samples(samples, self.range_g, self.range_dps)
        start = self._frame
        self._frame += count
        self._health.frames = self._frame
        frame0, anchor, _ = self._base
        block = Block(
            data, start, frame_time(anchor, start - frame0, self.rate), self._discontinuity
        )
        self._discontinuity = False
        return block

    def _overflow(self) -> None:
        """The FIFO overflowed (samples lost, its byte alignment unknown): reset it, flag the
        next block, and time the samples from the reset on (frame index continues)."""
        self._health.overflows += 1
        self._reset_fifo()
        self._discontinuity = True
        self._base = (self._frame, self.clock.now(), self.clock.monotonic())

    def close(self) -> None:
        """Stop the FIFO and release the bus (idempotent)."""
        if self._open and self.bus is not None:
            with contextlib.suppress(OSError):
                self.bus.write_byte_data(self.address, REG_USER_CTRL, 0)
        self._release()
        self._open = False
        self._health.state = "closed"

    def health(self) -> SensorHealth:
        """State, samples delivered since open, FIFO overflows."""
        return self._health
