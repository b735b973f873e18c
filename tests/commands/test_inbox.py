"""The command inbox and executor on virtual time, with the real station database: verify,
store (at most once by id), run, answer through the outbox (docs/commands.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from fieldstation.clock import VirtualClock
from fieldstation.commands import store
from fieldstation.commands.executor import CommandExecutor, run_now
from fieldstation.commands.inbox import REPLAY_QUIET, UNVERIFIED_QUIET, CommandInbox
from fieldstation.config import StationConfig
from fieldstation.messages import CommandResultBody, parse_message
from fieldstation.messages.commands import (
    command_digest,
    generate_private_key,
    sign_command,
)
from fieldstation.runtime.supervisor import UnknownJobError
from fieldstation.store.db import Database
from fieldstation.store.deployments import start_deployment
from fieldstation.store.models import CommandRow, Delivery, Event, Message, Recording
from fieldstation.testing.rows import add_recording

HUB_KEY = generate_private_key()
JOBS = ("recorder:mic", "processor:energy", "outbox", "commands", "heartbeat")


@dataclass
class FakeStation:
    """The executor's view of a running station; records the job commands it gets."""

    config: StationConfig
    config_hash: str = "c" * 64
    started_at: float = 0.0
    calls: list[tuple[str, str]] = field(default_factory=list)

    def _job(self, verb: str, name: str) -> dict[str, Any]:
        if name not in JOBS:
            raise UnknownJobError(f"no job named {name!r}")
        self.calls.append((verb, name))
        return {"name": name, "state": "running" if verb != "stop" else "stopped"}

    def start_job(self, name: str) -> dict[str, Any]:
        return self._job("start", name)

    def stop_job(self, name: str) -> dict[str, Any]:
        return self._job("stop", name)

    def restart_job(self, name: str) -> dict[str, Any]:
        return self._job("restart", name)


@dataclass
class Rig:
    inbox: CommandInbox
    executor: CommandExecutor
    station: FakeStation
    db: Database
    clock: VirtualClock

    def command(self, name: str, args: dict[str, Any], *, key: Any = HUB_KEY, **kw: Any) -> bytes:
        signed = sign_command(
            key,
            key_id=kw.pop("key_id", "hub"),
            station=kw.pop("station", "default"),
            command=name,
            args=args,
            issued_at=kw.pop("issued_at", self.clock.now()),
            ttl=kw.pop("ttl", 3600.0),
            **kw,
        )
        return signed.to_json()

    def results(self) -> list[CommandResultBody]:
        """Every command_result in the outbox, parsed as the hub parses it."""
        with self.db.session() as session:
            payloads = session.scalars(
                select(Message.payload).where(Message.kind == "command_result").order_by(Message.id)
            ).all()
        bodies = []
        for payload in payloads:
            envelope = parse_message(payload.encode())
            assert isinstance(envelope.body, CommandResultBody)
            assert envelope.station == "default"
            bodies.append(envelope.body)
        return bodies

    def states(self, command_id: str) -> list[str]:
        return [r.state for r in self.results() if r.command_id == command_id]

    def row(self, command_id: str) -> CommandRow | None:
        with self.db.session() as session:
            row = store.get_command(session, command_id)
            if row is not None:
                session.expunge(row)
            return row

    def refusal_events(self) -> list[Event]:
        with self.db.session() as session:
            rows = list(session.scalars(select(Event).where(Event.kind == "command_refused")))
            session.expunge_all()
            return rows


@pytest.fixture
def rig(config: StationConfig, db: Database, clock: VirtualClock, station_tools: Any) -> Rig:
    station = FakeStation(config)
    inbox = station_tools.inbox(config, db, clock, HUB_KEY, lambda: station.config_hash)
    executor = CommandExecutor(db, station, clock, starter=run_now)
    return Rig(inbox, executor, station, db, clock)


def command_id(raw: bytes) -> str:
    return str(json.loads(raw)["id"])


def test_a_signed_ping_is_accepted_then_done(rig: Rig) -> None:
    raw = rig.command("ping", {})
    assert rig.inbox.receive(raw, "mqtt:hub") == "accepted"
    assert rig.inbox.arrived.is_set()
    assert rig.states(command_id(raw)) == ["accepted"]
    rig.clock.advance(12.5)
    assert rig.executor.run_pending() == 1
    accepted, done = rig.results()
    assert (accepted.state, done.state) == ("accepted", "done")
    assert done.command == "ping" and done.details["uptime_s"] == 12.5
    assert done.config_hash_in_force == "c" * 64
    assert done.at == rig.clock.now()
    row = rig.row(command_id(raw))
    assert row is not None and row.state == "done" and row.source == "mqtt:hub"


def test_a_command_is_applied_at_most_once_by_id(rig: Rig) -> None:
    raw = rig.command("restart", {"job": "processor:energy"})
    assert rig.inbox.receive(raw, "mqtt:hub") == "accepted"
    assert rig.inbox.receive(raw, "http:hub") == "refused"  # a second copy before it ran
    rig.executor.run_pending()
    assert rig.inbox.receive(raw, "mqtt:hub") == "refused"  # and after
    assert rig.executor.run_pending() == 0
    assert rig.station.calls == [("restart", "processor:energy")]
    # the copies are not answered: the station's own answers are still unsent (below)
    assert rig.states(command_id(raw)) == ["accepted", "done"]
    assert rig.refusal_events() == []


def _deliver_all(rig: Rig) -> None:
    with rig.db.session() as session:
        session.execute(update(Delivery).values(state="sent"))


def test_copies_of_a_command_are_answered_rarely_and_never_behind_an_unsent_answer(
    rig: Rig,
) -> None:
    """A hub polling over HTTP lists a command until it saw ``accepted``; a copy published
    again and again (a broker with weak ACLs) must not add outbox rows at each copy."""
    raw = rig.command("ping", {})
    cid = command_id(raw)
    assert rig.inbox.receive(raw, "mqtt:hub") == "accepted"
    for _ in range(50):  # "accepted" still unsent: nothing added
        assert rig.inbox.receive(raw, "http:hub") == "refused"
    assert rig.states(cid) == ["accepted"]
    _deliver_all(rig)
    rig.clock.advance(REPLAY_QUIET - 1)
    assert rig.inbox.receive(raw, "http:hub") == "refused"
    assert rig.states(cid) == ["accepted"]  # sent, but answered less than REPLAY_QUIET ago
    rig.clock.advance(1)
    for _ in range(50):
        assert rig.inbox.receive(raw, "http:hub") == "refused"
    assert rig.states(cid) == ["accepted", "refused"]  # one answer for the 50 copies
    (replay,) = [r for r in rig.results() if r.state == "refused"]
    assert (replay.reason or "").startswith("already received at ")
    assert replay.details == {"replay": True, "state": "accepted"}
    assert len(rig.refusal_events()) == 1
    rig.clock.advance(REPLAY_QUIET)  # quiet time over, but that answer is still unsent
    assert rig.inbox.receive(raw, "http:hub") == "refused"
    assert rig.states(cid) == ["accepted", "refused"]
    _deliver_all(rig)
    assert rig.inbox.receive(raw, "http:hub") == "refused"
    assert rig.states(cid) == ["accepted", "refused", "refused"]


def test_forged_messages_are_answered_once_a_minute_per_source_with_a_count(rig: Rig) -> None:
    forger = generate_private_key()
    for n in range(100):
        raw = rig.command("restart", {"job": f"processor:{n}"}, key=forger)
        assert rig.inbox.receive(raw, "mqtt:homeassistant") == "refused"
    assert rig.inbox.receive(b"garbage", "mqtt:hub") == "refused"  # another source: its own turn
    assert len(rig.results()) == 2
    (first, other) = rig.refusal_events()
    assert "suppressed" not in first.data and other.data["from"] == "mqtt:hub"
    rig.clock.advance(UNVERIFIED_QUIET)
    assert rig.inbox.receive(rig.command("ping", {}, key=forger), "mqtt:homeassistant") == "refused"
    assert len(rig.results()) == 3
    last = rig.refusal_events()[-1]
    assert last.data["suppressed"] == 99 and "99 more from mqtt:homeassistant" in last.message
    # a genuine command is never held back by the forger
    assert rig.inbox.receive(rig.command("ping", {}), "mqtt:homeassistant") == "accepted"


def test_an_expired_command_is_refused_and_not_stored(rig: Rig) -> None:
    raw = rig.command("ping", {}, ttl=60.0)
    rig.clock.advance(61)
    assert rig.inbox.receive(raw, "mqtt:hub") == "refused"
    (result,) = rig.results()
    assert result.state == "refused" and result.reason and result.reason.startswith("expired at")
    assert result.command_id == command_id(raw) and result.command == "ping"
    assert rig.row(command_id(raw)) is None


def test_a_command_issued_far_in_the_future_is_refused(rig: Rig) -> None:
    raw = rig.command("ping", {}, issued_at=rig.clock.now() + timedelta(hours=1))
    assert rig.inbox.receive(raw, "mqtt:hub") == "refused"
    (result,) = rig.results()
    assert result.reason and "ahead of the station's clock" in result.reason


def test_a_command_that_waited_past_its_expiry_is_refused_when_its_turn_comes(rig: Rig) -> None:
    raw = rig.command("restart", {"job": "outbox"}, ttl=60.0)
    assert rig.inbox.receive(raw, "mqtt:hub") == "accepted"
    rig.clock.advance(120)
    rig.executor.run_pending()
    assert rig.station.calls == []
    assert rig.states(command_id(raw)) == ["accepted", "refused"]
    assert (rig.results()[-1].reason or "").endswith("before it ran")


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        ({"key": generate_private_key()}, "bad signature"),
        ({"key_id": "someone"}, "unknown key_id 'someone'"),
        ({"station": "hedge-07"}, "addressed to station 'hedge-07'"),
    ],
)
def test_a_forged_command_is_refused_reported_and_not_stored(
    rig: Rig, forge: dict[str, Any], reason: str
) -> None:
    raw = rig.command("restart", {"job": "processor:energy"}, **forge)
    assert rig.inbox.receive(raw, "mqtt:hub") == "refused"
    rig.executor.run_pending()
    assert rig.station.calls == []
    (result,) = rig.results()
    assert result.state == "refused" and reason in (result.reason or "")
    assert result.command_id == command_id(raw)
    # the digest of what was refused: the hub ends only the command it really sent
    assert result.details == {"stage": "verify", "digest": command_digest(json.loads(raw))}
    assert rig.row(command_id(raw)) is None  # a forged id cannot block the genuine one
    (event,) = rig.refusal_events()
    assert event.severity == "warning" and event.data["from"] == "mqtt:hub"
    genuine = rig.command("ping", {}, command_id=command_id(raw))
    assert rig.inbox.receive(genuine, "mqtt:hub") == "accepted"


def test_a_tampered_command_is_refused(rig: Rig) -> None:
    data = json.loads(rig.command("stop", {"job": "processor:energy"}))
    data["args"]["job"] = "recorder:mic"
    assert rig.inbox.receive(json.dumps(data), "mqtt:hub") == "refused"
    assert "bad signature" in (rig.results()[0].reason or "")


def test_garbage_is_refused_with_a_question_mark_id(rig: Rig) -> None:
    assert rig.inbox.receive(b"\xff not json", "mqtt:hub") == "refused"
    (result,) = rig.results()
    assert (result.command_id, result.command) == ("?", "?")
    assert (result.reason or "").startswith("not JSON")


def test_a_command_cut_by_a_stop_is_refused_at_start_not_run_again(rig: Rig) -> None:
    raw = rig.command("restart", {"job": "processor:energy"})
    rig.inbox.receive(raw, "mqtt:hub")
    with rig.db.session() as session:  # taken, then the station died
        assert store.start(session, command_id(raw), now=rig.clock.now())
    assert rig.executor.recover() == 1
    assert rig.executor.run_pending() == 0
    assert rig.station.calls == []
    last = rig.results()[-1]
    assert last.state == "refused" and last.details == {"interrupted": True}


def test_job_commands(rig: Rig) -> None:
    ok = rig.command("stop", {"job": "processor:energy"})
    cut_off = rig.command("stop", {"job": "outbox"})
    unknown = rig.command("start", {"job": "processor:nothing"})
    for raw in (ok, cut_off, unknown):
        rig.inbox.receive(raw, "mqtt:hub")
    assert rig.executor.run_pending() == 3
    assert rig.station.calls == [("stop", "processor:energy")]
    by_id = {r.command_id: r for r in rig.results() if r.state != "accepted"}
    assert by_id[command_id(ok)].state == "done"
    assert by_id[command_id(ok)].details == {"job": "processor:energy", "state": "stopped"}
    assert "carries the command channel" in (by_id[command_id(cut_off)].reason or "")
    assert "no job named" in (by_id[command_id(unknown)].reason or "")


def test_pin_and_unpin(rig: Rig, config: StationConfig) -> None:
    with rig.db.session() as session:
        deployment = start_deployment(
            session,
            station_id="default",
            config_hash="h",
            config={},
            version="test",
            now=rig.clock.now(),
        )
        recording_id = add_recording(
            session, deployment_id=deployment.id, started_at=rig.clock.now()
        ).id
    rig.inbox.receive(rig.command("pin", {"recording_id": recording_id}), "mqtt:hub")
    rig.executor.run_pending()
    with rig.db.session() as session:
        assert session.get(Recording, recording_id).pinned  # type: ignore[union-attr]
    rig.inbox.receive(rig.command("unpin", {"recording_id": recording_id}), "mqtt:hub")
    rig.inbox.receive(rig.command("pin", {"recording_id": 999}), "mqtt:hub")
    rig.executor.run_pending()
    with rig.db.session() as session:
        assert not session.get(Recording, recording_id).pinned  # type: ignore[union-attr]
    finals = [r for r in rig.results() if r.state != "accepted"]
    assert [r.state for r in finals] == ["done", "done", "refused"]
    assert "no recording with id 999" in (finals[-1].reason or "")


def test_reprocess_of_an_unknown_processor_is_refused(rig: Rig) -> None:
    rig.inbox.receive(rig.command("reprocess", {"model": "nothing"}), "mqtt:hub")
    rig.executor.run_pending()
    assert "no processor named" in (rig.results()[-1].reason or "")


def test_reprocess_runs_the_shared_function(rig: Rig) -> None:
    """The default station's energy processor over an empty database: done, zero counts
    (the function and its child-process entry point are the CLI's; tests/processing)."""
    rig.inbox.receive(rig.command("reprocess", {"model": "energy", "since": "2d"}), "mqtt:hub")
    rig.executor.run_pending()
    last = rig.results()[-1]
    assert last.state == "done", last.reason
    assert last.details["stored"] == 0 and last.details["failed"] == 0


def test_a_failing_command_is_refused_and_the_executor_goes_on(rig: Rig) -> None:
    def broken(name: str) -> dict[str, Any]:
        raise RuntimeError("the supervisor is gone")

    rig.station.restart_job = broken  # type: ignore[method-assign]
    rig.inbox.receive(rig.command("restart", {"job": "outbox"}), "mqtt:hub")
    rig.inbox.receive(rig.command("ping", {}), "mqtt:hub")
    assert rig.executor.run_pending() == 2
    finals = [r for r in rig.results() if r.state != "accepted"]
    assert [r.state for r in finals] == ["refused", "done"]
    assert finals[0].reason == "failed: RuntimeError: the supervisor is gone"


def test_the_command_modules_keep_the_supervisor_light() -> None:
    """The supervisor imports the command modules (and the reprocess entry point it hands to
    a child); none of them may pull numpy, soundfile or a model in."""
    import subprocess
    import sys

    code = (
        "import sys, fieldstation.commands.job, fieldstation.commands.executor, "
        "fieldstation.processing.reprocess\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'soundfile', 'scipy'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"
