"""HTTP ingest (Starlette): what a station's ``http`` output posts.

``POST {path}`` with ``Authorization: Bearer <token>`` (a token of the station named in the
body: ``fieldstation hub token add STATION``) and the body
``{"station": id, "messages": [envelope, ...]}``. Answers:

- 200 ``{"stored", "duplicates", "dead"}`` after the transaction holding every message has
  committed (duplicates: ids already stored; dead: refused envelopes, now dead letters);
- 401 missing or wrong token (the station dead-letters the batch: fix its token);
- 400 a body that is not that JSON object (the station dead-letters the batch with our reason);
- 503 the fleet database is unavailable (the station retries later).

``GET /commands?station=ID`` with the same bearer token: ``{"commands": [wire, ...]}``, the
station's fleet commands not yet accepted (:func:`fieldstation.hub.commands.pending_for_http`;
a station's ``http`` output polls it when its ``commands_url`` is set); 401 without a token
of that station, 400 without ``station``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fieldstation.hub.db import HubDatabase
from fieldstation.hub.store import Incoming, store_batch
from fieldstation.hub.tokens import TokenChecker

__all__ = ["create_app"]

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024 * 1024
"""Largest request body accepted, bytes."""


def create_app(
    db: HubDatabase,
    *,
    path: str = "/ingest",
    dashboard: Any = None,
    uploads: Any = None,
    clock: Any = None,
) -> Any:
    """The Starlette app: ``POST path`` (ingest), ``GET /commands`` (a station's pending
    commands), ``GET /health`` (``ok``), given an
    :class:`fieldstation.hub.uploads.UploadService` the upload endpoint, and, given a
    :class:`fieldstation.hub.web.Dashboard`, the web dashboard (log-in required). ``clock``: a
    :class:`fieldstation.clock.Clock` (default: the dashboard's, else the system's)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    from fieldstation.clock import SystemClock
    from fieldstation.hub.commands import pending_for_http

    tokens = TokenChecker(db)
    clock = clock or (dashboard.clock if dashboard is not None else SystemClock())

    def problem(status: int, message: str, **headers: str) -> Any:
        return PlainTextResponse(message, status_code=status, headers=headers)

    async def ingest(request: Request) -> Any:
        authorization = request.headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return problem(
                401,
                "missing bearer token: set the output's token to one made by "
                "'fieldstation hub token add STATION'",
                **{"WWW-Authenticate": "Bearer"},
            )
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return problem(413, f"body larger than {MAX_BODY} bytes: send smaller batches")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            return problem(400, f"body is not JSON: {error}")
        if not isinstance(data, dict) or not isinstance(data.get("station"), str):
            return problem(400, 'body must be {"station": "<id>", "messages": [...]}')
        station = data["station"]
        messages = data.get("messages")
        if not isinstance(messages, list):
            return problem(400, 'body must be {"station": "<id>", "messages": [...]}')
        if not await run_in_threadpool(tokens.check, station, token.strip()):
            return problem(
                401,
                f"token refused for station {station!r}: make one with "
                f"'fieldstation hub token add {station}' and set it on the station's output",
                **{"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        batch = [
            Incoming(
                json.dumps(message, separators=(",", ":")).encode(),
                f"http:{station}",
                station,
            )
            for message in messages
        ]
        try:
            result = await run_in_threadpool(store_batch, db, batch, via="http")
        except Exception as error:  # the database is away: the station retries the batch
            log.error("fleet database refused an HTTP batch from %r: %s", station, error)
            return problem(503, "fleet database unavailable, retry later", **{"Retry-After": "5"})
        return JSONResponse(
            {"stored": result.stored, "duplicates": result.duplicates, "dead": result.dead}
        )

    async def commands(request: Request) -> Any:
        station = request.query_params.get("station", "")
        authorization = request.headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return problem(401, "missing bearer token", **{"WWW-Authenticate": "Bearer"})
        if not station:
            return problem(400, "give the station: GET /commands?station=<id>")
        if not await run_in_threadpool(tokens.check, station, token.strip()):
            return problem(
                401,
                f"token refused for station {station!r}",
                **{"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        try:
            pending = await run_in_threadpool(pending_for_http, db, station, now=clock.now())
        except Exception as error:  # the database is away: the station polls again
            log.error("fleet database refused the commands of %r: %s", station, error)
            return problem(503, "fleet database unavailable, retry later", **{"Retry-After": "5"})
        return JSONResponse({"commands": pending})

    async def health(_request: Request) -> Any:
        return PlainTextResponse("ok")

    routes: list[Any] = [
        Route(path, ingest, methods=["POST"]),
        Route("/commands", commands, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ]
    middleware: list[Any] = []
    if uploads is not None:
        from fieldstation.hub.uploads import upload_routes

        routes.extend(upload_routes(uploads, tokens.check))
    if dashboard is not None:
        from fieldstation.hub.web import dashboard_routes

        pages, middleware = dashboard_routes(db, dashboard)
        routes.extend(pages)
    return Starlette(routes=routes, middleware=middleware)
