"""Outbox repository: envelope, byte cap (drop_oldest / block), expiry, order, dead letters."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from fieldstation.clock import VirtualClock
from fieldstation.store import Database
from fieldstation.store import outbox as store
from fieldstation.store.models import Delivery


def _enqueue(db: Database, clock: VirtualClock, kind: str, n: int = 1, **kw: object) -> list[str]:
    ids = []
    with db.session() as session:
        for _ in range(n):
            message = store.enqueue(
                session,
                kind=kind,
                body={"pad": "x" * 200},
                destinations=["a"],
                now=clock.now(),
                station_id="st",
                **kw,  # type: ignore[arg-type]
            )
            assert message is not None
            ids.append(message.message_id)
    return ids


def _states(db: Database) -> dict[str, str]:
    with db.session() as session:
        return {
            d.message.message_id: d.state for d in session.query(Delivery).order_by(Delivery.id)
        }


def test_enqueue_writes_envelope_and_one_delivery_per_destination(
    db: Database, clock: VirtualClock
) -> None:
    with db.session() as session:
        message = store.enqueue(
            session,
            kind="detection",
            body={"label": "bat"},
            destinations=["a", "b"],
            now=clock.now(),
            station_id="st",
        )
        assert message is not None
        envelope = json.loads(message.payload)
        assert envelope["schema"] == store.SCHEMA_VERSION
        assert envelope["id"] == message.message_id
        assert envelope["station"] == "st"
        assert envelope["body"] == {"label": "bat"}
        assert message.size == len(message.payload.encode())
        assert sorted(d.destination for d in message.deliveries) == ["a", "b"]
    with db.session() as session:
        assert store.status(session).counts == {
            "a": {"pending": 1, "sent": 0, "dead": 0, "dropped": 0},
            "b": {"pending": 1, "sent": 0, "dead": 0, "dropped": 0},
        }
        assert (
            store.enqueue(
                session, kind="event", body={}, destinations=[], now=clock.now(), station_id="st"
            )
            is None
        )


def test_enqueue_many_matches_enqueue(db: Database, clock: VirtualClock) -> None:
    items = [store.NewMessage("heartbeat", {"n": i}, ["a", "b"]) for i in range(3)]
    items.append(store.NewMessage("event", {"n": 3}, []))
    with db.session() as session:
        ids = store.enqueue_many(session, items, now=clock.now(), station_id="st")
    assert len(ids) == 3
    with db.session() as session:
        rows, _ = store.next_batch(session, "b", now=clock.now(), limit=10)
    assert [r.message_id for r in rows] == ids
    assert [json.loads(r.payload)["body"]["n"] for r in rows] == [0, 1, 2]
    assert {r.priority for r in rows} == {store.PRIORITIES["heartbeat"]}
    assert {r.created_at for r in rows} == {r.next_attempt_at for r in rows} == {clock.now()}
    with db.session() as session:
        rows_a, _ = store.next_batch(session, "a", now=clock.now(), limit=10)
        later = store.enqueue_many(
            session, [store.NewMessage("event", {"n": 9}, ["a"])], now=clock.now(), station_id="st"
        )
        orm = store.enqueue(
            session, kind="event", body={}, destinations=["a"], now=clock.now(), station_id="st"
        )
        assert orm is not None
        session.flush()
        rows_all, _ = store.next_batch(session, "a", now=clock.now(), limit=10)
    assert [r.message_id for r in rows_a] == ids
    assert [r.message_id for r in rows_all] == later + [orm.message_id] + ids


def test_drop_oldest_drops_lowest_priority_first_and_never_events(
    db: Database, clock: VirtualClock
) -> None:
    events = _enqueue(db, clock, "event", 3)
    heartbeats = _enqueue(db, clock, "heartbeat", 3)
    recordings = _enqueue(db, clock, "recording", 3)
    with db.session() as session:
        size = store.pending_bytes(session) // 9
    cap = store.OutboxCap(max_bytes=size * 9 + size // 2, when_full="drop_oldest")
    # Room for 9.5 messages: 3 new detections force 3 drops: the 3 recordings (lowest priority),
    # oldest first; then 3 more force the oldest heartbeats, never an event.
    new = _enqueue(db, clock, "detection", 3, cap=cap)
    states = _states(db)
    assert [states[i] for i in recordings] == ["dropped"] * 3
    assert all(states[i] == "pending" for i in events + heartbeats + new)
    more = _enqueue(db, clock, "detection", 5, cap=cap)
    states = _states(db)
    assert all(states[i] == "pending" for i in events)
    # detections (3) rank below heartbeats (1): the 3 older detections go, then 2 new ones.
    assert [states[i] for i in new] == ["dropped"] * 3
    assert [states[i] for i in more] == ["dropped", "dropped", "pending", "pending", "pending"]
    assert all(states[i] == "pending" for i in heartbeats)
    with db.session() as session:
        report = store.status(session)
        assert report.counts["a"]["dropped"] == 8
        assert report.pending_bytes <= cap.max_bytes
    # Only events left to drop: events are still accepted, over the cap, and never dropped.
    _enqueue(db, clock, "event", 10, cap=store.OutboxCap(max_bytes=1))
    assert all(_states(db)[i] == "pending" for i in events)


def test_block_refuses_non_events_with_a_clear_error(db: Database, clock: VirtualClock) -> None:
    _enqueue(db, clock, "detection", 2)
    cap = store.OutboxCap(max_bytes=100, when_full="block")
    with pytest.raises(store.OutboxFullError, match="outbox.max_bytes"):
        _enqueue(db, clock, "heartbeat", 1, cap=cap)
    with db.session() as session:
        assert store.status(session).total("pending") == 2  # nothing written, nothing dropped
    _enqueue(db, clock, "event", 1, cap=cap)
    with db.session() as session:
        assert store.status(session).total("pending") == 3


def test_enforce_cap_and_expire(db: Database, clock: VirtualClock) -> None:
    old = _enqueue(db, clock, "detection", 2)
    clock.advance(3600)
    fresh = _enqueue(db, clock, "heartbeat", 2)
    with db.session() as session:
        assert store.expire(session, now=clock.now(), max_age=1800) == 2
        assert store.enforce_cap(session, store.OutboxCap(10**9)) == 0
        size = store.pending_bytes(session)
        assert store.enforce_cap(session, store.OutboxCap(size - 1)) == 1
    states = _states(db)
    assert [states[i] for i in old] == ["dead", "dead"]
    assert [states[i] for i in fresh] == ["dropped", "pending"]
    with db.session() as session:
        dead = store.list_deliveries(session, state="dead")
        assert {d.last_error for d, _ in dead} == {"expired: older than max_age (1800 s)"}


def test_a_retried_expired_message_gets_a_new_max_age(db: Database, clock: VirtualClock) -> None:
    """``outbox retry`` after the network came back: the expired messages are delivered, not
    dead-lettered again by the next pass before a single attempt."""
    (old,) = _enqueue(db, clock, "detection")
    clock.advance(3600)
    with db.session() as session:
        assert store.expire(session, now=clock.now(), max_age=1800) == 1
        assert store.retry_dead(session, now=clock.now()) == 1
        assert store.expire(session, now=clock.now(), max_age=1800) == 0
        rows, _ = store.next_batch(session, "a", now=clock.now(), limit=10)
    assert [r.message_id for r in rows] == [old]
    clock.advance(1801)  # undelivered for max_age after the retry: dead again
    with db.session() as session:
        assert store.expire(session, now=clock.now(), max_age=1800) == 1
    assert _states(db)[old] == "dead"


def test_drops_by_the_byte_cap_are_logged(
    db: Database, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    _enqueue(db, clock, "detection", 3)
    with db.session() as session:
        cap = store.OutboxCap(store.pending_bytes(session) + 100)
    with caplog.at_level("WARNING", logger="fieldstation.store.outbox"):
        _enqueue(db, clock, "detection", 1, cap=cap)
    assert "outbox full" in caplog.text and "dropped 1 message(s)" in caplog.text


def test_next_batch_orders_by_priority_then_id_and_holds_back_behind_backoff(
    db: Database, clock: VirtualClock
) -> None:
    detections = _enqueue(db, clock, "detection", 3)
    events = _enqueue(db, clock, "event", 2)
    with db.session() as session:
        rows, due = store.next_batch(session, "a", now=clock.now(), limit=10)
    assert [r.message_id for r in rows] == events + detections
    assert due == clock.now()
    # The first detection goes into backoff: the later detections wait behind it (order),
    # the events still go.
    later = clock.now() + timedelta(seconds=60)
    with db.session() as session:
        store.mark_sent(session, [rows[0].delivery_id, rows[1].delivery_id], now=clock.now())
        store.mark_retry(session, [rows[2].delivery_id], next_attempt_at=later, error="boom")
        rows2, due2 = store.next_batch(session, "a", now=clock.now(), limit=10)
    assert rows2 == []
    assert due2 == later
    clock.advance(60)
    with db.session() as session:
        rows3, _ = store.next_batch(session, "a", now=clock.now(), limit=10)
    assert [r.message_id for r in rows3] == detections
    assert rows3[0].attempts == 1


def test_dead_letters_are_kept_retried_and_purged(db: Database, clock: VirtualClock) -> None:
    ids = _enqueue(db, clock, "detection", 3)
    with db.session() as session:
        rows, _ = store.next_batch(session, "a", now=clock.now(), limit=10)
        store.mark_dead(session, [r.delivery_id for r in rows], reason="HTTP 400: bad")
    with db.session() as session:
        assert store.status(session).counts["a"]["dead"] == 3
        assert store.retry_dead(session, now=clock.now(), message_ids=[ids[0]]) == 1
    assert _states(db)[ids[0]] == "pending"
    with db.session() as session:
        assert store.purge_dead(session) == 2
        assert store.status(session).counts["a"] == {
            "pending": 1,
            "sent": 0,
            "dead": 0,
            "dropped": 0,
        }


def test_purge_settled_keeps_pending_dead_and_the_newest_of_each_kind(
    db: Database, clock: VirtualClock
) -> None:
    summaries = _enqueue(db, clock, "summary", 3)
    detections = _enqueue(db, clock, "detection", 4)
    with db.session() as session:
        rows, _ = store.next_batch(session, "a", now=clock.now(), limit=10)
        by_id = {r.message_id: r.delivery_id for r in rows}
        store.mark_sent(session, [by_id[i] for i in summaries + detections[:2]], now=clock.now())
        store.mark_dead(session, [by_id[detections[2]]], reason="HTTP 400")
    clock.advance(86400)
    _enqueue(db, clock, "detection", 1)  # newer than the cutoff
    with db.session() as session:
        assert store.purge_settled(session, before=clock.now() - timedelta(hours=1)) == 4
    states = _states(db)
    # sent and old: gone, except the newest summary; dead and pending stay
    assert set(states) & set(summaries) == {summaries[-1]}
    assert detections[0] not in states and detections[1] not in states
    assert states[detections[2]] == "dead" and states[detections[3]] == "pending"


def _deploy(db: Database, clock: VirtualClock, **outbox: object) -> int:
    """A deployment in force whose stored config has this ``[outbox]`` (as the runtime
    stores ``config.model_dump(mode="json")``)."""
    from fieldstation.store.deployments import start_deployment

    with db.session() as session:
        return start_deployment(
            session,
            station_id="st",
            config_hash="c" * 64,
            config={"outbox": outbox},
            version="test",
            now=clock.now(),
        ).id


def test_every_writer_gets_the_deployed_cap_at_write_time(
    db: Database, clock: VirtualClock
) -> None:
    """Writers that pass no cap (recording notices, detection reports) are capped in their
    own transaction: pending stays under max_bytes without any delivery loop running."""
    from types import SimpleNamespace

    from fieldstation.store.processing import RunInfo, complete
    from fieldstation.testing.rows import add_recording

    deployment = _deploy(db, clock, max_bytes=3000, when_full="drop_oldest")
    events = _enqueue(db, clock, "event", 2)  # events are never dropped
    notices = []
    dropped_before: dict[str, int] = {"detection": 0, "recording": 0}
    for i in range(12):
        with db.session() as session:  # one transaction per writer call, as in the station
            row = add_recording(session, deployment_id=deployment, started_at=clock.now())
            store.enqueue(  # exactly what recording/commit.py does: no cap argument
                session,
                kind="recording",
                body={"recording_id": row.id, "pad": "r" * 150},
                destinations=["a"],
                now=clock.now(),
                station_id="st",
                recording_id=row.id,
            )
            notices.append(row.id)
            item = SimpleNamespace(
                label="bat", score=0.9, start=0.0, end=1.0, low_hz=None, high_hz=None, extra={}
            )
            complete(  # the detection writer of store/processing.py, no cap argument either
                session,
                recording_id=row.id,
                token=None,
                run=RunInfo("energy", "energy", "1", clock.now(), 0.1),
                detections=[item],
                required=["energy"],
                destinations=["a"],
                station_id="st",
                now=clock.now(),
            )
        with db.session() as session:
            assert store.pending_bytes(session) <= 3000, f"after writer call {i}"
            now_dropped = _dropped_kinds(session)
        # lowest priority first: a detection goes only when no recording notice is pending
        if now_dropped["detection"] > dropped_before["detection"]:
            assert _pending_kinds(db)["recording"] == 0
        dropped_before = now_dropped
        clock.advance(10)
    states = _states(db)
    assert all(states[i] == "pending" for i in events)
    with db.session() as session:
        report = store.status(session)
        dropped = store.list_deliveries(session, state="dropped", limit=100)
        pending = store.list_deliveries(session, state="pending", limit=100)
    assert report.counts["a"]["dropped"] == len(dropped) > 0
    assert {m.kind for _, m in dropped} == {"recording", "detection"}
    # oldest first: every dropped notice is older than every notice still pending
    kept = [m.recording_id or 0 for _, m in pending if m.kind == "recording"]
    gone = [m.recording_id or 0 for _, m in dropped if m.kind == "recording"]
    assert not kept or max(gone) < min(kept)


def _dropped_kinds(session: Session) -> dict[str, int]:
    rows = store.list_deliveries(session, state="dropped", limit=1000)
    return {k: sum(1 for _, m in rows if m.kind == k) for k in ("detection", "recording")}


def _pending_kinds(db: Database) -> dict[str, int]:
    with db.session() as session:
        rows = store.list_deliveries(session, state="pending", limit=1000)
    return {k: sum(1 for _, m in rows if m.kind == k) for k in ("detection", "recording")}


def test_deployed_block_cap_never_refuses_a_writer(db: Database, clock: VirtualClock) -> None:
    _deploy(db, clock, max_bytes=500, when_full="block")
    ids = _enqueue(db, clock, "recording", 5)  # over the cap: written all the same
    assert [_states(db)[i] for i in ids] == ["pending"] * 5
    with pytest.raises(store.OutboxFullError):  # a producer that passes the cap is refused
        _enqueue(db, clock, "heartbeat", 1, cap=store.OutboxCap(500, "block"))


def test_concurrent_capped_writers_cannot_both_take_the_last_room(
    db: Database, clock: VirtualClock
) -> None:
    """Writer A reads the pending bytes and has not committed; writer B (another connection)
    must not read the same room meanwhile: the cap takes the write lock before it reads."""
    import threading

    with db.session() as session:
        probe = store.enqueue(
            session, kind="detection", body={"pad": "x" * 200}, destinations=["a"],
            now=clock.now(), station_id="st", cap=None,
        )  # fmt: skip
        assert probe is not None
        size = probe.size
        session.rollback()
    cap = store.OutboxCap(max_bytes=size + size // 2, when_full="drop_oldest")  # room for one
    a_wrote = threading.Event()
    b_done = threading.Event()
    errors: list[BaseException] = []

    def writer_b() -> None:
        try:
            a_wrote.wait(5)
            _enqueue(db, clock, "detection", 1, cap=cap)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            b_done.set()

    thread = threading.Thread(target=writer_b)
    thread.start()
    with db.session() as session:
        store.enqueue(
            session, kind="detection", body={"pad": "x" * 200}, destinations=["a"],
            now=clock.now(), station_id="st", cap=cap,
        )  # fmt: skip
        a_wrote.set()
        b_done.wait(1.0)  # with the lock, B waits for this commit instead of finishing
    thread.join(30)
    assert not errors
    with db.session() as session:
        assert store.pending_bytes(session) <= cap.max_bytes
        assert store.status(session).counts["a"] == {
            "pending": 1, "sent": 0, "dead": 0, "dropped": 1,
        }  # fmt: skip
