"""The station's own web page: a Starlette app rendering Jinja2 templates (no CDN, no framework
on the page; one small script for the audio players and confirmations).

Pages: ``/`` status, ``/recordings`` (by sensor and day; ``/recordings/<id>`` with its
spectrogram, player, download and detections), ``/detections`` (by label and day; CSV at
``/detections.csv``), ``/schedule`` (today's and tomorrow's slots, as ``fieldstation
schedule`` plans them), ``/login``. The live view (``/live``) is another module's routes,
added through ``extra_routes``.

Reads go to the station database (:mod:`fieldstation.web.queries`); the status and the
start/stop buttons go through the station's control API
(:class:`~fieldstation.runtime.client.ControlClient` on its Unix socket). Endpoints are plain
functions: Starlette runs them in its thread pool, so a slow query or a spectrogram render
never stalls the event loop. Access rules: :mod:`fieldstation.web.auth`.
"""

from __future__ import annotations

import csv
import io
import logging
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, urlencode

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from fieldstation.clock import Clock, SystemClock
from fieldstation.config.station import StationConfig
from fieldstation.config.units import format_bytes, format_seconds
from fieldstation.config.web import is_loopback
from fieldstation.home import StationHome
from fieldstation.store.db import Database
from fieldstation.web import auth, queries
from fieldstation.web.spectrogram import SpectrogramCache, SpectrogramError, file_png

__all__ = ["StationControl", "WebState", "create_app"]

log = logging.getLogger(__name__)

HERE = Path(__file__).parent

DETECTION_PAD = 0.5
"""Seconds of sound kept on each side of a detection's span in its clip and spectrogram."""

AUDIO_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "mp3": "audio/mpeg"}


class StationControl(Protocol):
    """What the page asks of the running station (the control API's client has it)."""

    def status(self) -> dict[str, Any]: ...

    def start(self, job: str) -> dict[str, Any]: ...

    def stop(self, job: str) -> dict[str, Any]: ...


@dataclass
class WebState:
    """Everything the endpoints share (``request.app.state.web``)."""

    config: StationConfig
    home: StationHome
    db: Database
    control: StationControl
    clock: Clock
    spectrograms: SpectrogramCache
    login_required: bool
    templates: Jinja2Templates
    battery: Callable[[], dict[str, Any] | None] = field(default=lambda: None)


def _web(request: Request) -> WebState:
    return request.app.state.web  # type: ignore[no-any-return]


# --- access ---------------------------------------------------------------------------------

OPEN_PATHS = ("/login", "/static/")


class LoginGate:
    """ASGI middleware: when the page is bound beyond loopback, everything but the login page
    and static files needs a logged-in operator: a page is redirected to ``/login`` (303), any
    other request (audio, images, CSV, POST) answered 401."""

    def __init__(self, app: ASGIApp, required: bool) -> None:
        self.app = app
        self.required = required

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.required:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path.startswith(OPEN_PATHS) or auth.is_operator(scope.get("session", {})):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        page = request.method == "GET" and "text/html" in request.headers.get("accept", "")
        response: Response
        if page:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            response = RedirectResponse(f"/login?{urlencode({'next': target})}", 303)
        else:
            response = PlainTextResponse("log in first", 401)
        await response(scope, receive, send)


def _render(request: Request, template: str, code: int = 200, **context: Any) -> Response:
    web = _web(request)
    session = request.session
    context.update(
        station=web.config.station,
        operator=auth.is_operator(session),
        can_control=auth.is_operator(session) and web.config.web.operators_control_jobs,
        login_possible=web.config.web.login_possible,
        csrf=auth.csrf_token(session),
        nav=request.url.path,
    )
    return web.templates.TemplateResponse(request, template, context, status_code=code)


async def _form(request: Request) -> dict[str, str]:
    """The URL-encoded form of a POST (first value of each field)."""
    body = (await request.body())[:65536].decode("utf-8", "replace")
    return {key: values[0] for key, values in parse_qs(body).items()}


def _safe_next(target: str | None) -> str:
    """Only local paths are followed after a login (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


# --- status ---------------------------------------------------------------------------------


def status_page(request: Request) -> Response:
    web = _web(request)
    problem = None
    try:
        status = web.control.status()
    except Exception as error:  # the station is starting or stopping: the page still shows
        status, problem = {}, f"{type(error).__name__}: {error}"
    from fieldstation.health.metrics import cpu_temperature

    with web.db.session() as session:
        events = queries.recent_events(session, 15)
    jobs = status.get("jobs", [])
    return _render(
        request,
        "status.html",
        status=status,
        problem=problem,
        jobs=jobs,
        sensors=status.get("recording", {}).get("sensors", {}),
        temperature=cpu_temperature(),
        battery=web.battery(),
        events=events,
    )


async def job_action(request: Request) -> Response:
    """``POST /jobs/<name>/<start|stop>``: an operator's button (CSRF-checked)."""
    web = _web(request)
    form = await _form(request)
    if not auth.csrf_ok(request.session, form.get(auth.CSRF_FIELD)):
        return PlainTextResponse("refused: the form's CSRF token is missing or wrong", 403)
    if not auth.is_operator(request.session):
        return PlainTextResponse("log in as an operator first", 401)
    if not web.config.web.operators_control_jobs:
        return PlainTextResponse(
            "this station's page is read-only (web.operators_control_jobs)", 403
        )
    name, action = request.path_params["name"], request.path_params["action"]
    if action not in ("start", "stop"):
        raise HTTPException(404, f"no action {action!r}")
    from starlette.concurrency import run_in_threadpool

    from fieldstation.runtime.client import ControlError, StationNotRunningError

    try:
        await run_in_threadpool(getattr(web.control, action), name)
    except ControlError as error:
        return PlainTextResponse(f"{action} {name}: {error}", error.status)
    except StationNotRunningError as error:
        return PlainTextResponse(str(error), 503)
    log.info("operator %s job %s from %s", action, name, request.client)
    return RedirectResponse("/", 303)


# --- recordings -----------------------------------------------------------------------------


def _day(request: Request) -> date | None:
    text = request.query_params.get("day") or None
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise HTTPException(400, f"day {text!r} is not a date (YYYY-MM-DD)") from None


def _cursor(request: Request) -> queries.Cursor | None:
    text = request.query_params.get("before") or None
    if text is None:
        return None
    try:
        return queries.Cursor.decode(text)
    except queries.BadCursorError as error:
        raise HTTPException(400, str(error)) from None


def _next_url(request: Request, cursor: queries.Cursor | None) -> str | None:
    if cursor is None:
        return None
    params = {k: v for k, v in request.query_params.items() if k != "before" and v}
    params["before"] = cursor.encode()
    return f"{request.url.path}?{urlencode(params)}"


def recordings_page(request: Request) -> Response:
    web = _web(request)
    sensors = [s.name for s in web.config.sensors]
    sensor = request.query_params.get("sensor") or None
    day = _day(request)
    span = None if day is None else queries.day_range(day, web.config.station.tz)
    with web.db.session() as session:
        rows, more = queries.recordings_page(
            session, sensor=sensor, span=span, before=_cursor(request)
        )
        session.expunge_all()
    return _render(
        request,
        "recordings.html",
        rows=rows,
        sensors=sensors,
        sensor=sensor,
        day=day,
        next_url=_next_url(request, more),
    )


def _recording_or_404(web: WebState, recording_id: int) -> Any:
    with web.db.session() as session:
        rec = queries.recording(session, recording_id)
        if rec is None:
            raise HTTPException(404, f"no recording {recording_id}")
        session.expunge(rec)
    return rec


def _file_of(web: WebState, rec: Any) -> Path:
    path = web.home.root / rec.path
    if rec.file_state != "present" or not path.is_file():
        web.spectrograms.discard(f"rec-{rec.id}-")
        raise HTTPException(410, f"the file of recording {rec.id} is gone ({rec.file_state})")
    return path


def _thumbnail_of(web: WebState, rec: Any) -> Path | None:
    relative = Path(rec.path)
    if relative.parts and relative.parts[0] == "data":
        relative = Path(*relative.parts[1:])
    folder = web.home.thumbnails / relative.parent
    found = sorted(folder.glob(f"{relative.stem}.*.jpg")) if folder.is_dir() else []
    return found[0] if found else None


def recording_page(request: Request) -> Response:
    web = _web(request)
    rec = _recording_or_404(web, request.path_params["id"])
    with web.db.session() as session:
        found = queries.recording_detections(session, rec.id)
        session.expunge_all()
    present = rec.file_state == "present" and (web.home.root / rec.path).is_file()
    return _render(
        request,
        "recording.html",
        rec=rec,
        detections=found,
        present=present,
        thumbnail=rec.media == "video" and _thumbnail_of(web, rec) is not None,
    )


def recording_audio(request: Request) -> Response:
    """The recording's file, with ``Range`` support (the ``<audio>`` player seeks by it)."""
    web = _web(request)
    rec = _recording_or_404(web, request.path_params["id"])
    path = _file_of(web, rec)
    media_type = AUDIO_TYPES.get(rec.format, "application/octet-stream")
    if rec.media == "video":
        media_type = "video/mp4" if rec.format == "mp4" else "video/x-matroska"
    return FileResponse(path, media_type=media_type)


def recording_download(request: Request) -> Response:
    web = _web(request)
    rec = _recording_or_404(web, request.path_params["id"])
    path = _file_of(web, rec)
    return FileResponse(path, filename=path.name, content_disposition_type="attachment")


def recording_spectrogram(request: Request) -> Response:
    web = _web(request)
    rec = _recording_or_404(web, request.path_params["id"])
    if rec.media != "audio":
        raise HTTPException(404, f"recording {rec.id} is {rec.media}, not audio")
    path = _file_of(web, rec)
    key = f"rec-{rec.id}-{rec.sha256[:12]}.png"
    try:
        png = web.spectrograms.get(key, lambda: file_png(path))
    except SpectrogramError as error:
        raise HTTPException(422, str(error)) from None
    return FileResponse(png, media_type="image/png", headers=_cached)


def recording_thumbnail(request: Request) -> Response:
    web = _web(request)
    rec = _recording_or_404(web, request.path_params["id"])
    thumb = _thumbnail_of(web, rec)
    if thumb is None:
        raise HTTPException(404, f"recording {rec.id} has no thumbnail")
    return FileResponse(thumb, media_type="image/jpeg", headers=_cached)


_cached = {"Cache-Control": "private, max-age=86400"}


# --- detections -----------------------------------------------------------------------------


def detections_page(request: Request) -> Response:
    web = _web(request)
    label = request.query_params.get("label") or None
    day = _day(request)
    span = None if day is None else queries.day_range(day, web.config.station.tz)
    with web.db.session() as session:
        rows, more = queries.detections_page(
            session, label=label, span=span, before=_cursor(request)
        )
        all_labels = queries.labels(session)
        session.expunge_all()
    params = {k: v for k, v in (("label", label), ("day", day and day.isoformat())) if v}
    return _render(
        request,
        "detections.html",
        rows=rows,
        labels=all_labels,
        label=label,
        day=day,
        next_url=_next_url(request, more),
        csv_url="/detections.csv" + (f"?{urlencode(params)}" if params else ""),
    )


CSV_HEADER = (
    "id",
    "detected_at",
    "label",
    "score",
    "start_s",
    "end_s",
    "low_hz",
    "high_hz",
    "recording_id",
    "sensor",
    "processor",
    "model_version",
    "run_id",
)
"""Header of the CSV export (the columns of :data:`~fieldstation.web.queries.CSV_COLUMNS`)."""


def detections_csv(request: Request) -> Response:
    """Every detection matching the page's filters, as CSV (streamed, newest first)."""
    web = _web(request)
    label = request.query_params.get("label") or None
    day = _day(request)
    span = None if day is None else queries.day_range(day, web.config.station.tz)

    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_HEADER)
        with web.db.session() as session:
            for n, row in enumerate(queries.iter_detections(session, label=label, span=span)):
                ident, at, name, score, start, end, low, high, recording_id, sensor = row[:10]
                processor, model_version, run_id = row[10:]
                writer.writerow(
                    (
                        ident,
                        at.isoformat(),
                        name,
                        f"{score:.4f}",
                        f"{start:.3f}",
                        f"{end:.3f}",
                        "" if low is None else f"{low:g}",
                        "" if high is None else f"{high:g}",
                        recording_id,
                        sensor,
                        processor,
                        model_version,
                        run_id or "",
                    )
                )
                if n % 500 == 499:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
        yield buffer.getvalue()

    name = f"detections-{web.config.station.id}{'-' + label if label else ''}.csv"
    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"},
    )


def _detection_or_404(web: WebState, detection_id: int) -> tuple[Any, Any]:
    with web.db.session() as session:
        found = queries.detection(session, detection_id)
        if found is None:
            raise HTTPException(404, f"no detection {detection_id}")
        rec = found.recording
        session.expunge_all()
    return found, rec


def _span(found: Any, rec: Any) -> tuple[float, float]:
    start = max(0.0, found.start - DETECTION_PAD)
    end = min(rec.duration, found.end + DETECTION_PAD)
    return start, max(end, start + 0.1)


def detection_spectrogram(request: Request) -> Response:
    web = _web(request)
    found, rec = _detection_or_404(web, request.path_params["id"])
    if rec.media != "audio":
        raise HTTPException(404, f"detection {found.id} is in a {rec.media} recording")
    path = _file_of(web, rec)
    start, end = _span(found, rec)
    key = f"rec-{rec.id}-{rec.sha256[:12]}-det-{found.id}.png"
    try:
        png = web.spectrograms.get(
            key, lambda: file_png(path, start=start, end=end, width=400, height=256)
        )
    except SpectrogramError as error:
        raise HTTPException(422, str(error)) from None
    return FileResponse(png, media_type="image/png", headers=_cached)


def detection_clip(request: Request) -> Response:
    """The detection's span (padded by :data:`DETECTION_PAD`) as a 16-bit WAV."""
    import soundfile

    web = _web(request)
    found, rec = _detection_or_404(web, request.path_params["id"])
    if rec.media != "audio":
        raise HTTPException(404, f"detection {found.id} is in a {rec.media} recording")
    path = _file_of(web, rec)
    start, end = _span(found, rec)
    try:
        with soundfile.SoundFile(str(path)) as audio:
            rate = audio.samplerate
            audio.seek(min(int(start * rate), audio.frames))
            samples = audio.read(int((end - start) * rate), dtype="int16", always_2d=True)
    except (OSError, RuntimeError) as error:
        raise HTTPException(422, f"cannot read {path.name}: {error}") from None
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return Response(buffer.getvalue(), media_type="audio/wav", headers=_cached)


# --- schedule -------------------------------------------------------------------------------

SLOTS_SHOWN = 48
"""Slots listed per sensor and day (a duty cycle may have hundreds; the rest are counted)."""


def schedule_page(request: Request) -> Response:
    from fieldstation.schedule import SchedulePlanner

    web = _web(request)
    station = web.config.station
    tz = station.tz
    now = web.clock.now()
    today = now.astimezone(tz).date()
    plans = []
    for sensor in web.config.sensors:
        planner = SchedulePlanner(web.config.schedule_for(sensor), station)
        days = planner.plan_days(today, 2)
        plans.append(
            {
                "sensor": sensor,
                "schedule": sensor.schedule or "continuous",
                "next": planner.next_slot(now),
                "days": days,
            }
        )

    def local(moment: datetime, day: date | None = None) -> str:
        value = moment.astimezone(tz)
        text = value.strftime("%H:%M")
        if day is not None and value.date() != day:
            text = "24:00" if text == "00:00" and value.date() == day + timedelta(1) else text
            if text != "24:00":
                text += f" ({(value.date() - day).days:+d}d)"
        return text

    return _render(
        request,
        "schedule.html",
        plans=plans,
        local=local,
        now=now,
        shown=SLOTS_SHOWN,
        tzname=station.timezone,
    )


# --- login ----------------------------------------------------------------------------------


def login_page(request: Request) -> Response:
    return _render(
        request, "login.html", error=None, next=_safe_next(request.query_params.get("next"))
    )


async def login_submit(request: Request) -> Response:
    web = _web(request)
    form = await _form(request)
    target = _safe_next(form.get("next"))
    if not auth.csrf_ok(request.session, form.get(auth.CSRF_FIELD)):
        return PlainTextResponse("refused: the form's CSRF token is missing or wrong", 403)
    from starlette.concurrency import run_in_threadpool

    try:  # argon2 takes ~50 ms of CPU: off the event loop
        await run_in_threadpool(auth.check_login, web.config.web, form.get("secret", ""))
    except auth.LoginError as error:
        log.warning("web login refused from %s", request.client)
        return _render(request, "login.html", code=401, error=str(error), next=target)
    request.session.clear()  # a fresh session (and CSRF token) after a login
    request.session[auth.OPERATOR] = web.clock.now().isoformat()
    auth.csrf_token(request.session)
    return RedirectResponse(target, 303)


async def logout(request: Request) -> Response:
    form = await _form(request)
    if not auth.csrf_ok(request.session, form.get(auth.CSRF_FIELD)):
        return PlainTextResponse("refused: the form's CSRF token is missing or wrong", 403)
    request.session.clear()
    return RedirectResponse("/", 303)


# --- the app --------------------------------------------------------------------------------


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    env = templates.env
    env.autoescape = True
    env.filters["bytes"] = lambda n: "—" if _absent(n) else format_bytes(float(n))
    env.filters["seconds"] = lambda s: "—" if _absent(s) else format_seconds(float(s))
    env.filters["quote"] = lambda s: quote(str(s), safe="")
    return templates


def _absent(value: Any) -> bool:
    """None, or a key the status did not have (a Jinja2 ``Undefined``)."""
    from jinja2 import Undefined

    return value is None or isinstance(value, Undefined)


def create_app(
    config: StationConfig,
    *,
    home: StationHome | None = None,
    db: Database | None = None,
    control: StationControl | None = None,
    clock: Clock | None = None,
    battery: Callable[[], dict[str, Any] | None] | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    session_secret: str | None = None,
) -> Starlette:
    """The web page of the station ``config``.

    ``home``/``db``: the station home and its database (default: the config's, opened
    without migrating); ``control``: the running station (default: a
    :class:`~fieldstation.runtime.client.ControlClient` on the home's control socket);
    ``battery``: a reader of the battery (default: none); ``extra_routes``: more routes (the
    live view); ``session_secret``: the cookie-signing key (default: the home's ``web.key``,
    :func:`~fieldstation.web.auth.session_key`).
    """
    home = home or StationHome(config.home_path())
    if db is None:
        from fieldstation.store.db import open_database

        db = open_database(home.database, migrate=False)
    if control is None:
        from fieldstation.runtime.client import ControlClient

        control = ControlClient(home.control_socket, timeout=10.0)
    state = WebState(
        config=config,
        home=home,
        db=db,
        control=control,
        clock=clock or SystemClock(),
        spectrograms=SpectrogramCache(
            home.root / "cache" / "spectrograms", config.web.spectrogram_cache
        ),
        login_required=not is_loopback(config.web.host),
        templates=_templates(),
        battery=battery or (lambda: None),
    )
    routes: list[BaseRoute] = [
        Route("/", status_page),
        Route("/jobs/{name}/{action}", job_action, methods=["POST"]),
        Route("/recordings", recordings_page),
        Route("/recordings/{id:int}", recording_page),
        Route("/recordings/{id:int}/audio", recording_audio),
        Route("/recordings/{id:int}/download", recording_download),
        Route("/recordings/{id:int}/spectrogram.png", recording_spectrogram),
        Route("/recordings/{id:int}/thumbnail.jpg", recording_thumbnail),
        Route("/detections", detections_page),
        Route("/detections.csv", detections_csv),
        Route("/detections/{id:int}/spectrogram.png", detection_spectrogram),
        Route("/detections/{id:int}/clip.wav", detection_clip),
        Route("/schedule", schedule_page),
        Route("/login", login_page),
        Route("/login", login_submit, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        *extra_routes,
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [
        # the Host header must name this page: a site rebinding its DNS name to the
        # station's address (DNS rebinding) is refused before anything else runs
        Middleware(TrustedHostMiddleware, allowed_hosts=config.web.trusted_hosts),
        Middleware(
            SessionMiddleware,
            secret_key=session_secret or auth.session_key(home.root),
            session_cookie=f"fieldstation-{config.station.id}",
            max_age=int(config.web.session_max_age),
            same_site="strict",
            https_only=False,
        ),
        Middleware(LoginGate, required=state.login_required),
    ]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.web = state
    return app


def new_token() -> str:
    """A random token for ``web.token`` (32 URL-safe characters)."""
    return secrets.token_urlsafe(24)
