"""The hub applies a batch's command answers in the order of the commands' ids (issue 17's
review: two hub processes updating the same rows in batch order could deadlock on PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import event, select

from fieldstation.hub.commands import apply_results
from fieldstation.hub.db import open_hub_database
from fieldstation.hub.models import HubCommand
from fieldstation.messages.bodies import CommandResultBody

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)


def _command(command_id: str) -> HubCommand:
    return HubCommand(
        id=command_id,
        station="s1",
        command="ping",
        args={},
        wire="{}",
        state="delivered",
        created_by="test",
        created_at=NOW,
        expires_at=NOW + timedelta(hours=1),
        deliveries=1,
        updated_at=NOW,
    )


def _answer(command_id: str, state: str) -> tuple[str, CommandResultBody]:
    body = CommandResultBody(command_id=command_id, command="ping", state=state, at=NOW)
    return "s1", body


def test_answers_are_applied_in_the_order_of_the_command_ids(tmp_path: Path) -> None:
    db = open_hub_database(f"sqlite:///{tmp_path / 'hub.db'}")
    with db.session() as session:
        session.add_all(_command(c) for c in ("c1", "c2", "c3"))
    updated: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("UPDATE"):
            updated.append(next(p for p in parameters if isinstance(p, str) and p[:1] == "c"))

    event.listen(db.engine, "before_cursor_execute", seen)
    batch = [_answer("c3", "done"), _answer("c1", "accepted"), _answer("c2", "done")]
    batch.append(_answer("c1", "done"))  # a later answer to c1 in the same batch
    with db.session() as session:
        assert apply_results(session, batch, NOW) == 4
    assert updated == ["c1", "c1", "c2", "c3"]
    with db.session() as session:
        states = dict(session.execute(select(HubCommand.id, HubCommand.state)).all())
    assert states == {"c1": "done", "c2": "done", "c3": "done"}
    db.dispose()
