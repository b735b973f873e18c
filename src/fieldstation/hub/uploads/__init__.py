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
- A ``PATCH`` body longer than what is left of ``Upload-Length``: 413, refused before any
  byte when ``Content-Length`` says so; a chunked body is read up to the limit only and
  what it wrote is dropped.
- ``OPTIONS {path}``: 204 with ``Tus-Version``, ``Tus-Extension: creation`` and
  ``Tus-Max-Size``.

Partial files live under ``<upload folder>/partial/``, dropped with their row when no byte
arrived for ``partial_max_age`` (swept hourly by ``hub run``, and by a create); stored
files under ``<upload folder>/files/<station>/`` (``storage = "disk"``) or in an
S3-compatible bucket (``storage = "s3"``, boto3). The dashboard plays stored recordings: a
disk file is served with HTTP Range support (Starlette ``FileResponse``), an S3 object by a
redirect to a presigned URL (S3 serves ranges itself).

Modules: :mod:`.config` (``[uploads]``), :mod:`.stores` (disk, S3), :mod:`.service` (the
upload state: create, offsets, checksum, expiry), :mod:`.routes` (the Starlette endpoint).
"""

from __future__ import annotations

from fieldstation.hub.uploads.config import S3Config, UploadsConfig
from fieldstation.hub.uploads.routes import upload_routes
from fieldstation.hub.uploads.service import (
    CHECKSUM_MISMATCH,
    STORED_HEADER,
    TUS_VERSION,
    UploadError,
    UploadService,
    encode_metadata,
    file_response,
    make_upload_service,
    parse_metadata,
    recent_uploads,
)
from fieldstation.hub.uploads.stores import DiskStore, S3Store

__all__ = [
    "CHECKSUM_MISMATCH",
    "STORED_HEADER",
    "TUS_VERSION",
    "DiskStore",
    "S3Config",
    "S3Store",
    "UploadError",
    "UploadService",
    "UploadsConfig",
    "encode_metadata",
    "file_response",
    "make_upload_service",
    "parse_metadata",
    "recent_uploads",
    "upload_routes",
]
