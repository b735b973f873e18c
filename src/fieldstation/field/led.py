"""The status LED: one blink pattern per station state, through gpiozero's ``LED``.

:func:`led_state` is pure: it reads the station status (``GET /status`` of the control API,
:meth:`fieldstation.runtime.station.Station.status`) and says which state to show;
:class:`StatusLed` drives the pin (``LED.on``/``off``/``blink`` in gpiozero's background
thread), changing the pattern only when the state changes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fieldstation.config.field import LedConfig, LedState

__all__ = ["StatusLed", "led_state", "states_holding"]

log = logging.getLogger(__name__)

RECORDING_STATES = frozenset({"running", "starting"})


def states_holding(
    status: Mapping[str, Any] | None, *, battery_percent: float | None, low_battery: float
) -> set[LedState]:
    """Every LED state that holds for ``status`` (None: the station does not answer → ``off``).

    - ``error``: ``health`` is ``unhealthy`` (a job failed, hung or cannot run);
    - ``low_battery``: ``battery_percent`` (else ``status["battery"]["percent"]``) below
      ``low_battery`` %;
    - ``wifi_setup``: the Wi-Fi hotspot is up (``status["wifi"]["mode"] == "hotspot"``);
    - ``no_network``: the network monitor says down or the network level is ``offline``;
    - ``recording``: a recorder is in its slot (``status["recording"]["active"]``);
    - ``idle``: always (the station runs).
    """
    if status is None:
        return {"off"}
    found: set[LedState] = {"idle"}
    if status.get("health") == "unhealthy":
        found.add("error")
    if battery_percent is None:
        battery_percent = (status.get("battery") or {}).get("percent")
    if battery_percent is not None and battery_percent < low_battery:
        found.add("low_battery")
    if (status.get("wifi") or {}).get("mode") == "hotspot":
        found.add("wifi_setup")
    network = status.get("network") or {}
    if network.get("up") is False or network.get("level") == "offline":
        found.add("no_network")
    if (status.get("recording") or {}).get("active"):
        found.add("recording")
    return found


def led_state(
    status: Mapping[str, Any] | None,
    config: LedConfig,
    *,
    battery_percent: float | None = None,
) -> LedState:
    """The state to show: the first of ``config.priority`` that holds (see
    :func:`states_holding`); ``off`` when the station does not answer."""
    holding = states_holding(
        status, battery_percent=battery_percent, low_battery=config.low_battery_percent
    )
    if "off" in holding:
        return "off"
    for state in config.priority:
        if state in holding:
            return state
    return "idle"


class StatusLed:
    """A gpiozero ``LED`` on ``config.pin`` showing one pattern per state.

    ``pin_factory``: gpiozero's (None: its default, e.g. lgpio on a Raspberry Pi; tests pass
    ``gpiozero.pins.mock.MockFactory()``). Raises gpiozero's errors when the pin is absent
    or taken (e.g. ``gpiozero.exc.BadPinFactory`` off a Raspberry Pi).
    """

    def __init__(self, config: LedConfig, *, pin_factory: Any = None) -> None:
        from gpiozero import LED

        self.config = config
        self.device = LED(
            config.pin,
            active_high=config.active_high,
            initial_value=False,
            pin_factory=pin_factory,
        )
        self.state: LedState | None = None

    def show(self, state: LedState) -> bool:
        """Show ``state``'s pattern; returns whether the pattern changed."""
        if state == self.state:
            return False
        pattern = self.config.patterns[state]
        if pattern.on <= 0:
            self.device.off()
        elif pattern.off <= 0:
            self.device.on()
        else:
            self.device.blink(on_time=pattern.on, off_time=pattern.off, background=True)
        log.info("status LED: %s", state)
        self.state = state
        return True

    def close(self) -> None:
        """Turn the LED off and give the pin back."""
        try:
            self.device.off()
        finally:
            self.device.close()
