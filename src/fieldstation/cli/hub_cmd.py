"""``fieldstation hub ...``: run the fleet hub (ingest) and manage its station tokens.

``hub run [HUB_CONFIG]``: with no config, SQLite in ``~/.fieldstation-hub/`` and HTTP ingest
on 127.0.0.1:8780; with a config (TOML, :class:`fieldstation.hub.config.HubConfig`): its
database, MQTT broker and shared-subscription group, and listen address.
``hub token add STATION [--config HUB_CONFIG]``: print a new HTTP ingest token once;
``hub token revoke STATION``: revoke every token of STATION.
``hub user add NAME --role viewer|operator|admin``: a dashboard user (password prompted).
``hub broker-config FOLDER STATION...``: Mosquitto password file + ACL for the stations.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["register"]

EXIT_INVALID = 2

hub_app = typer.Typer(
    help="The fleet hub: ingest station messages into a fleet database.", no_args_is_help=True
)
token_app = typer.Typer(help="Bearer tokens of the HTTP ingest.", no_args_is_help=True)
hub_app.add_typer(token_app, name="token")

ConfigArg = Annotated[
    Path | None, typer.Argument(help="Hub config (TOML); default: SQLite + HTTP on loopback.")
]


def _load(path: Path | None) -> Any:
    from fieldstation.hub.config import HubConfigError, load_hub_config

    try:
        return load_hub_config(path)
    except HubConfigError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_INVALID) from error


def _open(config: Any) -> Any:
    from sqlalchemy.exc import SQLAlchemyError

    from fieldstation.hub.db import open_hub_database

    try:
        return open_hub_database(config.database_url())
    except (ValueError, SQLAlchemyError) as error:
        first = str(error).splitlines()[0][:300]
        typer.echo(f"database: cannot open {config.database_url()!r}: {first}", err=True)
        raise typer.Exit(1) from error


@hub_app.command("run")
def run(config_path: ConfigArg = None) -> None:
    """Run the hub until Ctrl-C or SIGTERM: MQTT ingest (when configured), HTTP ingest and the
    dashboard on one listener, and the fleet alert loop."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    config = _load(config_path)
    db = _open(config)
    stop = threading.Event()
    workers: list[threading.Thread] = []
    if config.mqtt is not None:
        from fieldstation.config.secrets import SecretError
        from fieldstation.hub.ingest import MqttIngest

        try:
            ingest = MqttIngest(config.mqtt, db)
        except SecretError as error:
            typer.echo(f"mqtt.password: {error}", err=True)
            db.dispose()
            raise typer.Exit(EXIT_INVALID) from error
        workers.append(threading.Thread(target=ingest.run, args=(stop,), name="mqtt-ingest"))

        def announce() -> None:
            while not stop.is_set():
                if ingest.ready.wait(0.5):
                    typer.echo(f"mqtt ingest subscribed as {ingest.client_id}", err=True)
                    return

        workers.append(threading.Thread(target=announce, daemon=True, name="announce"))
    from fieldstation.clock import SystemClock

    clock = SystemClock()
    if config.alerts.enabled:
        from fieldstation.config.secrets import SecretError
        from fieldstation.hub.alerts import AlertLoop, Notifier

        try:
            notifier = Notifier(config.alerts.notify)
        except (SecretError, ValueError) as error:
            typer.echo(str(error), err=True)
            db.dispose()
            raise typer.Exit(EXIT_INVALID) from error
        alert_loop = AlertLoop(db, config.alerts, clock, notifier)
        workers.append(threading.Thread(target=alert_loop.run, args=(stop,), name="alerts"))
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server: Any = None
    if config.http.enabled:
        import uvicorn

        from fieldstation.hub.http import create_app

        dashboard = None
        if config.http.dashboard:
            from fieldstation.hub.web import Dashboard, session_secret

            dashboard = Dashboard(
                secret=session_secret(config.home), rules=config.alerts.rules, clock=clock
            )
        uploads = None
        if config.uploads.enabled:
            from fieldstation.hub.uploads import make_upload_service

            try:
                uploads = make_upload_service(db, config.uploads, config.home)
            except (SecretError, ValueError) as error:
                typer.echo(f"uploads: {error}", err=True)
                db.dispose()
                raise typer.Exit(EXIT_INVALID) from error
            if dashboard is not None:
                dashboard.uploads = uploads
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(db, path=config.http.path, dashboard=dashboard, uploads=uploads),
                host=config.http.host,
                port=config.http.port,
                log_level="warning",
                lifespan="off",
            )
        )
        where = f"http://{config.http.host}:{config.http.port}{config.http.path}"

        def listening() -> None:  # said once uvicorn has bound the port
            while not stop.is_set() and not server.started:
                stop.wait(0.05)
            if server.started:
                typer.echo(f"http ingest on {where}", err=True)
                if dashboard is not None:
                    base = f"http://{config.http.host}:{config.http.port}/"
                    typer.echo(f"dashboard on {base}", err=True)

        # uvicorn off the main thread installs no signal handlers: ours stop everything
        http_thread = threading.Thread(target=server.run, name="http-ingest")
        workers.append(http_thread)
        workers.append(threading.Thread(target=listening, daemon=True, name="listening"))
    for worker in workers:
        worker.start()
    try:
        while not stop.wait(0.5):
            if server is not None and not http_thread.is_alive():
                typer.echo("http ingest stopped (port in use?): the hub stops", err=True)
                raise typer.Exit(1)
    finally:
        stop.set()
        if server is not None:
            server.should_exit = True
        for worker in workers:
            worker.join(timeout=10)
        db.dispose()


@token_app.command("add")
def token_add(
    station: Annotated[str, typer.Argument(help="The station's id (its station.id).")],
    config_path: Annotated[
        Path | None, typer.Option("--config", "-c", help="Hub config (TOML).")
    ] = None,
) -> None:
    """Make a bearer token for STATION and print it (once: only its hash is stored)."""
    from fieldstation.hub.tokens import add_token

    config = _load(config_path)
    db = _open(config)
    try:
        token = add_token(db, station)
    except ValueError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_INVALID) from error
    finally:
        db.dispose()
    typer.echo(token)


@token_app.command("revoke")
def token_revoke(
    station: Annotated[str, typer.Argument(help="The station's id (its station.id).")],
    config_path: Annotated[
        Path | None, typer.Option("--config", "-c", help="Hub config (TOML).")
    ] = None,
) -> None:
    """Revoke every token of STATION (effective within a minute on running hubs)."""
    from fieldstation.hub.tokens import revoke_tokens

    config = _load(config_path)
    db = _open(config)
    try:
        count = revoke_tokens(db, station)
    finally:
        db.dispose()
    typer.echo(f"{count} token(s) of {station!r} revoked")


user_app = typer.Typer(help="Dashboard users.", no_args_is_help=True)
hub_app.add_typer(user_app, name="user")


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="Log-in name.")],
    role: Annotated[
        str,
        typer.Option(
            "--role",
            "-r",
            help="viewer (reads), operator (acknowledges alerts) or admin (also sees users).",
        ),
    ] = "viewer",
    config_path: Annotated[
        Path | None, typer.Option("--config", "-c", help="Hub config (TOML).")
    ] = None,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the password from standard input (one line) instead of prompting.",
        ),
    ] = False,
) -> None:
    """Add a dashboard user; the password is asked twice (only its argon2 hash is stored)."""
    from fieldstation.hub.users import UserError, add_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    config = _load(config_path)
    db = _open(config)
    try:
        add_user(db, name, password, role)
    except UserError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_INVALID) from error
    finally:
        db.dispose()
    typer.echo(f"user {name!r} added ({role})")


@hub_app.command("broker-config")
def broker_config(
    folder: Annotated[Path, typer.Argument(help="Folder for passwd, acl and credentials/.")],
    stations: Annotated[
        list[str] | None,
        typer.Argument(
            help="Station ids (default: every station the fleet database knows, with --known)."
        ),
    ] = None,
    known: Annotated[
        bool, typer.Option("--known", help="Also every station in the fleet database.")
    ] = False,
    prefix: Annotated[str, typer.Option(help="The stations' topic prefix.")] = "fieldstation",
    hub_user: Annotated[str, typer.Option(help="The hub's broker user.")] = "hub",
    config_path: Annotated[
        Path | None, typer.Option("--config", "-c", help="Hub config (TOML), for --known.")
    ] = None,
) -> None:
    """Write a Mosquitto password file and ACL (each station publishes only under its own id;
    the hub reads all) and a password file per user under FOLDER/credentials/."""
    from fieldstation.hub.broker import BrokerConfigError, write_broker_config

    names = list(stations or [])
    if known:
        from sqlalchemy import select

        from fieldstation.hub.models import Station

        db = _open(_load(config_path))
        try:
            with db.session() as session:
                names += list(session.scalars(select(Station.id)).all())
        finally:
            db.dispose()
    if not names:
        typer.echo("name at least one station (or --known)", err=True)
        raise typer.Exit(EXIT_INVALID)
    try:
        written = write_broker_config(folder, names, prefix=prefix, hub_user=hub_user)
    except BrokerConfigError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_INVALID) from error
    typer.echo(
        f"password_file {written.password_file}\nacl_file {written.acl_file}\n"
        f"# {len(written.credentials)} users; passwords in {folder / 'credentials'}"
    )


def register(app: typer.Typer) -> None:
    """Add the ``hub`` command group to ``app``."""
    app.add_typer(hub_app, name="hub")
