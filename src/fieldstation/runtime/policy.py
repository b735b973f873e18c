"""Restart policy of supervised jobs: exponential backoff with jitter and an intensity limit.

Backoff: the n-th restart inside the current ``restart_window`` waits
:func:`fieldstation.backoff.backoff_delay` ``(n, backoff_initial, backoff_max)`` seconds, i.e.
``min(backoff_max, backoff_initial * 2**(n-1))`` scaled by a random factor in [0.5, 1]
("equal jitter", the station's one backoff rule), so jobs crashing together do not restart in
lock step. Intensity (Erlang/OTP supervisors'
``intensity``/``period``): a job that would restart more than ``max_restarts`` times within
``restart_window`` seconds is declared failed and left alone. Time is the injected clock's
``monotonic()`` seconds, so the policy is tested on a ``VirtualClock``.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from fieldstation.backoff import backoff_delay
from fieldstation.config.runtime import RuntimeConfig

__all__ = ["RestartDecision", "RestartPolicy"]


@dataclass(frozen=True)
class RestartDecision:
    """What to do after a job ended unexpectedly: restart after ``delay`` seconds, or fail."""

    restart: bool
    delay: float
    restarts_in_window: int
    """Restarts counted in the window, including this one when ``restart``."""


class RestartPolicy:
    """Backoff and intensity for ONE job. Not thread-safe: the supervisor loop owns it."""

    def __init__(
        self,
        *,
        backoff_initial: float,
        backoff_max: float,
        max_restarts: int,
        restart_window: float,
        jitter: Callable[[], float] | None = None,
    ) -> None:
        if backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("need 0 < backoff_initial <= backoff_max (seconds)")
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self._jitter = jitter if jitter is not None else random.random
        self._restarts: deque[float] = deque()
        self.total_restarts = 0

    @classmethod
    def from_config(
        cls, config: RuntimeConfig, jitter: Callable[[], float] | None = None
    ) -> RestartPolicy:
        """The policy of ``[runtime]``."""
        return cls(
            backoff_initial=config.backoff_initial,
            backoff_max=config.backoff_max,
            max_restarts=config.max_restarts,
            restart_window=config.restart_window,
            jitter=jitter,
        )

    def _prune(self, now: float) -> None:
        while self._restarts and now - self._restarts[0] > self.restart_window:
            self._restarts.popleft()

    def restarts_in_window(self, now: float) -> int:
        """Restarts within the last ``restart_window`` seconds before monotonic ``now``."""
        self._prune(now)
        return len(self._restarts)

    def backoff(self, attempt: int) -> float:
        """Delay (s) before restart number ``attempt`` (1-based) before jitter."""
        return backoff_delay(attempt, self.backoff_initial, self.backoff_max, 1.0)

    def on_exit(self, now: float) -> RestartDecision:
        """A job ended unexpectedly at monotonic ``now``: restart (with a delay) or fail."""
        self._prune(now)
        if len(self._restarts) >= self.max_restarts:
            return RestartDecision(False, 0.0, len(self._restarts))
        self._restarts.append(now)
        self.total_restarts += 1
        attempt = len(self._restarts)
        delay = backoff_delay(attempt, self.backoff_initial, self.backoff_max, self._jitter())
        return RestartDecision(True, delay, attempt)

    def reset(self) -> None:
        """Forget past restarts (an operator started the job again)."""
        self._restarts.clear()
