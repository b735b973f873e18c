"""Config of the field hardware (``[field]``): the GPIO button and status LED, the network
levels and Wi-Fi provisioning (docs/field-hardware.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fieldstation.config.base import StrictModel
from fieldstation.config.units import Seconds

__all__ = [
    "ACTIONS",
    "LED_STATES",
    "Action",
    "ButtonConfig",
    "FieldConfig",
    "LedConfig",
    "LedPattern",
    "LedState",
    "NetLevelConfig",
    "WifiConfig",
]

Action = Literal["none", "toggle_recording", "mark_event", "shutdown", "wifi_setup"]
"""What a press does: nothing, start/stop every recorder, mark an event, stop the station
(and power the host off, see ``button.poweroff_command``), start Wi-Fi provisioning."""
ACTIONS: tuple[str, ...] = ("none", "toggle_recording", "mark_event", "shutdown", "wifi_setup")

LedState = Literal["off", "idle", "recording", "error", "no_network", "low_battery", "wifi_setup"]
"""The station states the LED shows (``off``: the station is not running)."""
LED_STATES: tuple[str, ...] = (
    "off",
    "idle",
    "recording",
    "error",
    "no_network",
    "low_battery",
    "wifi_setup",
)

Pin = int | str
"""A GPIO pin as gpiozero names it: a BCM number (17) or a name ('GPIO17', 'BOARD11')."""


class ButtonConfig(StrictModel):
    """A push button between a GPIO pin and ground (or 3V3 with ``pull_up = false``)."""

    enabled: bool = Field(default=False, description="Watch a button.")
    pin: Pin = Field(default=17, description="GPIO pin (BCM number or gpiozero pin name).")
    pull_up: bool = Field(
        default=True,
        description="Use the internal pull-up (button to ground); false: pull-down (button to "
        "3V3).",
    )
    debounce: Seconds = Field(
        default=0.03,
        ge=0,
        le=1,
        description="A level must hold this long to count (contact bounce is shorter).",
    )
    double_window: Seconds = Field(
        default=0.4,
        ge=0,
        le=5,
        description="Longest gap between the two presses of a double press; a short press is "
        "acted on once this has passed without a second press (0: no double presses).",
    )
    long_press: Seconds = Field(
        default=2.0, gt=0, description="A press held at least this long is a long press."
    )
    very_long_press: Seconds | None = Field(
        default=8.0,
        gt=0,
        description="A press held at least this long is a very long press; omit for none.",
    )
    short: Action = Field(default="mark_event", description="Action of a short press.")
    double: Action = Field(default="toggle_recording", description="Action of a double press.")
    long: Action = Field(default="wifi_setup", description="Action of a long press.")
    very_long: Action = Field(default="shutdown", description="Action of a very long press.")
    poweroff_command: list[str] = Field(
        default_factory=lambda: ["systemctl", "poweroff"],
        description="Run once the station has stopped after a 'shutdown' press (empty: only "
        "stop the station).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> ButtonConfig:
        if self.very_long_press is not None and self.very_long_press <= self.long_press:
            raise ValueError(
                f"very_long_press ({self.very_long_press:g} s) must be longer than long_press "
                f"({self.long_press:g} s)"
            )
        if self.long_press <= self.debounce:
            raise ValueError("long_press must be longer than debounce")
        return self


class LedPattern(StrictModel):
    """One blink pattern: ``on`` seconds lit, ``off`` seconds dark (``off = 0``: steady on;
    ``on = 0``: dark)."""

    on: Seconds = Field(ge=0, description="Seconds lit in each period.")
    off: Seconds = Field(ge=0, description="Seconds dark in each period (0: steady).")


def _default_patterns() -> dict[LedState, LedPattern]:
    return {
        "off": LedPattern(on=0, off=1),
        "idle": LedPattern(on=0.1, off=2.9),
        "recording": LedPattern(on=1, off=0),
        "error": LedPattern(on=0.1, off=0.1),
        "no_network": LedPattern(on=1, off=1),
        "low_battery": LedPattern(on=0.1, off=0.9),
        "wifi_setup": LedPattern(on=0.5, off=0.5),
    }


class LedConfig(StrictModel):
    """A status LED on a GPIO pin (through a resistor to ground)."""

    enabled: bool = Field(default=False, description="Drive a status LED.")
    pin: Pin = Field(default=27, description="GPIO pin (BCM number or gpiozero pin name).")
    active_high: bool = Field(
        default=True, description="The LED lights when the pin is high (false: when low)."
    )
    patterns: dict[LedState, LedPattern] = Field(
        default_factory=_default_patterns,
        description="Blink pattern per station state; states left out keep their default.",
    )
    poll: Seconds = Field(
        default=2.0, gt=0, description="Time between reads of the station's state."
    )
    priority: list[LedState] = Field(
        default_factory=lambda: [  # type: ignore[arg-type]
            "error",
            "low_battery",
            "wifi_setup",
            "no_network",
            "recording",
            "idle",
        ],
        description="When several states hold, the LED shows the first of this list.",
    )
    low_battery_percent: float = Field(
        default=20.0, ge=0, le=100, description="Show 'low_battery' below this charge, %."
    )

    @model_validator(mode="after")
    def _complete(self) -> LedConfig:
        self.patterns = {**_default_patterns(), **self.patterns}
        return self


class NetLevelConfig(StrictModel):
    """Network levels (offline / local / internet) and the Wi-Fi link (omgrab's)."""

    enabled: bool = Field(
        default=False, description="Watch the network level and Wi-Fi link of the station."
    )
    interface: str | None = Field(
        default=None,
        max_length=15,
        description="Network interface to judge ('wlan0'); omit: the default route's.",
    )
    internet_targets: list[str] = Field(
        default_factory=lambda: ["1.1.1.1:53", "8.8.8.8:53"],
        description="'host:port' TCP targets on the internet; one answering means 'internet'.",
    )
    interval: Seconds = Field(default=30.0, gt=0, description="Time between checks.")
    timeout: Seconds = Field(default=3.0, gt=0, description="Timeout of one TCP probe.")
    nmcli: str = Field(
        default="nmcli", description="NetworkManager's command line tool (name on PATH or path)."
    )


class WifiConfig(StrictModel):
    """Wi-Fi provisioning: a hotspot and a small page to choose a network."""

    enabled: bool = Field(default=False, description="Offer Wi-Fi provisioning.")
    interface: str = Field(default="wlan0", max_length=15, description="Wi-Fi interface.")
    offline_after: Seconds = Field(
        default=600.0,
        gt=0,
        description="Start the hotspot after the station has been offline this long.",
    )
    check_interval: Seconds = Field(
        default=30.0,
        gt=0,
        description="Time between looks at the Wi-Fi state (one 'nmcli' run each); a request "
        "or a choice on the page is acted on at once.",
    )
    hotspot_ssid: str = Field(
        default="fieldstation-setup",
        min_length=1,
        max_length=32,
        description="SSID of the hotspot.",
    )
    hotspot_password: str = Field(
        default="fieldstation",
        min_length=8,
        max_length=63,
        description="WPA2 passphrase of the hotspot (8-63 characters).",
    )
    hotspot_connection: str = Field(
        default="fieldstation-hotspot",
        min_length=1,
        max_length=64,
        description="NetworkManager connection name of the hotspot.",
    )
    hotspot_timeout: Seconds = Field(
        default=900.0,
        gt=0,
        description="Give up the hotspot after this long without a network chosen, and try "
        "the known networks again.",
    )
    address: str = Field(
        default="10.42.0.1",
        description="Address the page is served on (NetworkManager's shared-mode default).",
    )
    port: int = Field(default=80, ge=0, le=65535, description="TCP port of the page.")
    connect_timeout: Seconds = Field(
        default=45.0, gt=0, description="Longest wait for 'nmcli device wifi connect'."
    )


class FieldConfig(StrictModel):
    """Field hardware: GPIO button and status LED, network levels, Wi-Fi provisioning."""

    button: ButtonConfig = Field(default_factory=ButtonConfig, description="Push button.")
    led: LedConfig = Field(default_factory=LedConfig, description="Status LED.")
    network: NetLevelConfig = Field(
        default_factory=NetLevelConfig, description="Network levels and Wi-Fi link."
    )
    wifi: WifiConfig = Field(default_factory=WifiConfig, description="Wi-Fi provisioning.")
