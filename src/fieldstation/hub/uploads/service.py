"""The upload endpoint's state: rows, partial files, offsets, the sha256 check, the store,
expiry of abandoned uploads (protocol: :mod:`fieldstation.hub.uploads`)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import desc, select

from fieldstation.clock import Clock
from fieldstation.hub.db import HubDatabase
from fieldstation.hub.models import UploadedFile
from fieldstation.hub.uploads.config import UploadsConfig
from fieldstation.hub.uploads.stores import DiskStore, S3Store

__all__ = [
    "CHECKSUM_MISMATCH",
    "STORED_HEADER",
    "SWEEP_EVERY",
    "TUS_VERSION",
    "WRITE_BLOCK",
    "UploadError",
    "UploadService",
    "encode_metadata",
    "file_response",
    "make_upload_service",
    "parse_metadata",
    "recent_uploads",
]

log = logging.getLogger(__name__)

TUS_VERSION = "1.0.0"
STORED_HEADER = "Fieldstation-Stored"
CHECKSUM_MISMATCH = 460
"""tus checksum extension: the bytes received do not match the declared checksum."""
WRITE_BLOCK = 1024 * 1024
"""Bytes gathered before one write to the partial file."""
SWEEP_EVERY = 3600.0
"""Seconds between two sweeps of abandoned partial uploads (made by a create)."""
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class UploadError(Exception):
    """A request the endpoint refuses: ``status`` and a message saying what to fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_metadata(header: str) -> dict[str, str]:
    """tus ``Upload-Metadata``: ``key base64,key base64`` → dict; raises UploadError (400)."""
    values: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in header.split(","))):
        key, _, encoded = pair.partition(" ")
        try:
            values[key] = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise UploadError(400, f"Upload-Metadata: {key!r} is not base64 UTF-8") from None
    return values


def encode_metadata(values: dict[str, str]) -> str:
    """The ``Upload-Metadata`` header of ``values`` (tus: ``key base64``, comma-separated)."""
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


@dataclass
class UploadService:
    """The endpoint's state: database, store, folder of partial files, size limit."""

    db: HubDatabase
    store: DiskStore | S3Store
    partial_root: Path
    max_bytes: int
    path: str = "/uploads"
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    partial_max_age: float = 7 * 86400.0
    """Seconds after its last byte that an unfinished upload is dropped (:meth:`expire`)."""
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    _hashes: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    """(bytes hashed, running sha256) of uploads whose bytes all passed through this process
    in order: the check at the end needs no second read of the file. Entries of an upload
    are dropped when it is stored, fails its checksum or expires."""
    _swept_at: datetime | None = None

    def partial(self, station: str, upload_id: str) -> Path:
        return self.partial_root / station / upload_id

    def lock(self, station: str, upload_id: str) -> asyncio.Lock:
        return self._locks.setdefault((station, upload_id), asyncio.Lock())

    def forget(self, station: str, upload_id: str) -> None:
        """Drop the in-memory state (lock, running hash) of an upload that is over."""
        self._locks.pop((station, upload_id), None)
        self._hashes.pop((station, upload_id), None)

    def expire(self) -> int:
        """Drop the unfinished uploads whose last byte arrived more than
        :attr:`partial_max_age` seconds ago (by ``now``): partial file, row and in-memory
        state; returns how many. A station that comes back creates its upload anew (its
        ``HEAD`` answers 404). Blocking: run it in a thread."""
        now = self.now()
        self._swept_at = now
        cutoff = now - timedelta(seconds=self.partial_max_age)
        dropped = 0
        with self.db.session() as session:
            candidates = session.scalars(
                select(UploadedFile).where(
                    UploadedFile.state == "partial", UploadedFile.created_at < cutoff
                )
            ).all()
            for row in candidates:
                partial = self.partial(row.station, row.upload_id)
                try:
                    if partial.stat().st_mtime > cutoff.timestamp():
                        continue  # bytes arrived since: still alive
                except FileNotFoundError:
                    pass
                lock = self._locks.get((row.station, row.upload_id))
                if lock is not None and lock.locked():
                    continue  # a PATCH is receiving it right now
                partial.unlink(missing_ok=True)
                session.delete(row)
                self.forget(row.station, row.upload_id)
                dropped += 1
        if dropped:
            log.info("uploads: %d abandoned partial upload(s) dropped", dropped)
        return dropped

    def run(self, stop: threading.Event, clock: Clock) -> None:
        """Sweep abandoned uploads (:meth:`expire`) at once, then every :data:`SWEEP_EVERY`
        seconds of ``clock`` until ``stop`` (``hub run``'s thread, so that partial files
        expire even when no station creates an upload); a failed sweep is logged and tried
        again at the next."""
        while not stop.is_set():
            try:
                self.expire()
            except Exception:
                log.exception("uploads: sweep of abandoned uploads failed")
            if clock.wait(stop, SWEEP_EVERY):
                return

    def maybe_expire(self) -> int:
        """:meth:`expire` when the last sweep is :data:`SWEEP_EVERY` seconds old (or none
        ran yet in this process); 0 otherwise."""
        last = self._swept_at
        if last is not None and (self.now() - last).total_seconds() < SWEEP_EVERY:
            return 0
        return self.expire()

    def row(self, station: str, upload_id: str) -> UploadedFile | None:
        with self.db.session() as session:
            row = session.scalars(
                select(UploadedFile).where(
                    UploadedFile.station == station, UploadedFile.upload_id == upload_id
                )
            ).first()
            if row is not None:
                session.expunge(row)
            return row

    def offset(self, row: UploadedFile) -> int:
        if row.state == "stored":
            return row.length
        try:
            return self.partial(row.station, row.upload_id).stat().st_size
        except FileNotFoundError:
            return 0

    def create(self, meta: dict[str, str], length: int) -> UploadedFile:
        """The row of a new upload (or the existing one); raises UploadError."""
        station, upload_id = meta.get("station", ""), meta.get("upload_id", "")
        sha256 = meta.get("sha256", "").lower()
        if not _ID.match(station) or not _ID.match(upload_id):
            raise UploadError(400, "Upload-Metadata needs 'station' and 'upload_id' (ids)")
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise UploadError(400, "Upload-Metadata needs 'sha256' (64 hex digits)")
        if length > self.max_bytes:
            raise UploadError(413, f"Upload-Length {length} is above the hub's {self.max_bytes}")
        self.maybe_expire()
        existing = self.row(station, upload_id)
        if existing is not None:
            if existing.length != length or existing.sha256 != sha256:
                raise UploadError(409, f"upload {upload_id} exists with another length/sha256")
            return existing
        filename = os.path.basename(meta.get("filename", "")) or upload_id
        recording = meta.get("recording_id")
        row = UploadedFile(
            station=station,
            upload_id=upload_id,
            kind=meta.get("kind", "recording")[:16],
            recording_id=int(recording) if recording and recording.isdigit() else None,
            filename=filename[:255],
            media_type=meta.get("media_type", "application/octet-stream")[:100],
            length=length,
            sha256=sha256,
            state="partial",
            created_at=self.now(),
        )
        partial = self.partial(station, upload_id)
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.touch()
        with self.db.session() as session:
            session.add(row)
            session.flush()
            session.expunge(row)
        return row

    def running_hash(self, station: str, upload_id: str, offset: int) -> Any:
        """The running sha256 of an upload whose first ``offset`` bytes it has seen, or
        None (the file is hashed again at the end)."""
        held = self._hashes.pop((station, upload_id), None)
        if offset == 0:
            return hashlib.sha256()
        if held is not None and held[0] == offset:
            return held[1]
        return None

    def keep_hash(self, station: str, upload_id: str, offset: int, digest: Any) -> None:
        if digest is not None:
            self._hashes[(station, upload_id)] = (offset, digest)

    def finish(self, row: UploadedFile) -> bool:
        """Check the complete partial file's sha256; store it and mark the row ``stored``
        (True), or discard the bytes (False). Blocking: run it in a thread."""
        partial = self.partial(row.station, row.upload_id)
        held = self._hashes.pop((row.station, row.upload_id), None)
        if held is not None and held[0] == row.length:
            digest = held[1]
        else:
            digest = hashlib.sha256()
            with partial.open("rb") as handle:
                while block := handle.read(WRITE_BLOCK):
                    digest.update(block)
        if digest.hexdigest() != row.sha256:
            self._hashes.pop((row.station, row.upload_id), None)
            partial.write_bytes(b"")
            log.warning("upload %s of %s: sha256 mismatch, discarded", row.upload_id, row.station)
            return False
        suffix = Path(row.filename).suffix[:16]
        location = self.store.put(partial, f"{row.station}/{row.upload_id}{suffix}")
        with self.db.session() as session:
            stored = session.get(UploadedFile, row.id)
            assert stored is not None
            stored.state, stored.storage, stored.location = "stored", self.store.kind, location
            stored.stored_at = self.now()
        row.state = "stored"
        return True


def make_upload_service(
    db: HubDatabase, config: UploadsConfig, home: Path, *, s3_client: Any = None
) -> UploadService:
    """The service of ``config`` (folder default ``<home>/uploads``). Raises SecretError
    for S3 keys that cannot be read."""
    folder = (config.folder or home.expanduser() / "uploads").expanduser()
    store: DiskStore | S3Store
    if config.storage == "s3":
        assert config.s3 is not None
        store = S3Store(config.s3, s3_client)
    else:
        store = DiskStore(folder / "files")
    return UploadService(
        db=db,
        store=store,
        partial_root=folder / "partial",
        max_bytes=int(config.max_bytes),
        path=config.path,
        partial_max_age=config.partial_max_age,
    )


def recent_uploads(db: HubDatabase, station: str, limit: int = 20) -> list[dict[str, Any]]:
    """The newest ``limit`` stored uploads of ``station`` (dicts of the row's columns)."""
    with db.session() as session:
        rows = session.scalars(
            select(UploadedFile)
            .where(UploadedFile.station == station, UploadedFile.state == "stored")
            .order_by(desc(UploadedFile.stored_at), desc(UploadedFile.id))
            .limit(limit)
        ).all()
        columns = [c.name for c in UploadedFile.__table__.columns]
        return [{c: getattr(row, c) for c in columns} for row in rows]


def file_response(service: UploadService, station: str, upload_id: str) -> Any:
    """The dashboard's response for a stored file: the disk file with Range support, or a
    redirect to a presigned S3 URL; 404 when there is none."""
    from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse

    row = service.row(station, upload_id)
    if row is None or row.state != "stored" or row.location is None:
        return PlainTextResponse("no such uploaded file", status_code=404)
    if row.storage == "s3" and isinstance(service.store, S3Store):
        return RedirectResponse(service.store.url(row.location, row.media_type), 307)
    if isinstance(service.store, DiskStore):
        return FileResponse(
            service.store.path(row.location), media_type=row.media_type, filename=row.filename
        )
    return PlainTextResponse("file kept in another storage than this hub's", status_code=404)
