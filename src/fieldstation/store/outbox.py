"""Repository functions of the durable outbox: writing, capping, claiming and settling messages.

Any stage that reports something calls :func:`enqueue` inside the same session (transaction)
that stores the data it reports, so a message exists if and only if its data does. The byte
cap of the deployment in force is applied there too, in that transaction, under the write lock
(decision 0047), so no writer can skip it.

A message has one :class:`~fieldstation.store.models.Delivery` row per destination whose
``state`` is ``pending`` → ``sent``; or ``dead`` (rejected permanently or older than
``max_age``; kept with the reason, movable back with :func:`retry_dead`) or ``dropped`` (by the
byte cap's ``drop_oldest`` policy; never an event). Backoff lives in ``next_attempt_at`` so it
survives restarts. The delivery loop (``fieldstation.outbox.delivery``) is the only writer of
``sent``: each of its per-output workers reads its destination's work with :func:`next_batch`
and settles it with :func:`mark_sent`, :func:`mark_retry` and :func:`mark_dead` (conditional on
``pending``, so the workers and the loop's housekeeping never overwrite one another).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import delete, exists, func, insert, or_, select, text, update
from sqlalchemy.orm import Session

from fieldstation.store.models import Delivery, Deployment, Message, Recording

__all__ = [
    "DELIVERY_STATES",
    "DEPLOYED",
    "PRIORITIES",
    "SCHEMA_VERSION",
    "DeadReason",
    "DeliveryRow",
    "OutboxCap",
    "OutboxFullError",
    "OutboxStatus",
    "enforce_cap",
    "NewMessage",
    "enqueue",
    "enqueue_many",
    "expire",
    "list_deliveries",
    "mark_dead",
    "mark_retry",
    "mark_sent",
    "next_batch",
    "pending_bytes",
    "dead_reasons",
    "deployed_cap",
    "destinations",
    "purge_dead",
    "purge_settled",
    "retry_dead",
    "status",
]

log = logging.getLogger(__name__)

PRIORITIES: dict[str, int] = {
    "event": 0,
    "command_result": 0,
    "heartbeat": 1,
    "summary": 2,
    "detection": 3,
    "readings": 3,
    "recording": 4,
}
"""Default priority per message kind; lower is more urgent."""
SCHEMA_VERSION = 1
"""Version of the message envelope (``payload`` JSON) written by this release."""
DELIVERY_STATES = ("pending", "sent", "dead", "dropped")
"""Every state a delivery row can be in."""
NEVER_DROPPED = "event"
"""Messages of this kind are never dropped by the byte cap and never refused when full."""

_PENDING_BYTES_KEY = "fieldstation.outbox.pending_bytes"
_ADVISORY_KEY = 0x0F5B0C
"""PostgreSQL advisory lock key of capped outbox writers."""
_DROP_CHUNK = 500

DEPLOYED: Literal["deployed"] = "deployed"
"""``cap`` argument of :func:`enqueue`: apply the cap of the deployment in force."""


class OutboxFullError(RuntimeError):
    """The outbox is at its byte cap with ``when_full = "block"``: the message was refused.

    Nothing was written. Events are never refused. Free space by letting the station deliver
    (check the network and ``fieldstation outbox CONFIG status``), purging dead letters, or
    raising ``outbox.max_bytes``.
    """


@dataclass(frozen=True)
class OutboxCap:
    """The byte cap over pending messages and what happens when a new message exceeds it.

    ``max_bytes``: bytes of ``payload`` summed over messages with at least one pending
    delivery. ``when_full``: ``drop_oldest`` drops the oldest pending messages of the lowest
    priority (highest priority number; never an event; the new message too if it is the
    oldest of the lowest priority) until the pending bytes fit; ``block`` refuses new messages
    (except events) with :class:`OutboxFullError` when the writer passed the cap itself.
    """

    max_bytes: int
    when_full: Literal["drop_oldest", "block"] = "drop_oldest"

    @classmethod
    def of(cls, outbox_config: Any) -> OutboxCap:
        """The cap of a ``fieldstation.config.OutboxConfig`` (``max_bytes``, ``when_full``)."""
        return cls(int(outbox_config.max_bytes), outbox_config.when_full)


CapChoice = OutboxCap | Literal["deployed"] | None
"""What :func:`enqueue` applies: an explicit cap, :data:`DEPLOYED` or None (no cap)."""


def enqueue(
    session: Session,
    *,
    kind: str,
    body: dict[str, Any],
    destinations: Sequence[str],
    now: datetime,
    station_id: str,
    priority: int | None = None,
    message_id: str | None = None,
    recording_id: int | None = None,
    cap: CapChoice = DEPLOYED,
) -> Message | None:
    """Add a message for ``destinations`` to the outbox, in the caller's transaction.

    The payload is the JSON envelope ``{"schema": 1, "id", "kind", "station", "created_at",
    "body"}``; ``message_id`` (default: a new UUID4) is the stable id for de-duplication.
    Returns the message, or None when ``destinations`` is empty (nothing is written).

    The byte cap is applied here, in the same transaction, for every writer:

    - ``cap`` = :data:`DEPLOYED` (the default): the cap of the deployment in force
      (``outbox.max_bytes`` / ``when_full`` of the config stored by ``start_deployment``).
      Under ``drop_oldest`` the message is written and the oldest messages of the lowest
      priority (never events; possibly this one) are dropped until the pending bytes fit;
      under ``block`` it is written anyway (the writer's data is already committed: recording
      notices and detection reports are never refused). No deployment: no cap here.
    - ``cap`` = an :class:`OutboxCap` (heartbeats and summaries pass
      ``OutboxCap.of(config.outbox)``): the same under ``drop_oldest``; under ``block`` a
      non-event message that does not fit raises :class:`OutboxFullError` and nothing is
      written.
    - ``cap`` = None: no cap at write time (the delivery loop applies ``drop_oldest`` within
      its housekeeping interval).

    With a cap the transaction takes the database's write lock before it reads the pending
    bytes, so concurrent writers cannot both see room that only one of them has.
    """
    if not destinations:
        return None
    message_id = message_id or str(uuid.uuid4())
    envelope = {
        "schema": SCHEMA_VERSION,
        "id": message_id,
        "kind": kind,
        "station": station_id,
        "created_at": now.isoformat(),
        "body": body,
    }
    payload = json.dumps(envelope, separators=(",", ":"), default=str)
    size = len(payload.encode())
    chosen, refuse = _resolve_cap(session, cap)
    if chosen is not None:
        _check_room(session, chosen, refuse, [(kind, size)])
    prio = PRIORITIES.get(kind, 4) if priority is None else priority
    message = Message(
        message_id=message_id,
        kind=kind,
        priority=prio,
        schema_version=SCHEMA_VERSION,
        payload=payload,
        size=size,
        created_at=now,
        recording_id=recording_id,
    )
    message.deliveries = [
        Delivery(destination=d, priority=prio, state="pending", attempts=0, next_attempt_at=now)
        for d in destinations
    ]
    session.add(message)
    if chosen is not None:
        _written(session, chosen, size, flush=True)
    return message


@dataclass(frozen=True)
class NewMessage:
    """One message for :func:`enqueue_many` (fields as the keywords of :func:`enqueue`)."""

    kind: str
    body: dict[str, Any]
    destinations: Sequence[str]
    priority: int | None = None
    message_id: str | None = None
    recording_id: int | None = None


def enqueue_many(
    session: Session,
    messages: Sequence[NewMessage],
    *,
    now: datetime,
    station_id: str,
    cap: CapChoice = DEPLOYED,
) -> list[str]:
    """Add many messages in the caller's transaction with bulk INSERTs (no ORM objects).

    Same envelope, priorities and cap rules as :func:`enqueue` (under ``block`` with an
    explicit cap the first message that does not fit raises :class:`OutboxFullError` before
    anything is inserted; under ``drop_oldest`` the cap is applied once, after the batch is
    inserted). Messages with no destination are skipped. Returns the message ids written, in
    order.
    """
    rows: list[dict[str, Any]] = []
    targets: list[Sequence[str]] = []
    created = now.isoformat()
    for item in messages:
        if not item.destinations:
            continue
        message_id = item.message_id or str(uuid.uuid4())
        payload = json.dumps(
            {
                "schema": SCHEMA_VERSION,
                "id": message_id,
                "kind": item.kind,
                "station": station_id,
                "created_at": created,
                "body": item.body,
            },
            separators=(",", ":"),
            default=str,
        )
        size = len(payload.encode())
        rows.append(
            {
                "message_id": message_id,
                "kind": item.kind,
                "priority": PRIORITIES.get(item.kind, 4)
                if item.priority is None
                else item.priority,
                "schema_version": SCHEMA_VERSION,
                "payload": payload,
                "size": size,
                "created_at": now,
                "recording_id": item.recording_id,
            }
        )
        targets.append(item.destinations)
    if not rows:
        return []
    chosen, refuse = _resolve_cap(session, cap)
    if chosen is not None:
        _check_room(session, chosen, refuse, [(r["kind"], r["size"]) for r in rows])
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        _insert_sqlite(connection, rows, targets, now)
    else:
        # RETURNING without a guaranteed row order lets SQLAlchemy batch the INSERT; rows are
        # matched back by message_id.
        result = session.execute(insert(Message).returning(Message.message_id, Message.id), rows)
        pk_of: dict[str, int] = {message_id: pk for message_id, pk in result.all()}
        deliveries = [
            {
                "message_pk": pk_of[row["message_id"]],
                "destination": destination,
                "priority": row["priority"],
                "state": "pending",
                "attempts": 0,
                "next_attempt_at": now,
            }
            for row, destinations in zip(rows, targets, strict=True)
            for destination in destinations
        ]
        session.execute(insert(Delivery), deliveries)
    if chosen is not None:
        _written(session, chosen, sum(r["size"] for r in rows))
    return [row["message_id"] for row in rows]


def _insert_sqlite(
    connection: Any, rows: list[dict[str, Any]], targets: list[Sequence[str]], now: datetime
) -> None:
    """The bulk INSERTs of :func:`enqueue_many` on SQLite, through the DB-API cursor.

    About 2.5x faster than SQLAlchemy's bulk insert (no per-row parameter processing; the one
    timestamp is converted once by the column type itself). Primary keys are the consecutive
    rowids ending at ``last_insert_rowid()``: the transaction holds SQLite's single write lock
    from the first INSERT, so no other writer can interleave (https://www.sqlite.org/lang_createtable.html#rowid).
    """
    dialect = connection.dialect
    column = Message.__table__.c.created_at
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    stamp = process(now) if process is not None else now
    cursor = connection.connection.driver_connection.cursor()
    try:
        cursor.executemany(
            f"INSERT INTO {Message.__tablename__} (message_id, kind, priority, schema_version, "
            "payload, size, created_at, recording_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r["message_id"],
                    r["kind"],
                    r["priority"],
                    r["schema_version"],
                    r["payload"],
                    r["size"],
                    stamp,
                    r["recording_id"],
                )
                for r in rows
            ],
        )
        last = cursor.execute("SELECT last_insert_rowid()").fetchone()[0]
        first = last - len(rows) + 1
        cursor.executemany(
            f"INSERT INTO {Delivery.__tablename__} (message_pk, destination, priority, state, "
            "attempts, next_attempt_at) VALUES (?, ?, ?, 'pending', 0, ?)",
            [
                (first + index, destination, row["priority"], stamp)
                for index, (row, destinations) in enumerate(zip(rows, targets, strict=True))
                for destination in destinations
            ],
        )
    finally:
        cursor.close()


def _resolve_cap(session: Session, cap: CapChoice) -> tuple[OutboxCap | None, bool]:
    """(the cap to apply, whether ``block`` may refuse) for a ``cap`` argument."""
    if cap is None:
        return None, False
    if isinstance(cap, OutboxCap):
        return cap, True
    return deployed_cap(session), False


def deployed_cap(session: Session) -> OutboxCap | None:
    """The byte cap of the deployment in force (``outbox`` of its stored config), or None
    when there is no deployment or its config has no ``outbox.max_bytes``.

    Read once per transaction (cached in ``session.info``): the deployment changes only when
    the station restarts with another config.
    """
    key = "fieldstation.outbox.deployed_cap"
    transaction = session.get_transaction()
    cached = session.info.get(key)
    if cached is not None and cached[0] is transaction:
        return cast(OutboxCap | None, cached[1])
    config = session.scalars(
        select(Deployment.config)
        .where(Deployment.ended_at.is_(None))
        .order_by(Deployment.id.desc())
        .limit(1)
    ).first()
    outbox = (config or {}).get("outbox") if isinstance(config, dict) else None
    found: OutboxCap | None = None
    if isinstance(outbox, dict) and outbox.get("max_bytes") is not None:
        found = OutboxCap(int(outbox["max_bytes"]), outbox.get("when_full", "drop_oldest"))
    session.info[key] = (transaction, found)
    return found


def _take_write_lock(session: Session) -> None:
    """Hold the database's write lock from now to the end of the caller's transaction.

    SQLite: a no-op UPDATE makes the driver BEGIN and takes the RESERVED lock (waiting out the
    busy timeout), so no other process can commit between reading the pending bytes and
    writing. PostgreSQL: a transaction-scoped advisory lock serialises capped writers.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        session.execute(text(f"UPDATE {Message.__tablename__} SET id = id WHERE 0"))
    elif dialect == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_KEY})


def _locked_pending(session: Session) -> int:
    """Pending bytes, read under the write lock once per transaction, then kept up to date
    by this module's writes and drops (nobody else can write until the commit)."""
    transaction = session.get_transaction()
    cached = session.info.get(_PENDING_BYTES_KEY)
    if cached is not None and cached[0] is transaction:
        return int(cached[1])
    _take_write_lock(session)
    pending = pending_bytes(session)
    session.info[_PENDING_BYTES_KEY] = (transaction, pending)
    return pending


def _add_pending(session: Session, delta: int) -> int:
    transaction, pending = session.info[_PENDING_BYTES_KEY]
    session.info[_PENDING_BYTES_KEY] = (transaction, pending + delta)
    return int(pending + delta)


def _check_room(
    session: Session, cap: OutboxCap, refuse: bool, items: Sequence[tuple[str, int]]
) -> None:
    """Before writing ``items`` ((kind, size) each): take the lock and read the pending bytes;
    under ``block`` with ``refuse``, raise :class:`OutboxFullError` at the first non-event
    item that does not fit (nothing is written)."""
    pending = _locked_pending(session)
    if not refuse or cap.when_full != "block":
        return
    for kind, size in items:
        if kind != NEVER_DROPPED and pending + size > cap.max_bytes:
            raise OutboxFullError(
                f"outbox full: {pending} bytes pending + {size} new > cap {cap.max_bytes} "
                f"(outbox.when_full = 'block'); a {kind!r} message was refused. Let the "
                "station deliver (check the network, `fieldstation outbox CONFIG status`), "
                "purge dead letters, or raise outbox.max_bytes"
            )
        pending += size


def _written(session: Session, cap: OutboxCap, size: int, *, flush: bool = False) -> None:
    """After writing ``size`` pending bytes: under ``drop_oldest`` drop (lowest priority,
    oldest first, never events, the new messages included) until the pending bytes fit."""
    pending = _add_pending(session, size)
    if pending <= cap.max_bytes or cap.when_full != "drop_oldest":
        return
    if flush:
        session.flush()  # the ORM message must be a row before it can be chosen
    dropped, freed = _drop(session, pending - cap.max_bytes, cap)
    _add_pending(session, -freed)
    if dropped:
        log.warning(
            "outbox full (%d bytes pending, cap %d): dropped %d message(s), %d bytes, for every "
            "destination (outbox.when_full = 'drop_oldest'; lowest priority, oldest first)",
            pending,
            cap.max_bytes,
            dropped,
            freed,
        )


def destinations(session: Session) -> list[str]:
    """Every destination named in the outbox (a loose index scan: one lookup per name)."""
    table = Delivery.__tablename__
    rows = session.execute(
        text(
            f"WITH RECURSIVE d(x) AS (SELECT MIN(destination) FROM {table} UNION ALL "
            f"SELECT (SELECT MIN(destination) FROM {table} WHERE destination > x) "
            "FROM d WHERE x IS NOT NULL) SELECT x FROM d WHERE x IS NOT NULL"
        )
    )
    return [r[0] for r in rows]


def _pending_pks(session: Session) -> Any:
    """Subquery of message pks with a pending delivery, through the queue index."""
    return select(Delivery.message_pk).where(
        Delivery.destination.in_(destinations(session)), Delivery.state == "pending"
    )


def pending_bytes(session: Session) -> int:
    """Bytes of payload over messages with at least one pending delivery."""
    total = session.scalar(
        select(func.coalesce(func.sum(Message.size), 0)).where(
            Message.id.in_(_pending_pks(session))
        )
    )
    return int(total or 0)


def _drop(session: Session, need: int, cap: OutboxCap) -> tuple[int, int]:
    """Drop pending non-event messages, lowest priority then oldest first, until ``need``
    bytes are freed or none is left. Returns (messages dropped, bytes freed).

    Frees at least 1 % of the cap at a time, so a full outbox under a steady stream of new
    messages searches for victims once per 1 % of the cap, not once per message.
    """
    need = max(need, cap.max_bytes // 100)
    dropped = freed = 0
    while freed < need:
        rows = session.execute(
            select(Message.id, Message.size)
            .where(Message.kind != NEVER_DROPPED, Message.id.in_(_pending_pks(session)))
            .order_by(Message.priority.desc(), Message.id)
            .limit(_DROP_CHUNK)
        ).all()
        if not rows:
            break
        chosen: list[int] = []
        for pk, size in rows:
            chosen.append(pk)
            freed += size
            if freed >= need:
                break
        session.execute(
            update(Delivery)
            .where(Delivery.message_pk.in_(chosen), Delivery.state == "pending")
            .values(state="dropped", last_error="dropped by the byte cap (when_full=drop_oldest)")
            .execution_options(synchronize_session=False)
        )
        dropped += len(chosen)
    return dropped, freed


def enforce_cap(session: Session, cap: OutboxCap) -> int:
    """Bring pending bytes under ``cap`` by dropping (``drop_oldest`` only; never events).

    Returns the number of messages dropped (0 under ``block``, which acts at enqueue time).
    """
    if cap.when_full != "drop_oldest":
        return 0
    pending = _locked_pending(session)
    if pending <= cap.max_bytes:
        return 0
    dropped, freed = _drop(session, pending - cap.max_bytes, cap)
    _add_pending(session, -freed)
    return dropped


def expire(session: Session, *, now: datetime, max_age: float) -> int:
    """Dead-letter pending deliveries of messages older than ``max_age`` seconds; the age of
    a delivery moved back by :func:`retry_dead` counts from that retry.

    Returns the number of deliveries moved to ``dead`` (reason ``expired: ...``).
    """
    cutoff = now - timedelta(seconds=max_age)
    old = select(Message.id).where(Message.created_at < cutoff)
    result = session.execute(
        update(Delivery)
        .where(
            Delivery.state == "pending",
            Delivery.message_pk.in_(old),
            or_(Delivery.retried_at.is_(None), Delivery.retried_at < cutoff),
        )
        .values(state="dead", last_error=f"expired: older than max_age ({max_age:g} s)")
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class DeliveryRow:
    """One pending delivery with what a messenger needs to send it."""

    delivery_id: int
    message_id: str
    kind: str
    priority: int
    payload: str
    created_at: datetime
    attempts: int
    next_attempt_at: datetime


def next_batch(
    session: Session, destination: str, *, now: datetime, limit: int
) -> tuple[list[DeliveryRow], datetime | None]:
    """The next due deliveries of ``destination``, in delivery order (priority, then id).

    Order is kept within a priority: the batch is the head of the queue up to the first row
    whose ``next_attempt_at`` is in the future (a message in backoff holds back the ones
    behind it). Returns (rows, when the head of the queue is next due, or None when nothing is
    pending).
    """
    result = session.execute(
        select(
            Delivery.id,
            Message.message_id,
            Message.kind,
            Delivery.priority,
            Message.payload,
            Message.created_at,
            Delivery.attempts,
            Delivery.next_attempt_at,
        )
        .join(Message, Message.id == Delivery.message_pk)
        .where(Delivery.destination == destination, Delivery.state == "pending")
        .order_by(Delivery.priority, Delivery.id)
        .limit(limit)
    ).all()
    batch: list[DeliveryRow] = []
    for row in result:
        item = DeliveryRow(*row)
        if item.next_attempt_at > now:
            return batch, (None if batch else item.next_attempt_at)
        batch.append(item)
    return batch, (now if batch else None)


def _settle(session: Session, ids: Sequence[int], **values: Any) -> int:
    total = 0
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        result = session.execute(
            update(Delivery)
            .where(Delivery.id.in_(chunk), Delivery.state == "pending")
            .values(attempts=Delivery.attempts + 1, **values)
            .execution_options(synchronize_session=False)
        )
        total += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return total


def mark_sent(session: Session, ids: Sequence[int], *, now: datetime) -> int:
    """Mark pending deliveries ``ids`` sent at ``now``; returns rows changed."""
    return _settle(session, ids, state="sent", sent_at=now, last_error=None)


def mark_retry(
    session: Session, ids: Sequence[int], *, next_attempt_at: datetime, error: str
) -> int:
    """Count a failed attempt on pending ``ids`` and schedule the next; returns rows changed."""
    return _settle(session, ids, next_attempt_at=next_attempt_at, last_error=error[:2000])


def mark_dead(session: Session, ids: Sequence[int], *, reason: str) -> int:
    """Dead-letter pending ``ids`` with ``reason`` (kept, visible, retryable)."""
    return _settle(session, ids, state="dead", last_error=reason[:2000])


@dataclass
class OutboxStatus:
    """Counts of the outbox: ``counts[destination][state]`` deliveries, bytes pending, oldest
    pending message creation time (UTC) per destination, and the cap."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    pending_bytes: int = 0
    oldest_pending: dict[str, datetime] = field(default_factory=dict)
    next_attempt: dict[str, datetime] = field(default_factory=dict)

    def total(self, state: str) -> int:
        """Deliveries in ``state`` over all destinations."""
        return sum(c.get(state, 0) for c in self.counts.values())


def status(session: Session) -> OutboxStatus:
    """Depth per destination and state, pending bytes and oldest pending age."""
    out = OutboxStatus(pending_bytes=pending_bytes(session))
    for destination, state, count in session.execute(
        select(Delivery.destination, Delivery.state, func.count()).group_by(
            Delivery.destination, Delivery.state
        )
    ):
        out.counts.setdefault(destination, dict.fromkeys(DELIVERY_STATES, 0))[state] = count
    for destination, oldest, next_at in session.execute(
        select(
            Delivery.destination, func.min(Message.created_at), func.min(Delivery.next_attempt_at)
        )
        .join(Message, Message.id == Delivery.message_pk)
        .where(Delivery.state == "pending")
        .group_by(Delivery.destination)
    ):
        out.oldest_pending[destination] = _aware(oldest)
        out.next_attempt[destination] = _aware(next_at)
    return out


@dataclass(frozen=True)
class DeadReason:
    """Dead letters of one destination that share one reason (``last_error``)."""

    destination: str
    reason: str
    count: int


def dead_reasons(session: Session, *, limit: int = 5) -> list[DeadReason]:
    """The most frequent reasons of dead letters, per destination: most dead letters first
    (then destination, reason), at most ``limit`` rows."""
    count = func.count(Delivery.id)
    rows = session.execute(
        select(Delivery.destination, func.coalesce(Delivery.last_error, ""), count)
        .where(Delivery.state == "dead")
        .group_by(Delivery.destination, Delivery.last_error)
        .order_by(count.desc(), Delivery.destination, Delivery.last_error)
        .limit(limit)
    ).all()
    return [DeadReason(str(d), str(r) or "(no reason recorded)", int(n)) for d, r, n in rows]


def _aware(value: Any) -> datetime:
    """Aggregates bypass the column type: SQLite returns naive UTC (text); make it aware."""
    from datetime import UTC

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def list_deliveries(
    session: Session,
    *,
    state: str | None = None,
    destination: str | None = None,
    limit: int = 50,
) -> list[tuple[Delivery, Message]]:
    """Deliveries with their messages, newest first, filtered by ``state`` and ``destination``."""
    query = select(Delivery, Message).join(Message, Message.id == Delivery.message_pk)
    if state:
        query = query.where(Delivery.state == state)
    if destination:
        query = query.where(Delivery.destination == destination)
    rows = session.execute(query.order_by(Delivery.id.desc()).limit(limit)).all()
    return [(d, m) for d, m in rows]


def retry_dead(
    session: Session,
    *,
    now: datetime,
    destination: str | None = None,
    message_ids: Sequence[str] | None = None,
) -> int:
    """Move dead letters back to ``pending`` (attempts reset, due ``now``, ``max_age``
    counted from ``now``: an expired message gets a new ``max_age`` to be delivered); returns
    the count."""
    query = update(Delivery).where(Delivery.state == "dead")
    if destination:
        query = query.where(Delivery.destination == destination)
    if message_ids:
        query = query.where(
            Delivery.message_pk.in_(select(Message.id).where(Message.message_id.in_(message_ids)))
        )
    result = session.execute(
        query.values(
            state="pending", attempts=0, next_attempt_at=now, last_error=None, retried_at=now
        ).execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def purge_dead(session: Session, *, destination: str | None = None) -> int:
    """Delete dead deliveries (and messages left with no delivery); returns deliveries deleted."""
    query = delete(Delivery).where(Delivery.state == "dead")
    if destination:
        query = query.where(Delivery.destination == destination)
    result = session.execute(query.execution_options(synchronize_session=False))
    orphan = ~exists().where(Delivery.message_pk == Message.id)
    session.execute(delete(Message).where(orphan).execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def purge_settled(session: Session, *, before: datetime) -> int:
    """Delete messages created before ``before`` whose every delivery is ``sent`` or
    ``dropped``; returns messages deleted.

    Dead letters and pending messages are never purged, nor the newest message of each kind
    (``store.health.last_summary_end`` reads the newest summary), nor a dropped ``recording``
    notice whose recording file is still present: it is what makes retention keep that
    never-uploaded recording (``store.retention.UNSENT_STATES``).
    """
    open_states = select(Delivery.message_pk).where(Delivery.state.in_(("pending", "dead")))
    unsent_notice = (
        select(Delivery.message_pk)
        .join(Message, Message.id == Delivery.message_pk)
        .join(Recording, Recording.id == Message.recording_id)
        .where(
            Delivery.state == "dropped",
            Message.kind == "recording",
            Recording.file_state == "present",
        )
    )
    unsettled = open_states.union(unsent_notice)
    newest = select(func.max(Message.id)).group_by(Message.kind)
    doomed = select(Message.id).where(
        Message.created_at < before, Message.id.not_in(unsettled), Message.id.not_in(newest)
    )
    pks = list(session.scalars(doomed))
    for start in range(0, len(pks), 500):
        chunk = pks[start : start + 500]
        session.execute(
            delete(Delivery)
            .where(Delivery.message_pk.in_(chunk))
            .execution_options(synchronize_session=False)
        )
        session.execute(
            delete(Message)
            .where(Message.id.in_(chunk))
            .execution_options(synchronize_session=False)
        )
    return len(pks)
