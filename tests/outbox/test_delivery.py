"""DeliveryLoop with the file messenger and a scripted messenger, on a virtual clock."""

from __future__ import annotations

import json
import math
import random
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from fieldstation.backoff import backoff_delay
from fieldstation.clock import VirtualClock
from fieldstation.config import StationConfig
from fieldstation.home import StationHome
from fieldstation.outbox.delivery import DeliveryLoop, OutboxBusyError
from fieldstation.outbox.file import FileMessenger
from fieldstation.outbox.messenger import Messenger, OutgoingMessage, Result
from fieldstation.store import Database
from fieldstation.store import outbox as store


class Scripted:
    """A messenger answering from a script of outcomes, one list entry per send()."""

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.batches: list[list[str]] = []
        self.closed = False

    def send(self, batch: Sequence[OutgoingMessage]) -> list[Result]:
        self.batches.append([m.message_id for m in batch])
        outcome = self.script.pop(0) if self.script else "sent"
        if outcome == "raise":
            raise ConnectionError("boom")
        if outcome == "retry":
            return [Result.retry("server busy")] * len(batch)
        if outcome == "reject":
            return [Result.reject("HTTP 400: bad field")] * len(batch)
        return [Result.sent()] * len(batch)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def config(make_station: Callable[..., StationConfig]) -> StationConfig:
    return make_station(
        [{"name": "up", "kind": "file", "path": "up.jsonl"}],
        batch_size=10,
        backoff_initial="1s",
        backoff_max="60s",
        max_age="1h",
    )


def _fill(db: Database, clock: VirtualClock, n: int, kind: str = "detection") -> list[str]:
    with db.session() as session:
        return store.enqueue_many(
            session,
            [store.NewMessage(kind, {"n": i}, ["up"]) for i in range(n)],
            now=clock.now(),
            station_id="default",
        )


def _counts(db: Database) -> dict[str, int]:
    with db.session() as session:
        return store.status(session).counts.get("up", {})


class LowestJitter(random.Random):
    """Draws 0 as the jitter: every backoff is exactly half its base (equal jitter)."""

    def random(self) -> float:
        return 0.0


def test_file_output_writes_every_message_as_a_json_line(
    config: StationConfig, home: StationHome, db: Database, clock: VirtualClock
) -> None:
    ids = _fill(db, clock, 25)
    with DeliveryLoop(config, db, clock, home) as loop:
        assert loop.run_once() == 25
        assert loop.run_once() == 0
    lines = (home.root / "up.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ids
    assert _counts(db)["sent"] == 25


def test_file_messenger_rotates(tmp_path: Path) -> None:
    messenger = FileMessenger(tmp_path / "o.jsonl", max_bytes=100, backups=2)
    from datetime import UTC, datetime

    message = OutgoingMessage(1, "m", "event", 0, "x" * 60, datetime.now(UTC))
    for _ in range(5):
        assert messenger.send([message]) == [Result.sent()]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.jsonl", "o.jsonl.1", "o.jsonl.2"]
    assert (tmp_path / "o.jsonl").read_text() == "x" * 60 + "\n"


def test_retry_backoff_persists_across_restarts_then_delivers_in_order(
    config: StationConfig, home: StationHome, db: Database, clock: VirtualClock
) -> None:
    ids = _fill(db, clock, 15)
    first = Scripted(["retry", "retry"])
    loop = DeliveryLoop(config, db, clock, home, messengers={"up": first}, rng=LowestJitter())
    assert loop.run_once() == 0
    assert loop.run_once() == 0  # not due yet: no attempt
    assert len(first.batches) == 1
    with db.session() as session:
        head = store.list_deliveries(session, state="pending", limit=100)
    assert {d.last_error for d, _ in head if d.attempts} == {"server busy"}
    due = min(d.next_attempt_at for d, _ in head if d.attempts)
    # the shared rule (fieldstation.backoff): first failure waits backoff_initial, jittered
    assert (due - clock.now()).total_seconds() == backoff_delay(1, 1.0, 60.0, 0.0) == 0.5
    loop.close()
    assert first.closed

    # A new loop (a restart) keeps the stored backoff: nothing is attempted before it is due.
    second = Scripted(["retry"])
    loop = DeliveryLoop(config, db, clock, home, messengers={"up": second}, rng=LowestJitter())
    assert loop.run_once() == 0
    assert second.batches == []
    clock.advance(0.5)
    assert loop.run_once() == 0  # second failure: backoff grows (2 s base, 1 s jittered)
    clock.advance(0.5)
    assert loop.run_once() == 0
    assert len(second.batches) == 1
    clock.advance(0.5)
    assert loop.run_once() == 15
    assert second.batches[0] == ids[:10] == second.batches[1]
    assert second.batches[2] == ids[10:]
    assert _counts(db)["sent"] == 15
    loop.close()


def test_stored_backoff_is_the_shared_rule_exponential_and_bounded(
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
    clock: VirtualClock,
) -> None:
    """Each failed attempt stores ``fieldstation.backoff.backoff_delay`` of the attempt count:
    base ``min(backoff_max, backoff_initial * 2**(n-1))``, equal jitter (here the lowest draw,
    half the base)."""
    config = make_station(
        [{"name": "up", "kind": "file", "path": "up.jsonl"}],
        backoff_initial="1s",
        backoff_max="16s",
    )
    _fill(db, clock, 1)
    failing = Scripted(["retry"] * 8)
    delays: list[float] = []
    with DeliveryLoop(
        config, db, clock, home, messengers={"up": failing}, rng=LowestJitter()
    ) as loop:
        for _ in range(8):
            assert loop.run_once() == 0
            with db.session() as session:
                ((delivery, _),) = store.list_deliveries(session)
            delays.append((delivery.next_attempt_at - clock.now()).total_seconds())
            clock.sleep_until(delivery.next_attempt_at)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert delays == [backoff_delay(n, 1.0, 16.0, 0.0) for n in range(1, 9)]


def test_messenger_exception_is_a_retry_and_reject_dead_letters(
    config: StationConfig, home: StationHome, db: Database, clock: VirtualClock
) -> None:
    _fill(db, clock, 20)
    scripted = Scripted(["raise", "reject"])
    with DeliveryLoop(config, db, clock, home, messengers={"up": scripted}) as loop:
        assert loop.run_once() == 0
        clock.advance(1.0)
        assert loop.run_once() == 10
    counts = _counts(db)
    assert counts["dead"] == 10 and counts["sent"] == 10
    with db.session() as session:
        reasons = {d.last_error for d, _ in store.list_deliveries(session, state="dead")}
    assert reasons == {"HTTP 400: bad field"}


def test_no_attempt_while_network_is_down(
    config: StationConfig, home: StationHome, db: Database, clock: VirtualClock
) -> None:
    _fill(db, clock, 5)
    up = [False]
    scripted = Scripted([])
    with DeliveryLoop(
        config, db, clock, home, network_up=lambda output: up[0], messengers={"up": scripted}
    ) as loop:
        assert loop.run_once() == 0
        assert scripted.batches == []
        up[0] = True
        assert loop.run_once() == 5


def test_network_gate_holds_only_outputs_that_need_the_network(
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
    clock: VirtualClock,
) -> None:
    from fieldstation.testing.broker import free_port

    config = make_station(
        [
            {"name": "up", "kind": "file", "path": "up.jsonl"},
            {"name": "api", "kind": "http", "url": f"http://127.0.0.1:{free_port()}/"},
        ]
    )
    with db.session() as session:
        ids = store.enqueue_many(
            session,
            [store.NewMessage("detection", {"n": i}, ["up", "api"]) for i in range(25)],
            now=clock.now(),
            station_id="default",
        )
    with DeliveryLoop(config, db, clock, home, network_up=lambda output: False) as loop:
        assert loop.run_once() == 25  # every message reaches the local file while down
    lines = (home.root / "up.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ids
    with db.session() as session:
        api = store.list_deliveries(session, destination="api", limit=100)
    assert len(api) == 25 and {(d.state, d.attempts) for d, _ in api} == {("pending", 0)}
    assert _counts(db)["sent"] == 25


def test_run_reports_progress_and_stops(
    config: StationConfig, home: StationHome, db: Database, clock: VirtualClock
) -> None:
    _fill(db, clock, 3)
    stop = threading.Event()
    seen: list[tuple[str, dict[str, object]]] = []

    def progress(what: str, details: dict[str, object]) -> None:
        seen.append((what, details))
        if what == "idle":
            stop.set()

    # stuck_after: an autojump VirtualClock moves on at every wait of the owner while the worker
    # does real work, so a busy machine could make a batch look stuck (test_stuck.py tests that)
    loop = DeliveryLoop(config, db, clock, home, progress=progress, stuck_after=math.inf)
    loop.run(stop)
    assert seen[0] == ("delivered", {"destination": "up", "sent": 3, "retry": 0, "dead": 0})
    assert seen[-1][0] == "idle"
    assert _counts(db)["sent"] == 3


def test_max_age_dead_letters_and_a_second_loop_is_refused(
    config: StationConfig, home: StationHome, db: Database, clock: VirtualClock
) -> None:
    _fill(db, clock, 4)
    clock.advance(3601)
    messenger: Messenger = Scripted([])
    with DeliveryLoop(config, db, clock, home, messengers={"up": messenger}) as loop:
        assert loop.run_once() == 0
        with pytest.raises(OutboxBusyError, match="one per station"):
            DeliveryLoop(config, db, clock, home).run_once()
    assert _counts(db)["dead"] == 4


def test_loop_applies_the_cap_to_messages_written_without_it(
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
    clock: VirtualClock,
) -> None:
    config = make_station([{"name": "up", "kind": "file", "path": "up.jsonl"}], max_bytes="2KB")
    with db.session() as session:
        events = store.enqueue_many(
            session,
            [store.NewMessage("event", {"pad": "e" * 100}, ["up"]) for _ in range(5)],
            now=clock.now(),
            station_id="default",
        )
        store.enqueue_many(
            session,
            [store.NewMessage("detection", {"pad": "d" * 100}, ["up"]) for _ in range(20)],
            now=clock.now(),
            station_id="default",
        )
    held = Scripted([])  # a network output (no needs_network: True), held back while down
    with DeliveryLoop(
        config, db, clock, home, network_up=lambda output: False, messengers={"up": held}
    ) as loop:
        assert loop.run_once() == 0
    assert held.batches == []
    with db.session() as session:
        report = store.status(session)
        dropped = store.list_deliveries(session, state="dropped", limit=100)
    assert report.pending_bytes <= 2000
    assert report.counts["up"]["dropped"] == len(dropped) > 0
    assert {m.kind for _, m in dropped} == {"detection"}
    assert not {m.message_id for _, m in dropped} & set(events)


def test_an_output_that_cannot_be_built_says_why_on_its_messages(
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
    clock: VirtualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FS_NO_SUCH_PASSWORD", raising=False)
    output = {
        "name": "up",
        "kind": "mqtt",
        "host": "127.0.0.1",
        "username": "station",
        "password": "env:FS_NO_SUCH_PASSWORD",
    }
    config = make_station([output], backoff_initial="1s")
    _fill(db, clock, 2)
    with DeliveryLoop(config, db, clock, home) as loop:
        assert loop.run_once() == 0
        assert loop.run_once() == 0  # still in backoff: the factory is not called again
    with db.session() as session:
        rows = store.list_deliveries(session)
    assert {d.state for d, _ in rows} == {"pending"}
    assert {d.attempts for d, _ in rows} == {1}
    (error,) = {d.last_error for d, _ in rows}
    assert error is not None and error.startswith("output unavailable: SecretError")
    assert "FS_NO_SUCH_PASSWORD is not set" in error


def test_a_failing_worker_stops_its_siblings_and_the_owner_raises(
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
    clock: VirtualClock,
) -> None:
    """Structured concurrency: every worker is a thread of the owner's ``run``; when one fails
    unexpectedly the others are stopped and awaited, the messengers closed, the lock released,
    and the error reaches the owner's caller (the supervisor restarts the job)."""
    config = make_station(
        [
            {"name": "up", "kind": "file", "path": "up.jsonl"},
            {"name": "other", "kind": "file", "path": "other.jsonl"},
        ]
    )
    up, other = Scripted([]), Scripted([])

    def network_up(output: object) -> bool:
        raise RuntimeError("probe exploded")

    # Scripted messengers need the network (no needs_network): both workers ask the gate
    loop = DeliveryLoop(
        config, db, clock, home, network_up=network_up, messengers={"up": up, "other": other}
    )
    with pytest.raises(RuntimeError, match="probe exploded"):
        loop.run(threading.Event())
    assert not [t for t in threading.enumerate() if t.name.startswith("outbox-")]
    assert up.closed and other.closed
    with DeliveryLoop(config, db, clock, home) as again:  # the lock was released
        # first the events the failure recorded: the worker failures, and on a busy machine
        # "stuck" ones (the owner's waits advanced the virtual clock while the workers were
        # still starting), then nothing is left
        again.run_once()
        assert again.run_once() == 0
