"""Routes of the dashboard. Pages are Jinja2 templates; live parts poll JSON endpoints
(``/api/fleet``, ``/api/alerts``, ``/api/stations/{id}``) every few seconds from
``static/dashboard.js`` (vanilla JavaScript, no CDN).

Access: a signed session cookie (Starlette ``SessionMiddleware``, secret in
``<hub home>/session-secret``, mode 0600, made on first start) holds the user's name, role
and CSRF token. Every POST form carries the token (``csrf`` field) and is refused (403)
without the session's. Viewer: every page; operator: also acknowledges alerts and queues
fleet commands on a station's page (ping, restart a job, set_config); admin: also the users
page. Unauthenticated page requests go to ``/login``; API requests get 401.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fieldstation.clock import Clock, SystemClock
from fieldstation.hub import fleet as queries
from fieldstation.hub.alerts import AlertRules, acknowledge
from fieldstation.hub.db import HubDatabase
from fieldstation.hub.users import authenticate, role_allows
from fieldstation.hub.web.charts import line_chart
from fieldstation.hub.web.snapshot import FleetSnapshot, Snapshots

__all__ = ["Dashboard", "dashboard_routes", "session_secret"]

HERE = Path(__file__).parent
SESSION_COOKIE = "fieldstation_hub"
COUNT_DAYS = 30
"""Days the explorer's per-day counts cover when no 'since' is given."""
SESSION_MAX_AGE = 12 * 3600
"""Seconds a log-in lasts."""
FLEET_POLL = 2.0
"""Seconds between the fleet page's polls of ``/api/fleet``, and the age at which the fleet
snapshot is made again (:mod:`fieldstation.hub.web.snapshot`)."""
FLEET_STALE = 3 * FLEET_POLL
"""Seconds after which a fleet snapshot is no longer served (a request makes a new one)."""


def session_secret(home: Path) -> str:
    """The session-signing secret kept in ``<home>/session-secret`` (mode 0600), made on the
    first call (256 bits). Every hub process of a fleet behind one address needs the same
    file. Raises OSError when the file cannot be read or written."""
    path = home.expanduser() / "session-secret"
    if not path.exists():  # written whole, then linked: processes starting together agree
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".session-secret.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32))
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another process was first
                os.link(temporary, path)
        finally:
            temporary.unlink()
    return path.read_text().strip()


@dataclass
class Dashboard:
    """What the dashboard needs besides the database: the session ``secret``, the alert
    ``rules`` (the fleet page's silent / heartbeat-missing columns), a ``clock``, whether
    the cookie is HTTPS-only (behind a TLS proxy) and the command ``signer``."""

    secret: str
    rules: AlertRules
    clock: Clock = SystemClock()
    https_only: bool = False
    uploads: Any = None
    """The :class:`fieldstation.hub.uploads.UploadService`: the station page plays uploaded
    recordings."""
    signer: Any = None
    """The hub's :class:`fieldstation.hub.commands.CommandSigner` (None: no signing key, no
    commands can be queued)."""


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def dashboard_routes(db: HubDatabase, dashboard: Dashboard) -> tuple[list[Any], list[Any]]:
    """The dashboard's routes and middleware, for the hub's Starlette app."""
    from markupsafe import Markup
    from starlette.background import BackgroundTask
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.middleware.sessions import SessionMiddleware
    from starlette.requests import Request
    from starlette.responses import (
        JSONResponse,
        PlainTextResponse,
        RedirectResponse,
        Response,
        StreamingResponse,
    )
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
    from starlette.templating import Jinja2Templates

    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["ago"] = _ago
    templates.env.filters["bytes"] = _bytes

    def csrf_token(request: Request) -> str:
        token = request.session.get("csrf")
        if not token:
            token = request.session["csrf"] = secrets.token_urlsafe(32)
        return str(token)

    async def csrf_ok(request: Request) -> bool:
        form = await request.form()
        sent = str(form.get("csrf") or "")
        held = str(request.session.get("csrf") or "")
        return bool(held) and hmac.compare_digest(sent, held)

    def page(request: Request, name: str, **context: Any) -> Response:
        context.update(
            user=request.session.get("user"),
            role=request.session.get("role"),
            csrf=csrf_token(request),
            now=dashboard.clock.now(),
        )
        return templates.TemplateResponse(request, name, context)

    def guard(needed: str, *, api: bool = False) -> Any:
        def wrap(endpoint: Any) -> Any:
            async def guarded(request: Request) -> Response:
                role = request.session.get("role")
                if not request.session.get("user"):
                    if api:
                        return PlainTextResponse("log in first", status_code=401)
                    return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
                if not role_allows(role, needed):
                    return PlainTextResponse(
                        f"forbidden: needs the {needed} role (you are {role})", status_code=403
                    )
                result: Response = await endpoint(request)
                return result

            return guarded

        return wrap

    async def login_form(request: Request) -> Response:
        return page(request, "login.html", error=None, next=request.query_params.get("next", "/"))

    async def login(request: Request) -> Response:
        form = await request.form()
        target = str(form.get("next") or "/")
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        if not await csrf_ok(request):
            return PlainTextResponse("CSRF token missing or wrong: reload the page", 403)
        name, password = str(form.get("name") or ""), str(form.get("password") or "")
        role = await run_in_threadpool(authenticate, db, name, password)
        if role is None:
            response = page(request, "login.html", error="wrong name or password", next=target)
            response.status_code = 401
            return response
        request.session.clear()
        request.session.update(user=name, role=role, csrf=secrets.token_urlsafe(32))
        return RedirectResponse(target, status_code=303)

    async def logout(request: Request) -> Response:
        if not await csrf_ok(request):
            return PlainTextResponse("CSRF token missing or wrong: reload the page", 403)
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    fleet_rows = templates.env.get_template("fleet_rows.html")

    def encode(now: datetime, rows: list[dict[str, Any]]) -> bytes:
        body = json.dumps(
            {"now": now.isoformat(), "stations": rows},
            default=_iso,
            ensure_ascii=False,
            allow_nan=False,
            separators=(",", ":"),
        )
        return body.encode()

    def render(now: datetime, rows: list[dict[str, Any]]) -> str:
        return fleet_rows.render(stations=rows, now=now)

    page_loaded = [float("-inf")]  # clock.monotonic() of the newest fleet page load

    def fleet_snapshot(now: datetime) -> FleetSnapshot:
        rows = queries.fleet(db, now, dashboard.rules)
        html = None  # the table rows too when pages are being loaded (else on first use)
        if dashboard.clock.monotonic() - page_loaded[0] < FLEET_STALE:
            html = render(now, rows)
        return FleetSnapshot(now, rows, encode(now, rows), render, html)

    def fleet_rows_now() -> tuple[FleetSnapshot, str, bool]:
        page_loaded[0] = dashboard.clock.monotonic()
        snapshot, stale = snapshots.get()
        return snapshot, snapshot.rows_html, stale

    def fleet_json_now() -> tuple[bytes, bool]:
        snapshot, stale = snapshots.get()
        return snapshot.json, stale

    snapshots = Snapshots(fleet_snapshot, dashboard.clock, FLEET_POLL, FLEET_STALE)

    def refreshing(stale: bool) -> BackgroundTask | None:
        """A stale snapshot is served, then a new one made after the response is sent."""
        return BackgroundTask(snapshots.refresh) if stale else None

    @guard("viewer")
    async def fleet_page(request: Request) -> Response:
        snapshot, rows_html, stale = await run_in_threadpool(fleet_rows_now)
        response = page(
            request,
            "fleet.html",
            count=len(snapshot.stations),
            rows_html=Markup(rows_html),  # rendered (escaped) by fleet_rows.html
            at=snapshot.at,
            poll_s=FLEET_POLL,
            stale_s=FLEET_STALE,
        )
        response.background = refreshing(stale)
        return response

    @guard("viewer", api=True)
    async def fleet_api(request: Request) -> Response:
        body, stale = await run_in_threadpool(fleet_json_now)
        return Response(body, media_type="application/json", background=refreshing(stale))

    @guard("viewer")
    async def station_page(request: Request) -> Response:
        station = request.path_params["station"]
        detail = await run_in_threadpool(queries.station_detail, db, station)
        if detail is None:
            return PlainTextResponse(f"no station {station!r}", status_code=404)
        series = detail["series"]
        charts = [
            line_chart([(p["at"], p[key]) for p in series], title=title, unit=unit)
            for key, title, unit in (
                ("disk_percent", "disk used", "%"),
                ("battery_percent", "battery", "%"),
                ("outbox_pending", "outbox pending", ""),
                ("cpu_percent", "CPU", "%"),
                ("memory_percent", "memory", "%"),
                ("cpu_temp_c", "CPU temperature", "°C"),
            )
        ]
        uploads: list[dict[str, Any]] = []
        if dashboard.uploads is not None:
            from fieldstation.hub.uploads import recent_uploads

            uploads = await run_in_threadpool(recent_uploads, db, station)
        return page(
            request,
            "station.html",
            detail=detail,
            charts=charts,
            uploads=uploads,
            can_command=dashboard.signer is not None,
            error=request.query_params.get("error"),
        )

    @guard("viewer")
    async def uploaded_file(request: Request) -> Response:
        from fieldstation.hub.uploads import file_response

        if dashboard.uploads is None:
            return PlainTextResponse("uploads are off on this hub", status_code=404)
        params = request.path_params
        return await run_in_threadpool(
            file_response, dashboard.uploads, params["station"], params["upload_id"]
        )

    @guard("operator")
    async def station_command(request: Request) -> Response:
        from urllib.parse import quote

        from fieldstation.hub.commands import queue_command, set_config_args
        from fieldstation.messages.commands import CommandRefusedError

        if not await csrf_ok(request):
            return PlainTextResponse("CSRF token missing or wrong: reload the page", 403)
        station = request.path_params["station"]
        back = f"/stations/{quote(station)}"
        if dashboard.signer is None:
            return PlainTextResponse(
                "no command signing key: run 'fieldstation hub keygen', then restart the hub",
                status_code=409,
            )
        form = await request.form()
        verb = str(form.get("command") or "")
        args: dict[str, Any] = {}
        try:
            if verb in ("restart", "start", "stop"):
                args = {"job": str(form.get("job") or "").strip()}
            elif verb == "set_config":
                args = set_config_args(str(form.get("config") or "").replace("\r\n", "\n"))
            elif verb != "ping":
                raise ValueError(
                    f"command {verb!r}: the dashboard queues ping, restart, set_config"
                )
            await run_in_threadpool(
                lambda: queue_command(
                    db,
                    dashboard.signer,
                    station,
                    verb,
                    args,
                    now=dashboard.clock.now(),
                    created_by=str(request.session["user"]),
                )
            )
        except (CommandRefusedError, ValueError) as error:
            return RedirectResponse(f"{back}?error={quote(str(error))}#commands", status_code=303)
        return RedirectResponse(f"{back}#commands", status_code=303)

    @guard("viewer", api=True)
    async def station_api(request: Request) -> Response:
        detail = await run_in_threadpool(queries.station_detail, db, request.path_params["station"])
        if detail is None:
            return PlainTextResponse("no such station", status_code=404)
        return JSONResponse(queries.jsonable(detail))

    def filters_of(request: Request) -> queries.DetectionFilter:
        q = request.query_params
        return queries.DetectionFilter(
            label=q.get("label") or None,
            station=q.get("station") or None,
            since=_parse_time(q.get("since")),
            until=_parse_time(q.get("until")),
        )

    @guard("viewer")
    async def detections_page(request: Request) -> Response:
        filters = filters_of(request)
        before = None
        at, row_id = (
            _parse_time(request.query_params.get("before_at")),
            request.query_params.get("before_id", ""),
        )
        if at is not None and row_id.isdigit():
            before = (at, int(row_id))
        rows, following = await run_in_threadpool(
            queries.detection_page, db, filters, before=before
        )
        # counts: the last COUNT_DAYS days unless a 'since' is given (one index range, not a
        # scan of every detection ever)
        window = filters
        if filters.since is None:
            window = replace(filters, since=dashboard.clock.now() - timedelta(days=COUNT_DAYS))
        counts = await run_in_threadpool(queries.detection_counts_per_day, db, window)
        peak = max((c for _, c in counts), default=0)
        return page(
            request,
            "detections.html",
            rows=rows,
            following=following,
            counts=counts,
            count_days=COUNT_DAYS if filters.since is None else None,
            peak=peak,
            filters=filters,
            query=dict(request.query_params),
        )

    @guard("viewer")
    async def detections_csv(request: Request) -> Response:
        filters = filters_of(request)
        from starlette.concurrency import iterate_in_threadpool

        return StreamingResponse(
            iterate_in_threadpool(queries.detections_csv(db, filters)),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="detections.csv"'},
        )

    @guard("viewer")
    async def alerts_page(request: Request) -> Response:
        rows = await run_in_threadpool(queries.alerts, db)
        return page(request, "alerts.html", alerts=rows)

    @guard("viewer", api=True)
    async def alerts_api(request: Request) -> Response:
        rows = await run_in_threadpool(queries.alerts, db)
        return JSONResponse({"alerts": queries.jsonable(rows)})

    @guard("operator")
    async def alert_ack(request: Request) -> Response:
        if not await csrf_ok(request):
            return PlainTextResponse("CSRF token missing or wrong: reload the page", 403)
        alert_id = int(request.path_params["alert"])
        await run_in_threadpool(
            acknowledge, db, alert_id, str(request.session["user"]), dashboard.clock.now()
        )
        return RedirectResponse("/alerts", status_code=303)

    @guard("admin")
    async def users_page(request: Request) -> Response:
        from sqlalchemy import select

        from fieldstation.hub.models import User

        def read() -> list[Any]:
            with db.session() as session:
                return list(session.execute(select(User.name, User.role, User.created_at)).all())

        return page(request, "users.html", users=await run_in_threadpool(read))

    routes = [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", fleet_page, methods=["GET"]),
        Route("/api/fleet", fleet_api, methods=["GET"]),
        Route("/files/{station}/{upload_id}", uploaded_file, methods=["GET"]),
        Route("/stations/{station:path}", station_page, methods=["GET"]),
        Route("/api/stations/{station:path}", station_api, methods=["GET"]),
        Route("/stations/{station:path}/commands", station_command, methods=["POST"]),
        Route("/detections", detections_page, methods=["GET"]),
        Route("/detections.csv", detections_csv, methods=["GET"]),
        Route("/alerts", alerts_page, methods=["GET"]),
        Route("/api/alerts", alerts_api, methods=["GET"]),
        Route("/alerts/{alert:int}/ack", alert_ack, methods=["POST"]),
        Route("/users", users_page, methods=["GET"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [
        Middleware(
            SessionMiddleware,
            secret_key=dashboard.secret,
            session_cookie=SESSION_COOKIE,
            max_age=SESSION_MAX_AGE,
            same_site="strict",
            https_only=dashboard.https_only,
        )
    ]
    return routes, middleware


def _ago(then: datetime | None, now: datetime) -> str:
    """``then`` as an age (``42 s``, ``5 min``, ``3 h``, ``2 d``), or ``never``."""
    if then is None:
        return "never"
    seconds = max(0, int((now - then).total_seconds()))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= 2 * size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _iso(value: Any) -> str:
    """JSON for the values :func:`json.dumps` does not know: datetimes as ISO 8601."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _bytes(value: int | None) -> str:
    if value is None:
        return "–"
    size = float(value)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"
