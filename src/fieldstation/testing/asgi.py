"""A real uvicorn server for tests: an ASGI app served in a thread on a free loopback port.

Usage::

    with AsgiServer(app) as server:
        httpx.get(server.url + "/health")
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

__all__ = ["AsgiServer"]


class AsgiServer:
    """Serve ``app`` with uvicorn in a thread on 127.0.0.1 (a free port, bound before the
    thread starts); ``url`` is ``http://127.0.0.1:<port>``, ``port`` the port. Entering waits
    until uvicorn says it started (at most ``start_timeout`` seconds, else ``AssertionError``);
    leaving asks it to exit and joins the thread (graceful shutdown at most 2 s)."""

    def __init__(self, app: Any, *, start_timeout: float = 30.0) -> None:
        import uvicorn

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port: int = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_timeout = start_timeout
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    def __enter__(self) -> AsgiServer:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:  # uvicorn's own flag: no event to wait on
            assert time.monotonic() < deadline, "uvicorn did not start"
            assert self.thread.is_alive(), "uvicorn ended before it started"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.socket.close()
