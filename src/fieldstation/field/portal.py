"""The Wi-Fi setup page: a tiny Starlette app served by uvicorn on the hotspot's address.

``GET /``: the networks seen before the hotspot started, a password field, the last error;
``POST /connect`` (form ``ssid``, ``password``, or ``other`` for a hidden SSID): hands the choice
to the :class:`~.wifi.Provisioner` and says what happens next; ``GET /state``: the
provisioner's snapshot as JSON. No JavaScript, no assets: it must work on any phone.

The socket is bound with ``IP_FREEBIND`` before the hotspot's address exists (NetworkManager
adds 10.42.0.1 a moment after ``nmcli device wifi hotspot`` returns), so the page is up as
soon as the address is. Needs the ``field`` extra (starlette, uvicorn).
"""

from __future__ import annotations

import errno
import html
import logging
import socket
import threading
from typing import Any
from urllib.parse import parse_qs

from fieldstation.job import ConfigurationError

__all__ = ["Portal", "create_app"]

log = logging.getLogger(__name__)

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
"""Linux: bind to an address the host does not have (yet)."""
MAX_FORM = 4096
"""Longest form body accepted, bytes."""

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title}</title></head>
<body style="font-family:sans-serif;max-width:30em;margin:1em auto">
<h1>{title}</h1>
{body}
</body></html>
"""


def _page(title: str, body: str, status: int = 200) -> Any:
    from starlette.responses import HTMLResponse

    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body), status_code=status)


def create_app(provisioner: Any, station: str = "") -> Any:
    """The Starlette app of the page for ``provisioner`` (a :class:`~.wifi.Provisioner`)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    title = f"Wi-Fi for {station}" if station else "Wi-Fi setup"

    async def index(request: Request) -> Any:
        state = provisioner.snapshot()
        rows = "".join(
            f'<p><label><input type="radio" name="ssid" value="{html.escape(n["ssid"])}"> '
            f"{html.escape(n['ssid'])} ({n['signal']} %"
            f"{', open' if not n['security'] else ''})</label></p>"
            for n in state["networks"]
        )
        error = ""
        if state["last_error"]:
            error = f'<p style="color:#b00">Last try failed: {html.escape(state["last_error"])}</p>'
        body = (
            f"{error}<form method=post action=/connect>{rows or '<p>No network seen.</p>'}"
            '<p><label>Other network (name): <input name="other"></label></p>'
            '<p><label>Password: <input type="password" name="password"></label></p>'
            '<p><button type="submit">Connect</button></p></form>'
        )
        return _page(title, body)

    async def connect(request: Request) -> Any:
        raw = await request.body()
        if len(raw) > MAX_FORM:
            return _page(title, "<p>Form too large.</p>", 413)
        form = parse_qs(raw.decode("utf-8", "replace"))
        ssid = (form.get("other", [""])[0] or form.get("ssid", [""])[0]).strip()
        if not ssid or len(ssid.encode()) > 32:
            return _page(title, '<p>Choose a network (1-32 bytes). <a href="/">Back</a></p>', 400)
        provisioner.choose(ssid, form.get("password", [""])[0] or None)
        body = (
            f"<p>Joining <b>{html.escape(ssid)}</b>. This hotspot now closes. If the station "
            "cannot join, the hotspot comes back within a minute with the reason.</p>"
        )
        return _page(title, body, 202)

    async def state(request: Request) -> Any:
        return JSONResponse(provisioner.snapshot())

    return Starlette(
        routes=[
            Route("/", index),
            Route("/connect", connect, methods=["POST"]),
            Route("/state", state),
        ]
    )


class Portal:
    """Serves :func:`create_app` on ``address:port`` in a thread while the hotspot is up."""

    def __init__(self, address: str, port: int, station: str = "") -> None:
        self.address = address
        self.port = port
        self.station = station
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.bound: tuple[str, int] | None = None
        """The address and port actually bound (port 0 picks one)."""

    def start(self, provisioner: Any) -> None:
        """Bind and serve (returns once bound). Raises ``OSError`` when the port is taken,
        :class:`~fieldstation.job.ConfigurationError` when this user may not use the port (a
        port below 1024 without ``CAP_NET_BIND_SERVICE``): that never fixes itself, so the job
        must not be restarted into it."""
        import uvicorn

        self.stop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        # port 0 picks a free port once; a restart (the hotspot back after a failed join)
        # keeps it, so an open page still works
        port = self.bound[1] if self.port == 0 and self.bound is not None else self.port
        try:
            sock.bind((self.address, port))
            sock.listen(16)
        except OSError as error:
            sock.close()
            if error.errno in (errno.EACCES, errno.EPERM):
                raise ConfigurationError(
                    f"field.wifi.port {port}: permission refused ({error.strerror}); use a "
                    "port above 1023 or give the service CAP_NET_BIND_SERVICE"
                ) from error
            raise
        self.bound = sock.getsockname()[:2]
        config = uvicorn.Config(
            create_app(provisioner, self.station),
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
        server = self._server = uvicorn.Server(config)
        # off the main thread uvicorn installs no signal handlers
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="wifi-portal", daemon=True
        )
        self._thread.start()
        self._sock = sock
        log.info("wifi: setup page on http://%s:%d/", *self.bound)

    def stop(self) -> None:
        """Stop serving (waits for the server's thread)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10.0)
            self._sock.close()
        self._server = self._thread = None
