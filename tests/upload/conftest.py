"""Fixtures of the upload tests: a real hub (uvicorn on loopback, fleet database on SQLite,
upload endpoint), a TCP proxy that cuts connections after N bytes, station rows with real
files."""

from __future__ import annotations

import contextlib
import hashlib
import random
import socket
import threading
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fieldstation.clock import VirtualClock
from fieldstation.config import StationConfig, parse_config, template_text
from fieldstation.home import StationHome
from fieldstation.hub.db import HubDatabase, open_hub_database
from fieldstation.hub.http import create_app
from fieldstation.hub.tokens import add_token
from fieldstation.hub.uploads import UploadsConfig, UploadService, make_upload_service
from fieldstation.store import Database
from fieldstation.store.deployments import start_deployment
from fieldstation.testing.asgi import AsgiServer
from fieldstation.testing.rows import add_detection, add_model_run, add_recording

STATION = "default"
TOKEN_VARIABLE = "FIELDSTATION_TEST_UPLOAD_TOKEN"


@dataclass
class Hub:
    db: HubDatabase
    service: UploadService
    url: str
    """Upload endpoint, e.g. http://127.0.0.1:PORT/uploads."""
    port: int
    token: str
    app: Any

    def upload(self, path: Path, upload_id: str, metadata: dict[str, str]) -> None:
        """Send the file ``path`` as station ``default`` with the station's client (tus)."""
        from fieldstation.upload.client import TusClient, UploadFile

        data = path.read_bytes()
        client = TusClient(self.url, self.token, STATION)
        try:
            client.send(
                UploadFile(path, upload_id, len(data), hashlib.sha256(data).hexdigest(), metadata)
            )
        finally:
            client.close()


def start_hub(
    tmp_path: Path,
    config: UploadsConfig | None = None,
    *,
    s3_client: Any = None,
    dashboard: bool = False,
    database: str | None = None,
) -> tuple[Hub, AsgiServer]:
    db = open_hub_database(database or f"sqlite:///{tmp_path / 'hub.db'}")
    service = make_upload_service(
        db, config or UploadsConfig(), tmp_path / "hub", s3_client=s3_client
    )
    board = None
    if dashboard:
        from fieldstation.hub.alerts import AlertRules
        from fieldstation.hub.web import Dashboard

        board = Dashboard(secret="s" * 40, rules=AlertRules(), uploads=service)
    app = create_app(db, uploads=service, dashboard=board)
    server = AsgiServer(app)
    token = add_token(db, STATION)
    hub = Hub(db, service, f"{server.url}/uploads", server.port, token, app)
    return hub, server


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    """A running hub with a disk store under ``tmp_path/hub``; the station's token in
    :data:`TOKEN_VARIABLE`."""
    made, server = start_hub(tmp_path)
    monkeypatch.setenv(TOKEN_VARIABLE, made.token)
    with server:
        yield made
    made.db.dispose()


@dataclass
class CuttingProxy:
    """A TCP proxy to ``target_port`` that drops each of its first ``len(cuts)`` connections
    after forwarding ``cuts[k]`` bytes from the client (both sides closed at once). Later
    connections pass whole. ``on_cut(k)`` runs (in the proxy's thread) after cut ``k``."""

    target_port: int
    cuts: list[int]
    on_cut: Callable[[int], None] = lambda _k: None
    done: int = 0
    refusing: bool = False
    """While True, every connection is closed at once (the hub looks unreachable)."""
    _listener: socket.socket = field(init=False)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closing: bool = False

    def __post_init__(self) -> None:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            with self._lock:
                budget = self.cuts[self.done] if self.done < len(self.cuts) else None
                index = self.done
                if budget is not None:
                    self.done += 1
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            thread = threading.Thread(
                target=self._pipe, args=(client, upstream, budget, index), daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _pipe(
        self, client: socket.socket, upstream: socket.socket, budget: int | None, index: int
    ) -> None:
        closed = threading.Event()

        def back() -> None:  # hub -> station, whole
            try:
                while data := upstream.recv(65536):
                    client.sendall(data)
            except OSError:
                pass
            closed.set()

        threading.Thread(target=back, daemon=True).start()
        sent, cut = 0, False
        try:
            while not closed.is_set():
                data = client.recv(65536)
                if not data:
                    break
                if budget is not None and sent + len(data) >= budget:
                    upstream.sendall(data[: budget - sent])
                    cut = True
                    break
                upstream.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for end in (client, upstream):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()
        if cut:
            self.on_cut(index)

    def close(self) -> None:
        self._closing = True
        self._listener.close()


@pytest.fixture
def make_proxy() -> Iterator[Callable[..., CuttingProxy]]:
    made: list[CuttingProxy] = []

    def build(target_port: int, cuts: list[int], **kwargs: Any) -> CuttingProxy:
        proxy = CuttingProxy(target_port, cuts, **kwargs)
        made.append(proxy)
        return proxy

    yield build
    for proxy in made:
        proxy.close()


def station_config(home: StationHome, **upload: Any) -> StationConfig:
    """The embedded default station in ``home`` with an ``[upload]`` section (and a
    retention that would delete every processed recording older than a day)."""
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home.root)
    data["upload"] = {"token": f"env:{TOKEN_VARIABLE}", "retry_initial": 1, **upload}
    data["retention"] = {"default": {"keep": "days", "days": 1}, "protect_unsent": False}
    return parse_config(data)


class Rows:
    """Recordings with real files (random bytes) and detections, written straight in."""

    def __init__(self, db: Database, home: StationHome, clock: VirtualClock) -> None:
        self.db, self.home, self.clock = db, home, clock
        self.rng = random.Random(17)
        with db.session() as session:
            self.deployment_id = start_deployment(
                session,
                station_id=STATION,
                config_hash="x" * 64,
                config={},
                version="test",
                now=clock.now(),
            ).id
        self.count = 0

    def recording(self, size: int = 1000, *, started_at: datetime | None = None) -> int:
        self.count += 1
        start = started_at or self.clock.now() + timedelta(seconds=10 * self.count)
        rel = f"data/mic/{start:%Y-%m-%d}/{self.count:06d}.wav"
        path = self.home.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with path.open("wb") as handle:
            left = size
            while left > 0:
                block = self.rng.randbytes(min(left, 1 << 20))
                handle.write(block)
                digest.update(block)
                left -= len(block)
        with self.db.session() as session:
            return add_recording(
                session,
                deployment_id=self.deployment_id,
                started_at=start,
                path=rel,
                bytes=size,
                sha256=digest.hexdigest(),
                state="processed",
                processed_at=start,
            ).id

    def detection(self, recording_id: int, label: str, score: float = 0.9) -> None:
        with self.db.session() as session:
            run = add_model_run(session, recording_id, started_at=self.clock.now())
            add_detection(session, run, label=label, score=score, detected_at=self.clock.now())


@pytest.fixture
def rows(db: Database, home: StationHome, clock: VirtualClock) -> Rows:
    return Rows(db, home, clock)


@pytest.fixture
def make_station(home: StationHome) -> Callable[..., StationConfig]:
    """``make_station(url=..., select=...)``: :func:`station_config` in ``home``."""
    return lambda **upload: station_config(home, **upload)


@pytest.fixture
def make_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Hub]]:
    """``make_hub(UploadsConfig(...), s3_client=...)``: a running hub like :func:`hub`."""
    running: list[tuple[Hub, AsgiServer]] = []

    def build(config: UploadsConfig | None = None, **kwargs: Any) -> Hub:
        made, server = start_hub(tmp_path, config, **kwargs)
        monkeypatch.setenv(TOKEN_VARIABLE, made.token)
        server.__enter__()
        running.append((made, server))
        return made

    yield build
    for made, server in running:
        server.__exit__()
        made.db.dispose()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture
def browser(require: Any) -> Iterator[Any]:
    """A headless Chromium driven by Selenium (skips, or fails under FIELDSTATION_REQUIRE,
    without Debian's chromium and chromium-driver)."""
    from fieldstation.testing.browser import chromium_driver

    with chromium_driver(require, size=(1400, 900)) as driver:
        yield driver
