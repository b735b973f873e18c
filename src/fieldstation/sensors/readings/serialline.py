"""The working sensor behind the ``serial`` plugin (see :mod:`fieldstation.sensors.serialport`)."""

from __future__ import annotations

import contextlib
import math
import time
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from fieldstation.clock import Clock, SystemClock
from fieldstation.sensors.base import Block, DeviceError, SensorHealth, StreamDescription
from fieldstation.sensors.readings.periodic import slow_description
from fieldstation.sensors.serialport import NMEA_FIELDS, NMEA_UNITS, SerialConfig

__all__ = ["POLL", "SerialSensor", "parse_keyvalue", "parse_nmea"]

POLL = 0.5
"""Seconds one ``readline`` waits for bytes (the port's timeout); the wait for a record is
counted in these polls, so it works the same on any clock."""


def parse_keyvalue(line: str, keys: list[str]) -> list[float] | None:
    """Values of ``keys`` in a ``K=v,K2=v2`` line (NaN for a missing or non-numeric value);
    None when the line has no ``=`` pair at all (not a record)."""
    pairs: dict[str, str] = {}
    for part in line.split(","):
        key, sep, value = part.partition("=")
        if sep:
            pairs[key.strip()] = value.strip()
    if not pairs:
        return None
    values = []
    for key in keys:
        try:
            values.append(float(pairs[key]))
        except (KeyError, ValueError):
            values.append(math.nan)
    return values


def parse_nmea(line: str) -> list[float] | None:
    """``[latitude, longitude, elevation]`` of a GGA sentence with a fix (checksum checked),
    None for any other sentence, a bad checksum or no fix. Raises nothing."""
    import pynmea2

    if "GGA" not in line[:7]:
        return None
    try:
        message: Any = pynmea2.parse(line.strip(), check=True)
        quality = int(message.gps_qual or 0)
        if quality <= 0:
            return None
        altitude = message.altitude
        return [
            float(message.latitude),
            float(message.longitude),
            math.nan if altitude is None else float(altitude),
        ]
    except (pynmea2.ParseError, ValueError, TypeError, AttributeError):
        return None


class SerialSensor:
    """One frame per kept record: ``(1, quantities)`` float64 stamped with the clock at the
    line's arrival (1 µs after the previous record when the clock has not moved). Raises
    :class:`DeviceError` when the port cannot be opened or read, or no record came for
    ``config.wait_limit()`` seconds."""

    def __init__(self, config: SerialConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        if config.protocol == "nmea":
            self.fields: tuple[str, ...] = NMEA_FIELDS
            self.units: tuple[str, ...] = NMEA_UNITS
        else:
            self.fields = tuple(config.quantities or config.keys)
            self.units = tuple(config.units)
        self._port: Any = None
        self._frame = 0
        self._records = 0
        self._last: datetime | None = None
        self._partial = b""
        self._health = SensorHealth()

    def describe(self) -> StreamDescription:
        """A slow readings stream (``options``: port, protocol, period)."""
        return slow_description(
            self.fields,
            self.units,
            self.config.period,
            port=self.config.port,
            protocol=self.config.protocol,
        )

    def open(self) -> None:
        """Open the port (``baudrate``, 8N1). Raises :class:`DeviceError`."""
        import serial

        try:
            self._port = serial.Serial(
                self.config.port, self.config.baudrate, timeout=POLL, exclusive=True
            )
        except (serial.SerialException, OSError, ValueError) as error:
            raise DeviceError(f"serial port {self.config.port}: {error}") from error
        self._frame = 0
        self._records = 0
        self._partial = b""
        self._health = SensorHealth(state="open", details={"bad_lines": 0})

    def _parse(self, line: str) -> list[float] | None:
        if self.config.protocol == "nmea":
            return parse_nmea(line)
        return parse_keyvalue(line, self.config.keys)

    def read(self) -> Block | None:
        """The next kept record. Never None (a port does not end)."""
        import serial

        if self._port is None:
            raise RuntimeError("read() before open()")
        # real seconds (the port's I/O, not the injected clock): lines that never parse (a GPS
        # without a fix, a wrong baud rate) are no more a record than silence is
        deadline = time.monotonic() + self.config.wait_limit()
        while True:
            if time.monotonic() >= deadline:
                raise DeviceError(
                    f"serial port {self.config.port}: no record for "
                    f"{self.config.wait_limit():g} s ({self._health.details['bad_lines']} "
                    "line(s) not understood so far)"
                )
            try:
                raw = self._port.readline()
            except (serial.SerialException, OSError) as error:
                self._health.state = "error"
                self._health.error = str(error)
                raise DeviceError(f"serial port {self.config.port}: {error}") from error
            if not raw:
                continue
            if not raw.endswith(b"\n"):
                # cut by the poll timeout (the instrument paused mid-line): the rest comes
                # with the next read; never parse half a line ("H=5" of "H=55.2")
                self._partial += raw
                continue
            raw, self._partial = self._partial + raw, b""
            line = raw.decode("ascii", errors="replace").strip()
            values = self._parse(line) if line else None
            if values is None:
                if line and not (self.config.protocol == "nmea" and "GGA" not in line[:7]):
                    self._health.details["bad_lines"] += 1
                continue
            self._records += 1
            if (self._records - 1) % self.config.every:
                continue
            frame = self._frame
            self._frame += 1
            self._health.frames = self._frame
            data = np.asarray([values], dtype=np.float64)
            now = self.clock.now()
            if self._last is not None and now <= self._last:
                now = self._last + timedelta(microseconds=1)  # times strictly increase
            self._last = now
            return Block(data, frame, now)

    def close(self) -> None:
        """Close the port (idempotent)."""
        if self._port is not None:
            with contextlib.suppress(Exception):
                self._port.close()
            self._port = None
        self._health.state = "closed"

    def health(self) -> SensorHealth:
        """State, records kept since open, ``bad_lines`` (malformed, bad checksum, no fix)."""
        return self._health
