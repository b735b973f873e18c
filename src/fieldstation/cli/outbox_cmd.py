"""``fieldstation outbox status|list|retry|purge-dead [-c FILE]``: look into the durable outbox.

``-c/--config`` may be given to the group (``outbox -c FILE status``) or to the subcommand
(``outbox status -c FILE``); the old ``outbox FILE status`` still works, with a deprecation line.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from fieldstation.cli.common import (
    EXIT_INVALID,
    ConfigOpt,
    LegacyConfigGroup,
    console,
    err_console,
    home_of,
    load_or_exit,
    plural,
)
from fieldstation.config import StationConfig

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["register"]

outbox_app = typer.Typer(
    help="The durable outbox: depth per destination, dead letters, retries.",
    no_args_is_help=True,
    cls=LegacyConfigGroup,
)

STATES = ("pending", "sent", "dead", "dropped")
DEAD_REASONS_SHOWN = 5
"""Dead-letter reasons listed by ``status`` (the most frequent first)."""


@outbox_app.callback()
def _outbox(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """The durable outbox: depth per destination, dead letters, retries."""
    ctx.obj = config


def _config(ctx: typer.Context, config: Path | None) -> StationConfig:
    """The station of the subcommand's ``-c``, else the group's, else the default."""
    return load_or_exit(config if config is not None else ctx.obj)


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
    config_file: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Depth per destination and state, bytes against the cap, oldest pending age, and the
    most frequent dead-letter reasons with their counts, and outputs whose delivery is stuck."""
    from fieldstation.config.units import format_bytes
    from fieldstation.outbox.delivery import stuck_outputs
    from fieldstation.store import outbox as store

    config = _config(ctx, config_file)
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
        from fieldstation.cli.json_output import DeadReason, OutboxDestination, OutboxStatus, dump

        configured_names = {o.name for o in config.outputs}
        dump(
            OutboxStatus(
                station=config.station.id,
                pending_bytes=report.pending_bytes,
                max_bytes=int(cap.max_bytes),
                when_full=cap.when_full,
                destinations={
                    name: OutboxDestination(
                        **{s: report.counts.get(name, {}).get(s, 0) for s in STATES},
                        oldest_pending=report.oldest_pending.get(name),
                        next_attempt=report.next_attempt.get(name),
                        configured=name in configured_names,
                    )
                    for name in names
                },
                stuck=dict(sorted(stuck.items())),
                dead_reasons=[
                    DeadReason(destination=r.destination, reason=r.reason, count=r.count)
                    for r in reasons
                ],
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
        f"pending: {format_bytes(report.pending_bytes)} of {format_bytes(int(cap.max_bytes))} "
        f"({share:.1f}%), when full: {cap.when_full}",
        highlight=False,
    )
    for name, since in sorted(stuck.items()):
        console.print(
            f"[red]output {name!r} is stuck[/] in one delivery, found {_age(since, now)} ago "
            "(event output_stuck; the station restarts once the outbox job is hung)"
        )
    if reasons:
        dead = Table(title=f"dead letters: top {plural(len(reasons), 'reason')}")
        dead.add_column("destination")
        dead.add_column("count", justify="right")
        dead.add_column("reason", overflow="fold")
        for item in reasons:
            dead.add_row(item.destination, str(item.count), item.reason)
        console.print(dead)
        console.print("see them with 'outbox list --state dead'; re-queue with 'outbox retry'")


@outbox_app.command("list")
def list_command(
    ctx: typer.Context,
    config_file: ConfigOpt = None,
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
    config = _config(ctx, config_file)
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
    config_file: ConfigOpt = None,
    destination: Annotated[str | None, typer.Option(help="Only this output.")] = None,
    message_id: Annotated[
        list[str] | None, typer.Option("--id", help="Only this message id (repeatable).")
    ] = None,
) -> None:
    """Move dead letters back to pending; the running station delivers them again."""
    from fieldstation.store import outbox as store

    config = _config(ctx, config_file)
    with _session(config) as session:
        count = store.retry_dead(
            session,
            now=datetime.now(UTC),
            destination=destination,
            message_ids=message_id,
        )
    console.print(f"{plural(count, 'dead letter')} moved back to pending")


@outbox_app.command("purge-dead")
def purge_dead_command(
    ctx: typer.Context,
    config_file: ConfigOpt = None,
    destination: Annotated[str | None, typer.Option(help="Only this output.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete dead letters for good (list them first with 'outbox list --state dead')."""
    from fieldstation.store import outbox as store

    config = _config(ctx, config_file)
    if not yes and not typer.confirm("Delete the dead letters for good?"):
        raise typer.Exit(1)
    with _session(config) as session:
        count = store.purge_dead(session, destination=destination)
    console.print(f"{plural(count, 'dead letter')} deleted")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(outbox_app, name="outbox")
