"""The web page's Host check: Starlette's :class:`TrustedHostMiddleware` decides, this answers.

A request whose ``Host`` header names no host the page answers to (``[web] allowed_hosts`` and
the defaults, :attr:`~fieldstation.config.web.WebConfig.trusted_hosts`) is refused before
anything else runs, so a site whose DNS name was rebound to the station's address (DNS
rebinding) never sees the page. The refusal is a 400 page naming the host received and the
setting to add it to (the operator who reaches the station by a new name, say
``hedge-07.local``, learns the fix from the page itself), and one warning in the log per
distinct host.
"""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["MAX_WARNED", "HostCheck", "refusal_page", "suggested_entry"]

log = logging.getLogger(__name__)

MAX_WARNED = 1000
"""Distinct refused hosts warned about; past this, one last warning and no more (an intruder
sending a new name with each request cannot fill the log or the memory)."""

_PASSED = "fieldstation.host_ok"


def suggested_entry(host: str) -> str:
    """The ``allowed_hosts`` entry for a ``Host`` header value: lower case, without the port
    (``Hedge-07.local:8080`` -> ``hedge-07.local``, ``[fe80::1]:8080`` -> ``fe80::1``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.index("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def refusal_page(host: str | None) -> str:
    """The 400 page's HTML for a refused ``Host`` (None: no Host header); every value shown
    is escaped."""
    if not host:
        received = "<p>The request carried no <code>Host</code> header.</p>"
        fix = ""
    else:
        entry = html.escape(suggested_entry(host))
        received = (
            f"<p>This station's page does not answer to the host <code>{html.escape(host)}"
            "</code> (the <code>Host</code> header of the request).</p>"
        )
        fix = (
            "<p>If that is the name or address you reach the station by, add it to "
            "<code>allowed_hosts</code> in the <code>[web]</code> section of the station "
            f'file, then restart the station:</p><pre>[web]\nallowed_hosts = ["{entry}"]</pre>'
            "<p>(docs/web.md). The check keeps other web sites, whose names may be made to "
            "point at this address, from reading the page.</p>"
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>400 Unknown host</title></head><body><h1>Unknown host</h1>"
        f"{received}{fix}</body></html>"
    )


class HostCheck:
    """ASGI middleware: ``app`` for requests whose Host is one of ``allowed_hosts`` (patterns
    as :class:`TrustedHostMiddleware` takes them; ``["*"]``: any), else the 400
    :func:`refusal_page` and a warning (once per distinct host)."""

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]) -> None:
        self.app = app
        self._check = TrustedHostMiddleware(
            self._passed, allowed_hosts=list(allowed_hosts), www_redirect=False
        )
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    @staticmethod
    async def _passed(scope: Scope, receive: Receive, send: Send) -> None:
        scope[_PASSED] = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        await self._check(scope, receive, _discard)  # Starlette's decision; its answer unused
        if scope.pop(_PASSED, False):
            await self.app(scope, receive, send)
            return
        host = Headers(scope=scope).get("host")
        self._warn(host)
        await HTMLResponse(refusal_page(host), status_code=400)(scope, receive, send)

    def _warn(self, host: str | None) -> None:
        key = suggested_entry(host or "")
        with self._lock:
            if key in self._warned or len(self._warned) > MAX_WARNED:
                return
            self._warned.add(key)
            last = len(self._warned) > MAX_WARNED
        if last:
            log.warning("web: %d hosts refused; further ones are not logged", MAX_WARNED)
        elif host:
            log.warning(
                "web: refused a request for host %r: if the station is reached by that name, "
                "add %r to [web] allowed_hosts",
                host[:200],
                key[:200],
            )
        else:
            log.warning("web: refused a request without a Host header")


async def _discard(message: object) -> None:
    """A ``send`` that drops what it is given."""
