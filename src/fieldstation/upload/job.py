"""The ``upload`` thread job: queue what ``[upload]`` chooses, send what is due, resumably.

One turn (:meth:`UploadJob.run_once`): insert an ``uploads`` row for each present, processed
recording the selection chooses that has none; then send the due rows oldest first through
:class:`~fieldstation.upload.client.TusClient`, recording each offset the hub acknowledges;
a row becomes ``sent`` only when the hub confirmed the whole file by its sha256. A failed
row waits ``backoff_delay(attempts, retry_initial, retry_max)`` seconds (stored in
``next_attempt_at``, so a restart keeps it). A recording whose file is gone becomes
``missing``. Delivery is at-least-once: the hub keys uploads by their id, so sending one
again after a crash costs bytes, never a duplicate file.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
import tarfile
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from fieldstation.backoff import backoff_delay
from fieldstation.clock import Clock
from fieldstation.config import StationConfig
from fieldstation.home import StationHome, fsync_dir
from fieldstation.store import Database
from fieldstation.store.models import Upload
from fieldstation.store.uploads import UploadSelection, due_uploads, queue_chosen
from fieldstation.upload.client import TusClient, UploadFailed, UploadFile, UploadStopped

__all__ = ["UploadJob"]

log = logging.getLogger(__name__)

MEDIA_TYPES = {
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
    ".gz": "application/gzip",
}


def media_type(path: str) -> str:
    """The MIME type the hub records (the dashboard plays ``audio/*``)."""
    suffix = Path(path).suffix.lower()
    return MEDIA_TYPES.get(suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


class UploadJob:
    """Uploads what ``config.upload`` chooses to the hub. ``transport``: an httpx transport
    (tests). Raises ValueError when the station has no ``[upload]``."""

    def __init__(
        self,
        config: StationConfig,
        db: Database,
        home: StationHome,
        clock: Clock,
        *,
        transport: Any = None,
    ) -> None:
        if config.upload is None:
            raise ValueError("the upload job needs an [upload] section in the station file")
        self.config = config
        self.upload = config.upload
        self.db = db
        self.home = home
        self.clock = clock
        self.selection = UploadSelection.of(config.upload)
        self.transport = transport
        self._client: TusClient | None = None

    def client(self) -> TusClient:
        """The HTTP client, made on first use (the token is read then: SecretError)."""
        if self._client is None:
            cfg = self.upload
            verify: bool | str = str(cfg.ca_file) if cfg.ca_file else cfg.verify
            self._client = TusClient(
                cfg.url,
                cfg.token.reveal(),
                self.config.station.id,
                timeout=cfg.timeout,
                verify=verify,
                transport=self.transport,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def run_once(self, stop: threading.Event | None = None) -> int:
        """Queue new recordings, then send every due row (until ``stop``); returns how many
        were confirmed by the hub. Database errors propagate."""
        now = self.clock.now()
        with self.db.session() as session:
            queued = queue_chosen(session, self.selection, now)
        if queued:
            log.info("upload: %d recording%s queued", queued, "" if queued == 1 else "s")
        sent = 0
        with self.db.session() as session:
            due = [row.id for row in due_uploads(session, now, limit=100)]
        for row_id in due:
            if stop is not None and stop.is_set():
                break
            sent += self._send(row_id, stop)
        return sent

    def _file(self, row: Upload) -> UploadFile | None:
        """The file of ``row`` (a log bundle is made now); None when it is gone."""
        if row.kind == "log_bundle" and row.path is None:
            row.path = self._bundle(row.upload_id)
            path = self.home.root / row.path
            row.bytes, row.sha256 = path.stat().st_size, _sha256(path)
        assert row.path is not None
        path = self.home.root / row.path
        if not path.is_file() or row.bytes is None or row.sha256 is None:
            return None
        metadata = {"filename": path.name, "kind": row.kind, "media_type": media_type(row.path)}
        if row.recording_id is not None:
            metadata["recording_id"] = str(row.recording_id)
        return UploadFile(path, row.upload_id, row.bytes, row.sha256, metadata)

    def _bundle(self, upload_id: str) -> str:
        """A ``.tar.gz`` of ``logs/`` under ``uploads/``, fsynced; its path (home-relative)."""
        folder = self.home.root / "uploads"
        folder.mkdir(exist_ok=True)
        relative = f"uploads/logs-{upload_id}.tar.gz"
        with tarfile.open(self.home.root / relative, "w:gz") as archive:
            if self.home.logs.is_dir():
                archive.add(self.home.logs, arcname="logs")
        with (self.home.root / relative).open("rb") as handle:
            os.fsync(handle.fileno())
        fsync_dir(folder)
        return relative

    def _send(self, row_id: int, stop: threading.Event | None = None) -> int:
        with self.db.session() as session:
            row = session.get(Upload, row_id)
            if row is None or row.state != "pending":
                return 0
            file = self._file(row)
            if file is None:
                row.state, row.last_error = "missing", "the file is gone"
                log.warning("upload %s: file %s is gone", row.upload_id, row.path)
                return 0

        def acknowledged(offset: int) -> None:
            with self.db.session(durable=False) as session:
                stored = session.get(Upload, row_id)
                if stored is not None and stored.offset != offset:
                    stored.offset = offset

        stopping = (lambda: False) if stop is None else stop.is_set  # a tick for liveness too
        try:
            self.client().send(file, acknowledged, stopping)
        except UploadStopped:
            return 0
        except UploadFailed as error:
            with self.db.session() as session:
                stored = session.get(Upload, row_id)
                assert stored is not None
                stored.attempts += 1
                delay = backoff_delay(
                    stored.attempts, self.upload.retry_initial, self.upload.retry_max
                )
                stored.next_attempt_at = self.clock.now() + timedelta(seconds=delay)
                stored.last_error = str(error)
            log.warning("upload %s: %s; retry in %.0f s", file.upload_id, error, delay)
            return 0
        with self.db.session() as session:
            stored = session.get(Upload, row_id)
            assert stored is not None
            stored.state, stored.offset, stored.sent_at = "sent", file.length, self.clock.now()
            stored.last_error = None
            if stored.kind == "log_bundle":
                file.path.unlink(missing_ok=True)
        log.info("upload %s: %s confirmed by the hub", file.upload_id, file.path.name)
        return 1

    def run(self, stop: threading.Event) -> None:
        """Turns every ``[upload] interval`` seconds until ``stop``; a turn that fails (database,
        unreadable token) is logged and retried on the next."""
        while not stop.is_set():
            try:
                self.run_once(stop)
            except Exception:
                log.exception("upload turn failed; retrying in %.0f s", self.upload.interval)
            if self.clock.wait(stop, self.upload.interval):
                return
