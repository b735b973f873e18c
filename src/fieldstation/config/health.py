"""Config of heartbeats, summaries, the network monitor and the optional battery reader."""

from __future__ import annotations

from pydantic import Field

from fieldstation.config.base import StrictModel
from fieldstation.config.units import Seconds

__all__ = ["BatteryConfig", "HeartbeatConfig", "NetworkConfig"]


class HeartbeatConfig(StrictModel):
    """Periodic health messages and detection summaries."""

    enabled: bool = Field(default=True, description="Send heartbeats.")
    interval: Seconds = Field(default=300.0, gt=0, description="Time between heartbeats.")
    summary_interval: Seconds | None = Field(
        default=3600.0,
        description="Period of detection summaries; omit or 0 to send none.",
    )
    outbox_age_degraded: Seconds = Field(
        default=3600.0,
        gt=0,
        description="Status 'degraded' when the oldest undelivered message is older than this.",
    )
    memory_percent_degraded: float = Field(
        default=90.0, gt=0, le=100, description="Status 'degraded' above this memory use, %."
    )
    temperature_degraded: float = Field(
        default=80.0, description="Status 'degraded' above this CPU temperature, degrees C."
    )
    battery_percent_degraded: float = Field(
        default=20.0, ge=0, le=100, description="Status 'degraded' below this battery charge, %."
    )


class NetworkConfig(StrictModel):
    """Network monitor with hysteresis (omgrab's)."""

    enabled: bool = Field(
        default=True, description="Probe the network; the outbox waits while down."
    )
    targets: list[str] = Field(
        default_factory=list,
        description="Extra 'host:port' TCP targets; the outputs' brokers and endpoints are probed "
        "anyway.",
    )
    interval: Seconds = Field(default=30.0, gt=0, description="Time between probes while up.")
    timeout: Seconds = Field(default=5.0, gt=0, description="Timeout of one probe.")
    down_after: int = Field(default=3, ge=1, description="Consecutive failures before 'down'.")
    up_after: int = Field(default=2, ge=1, description="Consecutive successes before 'up'.")
    backoff_max: Seconds = Field(
        default=300.0,
        gt=0,
        description="Longest time between probes while down (the delay doubles from "
        "'interval', with jitter).",
    )


class BatteryConfig(StrictModel):
    """INA219 battery monitor over I2C."""

    enabled: bool = Field(default=False, description="Read a battery monitor.")
    bus: int = Field(default=1, ge=0, description="I2C bus number (/dev/i2c-N).")
    address: int = Field(default=0x40, ge=0, le=0x7F, description="I2C address of the INA219.")
    shunt_ohms: float = Field(default=0.1, gt=0, description="Shunt resistor, ohms.")
    curve: list[tuple[float, float]] = Field(
        default_factory=lambda: [
            (11.8, 0.0),
            (12.2, 25.0),
            (12.5, 50.0),
            (12.8, 75.0),
            (13.0, 100.0),
        ],
        description="Voltage (V) to percent points, linear between (default: 12 V lead-acid).",
    )
    retry_interval: Seconds = Field(
        default=600.0, gt=0, description="Wait this long before retrying an absent monitor."
    )
