"""The Starlette routes of the upload endpoint (protocol: :mod:`fieldstation.hub.uploads`)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fieldstation.hub.uploads.service import (
    CHECKSUM_MISMATCH,
    STORED_HEADER,
    TUS_VERSION,
    WRITE_BLOCK,
    UploadError,
    UploadService,
    parse_metadata,
)

__all__ = ["upload_routes"]


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
            remaining = row.length - offset
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > remaining:  # refused before any byte
                return answer(413, f"{declared} bytes sent, {remaining} left of Upload-Length")
            digest = service.running_hash(station, upload_id, offset)
            partial = service.partial(station, upload_id)
            try:
                received, status = await _receive(request, partial, offset, remaining, digest)
            except UploadError as error:
                return answer(error.status, str(error))
            if status == "overflow":  # chunked body longer than announced: drop it whole
                await run_in_threadpool(_truncate, partial, offset)
                return answer(413, f"more bytes than the {remaining} left of Upload-Length")
            service.keep_hash(station, upload_id, received, digest)
            if status == "cut":
                return answer(400, "the connection ended early")  # never read: it is gone
            if received < row.length:
                return answer(204, **{"Upload-Offset": str(received)})
            stored = await run_in_threadpool(service.finish, row)
        service.forget(station, upload_id)  # complete or discarded: a new PATCH starts anew
        if not stored:
            return answer(CHECKSUM_MISMATCH, "sha256 of the bytes received does not match: resend")
        return answer(204, **{"Upload-Offset": str(received), STORED_HEADER: row.sha256})

    async def _receive(
        request: Request, partial: Path, offset: int, limit: int, digest: Any
    ) -> tuple[int, str]:
        """Append the body to ``partial`` (and to ``digest`` unless None), at most ``limit``
        bytes; (new offset, ``complete``), (offset, ``cut``) when the client went away, or
        (offset, ``overflow``) when the body goes past ``limit``: reading stops there (the
        caller drops what this body wrote). What arrived is fsynced either way."""
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
        outcome = "complete"
        try:
            try:
                async for chunk in request.stream():
                    limit -= len(chunk)
                    if limit < 0:
                        outcome = "overflow"
                        break
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
                outcome = "cut"
            block = b"".join(pending)
            handle.write(block)
            if digest is not None:
                digest.update(block)
            offset += size
        finally:
            handle.flush()
            await run_in_threadpool(os.fsync, handle.fileno())
            handle.close()
        return offset, outcome

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
