"""The GPIO button: gpiozero supplies the edges, :class:`~.press.PressDetector` decides.

gpiozero calls back (in its own thread) on every change of the pin; each edge is queued with
the injected clock's monotonic time, and :meth:`ButtonWatcher.pump` (the owner's thread) feeds
them to the detector and hands each recognised press to ``on_press``. gpiozero's own
``bounce_time`` is left off: debouncing is the detector's (one rule, tested on virtual time).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from fieldstation.clock import Clock
from fieldstation.config.field import ButtonConfig
from fieldstation.field.press import Press, PressDetector, PressTiming

__all__ = ["ButtonWatcher"]

log = logging.getLogger(__name__)

IDLE_WAIT = 2.0
"""Longest wait (s) of :meth:`ButtonWatcher.run` between two looks at its stop event (an
edge wakes it at once; this bounds how long a stop of the job waits, well within
``runtime.stop_timeout``)."""


class ButtonWatcher:
    """Watches the button on ``config.pin`` and calls ``on_press(press)`` for each press.

    ``pin_factory``: gpiozero's (None: its default on a Raspberry Pi; tests pass
    ``MockFactory()``). An exception of ``on_press`` is logged; the watcher goes on.
    """

    def __init__(
        self,
        config: ButtonConfig,
        clock: Clock,
        on_press: Callable[[Press], Any],
        *,
        pin_factory: Any = None,
    ) -> None:
        from gpiozero import Button

        self.config = config
        self.clock = clock
        self.on_press = on_press
        self.detector = PressDetector(PressTiming.of(config))
        self._edges: queue.SimpleQueue[tuple[bool, float]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self.device = Button(
            config.pin, pull_up=config.pull_up, bounce_time=None, pin_factory=pin_factory
        )
        self.device.when_pressed = lambda: self._edge(True)
        self.device.when_released = lambda: self._edge(False)

    def _edge(self, pressed: bool) -> None:
        self._edges.put((pressed, self.clock.monotonic()))
        self._wake.set()

    def pump(self) -> list[Press]:
        """Feed the queued edges to the detector, poll it at the clock's now, and hand each
        press to ``on_press``; returns the presses."""
        found: list[Press] = []
        while True:
            try:
                pressed, at = self._edges.get_nowait()
            except queue.Empty:
                break
            found += self.detector.edge(pressed, at)
        found += self.detector.poll(self.clock.monotonic())
        for press in found:
            log.info("button: %s press (held %.2f s)", press.kind, press.held)
            try:
                self.on_press(press)
            except Exception:
                log.exception("button: the action of a %s press failed", press.kind)
        return found

    def wait(self, stop: threading.Event, longest: float = IDLE_WAIT) -> None:
        """Wait (real time) for an edge, the detector's next deadline or ``longest`` s."""
        deadline = self.detector.deadline()
        timeout = longest
        if deadline is not None:
            timeout = min(longest, max(0.0, deadline - self.clock.monotonic()))
        if not stop.is_set():
            self._wake.wait(timeout)
        self._wake.clear()

    def run(self, stop: threading.Event) -> None:
        """Pump until ``stop`` is set."""
        while not stop.is_set():
            self.pump()
            self.wait(stop)

    def close(self) -> None:
        """Give the pin back."""
        self.device.close()
