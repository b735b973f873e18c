"""``fieldstation outbox CONFIG status|list|retry|purge-dead``: look into the durable outbox."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from fieldstation.cli.common import EXIT_INVALID, console, err_console, home_of, load_or_exit
from fieldstation.config import StationConfig

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["register"]

outbox_app = typer.Typer(
    help="The durable outbox: depth per destination, dead letters, retries.",
    no_args_is_help=True,
)

STATES = ("pending", "sent", "dead", "dropped")
DEAD_REASONS_SHOWN = 5
"""Dead-letter reasons listed by ``status`` (the most frequent first)."""


@outbox_app.callback()
def _outbox(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="Station file (TOML).")],
) -> None:
    """The durable outbox of the station CONFIG."""
    ctx.obj = load_or_exit(config)


@contextmanager
def _session(config: StationConfig) -> Iterator[Session]:
    from fieldstation.store import open_database

    home = home_of(config)
    if not home.database.exists():
        err_console.print(f"[red]no station database at {home.database}[/]: has the station run?")
        raise typer.Exit(EXIT_INVALID)
    db = open_database(home.database)
    try:
        with db.session() as session:
            yield session
    finally:
        db.dispose()


def _age(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "-"
    seconds = int((now - when).total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{sign}{days}d{hours}h"
    if hours:
        return f"{sign}{hours}h{minutes}m"
    return f"{sign}{minutes}m{seconds}s" if minutes else f"{sign}{seconds}s"


@outbox_app.command("status")
def status_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Depth per destination and state, bytes against the cap, oldest pending age, and the
    most frequent dead-letter reasons with their counts, and outputs whose delivery is stuck."""
    from fieldstation.outbox.delivery import stuck_outputs
    from fieldstation.store import outbox as store

    config: StationConfig = ctx.obj
    now = datetime.now(UTC)
    with _session(config) as session:
        report = store.status(session)
        reasons = store.dead_reasons(session, limit=DEAD_REASONS_SHOWN)
        stuck = stuck_outputs(session)
    cap = config.outbox
    names = [o.name for o in config.outputs] + sorted(
        set(report.counts) - {o.name for o in config.outputs}
    )
    if as_json:
        print(
            json.dumps(
                {
                    "pending_bytes": report.pending_bytes,
                    "max_bytes": int(cap.max_bytes),
                    "when_full": cap.when_full,
                    "destinations": {
                        name: {
                            **report.counts.get(name, dict.fromkeys(STATES, 0)),
                            "oldest_pending": _iso(report.oldest_pending.get(name)),
                            "next_attempt": _iso(report.next_attempt.get(name)),
                        }
                        for name in names
                    },
                    "stuck": {name: _iso(since) for name, since in sorted(stuck.items())},
                    "dead_reasons": [
                        {"destination": r.destination, "reason": r.reason, "count": r.count}
                        for r in reasons
                    ],
                },
                indent=2,
            )
        )
        return
    table = Table(title=f"outbox of station {config.station.id!r}")
    table.add_column("destination")
    for state in STATES:
        table.add_column(state, justify="right")
    table.add_column("oldest pending", justify="right")
    table.add_column("next attempt in", justify="right")
    configured = {o.name: o for o in config.outputs}
    for name in names:
        counts = report.counts.get(name, dict.fromkeys(STATES, 0))
        label = name if name in configured else f"{name} [yellow](not configured)[/]"
        next_at = report.next_attempt.get(name)
        table.add_row(
            label,
            *(str(counts.get(s, 0)) for s in STATES),
            _age(report.oldest_pending.get(name), now),
            ("due" if next_at <= now else _age(now, next_at)) if next_at else "-",
        )
    console.print(table)
    share = 100 * report.pending_bytes / int(cap.max_bytes) if cap.max_bytes else 0
    console.print(
        f"pending: {report.pending_bytes:,} bytes of {int(cap.max_bytes):,} ({share:.1f}%), "
        f"when full: {cap.when_full}"
    )
    for name, since in sorted(stuck.items()):
        console.print(
            f"[red]output {name!r} is stuck[/] in one delivery, found {_age(since, now)} ago "
            "(event output_stuck; the station restarts once the outbox job is hung)"
        )
    if reasons:
        dead = Table(title=f"dead letters: top {len(reasons)} reason(s)")
        dead.add_column("destination")
        dead.add_column("count", justify="right")
        dead.add_column("reason", overflow="fold")
        for item in reasons:
            dead.add_row(item.destination, str(item.count), item.reason)
        console.print(dead)
        console.print("see them with `list --state dead`; re-queue with `retry`")


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


@outbox_app.command("list")
def list_command(
    ctx: typer.Context,
    state: Annotated[
        str | None, typer.Option(help="pending | sent | dead | dropped (default: all).")
    ] = None,
    destination: Annotated[str | None, typer.Option(help="Only this output.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many rows.")] = 50,
) -> None:
    """Messages per destination, newest first, with attempts and the last error or reason."""
    from fieldstation.store import outbox as store

    if state is not None and state not in STATES:
        err_console.print(f"[red]unknown state {state!r}[/]; use one of {', '.join(STATES)}")
        raise typer.Exit(EXIT_INVALID)
    config: StationConfig = ctx.obj
    now = datetime.now(UTC)
    table = Table(title="outbox messages (newest first)")
    for column in ("message id", "kind", "prio", "destination", "state", "tries", "age"):
        table.add_column(column)
    table.add_column("last error / reason", overflow="fold")
    with _session(config) as session:
        rows = store.list_deliveries(
            session,
            state=state,
            destination=destination,
            limit=limit,
        )
        for delivery, message in rows:
            table.add_row(
                message.message_id,
                message.kind,
                str(message.priority),
                delivery.destination,
                delivery.state,
                str(delivery.attempts),
                _age(message.created_at, now),
                delivery.last_error or "",
            )
    console.print(table)


@outbox_app.command("retry")
def retry_command(
    ctx: typer.Context,
    destination: Annotated[str | None, typer.Option(help="Only this output.")] = None,
    message_id: Annotated[
        list[str] | None, typer.Option("--id", help="Only this message id (repeatable).")
    ] = None,
) -> None:
    """Move dead letters back to pending; the running station delivers them again."""
    from fieldstation.store import outbox as store

    config: StationConfig = ctx.obj
    with _session(config) as session:
        count = store.retry_dead(
            session,
            now=datetime.now(UTC),
            destination=destination,
            message_ids=message_id,
        )
    console.print(f"{count} dead letter(s) moved back to pending")


@outbox_app.command("purge-dead")
def purge_dead_command(
    ctx: typer.Context,
    destination: Annotated[str | None, typer.Option(help="Only this output.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete dead letters for good (list them first with `list --state dead`)."""
    from fieldstation.store import outbox as store

    config: StationConfig = ctx.obj
    if not yes and not typer.confirm("Delete the dead letters for good?"):
        raise typer.Exit(1)
    with _session(config) as session:
        count = store.purge_dead(session, destination=destination)
    console.print(f"{count} dead letter(s) deleted")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(outbox_app, name="outbox")
