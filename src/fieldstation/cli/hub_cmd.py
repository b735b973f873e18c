"""``fieldstation hub ...``: run the fleet hub (ingest) and manage its station tokens.

``hub run [HUB_CONFIG]``: with no config, SQLite in ``~/.fieldstation-hub/`` and HTTP ingest
on 127.0.0.1:8780; with a config (TOML, :class:`fieldstation.hub.config.HubConfig`): its
database, MQTT broker and shared-subscription group, and listen address.
``hub token add STATION [--config HUB_CONFIG]``: print a new HTTP ingest token once;
``hub token revoke STATION``: revoke every token of STATION.
``hub user add NAME --role viewer|operator|admin``: a dashboard user (password prompted).
``hub broker-config FOLDER STATION...``: Mosquitto password file + ACL for the stations.
``hub keygen``: the fleet commands' signing key (printed: the stations' ``hub_keys`` line);
``hub command STATION VERB [KEY=VALUE...]``: queue a signed command; ``hub commands``: list.
``hub template set|member|show|push``: a station file shared by many stations, pushed as
``set_config`` to every member with its overrides.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

__all__ = ["register"]

EXIT_INVALID = 2
T = TypeVar("T")

hub_app = typer.Typer(
    help="The fleet hub: ingest station messages into a fleet database.", no_args_is_help=True
)
token_app = typer.Typer(help="Bearer tokens of the HTTP ingest.", no_args_is_help=True)
hub_app.add_typer(token_app, name="token")

ConfigArg = Annotated[
    Path | None, typer.Argument(help="Hub config (TOML); default: SQLite + HTTP on loopback.")
]
ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="Hub config (TOML).")]


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


def _with_db(
    config: Any,
    call: Callable[[Any], T],
    refused: type[Exception] | tuple[type[Exception], ...] = (),
) -> T:
    """``call(db)`` on the fleet database of ``config`` (a loaded hub config), disposed after;
    a ``refused`` error is printed and exits 2."""
    db = _open(config)
    try:
        return call(db)
    except refused as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_INVALID) from error
    finally:
        db.dispose()


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
    if config.mqtt is not None:
        from fieldstation.hub.publisher import CommandPublisher

        publisher = CommandPublisher(config.mqtt, config.commands, db, clock)
        workers.append(threading.Thread(target=publisher.run, args=(stop,), name="commands"))
    signer = _signer(config, required=False)
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
                secret=session_secret(config.home),
                rules=config.alerts.rules,
                clock=clock,
                signer=signer,
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
            workers.append(
                threading.Thread(target=uploads.run, args=(stop, clock), name="upload-sweep")
            )
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
    config_path: ConfigOption = None,
) -> None:
    """Make a bearer token for STATION and print it (once: only its hash is stored)."""
    from fieldstation.hub.tokens import add_token

    typer.echo(_with_db(_load(config_path), lambda db: add_token(db, station), ValueError))


@token_app.command("revoke")
def token_revoke(
    station: Annotated[str, typer.Argument(help="The station's id (its station.id).")],
    config_path: ConfigOption = None,
) -> None:
    """Revoke every token of STATION (effective within a minute on running hubs)."""
    from fieldstation.hub.tokens import revoke_tokens

    count = _with_db(_load(config_path), lambda db: revoke_tokens(db, station))
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
    config_path: ConfigOption = None,
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
    _with_db(_load(config_path), lambda db: add_user(db, name, password, role), UserError)
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

        def known_ids(db: Any) -> list[str]:
            with db.session() as session:
                return list(session.scalars(select(Station.id)).all())

        names += _with_db(_load(config_path), known_ids)
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


def _signer(config: Any, *, required: bool) -> Any:
    """The hub's command signer, or None when it has no key and ``required`` is False."""
    from fieldstation.hub.commands import CommandSigner

    path = config.commands.key_path(config.home)
    try:
        return CommandSigner.load(path, key_id=config.commands.key_id, ttl=config.commands.ttl)
    except FileNotFoundError as error:
        if not required:
            typer.echo(f"{error}: commands cannot be queued", err=True)
            return None
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_INVALID) from error
    except ValueError as error:
        typer.echo(f"commands.key_file: {error}", err=True)
        raise typer.Exit(EXIT_INVALID) from error


@hub_app.command("keygen")
def keygen(
    config_path: ConfigOption = None,
) -> None:
    """Make the fleet commands' Ed25519 signing key (kept when it exists, mode 0600) and print
    its public half, ed25519:...: give it to each station as
    [commands] hub_keys = { <key_id> = "ed25519:..." }."""
    from fieldstation.hub.commands import keygen as make_key
    from fieldstation.messages.commands import public_key_text

    config = _load(config_path)
    path = config.commands.key_path(config.home)
    try:
        key, made = make_key(path)
    except (OSError, ValueError) as error:
        typer.echo(f"{path}: {error}", err=True)
        raise typer.Exit(1) from error
    line = public_key_text(key)
    typer.echo(f"{'made' if made else 'kept the existing'} signing key {path}", err=True)
    typer.echo(
        f'stations: [commands] hub_keys = {{ {config.commands.key_id} = "{line}" }}', err=True
    )
    typer.echo(line)


def _parse_args(pairs: list[str]) -> dict[str, Any]:
    import json

    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            typer.echo(
                f"{pair!r}: give arguments as KEY=VALUE (e.g. job=processor:birds)", err=True
            )
            raise typer.Exit(EXIT_INVALID)
        try:
            args[key] = json.loads(value)  # numbers, true/false, null
        except json.JSONDecodeError:
            args[key] = value
    return args


@hub_app.command("command")
def command(
    station: Annotated[str, typer.Argument(help="The station's id.")],
    verb: Annotated[
        str,
        typer.Argument(
            help="ping, restart, start, stop, set_config, reprocess, upload, pin, unpin."
        ),
    ],
    pairs: Annotated[
        list[str] | None,
        typer.Argument(help="Arguments as KEY=VALUE: job=processor:birds, recording_id=12."),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="set_config: the station file (TOML) to send."),
    ] = None,
    config_path: ConfigOption = None,
) -> None:
    """Queue a signed command for STATION and print its id; the hub delivers it when the
    station is online (or polls), and follows its answer (see: fieldstation hub commands)."""
    import getpass

    from fieldstation.hub.commands import queue_command, set_config_args
    from fieldstation.messages.commands import CommandRefusedError

    args = _parse_args(list(pairs or []))
    if verb == "set_config":
        if config_file is None:
            typer.echo("set_config: give the station file with --file", err=True)
            raise typer.Exit(EXIT_INVALID)
        try:
            args = set_config_args(config_file.read_text())
        except OSError as error:
            typer.echo(f"{config_file}: {error.strerror}", err=True)
            raise typer.Exit(EXIT_INVALID) from error
        except ValueError as error:
            typer.echo(f"{config_file}: {error}", err=True)
            raise typer.Exit(EXIT_INVALID) from error
    config = _load(config_path)
    signer = _signer(config, required=True)
    from fieldstation.clock import SystemClock

    command_id = _with_db(
        config,
        lambda db: queue_command(
            db,
            signer,
            station,
            verb,
            args,
            now=SystemClock().now(),
            created_by=f"cli:{getpass.getuser()}",
        ),
        (CommandRefusedError, ValueError),
    )
    typer.echo(command_id)


@hub_app.command("commands")
def commands(
    station: Annotated[str | None, typer.Argument(help="Only this station's.")] = None,
    limit: Annotated[int, typer.Option(help="Newest N.")] = 50,
    config_path: ConfigOption = None,
) -> None:
    """List the newest commands: id, station, command, state, reason."""
    from fieldstation.hub.commands import list_commands

    rows = _with_db(_load(config_path), lambda db: list_commands(db, station, limit=limit))
    for row in rows:
        typer.echo(
            f"{row['id']}  {row['created_at']:%Y-%m-%d %H:%M:%S}  {row['station']}  "
            f"{row['command']}  {row['state']}" + (f"  {row['reason']}" if row["reason"] else "")
        )


template_app = typer.Typer(
    help="Config templates: one station file for many stations, with per-station overrides.",
    no_args_is_help=True,
)
hub_app.add_typer(template_app, name="template")


def _template_call(config: Any, call: Callable[[Any], T]) -> T:
    from fieldstation.hub.templates import TemplateError

    return _with_db(config, call, TemplateError)


@template_app.command("set")
def template_set(
    name: Annotated[str, typer.Argument(help="Template name.")],
    file: Annotated[Path, typer.Argument(help="The station file (TOML) shared by the members.")],
    config_path: ConfigOption = None,
) -> None:
    """Store (or replace) template NAME from FILE (secrets as env:/file: references)."""
    import getpass

    from fieldstation.clock import SystemClock
    from fieldstation.hub.templates import set_template

    try:
        text = file.read_text()
    except OSError as error:
        typer.echo(f"{file}: {error.strerror}", err=True)
        raise typer.Exit(EXIT_INVALID) from error
    _template_call(
        _load(config_path),
        lambda db: set_template(
            db, name, text, now=SystemClock().now(), by=f"cli:{getpass.getuser()}"
        ),
    )
    typer.echo(f"template {name!r} stored")


@template_app.command("member")
def template_member(
    name: Annotated[str, typer.Argument(help="Template name.")],
    station: Annotated[str, typer.Argument(help="The station's id.")],
    pairs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Overrides as KEY=VALUE: station.latitude=51.5, outputs.0.password=..."
        ),
    ] = None,
    config_path: ConfigOption = None,
) -> None:
    """Make STATION a member of template NAME with its overrides (replacing earlier ones)."""
    from fieldstation.clock import SystemClock
    from fieldstation.hub.templates import set_member

    overrides = _parse_args(list(pairs or []))
    _template_call(
        _load(config_path),
        lambda db: set_member(db, name, station, overrides, now=SystemClock().now()),
    )
    typer.echo(f"{station!r} takes template {name!r} ({len(overrides)} override(s))")


@template_app.command("show")
def template_show(
    name: Annotated[str, typer.Argument(help="Template name.")],
    station: Annotated[str, typer.Argument(help="A member station.")],
    config_path: ConfigOption = None,
) -> None:
    """Print the station file STATION would receive from template NAME."""
    from fieldstation.hub.models import ConfigTemplate, ConfigTemplateMember
    from fieldstation.hub.templates import TemplateError, render

    def read(db: Any) -> str:
        with db.session() as session:
            template = session.get(ConfigTemplate, name)
            member = session.get(ConfigTemplateMember, (name, station))
            if template is None or member is None:
                raise TemplateError(f"{station!r} is not a member of template {name!r}")
            return render(template.text, station, member.overrides)

    typer.echo(_template_call(_load(config_path), read), nl=False)


@template_app.command("push")
def template_push(
    name: Annotated[str, typer.Argument(help="Template name.")],
    stations: Annotated[
        list[str] | None, typer.Argument(help="Only these members (default: every member).")
    ] = None,
    config_path: ConfigOption = None,
) -> None:
    """Queue a signed set_config for every member of template NAME (each file rendered and
    checked first: nothing is queued when one fails); prints station and command id."""
    import getpass

    from fieldstation.clock import SystemClock
    from fieldstation.hub.templates import push_template

    config = _load(config_path)
    signer = _signer(config, required=True)
    queued = _template_call(
        config,
        lambda db: push_template(
            db,
            signer,
            name,
            now=SystemClock().now(),
            by=f"cli:{getpass.getuser()}",
            stations=list(stations) if stations else None,
        ),
    )
    for station, command_id in queued.items():
        typer.echo(f"{station} {command_id}")


def register(app: typer.Typer) -> None:
    """Add the ``hub`` command group to ``app``."""
    app.add_typer(hub_app, name="hub")
