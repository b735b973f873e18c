"""Job functions that misbehave on purpose, for supervisor tests and fault-injection scripts.

They follow the job contract (``job(ctx, *args)``, see :mod:`fieldstation.job`) and live in
the package (not in tests) because the supervisor starts jobs in fresh processes that import
them by module path.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil

from fieldstation.job import ConfigurationError, JobContext
from fieldstation.runtime.forkserver import fork_server_pid

__all__ = [
    "closing_slowly",
    "crashing",
    "hanging",
    "idling",
    "misconfigured",
    "progressing",
    "woken",
]


def progressing(ctx: JobContext, marker: str, every: float = 0.05) -> None:
    """Opens a slot, then reports a chunk every ``every`` s until stopped.

    Appends its PID to ``<marker>.starts`` on start; writes ``ctx.stop_reason`` to ``marker``
    when it stops.
    """
    with open(marker + ".starts", "a") as handle:
        handle.write(f"{os.getpid()}\n")
    ctx.progress("slot", {"start": "now", "end": "later"})
    n = 0
    while not ctx.stop.is_set():
        n += 1
        ctx.progress("chunk", {"recording_id": n})
        ctx.stop.wait(every)
    Path(marker).write_text(ctx.stop_reason)


def crashing(ctx: JobContext) -> None:
    """Always raises at once."""
    raise RuntimeError("boom: crashing job always fails")


def misconfigured(ctx: JobContext, marker: str | None = None) -> None:
    """Raises :class:`ConfigurationError` at once (a replay file that does not exist).

    Appends its PID to ``marker`` (when given) on start.
    """
    if marker is not None:
        with open(marker, "a") as handle:
            handle.write(f"{os.getpid()}\n")
    raise ConfigurationError(
        "sensors.mic.path: /nowhere/missing.wav does not exist; fix the path in the station file"
    )


def hanging(ctx: JobContext, marker: str | None = None) -> None:
    """Opens a slot, then never reports a chunk nor honours the stop (a stuck device read).

    Appends its PID to ``marker`` (when given) on start.
    """
    if marker is not None:
        with open(marker, "a") as handle:
            handle.write(f"{os.getpid()}\n")
    ctx.progress("slot", {"start": "now", "end": "later"})
    while True:
        time.sleep(0.05)


def closing_slowly(ctx: JobContext, journal: str, seconds: float = 0.3) -> None:
    """A producer: reports chunks until stopped, then takes ``seconds`` to close its last one.

    Appends ``producer closed <monotonic s>`` to ``journal`` once closed.
    """
    ctx.progress("slot", {"start": "now", "end": "later"})
    while not ctx.stop.is_set():
        ctx.progress("chunk", {})
        ctx.stop.wait(0.05)
    time.sleep(seconds)
    with open(journal, "a") as handle:
        handle.write(f"producer closed {time.monotonic()}\n")


def idling(ctx: JobContext, journal: str, every: float = 0.05) -> None:
    """A consumer with nothing to do: reports ``idle`` every ``every`` s until stopped.

    Appends ``consumer stopped <monotonic s>`` to ``journal`` when it gets the stop.
    """
    while not ctx.stop.is_set():
        ctx.progress("idle", {"pending": 0})
        ctx.stop.wait(every)
    with open(journal, "a") as handle:
        handle.write(f"consumer stopped {time.monotonic()}\n")


def woken(ctx: JobContext, journal: str) -> None:
    """A consumer that polls only every minute: appends ``woken <monotonic s>`` to
    ``journal`` each time ``ctx.wake`` ends its wait early (a nudge from the supervisor)."""
    while not ctx.stop.is_set():
        ctx.progress("idle", {"pending": 0})
        if ctx.clock.wait(ctx.wake, 60.0) and not ctx.stop.is_set():
            with open(journal, "a") as handle:
                handle.write(f"woken {time.monotonic()}\n")
        ctx.wake.clear()


def job_processes() -> list[psutil.Process]:
    """This process's descendants other than the fork server (and its zombies).

    What a supervisor in this process has left running: job processes and their children.
    """
    server = fork_server_pid()
    found = []
    for child in psutil.Process().children(recursive=True):
        if child.pid == server:
            continue
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        found.append(child)
    return found
