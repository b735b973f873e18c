"""One backoff rule for every retry in the station: exponential with "equal jitter".

The n-th consecutive retry (1-based) waits ``base = min(maximum, initial * 2**(n-1))`` seconds
scaled by a random factor in ``[0.5, 1]``: "equal jitter" (Marc Brooker, AWS Architecture Blog,
"Exponential Backoff And Jitter", 2015,
https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/). Half the base is
always waited, so a retry never comes at once, and retries of many jobs or outputs that failed
together spread out instead of hitting the device, the disk or the broker in lock step.

Used by the supervisor's restart policy, each output's delivery worker, the network monitor
and the recorder's device reopen. :class:`Backoff` is pure (no clock, no sleeping): the caller
waits the returned seconds on its own injected clock, so tests run on virtual time.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Backoff", "backoff_delay"]


def backoff_delay(attempt: int, initial: float, maximum: float, rand: float | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based; 0 or less counts as 1).

    ``initial``, ``maximum``: seconds, ``0 < initial <= maximum``. ``rand``: a number in
    ``[0, 1)`` (drawn from :func:`random.random` when None); ``0`` gives the shortest wait
    (half the base), values near 1 the full base. Raises :class:`ValueError` for bad bounds.
    """
    if initial <= 0 or maximum < initial:
        raise ValueError(f"need 0 < initial <= maximum seconds (got {initial}, {maximum})")
    base = min(maximum, initial * 2.0 ** min(max(0, attempt - 1), 60))
    r = random.random() if rand is None else rand
    return float(base * (0.5 + 0.5 * r))


@dataclass
class Backoff:
    """A retry counter with :func:`backoff_delay`: ``next_delay()`` after each failure,
    ``reset()`` after a success. Not thread-safe: one owner calls it.

    ``initial``/``maximum``: seconds; ``jitter``: returns numbers in ``[0, 1)`` (inject a
    constant in tests).
    """

    initial: float
    maximum: float
    jitter: Callable[[], float] = field(default=random.random)
    attempt: int = 0
    """Consecutive failures so far (0 after :meth:`reset`)."""

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum < self.initial:
            raise ValueError(
                f"need 0 < initial <= maximum seconds (got {self.initial}, {self.maximum})"
            )

    def next_delay(self) -> float:
        """Count one more failure and return the seconds to wait before the next try."""
        self.attempt += 1
        return backoff_delay(self.attempt, self.initial, self.maximum, self.jitter())

    def reset(self) -> None:
        """A try succeeded: the next failure waits ``initial`` (jittered) again."""
        self.attempt = 0
