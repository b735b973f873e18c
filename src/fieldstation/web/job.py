"""The ``web`` job: the station's page served by uvicorn in its own supervised process.

The supervisor starts it like a recorder (a process job through the fork server, restarted
with backoff when it crashes; decision record 0090), so a busy page (a spectrogram render, a
large CSV) never takes CPU time or the GIL from the supervisor or the recorders, and a crash
of the page never touches them.

It costs no CPU while nobody looks: uvicorn's own loop wakes ten times a second to refresh
its ``Date`` header and check for exit (:meth:`uvicorn.Server.main_loop`); :class:`QuietServer`
sends no ``Date`` header and sleeps on an event instead, so an idle page blocks in
``epoll_wait`` with no timer. uvicorn runs in a thread of the job (uvicorn takes over signal
handlers only in the main thread), the main thread waits for the job's stop.

The listening socket is bound before uvicorn starts: a port in use is an ``OSError`` (a
transient fault: retried with backoff, the other station may go away); a permission
refused (a port below 1024) or an address this host does not have is a
:class:`~fieldstation.job.ConfigurationError` naming ``web.port`` / ``web.host``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
from collections.abc import Sequence
from typing import Any

from fieldstation.job import ConfigurationError, JobContext

__all__ = ["QuietServer", "bind", "run_web"]

log = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv4 or IPv6). Raises ``OSError`` when the port
    is in use, :class:`ConfigurationError` when the address or port cannot be used here."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ConfigurationError(f"web.host {host!r} cannot be resolved: {error}") from error
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        if error.errno in (errno.EACCES, errno.EPERM):
            raise ConfigurationError(
                f"web.port {port}: permission refused ({error.strerror}); use a port above 1023"
            ) from error
        if error.errno == errno.EADDRNOTAVAIL:
            raise ConfigurationError(
                f"web.host {host!r} is not an address of this machine ({error.strerror})"
            ) from error
        raise OSError(
            error.errno, f"web: cannot listen on {host}:{port}: {error.strerror}"
        ) from None
    sock.set_inheritable(False)
    return sock


def _server_class() -> type[Any]:
    import uvicorn

    class _Quiet(uvicorn.Server):
        """uvicorn's server without its 10 Hz tick: waits for :meth:`request_exit`."""

        def __init__(self, config: uvicorn.Config) -> None:
            super().__init__(config)
            self._exit: asyncio.Event | None = None
            self._loop: asyncio.AbstractEventLoop | None = None
            self._lock = threading.Lock()
            self._exit_requested = False

        async def main_loop(self) -> None:
            await self.on_tick(0)  # sets the default headers once (no Date: it would go stale)
            with self._lock:
                self._loop = asyncio.get_running_loop()
                self._exit = asyncio.Event()
                if self._exit_requested:
                    self._exit.set()
            await self._exit.wait()

        def request_exit(self) -> None:
            """Stop serving (from any thread)."""
            self.should_exit = True
            with self._lock:
                self._exit_requested = True
                if self._loop is not None and self._exit is not None:
                    self._loop.call_soon_threadsafe(self._exit.set)

    return _Quiet


def QuietServer(app: Any, **options: Any) -> Any:  # noqa: N802 - builds the class lazily
    """A uvicorn server of ``app`` that is idle when nobody connects (see the module doc).
    ``options`` go to ``uvicorn.Config``."""
    import uvicorn

    config = uvicorn.Config(
        app,
        loop="asyncio",
        http="h11",
        ws="none",
        lifespan="off",
        log_config=None,
        access_log=False,
        date_header=False,
        server_header=False,
        timeout_graceful_shutdown=3,
        **options,
    )
    return _server_class()(config)


def extra_routes(ctx: JobContext) -> Sequence[Any]:
    """Routes added to the page by other modules: the live view's (:mod:`fieldstation.web.live`:
    ``/live``, its event stream and a camera's latest frame), behind the same log-in rules."""
    from fieldstation.web.live import live_routes

    return live_routes(ctx.home, ctx.config)


def run_web(ctx: JobContext) -> None:
    """Serve the page on ``web.host:web.port`` until ``ctx.stop`` is set.

    Reports ``listening`` (with ``url``) once the socket is bound. Raises
    :class:`ConfigurationError` for an unusable address (see the module doc), ``OSError``
    for a port in use, and re-raises what ended uvicorn's thread.
    """
    from fieldstation.health.battery import Ina219Battery
    from fieldstation.web.app import create_app

    web = ctx.config.web
    sock = bind(web.host, web.port)
    battery = Ina219Battery(ctx.config.battery, ctx.clock) if ctx.config.battery.enabled else None
    app = create_app(
        ctx.config,
        home=ctx.home,
        db=ctx.db,
        clock=ctx.clock,
        battery=battery.read_dict if battery is not None else None,
        extra_routes=extra_routes(ctx),
    )
    server = QuietServer(app)
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as error:  # SystemExit from uvicorn's startup included
            failure.append(error)
        finally:
            ctx.stop.set()  # the page is down: let the job end (and be restarted)

    thread = threading.Thread(target=serve, name="uvicorn", daemon=True)
    thread.start()
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    log.info("web page at %s", url)
    ctx.progress("listening", {"url": url})
    try:
        ctx.stop.wait()
    finally:
        server.request_exit()
        thread.join(10.0)
        sock.close()
    if failure:
        raise RuntimeError(f"the web server stopped: {failure[0]!r}") from failure[0]
    if not thread.is_alive() and not server.started:
        raise RuntimeError("the web server did not start (see its log)")
