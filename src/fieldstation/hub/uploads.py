"""The hub's upload endpoint: files stations upload, resumably (a subset of tus 1.0).

Protocol (tus 1.0.0 core plus the ``creation`` extension; https://tus.io/protocols/resumable-upload;
every request carries ``Authorization: Bearer <token of the station>`` and
``Tus-Resumable: 1.0.0``):

- ``POST {path}`` with ``Upload-Length`` (bytes) and ``Upload-Metadata`` (tus: ``key
  base64(value)`` pairs, comma-separated) holding ``station``, ``upload_id`` (a UUID the
  station chose), ``sha256`` (hex of the whole file), ``filename``, ``kind`` (``recording``
  or ``log_bundle``), optionally ``recording_id`` and ``media_type``: 201 with ``Location:
  {path}/{station}/{upload_id}`` and ``Upload-Offset``. Idempotent: the same upload again
  answers the same location and its current offset (409 if its length or sha256 differ).
- ``HEAD {path}/{station}/{upload_id}``: 200 with ``Upload-Offset`` (bytes the hub holds,
  durably) and ``Upload-Length``; 404 for an unknown upload.
- ``PATCH {path}/{station}/{upload_id}`` with ``Content-Type: application/offset+octet-stream``
  and ``Upload-Offset`` equal to the hub's offset (else 409): the bytes from there. Bytes
  received before a cut connection are kept (fsynced), so the next PATCH resumes after
  them. When the offset reaches the length, the file's sha256 is checked: a match stores
  the file (disk or S3) and answers 204 with ``Upload-Offset`` and ``Fieldstation-Stored:
  <sha256>``; a mismatch discards the bytes (offset back to 0) and answers 460 (the tus
  checksum extension's "checksum mismatch").
- ``OPTIONS {path}``: 204 with ``Tus-Version``, ``Tus-Extension: creation`` and
  ``Tus-Max-Size``.

Partial files live under ``<upload folder>/partial/``; stored files under
``<upload folder>/files/<station>/`` (``storage = "disk"``) or in an S3-compatible bucket
(``storage = "s3"``, boto3). The dashboard plays stored recordings: a disk file is served
with HTTP Range support (Starlette ``FileResponse``), an S3 object by a redirect to a
presigned URL (S3 serves ranges itself).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fcntl
import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ByteSize, Field, model_validator
from sqlalchemy import desc, select

from fieldstation.config.base import StrictModel
from fieldstation.config.secrets import SecretRef
from fieldstation.config.units import Bytes
from fieldstation.hub.db import HubDatabase
from fieldstation.hub.models import UploadedFile

__all__ = [
    "DiskStore",
    "S3Config",
    "S3Store",
    "UploadService",
    "UploadsConfig",
    "make_upload_service",
    "recent_uploads",
    "upload_routes",
]

log = logging.getLogger(__name__)

TUS_VERSION = "1.0.0"
STORED_HEADER = "Fieldstation-Stored"
CHECKSUM_MISMATCH = 460
"""tus checksum extension: the bytes received do not match the declared checksum."""
WRITE_BLOCK = 1024 * 1024
"""Bytes gathered before one write to the partial file."""
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class S3Config(StrictModel):
    """An S3-compatible bucket (AWS, MinIO, Garage, Ceph...) reached with boto3."""

    bucket: str = Field(min_length=3, description="Bucket name (must exist).")
    prefix: str = Field(default="", description="Key prefix, e.g. 'fieldstation/'.")
    endpoint_url: str | None = Field(
        default=None, description="Endpoint of a non-AWS store, e.g. http://minio:9000."
    )
    region: str | None = Field(default=None, description="Region name (AWS).")
    access_key_id: SecretRef | None = Field(
        default=None, description="'env:NAME' or 'file:PATH'; default: boto3's own chain."
    )
    secret_access_key: SecretRef | None = Field(
        default=None, description="'env:NAME' or 'file:PATH'; default: boto3's own chain."
    )
    url_seconds: int = Field(
        default=3600, ge=60, description="Lifetime of the dashboard's presigned URLs, seconds."
    )


class UploadsConfig(StrictModel):
    """The upload endpoint (``[uploads]`` of the hub config)."""

    enabled: bool = Field(default=True, description="Serve the upload endpoint.")
    path: str = Field(default="/uploads", pattern=r"^/[^{}]*[^/]$", description="Endpoint path.")
    folder: Path | None = Field(
        default=None,
        description="Folder of partial uploads and (storage 'disk') stored files; default "
        "<home>/uploads.",
    )
    storage: Literal["disk", "s3"] = Field(
        default="disk", description="Where complete files go: disk (the folder) or s3."
    )
    s3: S3Config | None = Field(default=None, description="The bucket, with storage = 's3'.")
    max_bytes: Bytes = Field(
        default=ByteSize(4 * 1024**3), description="Largest file accepted (Upload-Length), bytes."
    )

    @model_validator(mode="after")
    def _s3(self) -> UploadsConfig:
        if self.storage == "s3" and self.s3 is None:
            raise ValueError("storage = 's3' needs an [uploads.s3] section with the bucket")
        return self


class DiskStore:
    """Complete files in ``root/<station>/<upload_id><suffix>``."""

    kind = "disk"

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, partial: Path, key: str) -> str:
        """Move ``partial`` (same filesystem) to ``key``; returns the location (``key``)."""
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, target)
        _fsync_dir(target.parent)
        return key

    def path(self, location: str) -> Path:
        return self.root / location


class S3Store:
    """Complete files as objects ``prefix + key`` of an S3 bucket (boto3)."""

    kind = "s3"

    def __init__(self, config: S3Config, client: Any = None) -> None:
        self.config = config
        if client is None:
            import boto3

            client = boto3.client(
                "s3",
                endpoint_url=config.endpoint_url,
                region_name=config.region,
                aws_access_key_id=config.access_key_id.reveal() if config.access_key_id else None,
                aws_secret_access_key=(
                    config.secret_access_key.reveal() if config.secret_access_key else None
                ),
            )
        self.client = client

    def put(self, partial: Path, key: str) -> str:
        """Upload ``partial`` (multipart for large files) and remove it; returns the key."""
        location = self.config.prefix + key
        self.client.upload_file(str(partial), self.config.bucket, location)
        partial.unlink()
        return location

    def url(self, location: str, media_type: str) -> str:
        """A presigned GET URL of the object (valid ``url_seconds``)."""
        return str(
            self.client.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.config.bucket,
                    "Key": location,
                    "ResponseContentType": media_type,
                },
                ExpiresIn=self.config.url_seconds,
            )
        )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    _hashes: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    """(bytes hashed, running sha256) of uploads whose bytes all passed through this process
    in order: the check at the end needs no second read of the file."""

    def partial(self, station: str, upload_id: str) -> Path:
        return self.partial_root / station / upload_id

    def lock(self, station: str, upload_id: str) -> asyncio.Lock:
        return self._locks.setdefault((station, upload_id), asyncio.Lock())

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


def upload_routes(service: UploadService, check_token: Callable[[str, str], bool]) -> list[Any]:
    """The endpoint's Starlette routes; ``check_token(station, token)`` (blocking) says
    whether a bearer token belongs to the station."""
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    base = service.path

    def answer(status: int, message: str = "", **headers: str) -> Response:
        headers = {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store", **headers}
        if status in (204,) or not message:
            return Response(status_code=status, headers=headers)
        return PlainTextResponse(message, status_code=status, headers=headers)

    async def authorized(request: Request, station: str) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        return bool(await run_in_threadpool(check_token, station, token.strip()))

    def refused(station: str) -> Response:
        return answer(
            401,
            f"token refused for station {station!r}: make one with 'fieldstation hub token "
            f"add {station}' and set it as the station's [upload] token",
            **{"WWW-Authenticate": "Bearer"},
        )

    def header_int(request: Request, name: str) -> int:
        try:
            value = int(request.headers.get(name, ""))
        except ValueError:
            raise UploadError(400, f"{name} must be a whole number of bytes") from None
        if value < 0:
            raise UploadError(400, f"{name} must not be negative")
        return value

    async def options(_request: Request) -> Response:
        return answer(
            204,
            **{
                "Tus-Version": TUS_VERSION,
                "Tus-Extension": "creation",
                "Tus-Max-Size": str(service.max_bytes),
            },
        )

    async def create(request: Request) -> Response:
        try:
            meta = parse_metadata(request.headers.get("upload-metadata", ""))
            station = meta.get("station", "")
            if not await authorized(request, station):
                return refused(station)
            length = header_int(request, "upload-length")
            row = await run_in_threadpool(service.create, meta, length)
        except UploadError as error:
            return answer(error.status, str(error))
        return answer(
            201,
            **{
                "Location": f"{base}/{row.station}/{row.upload_id}",
                "Upload-Offset": str(service.offset(row)),
            },
        )

    async def head(request: Request) -> Response:
        station, upload_id = request.path_params["station"], request.path_params["upload_id"]
        if not await authorized(request, station):
            return refused(station)
        row = await run_in_threadpool(service.row, station, upload_id)
        if row is None:
            return answer(404)
        headers = {"Upload-Offset": str(service.offset(row)), "Upload-Length": str(row.length)}
        if row.state == "stored":
            headers[STORED_HEADER] = row.sha256
        return answer(200, **headers)

    async def patch(request: Request) -> Response:
        station, upload_id = request.path_params["station"], request.path_params["upload_id"]
        if not await authorized(request, station):
            return refused(station)
        if request.headers.get("content-type") != "application/offset+octet-stream":
            return answer(415, "Content-Type must be application/offset+octet-stream")
        async with service.lock(station, upload_id):
            row = await run_in_threadpool(service.row, station, upload_id)
            if row is None:
                return answer(404, "unknown upload: create it with POST first")
            offset = service.offset(row)
            try:
                claimed = header_int(request, "upload-offset")
            except UploadError as error:
                return answer(error.status, str(error))
            if row.state == "stored":
                return answer(204, **{"Upload-Offset": str(offset), STORED_HEADER: row.sha256})
            if claimed != offset:
                return answer(409, f"Upload-Offset {claimed} is not the hub's {offset}: HEAD")
            digest = service.running_hash(station, upload_id, offset)
            try:
                offset, status = await _receive(
                    request, service.partial(station, upload_id), offset, digest
                )
            except UploadError as error:
                return answer(error.status, str(error))
            service.keep_hash(station, upload_id, offset, digest)
            if status is None:
                return answer(400, "the connection ended early")  # never read: it is gone
            if offset > row.length:
                await run_in_threadpool(_truncate, service.partial(station, upload_id), row.length)
                return answer(413, f"more bytes than Upload-Length {row.length}")
            if offset < row.length:
                return answer(204, **{"Upload-Offset": str(offset)})
            if not await run_in_threadpool(service.finish, row):
                return answer(
                    CHECKSUM_MISMATCH, "sha256 of the bytes received does not match: resend"
                )
            return answer(204, **{"Upload-Offset": str(offset), STORED_HEADER: row.sha256})

    async def _receive(
        request: Request, partial: Path, offset: int, digest: Any
    ) -> tuple[int, bool | None]:
        """Append the body to ``partial`` (and to ``digest`` unless None); (new offset,
        True) or (offset, None) when the client went away. What arrived is fsynced either
        way."""
        handle = partial.open("ab")
        try:  # one writer across hub processes too (the asyncio lock is per process)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise UploadError(409, "another PATCH of this upload is in progress: HEAD") from None
        if os.fstat(handle.fileno()).st_size != offset:
            handle.close()
            raise UploadError(409, "the upload's offset moved meanwhile: HEAD")
        pending: list[bytes] = []
        size = 0
        complete: bool | None = True
        try:
            try:
                async for chunk in request.stream():
                    pending.append(chunk)
                    size += len(chunk)
                    if size >= WRITE_BLOCK:
                        block = b"".join(pending)
                        handle.write(block)
                        if digest is not None:
                            digest.update(block)
                        offset += size
                        pending, size = [], 0
            except ClientDisconnect:
                complete = None
            block = b"".join(pending)
            handle.write(block)
            if digest is not None:
                digest.update(block)
            offset += size
        finally:
            handle.flush()
            await run_in_threadpool(os.fsync, handle.fileno())
            handle.close()
        return offset, complete

    return [
        Route(base, options, methods=["OPTIONS"]),
        Route(base, create, methods=["POST"]),
        Route(base + "/{station}/{upload_id}", head, methods=["HEAD"]),
        Route(base + "/{station}/{upload_id}", patch, methods=["PATCH"]),
    ]


def _truncate(path: Path, length: int) -> None:
    with path.open("r+b") as handle:
        handle.truncate(length)
        os.fsync(handle.fileno())
