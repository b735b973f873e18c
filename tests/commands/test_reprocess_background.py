"""A ``reprocess`` command runs in the background: the ``commands`` thread keeps turning its
loop (and answering other commands) however long the run takes; a stop ends the run and the
command is refused as interrupted. Virtual time and a controllable call
stand in for the child process (tests/runtime/test_forkserver.py has the real one)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import select

from fieldstation.clock import VirtualClock
from fieldstation.commands import store
from fieldstation.commands.executor import CommandExecutor
from fieldstation.commands.inbox import CommandInbox
from fieldstation.commands.job import CommandsJob
from fieldstation.config import StationConfig
from fieldstation.messages import CommandResultBody, parse_message
from fieldstation.messages.commands import generate_private_key, sign_command
from fieldstation.processing.reprocess import reprocess_in_child
from fieldstation.runtime.liveness import ThreadLiveness
from fieldstation.runtime.station import THREAD_LIVENESS
from fieldstation.runtime.supervisor import TickingEvent
from fieldstation.store.db import Database
from fieldstation.store.models import Message

HUB_KEY = generate_private_key()
WAIT = 60.0
"""Real seconds a test waits for an event it expects (generous: a busy 2-core machine)."""


class SlowCall:
    """A reprocess run that ends when the test says so."""

    def __init__(
        self, function: Callable[..., Any], args: tuple[Any, ...], clock: VirtualClock
    ) -> None:
        self.function, self.args, self.clock = function, args, clock
        self.step = 0.0
        """Virtual seconds each poll lets pass (a run of hours in a few turns)."""
        self.release = threading.Event()
        self.cancelled = threading.Event()
        self.outcome: dict[str, Any] = {"stored": 3, "failed": 0, "waiting": 0}
        self.polls = 0

    def poll(self) -> bool:
        self.polls += 1
        if self.step:
            self.clock.advance(self.step)
        return self.release.is_set()

    def result(self) -> Any:
        return self.outcome

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass
class _Station:
    config: StationConfig
    config_hash: str = "c" * 64
    started_at: float = 0.0

    def start_job(self, name: str) -> dict[str, Any]:
        return {"state": "running"}

    stop_job = restart_job = start_job


@dataclass
class Rig:
    db: Database
    clock: VirtualClock
    inbox: CommandInbox
    executor: CommandExecutor
    calls: list[SlowCall] = field(default_factory=list)

    def send(self, name: str, args: dict[str, Any]) -> str:
        signed = sign_command(
            HUB_KEY,
            key_id="hub",
            station="default",
            command=name,
            args=args,
            issued_at=self.clock.now(),
            ttl=30 * 86400.0,
        )
        assert self.inbox.receive(signed.to_json(), "mqtt:hub") == "accepted"
        return str(json.loads(signed.to_json())["id"])

    def states(self, command_id: str) -> list[str]:
        with self.db.session() as session:
            payloads = session.scalars(
                select(Message.payload).where(Message.kind == "command_result").order_by(Message.id)
            ).all()
        bodies = [parse_message(p.encode()).body for p in payloads]
        return [
            b.state
            for b in bodies
            if isinstance(b, CommandResultBody) and b.command_id == command_id
        ]

    def state(self, command_id: str) -> str | None:
        with self.db.session() as session:
            row = store.get_command(session, command_id)
            return None if row is None else row.state


@pytest.fixture
def rig(config: StationConfig, db: Database, clock: VirtualClock, station_tools: Any) -> Rig:
    calls: list[SlowCall] = []

    def starter(function: Callable[..., Any], *args: Any) -> SlowCall:
        calls.append(SlowCall(function, args, clock))
        return calls[-1]

    inbox = station_tools.inbox(config, db, clock, HUB_KEY)
    executor = CommandExecutor(db, _Station(config), clock, starter=starter)
    return Rig(db, clock, inbox, executor, calls)


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_reprocess_returns_at_once_and_other_commands_run_meanwhile(rig: Rig) -> None:
    first = rig.send("reprocess", {"model": "energy", "since": "2d"})
    assert rig.executor.run_pending() == 1  # started, not waited for
    (call,) = rig.calls
    assert call.function is reprocess_in_child and call.args[1:] == ("energy", call.args[2])
    assert rig.state(first) == "running" and rig.executor.busy
    ping = rig.send("ping", {})
    second = rig.send("reprocess", {"model": "energy"})
    assert rig.executor.run_pending() == 1  # the ping; the second reprocess waits its turn
    assert rig.states(ping) == ["accepted", "done"]
    assert rig.state(second) == "accepted" and len(rig.calls) == 1
    call.release.set()
    assert rig.executor.run_pending() == 1  # the first answered, the second started
    assert rig.states(first) == ["accepted", "done"]
    assert rig.state(second) == "running" and len(rig.calls) == 2
    rig.calls[1].outcome = {"stored": 1, "failed": 2, "waiting": 0}
    rig.calls[1].release.set()
    assert rig.executor.run_pending() == 0
    assert rig.states(second) == ["accepted", "refused"]
    assert not rig.executor.busy


def test_a_reprocess_that_raises_is_refused_with_the_reason(rig: Rig) -> None:
    command_id = rig.send("reprocess", {"model": "energy"})
    rig.executor.run_pending()

    def broken() -> Any:
        raise RuntimeError("disk full")

    rig.calls[0].result = broken  # type: ignore[method-assign]
    rig.calls[0].release.set()
    rig.executor.run_pending()
    assert rig.states(command_id) == ["accepted", "refused"]


def test_the_commands_thread_keeps_turning_through_a_run_longer_than_its_limit(
    rig: Rig,
) -> None:
    """Virtual time runs past the thread's liveness limit while the reprocess runs; the loop
    keeps polling it, the supervisor's verdict (its stop event's touches judged by the job's
    ThreadLiveness) stays "alive", and a ping sent after that is answered; a stop ends the
    run and refuses it as interrupted."""
    job = CommandsJob(rig.inbox, rig.executor, rig.clock)
    stop = TickingEvent(rig.clock)  # what the supervisor hands a thread job
    liveness = ThreadLiveness(THREAD_LIVENESS["commands"])
    thread = threading.Thread(target=job.run, args=(stop,), name="commands")
    reprocess = rig.send("reprocess", {"model": "energy"})
    start = rig.clock.monotonic()
    thread.start()
    try:
        _until(lambda: bool(rig.calls), "the reprocess to start")
        rig.calls[0].step = 60.0  # a minute of the run at each turn of the loop
        limit = THREAD_LIVENESS["commands"]
        _until(lambda: rig.clock.monotonic() - start > limit + 600, "virtual time past the limit")
        assert rig.calls[0].polls > limit / 60.0  # polled at each turn, never waited for
        what, at = stop.state
        assert liveness.stalled(what, at, rig.clock.monotonic()) is None  # not hung
        ping = rig.send("ping", {})
        _until(lambda: rig.states(ping) == ["accepted", "done"], "the ping's answer")
        assert rig.state(reprocess) == "running"
    finally:
        stop.set()
        thread.join(WAIT)
    assert not thread.is_alive()
    assert rig.calls[0].cancelled.is_set()  # the stop ended the child
    assert rig.states(reprocess) == ["accepted", "refused"]  # interrupted, said at once
    assert rig.executor.recover() == 0  # nothing left running for the next start


def test_a_restart_of_the_commands_job_leaves_running_commands_alone(rig: Rig) -> None:
    """Only the station's start refuses the commands a stop left running: a restart of the job
    in a running station (a crash, a ``restart commands``, a new file's ``[commands]``) must
    not end a command that still runs elsewhere (a set_config on trial answers from its own
    thread)."""
    from fieldstation.commands import store

    on_trial = rig.send("ping", {})
    with rig.db.session() as session:
        assert store.start(session, on_trial, now=rig.clock.now())
    job = CommandsJob(rig.inbox, rig.executor, rig.clock, recover_at_start=False)
    stop = threading.Event()
    stop.set()  # one pass of the loop's set-up, then out
    job.run(stop)
    assert rig.state(on_trial) == "running"
    CommandsJob(rig.inbox, rig.executor, rig.clock).run(stop)  # the station's start
    assert rig.states(on_trial) == ["accepted", "refused"]
