"""The station's field jobs (supervised threads): ``field`` (button and LED), ``netlevel``
(network levels and Wi-Fi link) and ``wifi`` (provisioning). Built by
:func:`field_jobs` when their ``[field]`` sections are enabled.

The ``field`` job talks to the station only through its control API (the Unix socket), like
``fieldstation status`` does: a press's action is a request, and the LED shows what
``GET /status`` says.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldstation.clock import Clock
from fieldstation.config.station import StationConfig
from fieldstation.field.actions import PressActions
from fieldstation.field.button import IDLE_WAIT, ButtonWatcher
from fieldstation.field.led import StatusLed, led_state
from fieldstation.job import ConfigurationError

if TYPE_CHECKING:  # httpx (and the click and rich it imports) only where a press acts
    from fieldstation.runtime.client import ControlClient

__all__ = ["FieldJob"]

log = logging.getLogger(__name__)


class FieldJob:
    """The button and the LED of one station, talking to it through ``socket``.

    ``pin_factory``: gpiozero's (None: its default); ``battery()``: the charge in % or None
    (the LED's ``low_battery``; default: ``status["battery"]``).
    """

    def __init__(
        self,
        config: StationConfig,
        clock: Clock,
        socket: Path,
        *,
        pin_factory: Any = None,
        battery: Callable[[], float | None] | None = None,
    ) -> None:
        self.config = config.field
        self.clock = clock
        self.socket = socket
        self.battery = battery
        self.actions = PressActions(self.config.button, self.client)
        self.button = (
            ButtonWatcher(self.config.button, clock, self.actions, pin_factory=pin_factory)
            if self.config.button.enabled
            else None
        )
        self.led = (
            StatusLed(self.config.led, pin_factory=pin_factory) if self.config.led.enabled else None
        )

    def client(self) -> ControlClient:
        """A control client of the station (short timeout: the button must stay lively)."""
        from fieldstation.runtime.client import ControlClient

        return ControlClient(self.socket, timeout=30.0)

    def refresh_led(self) -> str | None:
        """Read the station's status and show its state; returns the state shown."""
        if self.led is None:
            return None
        try:
            with self.client() as client:
                status: dict[str, Any] | None = client.status()
        except Exception as error:  # not running (yet), or busy: the LED says "off"
            log.debug("field: no status: %s", error)
            status = None
        percent = None
        if self.battery is not None:
            try:
                percent = self.battery()
            except Exception as error:
                log.debug("field: no battery reading: %s", error)
        state = led_state(status, self.config.led, battery_percent=percent)
        self.led.show(state)
        return state

    def run(self, stop: threading.Event) -> None:
        """Pump the button and refresh the LED every ``led.poll`` s until ``stop`` is set."""
        poll = self.config.led.poll
        next_led = self.clock.monotonic()
        while not stop.is_set():
            if self.led is not None and self.clock.monotonic() >= next_led:
                self.refresh_led()
                next_led = self.clock.monotonic() + poll
            if self.button is not None:
                self.button.pump()
                self.button.wait(stop, longest=poll if self.led is not None else IDLE_WAIT)
            elif self.clock.wait(stop, poll):
                break

    def close(self) -> None:
        """Give the pins back (the LED goes dark)."""
        if self.button is not None:
            self.button.close()
        if self.led is not None:
            self.led.close()


def _build(make: Callable[[], FieldJob]) -> FieldJob:
    """``make()``, with gpiozero's "no pin factory", "no such pin" and "pin in use" turned
    into a :class:`ConfigurationError` (retrying does not help; the job shows
    ``config_error`` with what to do)."""
    from gpiozero.exc import BadPinFactory, GPIOPinInUse, PinInvalidPin, PinUnsupported

    try:
        return make()
    except (BadPinFactory, PinInvalidPin, PinUnsupported, GPIOPinInUse) as error:
        raise ConfigurationError(
            f"[field.button]/[field.led]: {type(error).__name__}: {error} (on a Raspberry Pi "
            "install python3-lgpio and add the user to the gpio group; elsewhere set their "
            "enabled = false)"
        ) from error


def field_jobs(station: Any, liveness: Callable[[str], Any]) -> list[Any]:
    """The thread jobs of ``station`` (a :class:`~fieldstation.runtime.station.Station`) for
    its enabled ``[field]`` sections; sets ``station.netlevel`` and ``station.wifi`` (read by
    its status, heartbeat and ``POST /wifi/setup``). ``liveness(name)`` gives each job's."""
    from fieldstation.runtime.jobs import ThreadJobSpec

    config, clock = station.config, station.clock
    field = config.field
    specs: list[Any] = []
    if field.button.enabled or field.led.enabled:

        def run_field(stop: threading.Event) -> None:
            job = _build(lambda: FieldJob(config, clock, station.home.control_socket))
            try:
                job.run(stop)
            finally:
                job.close()

        specs.append(ThreadJobSpec("field", run_field, liveness=liveness("field")))
    if field.network.enabled:
        from fieldstation.health.netlevel import NetLevel, NetLevelMonitor

        def changed(old: NetLevel | None, new: NetLevel) -> None:
            station.record_event(
                "network_level",
                "netlevel",
                f"network level {old.level if old else 'unknown'} -> {new.level}",
                "info" if new.level == "internet" else "warning",
                new.as_dict(),
            )

        station.netlevel = NetLevelMonitor(field.network, clock, on_change=changed)
        specs.append(ThreadJobSpec("netlevel", station.netlevel.run, liveness=liveness("netlevel")))
    if field.wifi.enabled:
        from fieldstation.field.portal import Portal
        from fieldstation.field.wifi import Nmcli, Provisioner

        def event(kind: str, message: str, data: dict[str, Any]) -> None:
            severity = "warning" if kind in ("wifi_hotspot", "wifi_join_failed") else "info"
            station.record_event(kind, "wifi", message, severity, data)

        station.wifi = Provisioner(
            field.wifi,
            clock,
            Nmcli(field.network.nmcli, field.wifi.interface),
            portal=Portal(field.wifi.address, field.wifi.port, config.station.id),
            on_event=event,
        )

        def run_wifi(stop: threading.Event) -> None:
            try:
                import starlette  # noqa: F401
                import uvicorn  # noqa: F401
            except ImportError as error:
                raise ConfigurationError(
                    f"[field.wifi] needs the 'field' extra ({error}): "
                    "pip install 'fieldstation[field]', or set [field.wifi] enabled = false"
                ) from error
            station.wifi.run(stop, interval=field.wifi.check_interval)

        specs.append(ThreadJobSpec("wifi", run_wifi, liveness=liveness("wifi")))
    return specs
