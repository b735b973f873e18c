"""The control API: JSON over HTTP/1.1 on the Unix socket ``run/control.sock`` (mode 0600).

Routes (all answers are JSON objects; errors are ``{"error": text}`` with a 4xx/5xx status):

- ``GET /status``: the station status (jobs, outbox depth, disk, deployment, ...).
- ``POST /jobs/<name>/start`` | ``/stop`` | ``/restart``: the job's new snapshot
  (404 for an unknown job). Job names are URL-quoted (``recorder%3Amic``).
- ``GET /logs?job=<name>&lines=<n>``: the last ``n`` lines of the job's log (``station`` for
  the supervisor's own log).
- ``GET /modules``: ``{"pid": PID, "modules": [name, ...]}``, the modules the supervisor's
  process has imported, sorted (what its memory carries: issue 22).
- ``POST /events`` ``{"message": text, "kind": "marker", "data": {...}}``: store an event (a
  mark set with the field button); answers the event.
- ``POST /shutdown`` ``{"reason": text, "poweroff": bool}``: stop the whole station (and run
  ``field.button.poweroff_command`` once it has stopped, when ``poweroff``).
- ``POST /wifi/setup``: start Wi-Fi provisioning (409 when it is not enabled).

Only the owner of the socket may connect (file mode 0600), which is the access control: the
API has no other authentication.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socketserver
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["ControlApi", "ControlServer"]

log = logging.getLogger(__name__)


class ControlApi(Protocol):
    """What the control server asks of the station."""

    def status(self) -> dict[str, Any]: ...

    def start_job(self, name: str) -> dict[str, Any]: ...

    def stop_job(self, name: str) -> dict[str, Any]: ...

    def restart_job(self, name: str) -> dict[str, Any]: ...

    def logs(self, job: str, lines: int) -> list[str]: ...

    def mark_event(self, message: str, kind: str, data: dict[str, Any]) -> dict[str, Any]: ...

    def shutdown(self, reason: str, poweroff: bool) -> dict[str, Any]: ...

    def wifi_setup(self) -> dict[str, Any]: ...


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    api: ControlApi


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("control: " + format, *args)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _guard(self, action: Any) -> None:
        from fieldstation.runtime.supervisor import UnknownJobError

        try:
            status, body = action()
        except UnknownJobError as error:
            status, body = 404, {"error": str(error)}
        except Exception as error:  # reported to the client, logged here
            log.exception("control request %s failed", self.path)
            status, body = 500, {"error": f"{type(error).__name__}: {error}"}
        self._send(status, body)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        parts = urlsplit(self.path)
        api = self.server.api
        if parts.path == "/status":
            self._guard(lambda: (200, api.status()))
        elif parts.path == "/modules":
            self._send(200, {"pid": os.getpid(), "modules": sorted(sys.modules)})
        elif parts.path == "/logs":
            query = parse_qs(parts.query)
            job = query.get("job", ["station"])[0]
            try:
                lines = int(query.get("lines", ["50"])[0])
            except ValueError:
                self._send(400, {"error": "lines must be an integer"})
                return
            self._guard(lambda: (200, {"job": job, "lines": api.logs(job, lines)}))
        else:
            self._send(404, {"error": f"no route GET {parts.path}"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        segments = urlsplit(self.path).path.strip("/").split("/")
        api = self.server.api
        actions = {"start": api.start_job, "stop": api.stop_job, "restart": api.restart_job}
        if len(segments) == 3 and segments[0] == "jobs" and segments[2] in actions:
            action, name = actions[segments[2]], unquote(segments[1])
            self._guard(lambda: (200, action(name)))
        elif segments in (["events"], ["shutdown"], ["wifi", "setup"]):
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("not an object")
            except ValueError as error:
                self._send(400, {"error": f"the body must be a JSON object: {error}"})
                return
            self._guard(lambda: self._field_action(api, segments[0], body))
        else:
            self._send(404, {"error": f"no route POST {self.path}"})

    @staticmethod
    def _field_action(api: ControlApi, route: str, body: dict[str, Any]) -> tuple[int, Any]:
        """``/events``, ``/shutdown``, ``/wifi/setup`` (the field button's actions)."""
        if route == "events":
            message = body.get("message")
            if not isinstance(message, str) or not message:
                return 400, {"error": "an event needs a 'message' (text)"}
            data = body.get("data") or {}
            if not isinstance(data, dict):
                return 400, {"error": "'data' must be an object"}
            return 200, api.mark_event(message, str(body.get("kind") or "marker"), data)
        if route == "shutdown":
            return 200, api.shutdown(str(body.get("reason") or "api"), bool(body.get("poweroff")))
        answer = api.wifi_setup()
        return (200, answer) if "error" not in answer else (409, answer)


POLL_INTERVAL = 2.0
"""Seconds between the server's checks for :meth:`ControlServer.close`."""


class ControlServer:
    """Serves ``api`` on the Unix socket ``path`` in a thread; :meth:`close` stops it."""

    def __init__(self, path: Path, api: ControlApi) -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a stale socket of a dead runtime (we hold the station lock)
        # Bound inside a private (0700) folder, made 0600, then renamed into place: the socket
        # is never reachable by others, and the process umask (shared with the threads that
        # create files meanwhile) is left alone.
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".c") as private:
            staged = Path(private) / "s"
            self._server = _Server(str(staged), _Handler)
            os.chmod(staged, 0o600)
            os.replace(staged, path)
        self._server.api = api
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            # requests wake the server at once; the poll only bounds how long close() waits
            # (each poll is a wake-up: at 0.5 s it was an eighth of the idle station's CPU)
            kwargs={"poll_interval": POLL_INTERVAL},
            name="control",
            daemon=True,
        )

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and remove the socket."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
