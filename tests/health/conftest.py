"""Helpers of the health tests: a real HTTP ingest endpoint that can go away and come back."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


class HttpIngest:
    """A real HTTP server on ``127.0.0.1:port`` (a free port when 0) accepting outbox batches.

    Every POST is answered 200 and its envelopes are appended to :attr:`messages` (in arrival
    order). :meth:`stop` closes the listening socket (the endpoint is gone: connections are
    refused) and :meth:`start` opens it again on the same port.
    """

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.messages: list[dict[str, Any]] = []
        self.requests = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        ingest = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with ingest._lock:
                    ingest.requests += 1
                    ingest.messages.extend(body["messages"])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> HttpIngest:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ingest"

    def __enter__(self) -> HttpIngest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def http_ingest() -> Iterator[Callable[[int], HttpIngest]]:
    """``http_ingest(port)``: an :class:`HttpIngest` (not started), stopped after the test."""
    made: list[HttpIngest] = []

    def make(port: int = 0) -> HttpIngest:
        made.append(HttpIngest(port))
        return made[-1]

    yield make
    for ingest in made:
        ingest.stop()
