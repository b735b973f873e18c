"""The ``commands`` thread job: runs accepted commands (:class:`~fieldstation.commands.executor.
CommandExecutor`) and polls the hub's command endpoint of HTTP outputs with ``commands_url``.

Commands that arrive over MQTT are stored by the MQTT output itself (paho's thread calls
:meth:`CommandInbox.receive <fieldstation.commands.inbox.CommandInbox.receive>` and
acknowledges the message only once it is stored); this job runs them. At start it refuses the
commands a stop left ``running`` (at most once), then runs those still ``accepted``.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from fieldstation.clock import Clock
from fieldstation.commands.executor import CommandExecutor
from fieldstation.commands.inbox import CommandInbox

__all__ = ["TURN", "CommandsJob"]

log = logging.getLogger(__name__)

TURN = 0.5
"""Longest wait, seconds, between two looks at the stop event (and the arrivals)."""


class CommandsJob:
    """``run(stop)`` until ``stop`` is set (see the module docstring).

    ``pollers``: output name -> a function returning the commands (wire dicts) the hub holds
    for this station (:func:`fieldstation.outbox.http.poll_commands` bound to the output);
    each is called every ``poll_interval`` seconds; a failure is logged (once per new reason)
    and retried at the next turn of the interval.
    """

    def __init__(
        self,
        inbox: CommandInbox,
        executor: CommandExecutor,
        clock: Clock,
        *,
        pollers: dict[str, Any] | None = None,
        poll_interval: float = 60.0,
    ) -> None:
        self.inbox = inbox
        self.executor = executor
        self.clock = clock
        self.pollers = dict(pollers or {})
        self.poll_interval = poll_interval
        self._next_poll: dict[str, float] = {}
        self._poll_errors: dict[str, str] = {}

    def run(self, stop: threading.Event) -> None:
        recovered = self.executor.recover()
        if recovered:
            log.warning("%d command(s) cut by the last stop refused (not run again)", recovered)
        while not stop.is_set():
            self.inbox.arrived.clear()  # before the pass: an arrival during it is not missed
            self.executor.run_pending(stop.is_set)
            self.poll_due()
            wait = TURN
            if self._next_poll:
                wait = max(0.0, min(TURN, min(self._next_poll.values()) - self.clock.monotonic()))
            if not self.inbox.arrived.is_set():
                self.clock.wait(self.inbox.arrived, wait)

    def poll_due(self) -> int:
        """Ask each HTTP output whose poll is due for its commands and receive them; returns
        how many were received."""
        received = 0
        for name, poll in self.pollers.items():
            now = self.clock.monotonic()
            if now < self._next_poll.get(name, now):
                continue
            self._next_poll[name] = now + self.poll_interval
            try:
                commands = poll()
            except Exception as error:  # the hub unreachable: retried at the next interval
                reason = f"{type(error).__name__}: {error}"
                if self._poll_errors.get(name) != reason:
                    log.warning("output %r: cannot fetch commands: %s", name, reason)
                self._poll_errors[name] = reason
                continue
            self._poll_errors.pop(name, None)
            for command in commands:
                raw = json.dumps(command) if not isinstance(command, (bytes, str)) else command
                self.inbox.receive(raw, f"http:{name}")
                received += 1
        return received
