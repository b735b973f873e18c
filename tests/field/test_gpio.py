"""The button and the LED on gpiozero's MockFactory: every press pattern through a real
gpiozero ``Button`` (edges from the mock pin, time from a virtual clock), every LED state
through a real gpiozero ``LED`` (the mock pin's recorded levels)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from fieldstation.clock import VirtualClock
from fieldstation.config.field import LED_STATES, ButtonConfig, LedConfig, LedPattern
from fieldstation.field.button import ButtonWatcher
from fieldstation.field.led import StatusLed, led_state
from fieldstation.field.press import Press


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    factory = MockFactory()
    yield factory
    factory.reset()


class Hand:
    """Presses the mock button: the pin is driven low (pull-up) or high, time is virtual."""

    def __init__(self, factory: MockFactory, clock: VirtualClock, pin: int, pull_up: bool) -> None:
        self.pin = factory.pin(pin)
        self.clock = clock
        self.down, self.up = (
            (self.pin.drive_low, self.pin.drive_high)
            if pull_up
            else (self.pin.drive_high, self.pin.drive_low)
        )

    def bounce(self, settle: Any, times: int = 3) -> None:
        other = self.up if settle == self.down else self.down
        for _ in range(times):
            settle()
            self.clock.advance(0.003)
            other()
            self.clock.advance(0.003)
        settle()

    def press(self, held: float, bounce: bool = True) -> None:
        self.bounce(self.down) if bounce else self.down()
        self.clock.advance(held)
        self.bounce(self.up) if bounce else self.up()


def watcher(
    factory: MockFactory, clock: VirtualClock, **config: Any
) -> tuple[ButtonWatcher, list[Press]]:
    seen: list[Press] = []
    button = ButtonWatcher(
        ButtonConfig(enabled=True, **config), clock, seen.append, pin_factory=factory
    )
    return button, seen


@pytest.mark.parametrize("pull_up", [True, False])
@pytest.mark.parametrize(
    ("presses", "kinds"),
    [
        ([(0.15, 0)], ["short"]),
        ([(0.1, 0.2), (0.1, 0)], ["double"]),
        ([(3.0, 0)], ["long"]),
        ([(9.0, 0)], ["very_long"]),
        ([(0.1, 1.0), (0.1, 0)], ["short", "short"]),
        ([(0.1, 1.0), (2.5, 1.0), (0.1, 0.1), (0.1, 0)], ["short", "long", "double"]),
    ],
)
def test_every_press_pattern_through_a_gpiozero_button(
    factory: MockFactory, pull_up: bool, presses: list[tuple[float, float]], kinds: list[str]
) -> None:
    clock = VirtualClock()
    button, seen = watcher(factory, clock, pin=17, pull_up=pull_up)
    hand = Hand(factory, clock, 17, pull_up)
    try:
        for held, gap in presses:
            hand.press(held)
            clock.advance(gap)
            button.pump()
        clock.advance(1.0)  # past every double window
        button.pump()
        assert [p.kind for p in seen] == kinds
    finally:
        button.close()


def test_presses_are_timed_by_the_injected_clock_not_by_when_they_are_pumped(
    factory: MockFactory,
) -> None:
    clock = VirtualClock()
    button, seen = watcher(factory, clock, pin=5, long_press=1.0, very_long_press=None)
    hand = Hand(factory, clock, 5, True)
    try:
        hand.press(1.5, bounce=False)
        time.sleep(0.05)  # real time passes; the press was 1.5 virtual seconds
        clock.advance(1.0)
        assert [(p.kind, round(p.held, 3)) for p in button.pump()] == [("long", 1.5)]
    finally:
        button.close()


def test_a_failing_action_does_not_stop_the_watcher(factory: MockFactory) -> None:
    clock = VirtualClock()
    calls: list[str] = []

    def action(press: Press) -> None:
        calls.append(press.kind)
        raise ConnectionError("station not running")

    button = ButtonWatcher(ButtonConfig(enabled=True, pin=6), clock, action, pin_factory=factory)
    hand = Hand(factory, clock, 6, True)
    try:
        for _ in range(2):
            hand.press(0.1)
            clock.advance(1.0)
            button.pump()
        assert calls == ["short", "short"]
    finally:
        button.close()


# --- LED -------------------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "health": "healthy",
    "network": {"up": True},
    "recording": {"active": False},
}


@pytest.mark.parametrize(
    ("status", "battery", "state"),
    [
        (None, None, "off"),
        (BASE, None, "idle"),
        ({**BASE, "recording": {"active": True}}, None, "recording"),
        ({**BASE, "recording": {"active": True}, "health": "unhealthy"}, 5.0, "error"),
        ({**BASE, "recording": {"active": True}}, 12.0, "low_battery"),
        ({**BASE, "battery": {"percent": 3.0}}, None, "low_battery"),
        ({**BASE, "recording": {"active": True}, "network": {"up": False}}, None, "no_network"),
        ({**BASE, "network": {"up": True, "level": "offline"}}, None, "no_network"),
        ({**BASE, "network": {"up": False}, "wifi": {"mode": "hotspot"}}, None, "wifi_setup"),
        ({**BASE, "wifi": {"mode": "client"}}, 50.0, "idle"),
    ],
)
def test_led_state_of_the_station_status(
    status: dict[str, Any] | None, battery: float | None, state: str
) -> None:
    assert led_state(status, LedConfig(), battery_percent=battery) == state


def test_led_priority_is_configurable() -> None:
    config = LedConfig(priority=["recording", "no_network", "idle"])
    status = {**BASE, "recording": {"active": True}, "network": {"up": False}}
    assert led_state(status, config) == "recording"


PATTERNS = {
    "off": LedPattern(on=0, off=1),
    "recording": LedPattern(on=1, off=0),
    "idle": LedPattern(on=0.02, off=0.2),
    "error": LedPattern(on=0.04, off=0.04),
    "no_network": LedPattern(on=0.2, off=0.2),
    "low_battery": LedPattern(on=0.02, off=0.08),
    "wifi_setup": LedPattern(on=0.1, off=0.1),
}


def levels_after(pin: Any, start: int) -> list[tuple[float, bool]]:
    """``(seconds since the previous change, level)`` of each change from ``start``."""
    return [(s.timestamp, bool(s.state)) for s in pin.states[start:]]


def wait_for_states(pin: Any, start: int, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(pin.states) - start < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(pin.states) - start >= count, levels_after(pin, start)


@pytest.mark.parametrize("state", LED_STATES)
@pytest.mark.parametrize("active_high", [True, False])
def test_each_led_state_drives_its_pattern(
    factory: MockFactory, state: Any, active_high: bool
) -> None:
    config = LedConfig(enabled=True, pin=27, active_high=active_high, patterns=PATTERNS)
    led = StatusLed(config, pin_factory=factory)
    pin = factory.pin(27)
    lit = active_high  # the pin level that lights the LED
    try:
        start = len(pin.states)
        assert led.show(state)
        assert not led.show(state)  # the same state again changes nothing
        pattern = PATTERNS[state]
        if pattern.on == 0:
            assert pin.state != lit
        elif pattern.off == 0:
            assert pin.state == lit
        else:
            # six changes: lit, dark, lit, dark, lit, dark
            wait_for_states(pin, start, 6)
            levels = levels_after(pin, start)
            kinds = [level == lit for _, level in levels]
            assert kinds[:6] == [True, False] * 3, levels
            # a mock pin's state is stamped with the time since the change before it
            spans = [after for after, _ in levels[1:6]]
            on_spans, off_spans = spans[0::2], spans[1::2]
            # gpiozero's thread may be late on a busy machine, never early
            assert min(on_spans) >= pattern.on * 0.9, (state, spans)
            assert min(off_spans) >= pattern.off * 0.9, (state, spans)
    finally:
        led.close()
    assert pin.state != lit  # closed: dark


def test_led_follows_state_changes(factory: MockFactory) -> None:
    led = StatusLed(LedConfig(enabled=True, pin=22, patterns=PATTERNS), pin_factory=factory)
    pin = factory.pin(22)
    try:
        led.show("recording")
        assert pin.state
        led.show("error")
        start = len(pin.states)
        wait_for_states(pin, start, 3)
        led.show("off")
        assert not pin.state
        time.sleep(0.1)
        assert not pin.state  # the blink thread is gone
    finally:
        led.close()
