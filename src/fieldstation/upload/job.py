"""The ``upload`` thread job: queue what ``[upload]`` chooses, send what is due, resumably.

One turn (:meth:`UploadJob.run_once`): insert an ``uploads`` row for each present, processed
recording the selection chooses that has none; then send the due rows oldest first through
:class:`~fieldstation.upload.client.TusClient`, recording each offset the hub acknowledges;
a row becomes ``sent`` only when the hub confirmed the whole file by its sha256. A failed
row waits ``backoff_delay(attempts, retry_initial, retry_max)`` seconds (stored in
``next_attempt_at``, so a restart keeps it). A recording whose file is gone becomes
``missing``. Delivery is at-least-once: the hub keys uploads by their id, so sending one
again after a crash costs bytes, never a duplicate file.

A try can also end a row for good, with one warning event (source ``upload``): the hub
refused it for a reason retrying will not fix (:data:`~fieldstation.upload.client.PERMANENT`:
``refused``, event ``upload_refused`` naming the setting to fix, once per HTTP status until an
upload succeeds); the hub found another sha256 and the file, hashed again, no longer matches
its recorded sha256 (``corrupt``, ``upload_corrupt``; when it still matches, the row retries);
the row is older than ``[upload] max_age`` or failed ``max_attempts`` times (``expired``,
``upload_expired``). A final row no longer protects its recording from retention. The token is
read at each turn: at start and when it changed, rows refused with 401/403 are queued again.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
import tarfile
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fieldstation.backoff import backoff_delay
from fieldstation.clock import Clock
from fieldstation.config import StationConfig
from fieldstation.config.units import format_seconds
from fieldstation.home import StationHome, fsync_dir
from fieldstation.store import Database
from fieldstation.store.events import Severity, record_event
from fieldstation.store.models import Upload
from fieldstation.store.uploads import (
    UploadSelection,
    due_uploads,
    queue_chosen,
    requeue_refused,
)
from fieldstation.upload.client import (
    CHECKSUM_MISMATCH,
    TusClient,
    UploadFailed,
    UploadFile,
    UploadStopped,
)

__all__ = ["UploadJob"]

log = logging.getLogger(__name__)

EVENT_SOURCE = "upload"
TOKEN_STATUSES = (401, 403)
"""Refusals of the station's token: a changed token queues their rows again."""
FIX = {
    400: "[upload] url (is it a fieldstation hub's upload endpoint?)",
    401: "[upload] token (make one with 'fieldstation hub token add STATION')",
    403: "[upload] token (make one with 'fieldstation hub token add STATION')",
    404: "[upload] url, or enable [uploads] on the hub",
    405: "[upload] url (is it a fieldstation hub's upload endpoint?)",
    413: "[upload] select (choose smaller files) or the hub's [uploads] max_bytes",
    415: "[upload] url (is it a fieldstation hub's upload endpoint?)",
}
"""The setting to fix for each permanent refusal (named in the ``upload_refused`` event)."""

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


def _hash_or_none(path: Path) -> str | None:
    """The file's sha256, or None when it cannot be read (gone: the next turn says so)."""
    try:
        return _sha256(path)
    except OSError:
        return None


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
        self._token: str | None = None
        self._warned: set[int] = set()
        """HTTP statuses of refusals already reported by an event (until an upload succeeds
        or, for the token's, the token changes)."""

    def client(self) -> TusClient:
        """The HTTP client. The token is read again at each call (SecretError when it
        cannot be): a token read for the first time in this process or changed since (e.g. a
        fixed ``file:`` token) makes a new client, and rows the hub refused for the token
        (401, 403) are tried again."""
        cfg = self.upload
        token = cfg.token.reveal()
        if self._client is not None and token == self._token:
            return self._client
        changed = token != self._token
        self.close()
        verify: bool | str = str(cfg.ca_file) if cfg.ca_file else cfg.verify
        self._client = TusClient(
            cfg.url,
            token,
            self.config.station.id,
            timeout=cfg.timeout,
            verify=verify,
            transport=self.transport,
        )
        self._token = token
        if changed:
            with self.db.session() as session:
                again = requeue_refused(session, TOKEN_STATUSES, self.clock.now())
            self._warned.difference_update(TOKEN_STATUSES)
            if again:
                log.info("upload: the token changed; %d refused upload(s) queued again", again)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def run_once(self, stop: threading.Event | None = None) -> int:
        """Queue new recordings, then send every due row (until ``stop``); returns how many
        were confirmed by the hub. Database errors propagate."""
        now = self.clock.now()
        self.client()  # the token read now: a fixed token re-queues what it refused
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
            self._failed(row_id, file, error)
            return 0
        with self.db.session() as session:
            stored = session.get(Upload, row_id)
            assert stored is not None
            stored.state, stored.offset, stored.sent_at = "sent", file.length, self.clock.now()
            stored.last_error = None
            if stored.kind == "log_bundle":
                file.path.unlink(missing_ok=True)
        self._warned.clear()
        log.info("upload %s: %s confirmed by the hub", file.upload_id, file.path.name)
        return 1

    def _failed(self, row_id: int, file: UploadFile, error: UploadFailed) -> None:
        """Record a failed try: a final state (refused, corrupt, expired) with one warning
        event, or the next attempt after the backoff delay."""
        now = self.clock.now()
        damaged = error.status == CHECKSUM_MISMATCH and _hash_or_none(file.path) not in (
            None,
            file.sha256,
        )  # hashed before the transaction: a large file takes seconds
        with self.db.session() as session:
            stored = session.get(Upload, row_id)
            assert stored is not None
            stored.attempts += 1
            stored.last_error = str(error)
            final, event, severity, message = self._verdict(stored, file, error, now, damaged)
            if final is not None:
                stored.state = final
                if stored.kind == "log_bundle":  # made again if the row is queued again
                    file.path.unlink(missing_ok=True)
                    stored.path = None
                if final == "refused":
                    stored.last_error = f"refused {error.status}: {error}"
                log.warning("upload %s: %s (%s)", file.upload_id, final, error)
                if event is not None:
                    record_event(
                        session,
                        kind=event,
                        source=EVENT_SOURCE,
                        message=message,
                        now=now,
                        station_id=self.config.station.id,
                        destinations=self.config.destinations_for("event"),
                        severity=severity,
                        data={
                            "upload_id": file.upload_id,
                            "recording_id": stored.recording_id,
                            "status": error.status,
                            "error": str(error),
                        },
                    )
                return
            delay = backoff_delay(stored.attempts, self.upload.retry_initial, self.upload.retry_max)
            stored.next_attempt_at = now + timedelta(seconds=delay)
        log.warning("upload %s: %s; retry in %.0f s", file.upload_id, error, delay)

    def _verdict(
        self, row: Upload, file: UploadFile, error: UploadFailed, now: datetime, damaged: bool
    ) -> tuple[str | None, str | None, Severity, str]:
        """(final state or None to retry, event kind or None, severity, event message);
        ``damaged``: the hub found another sha256 and so does the station."""
        what = f"upload of {file.path.name} ({file.upload_id})"
        if error.permanent:
            status = error.status or 0
            setting = FIX.get(status, "[upload] url")
            event = None if status in self._warned else "upload_refused"
            self._warned.add(status)
            return (
                "refused",
                event,
                "warning",
                f"the hub refused the {what} for good: {error}. Fix {setting}; the recording "
                "is no longer kept for the hub (retention may delete it)",
            )
        if damaged:
            return (
                "corrupt",
                "upload_corrupt",
                "warning",
                f"the {what} was not sent: the file on disk no longer matches the sha256 "
                "recorded when it was made (damaged storage?); it will not be retried",
            )
        age = (now - row.created_at).total_seconds()
        cap = self.upload.max_attempts
        if age >= self.upload.max_age or (cap and row.attempts >= cap):
            return (
                "expired",
                "upload_expired",
                "warning",
                f"gave up the {what} after {row.attempts} tries over {format_seconds(age)}: "
                f"{error}. Check the hub ([upload] url, token); [upload] max_age and "
                "max_attempts set how long a station tries",
            )
        return None, None, "info", ""

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
