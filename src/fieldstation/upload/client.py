"""The station's half of the hub's resumable upload protocol (a subset of tus 1.0, described
in :mod:`fieldstation.hub.uploads`), over httpx with a streamed body.

One :meth:`TusClient.send` asks the hub for its offset (``HEAD``; ``POST`` creates the upload
when the hub has none), then streams the rest of the file (``PATCH``). A connection cut
mid-file costs only the bytes in flight: the next try asks the offset again and sends from
there. Tries follow one another at once while each makes progress; a try without progress
ends :meth:`send` with :class:`UploadFailed` (the caller backs off).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = ["BLOCK", "TusClient", "UploadFailed", "UploadFile", "UploadStopped"]

TUS_VERSION = "1.0.0"
STORED_HEADER = "Fieldstation-Stored"
BLOCK = 64 * 1024
"""Bytes read from the file per block of the streamed body (64 KiB, curl's upload buffer:
smaller blocks keep the socket fed more evenly than 1 MiB ones, bench/upload.py)."""
STALLS = 3
"""Tries in a row without progress (e.g. a cut before the first byte arrived) that end a
:meth:`TusClient.send`."""


class UploadStopped(Exception):
    """The upload was stopped (the job is stopping); it resumes on the next turn."""


class UploadFailed(Exception):
    """An upload that did not complete this time; ``permanent``: the hub refused it for a
    reason retrying soon will not fix (token, size); the message says what to do."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class UploadFile:
    """A file to upload: ``path``, its ``length`` (bytes) and ``sha256`` (hex), the hub id
    ``upload_id`` and the metadata the hub records (``filename``, ``kind``, ...)."""

    path: Path
    upload_id: str
    length: int
    sha256: str
    metadata: dict[str, str]


def _metadata(values: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


class TusClient:
    """Uploads files to ``url`` (the hub's endpoint) as ``station`` with a bearer ``token``.

    ``timeout``: seconds without progress before a request is given up; ``verify``: TLS
    verification (True, False or a CA bundle path); ``transport``: an httpx transport
    (tests). Close with :meth:`close`.
    """

    def __init__(
        self,
        url: str,
        token: str,
        station: str,
        *,
        timeout: float = 60.0,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.station = station
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            verify=verify,
            transport=transport,
            headers={"Authorization": f"Bearer {token}", "Tus-Resumable": TUS_VERSION},
        )

    def close(self) -> None:
        self._client.close()

    def _where(self, upload_id: str) -> str:
        return f"{self.url}/{self.station}/{upload_id}"

    def offset(self, file: UploadFile) -> tuple[int, bool]:
        """(bytes the hub holds, whether it stored the whole file); creates the upload when
        the hub has none. Raises :class:`UploadFailed`, httpx.TransportError."""
        response = self._client.head(self._where(file.upload_id))
        if response.status_code == 404:
            meta = {
                "station": self.station,
                "upload_id": file.upload_id,
                "sha256": file.sha256,
                **file.metadata,
            }
            response = self._client.post(
                self.url,
                headers={"Upload-Length": str(file.length), "Upload-Metadata": _metadata(meta)},
            )
            if response.status_code != 201:
                raise _refusal(response, "creating the upload")
            return int(response.headers.get("upload-offset", "0")), False
        if response.status_code != 200:
            raise _refusal(response, "asking the upload's offset")
        stored = response.headers.get(STORED_HEADER, "").lower() == file.sha256
        return int(response.headers["upload-offset"]), stored

    def _body(self, path: Path, offset: int, stopping: Callable[[], bool]) -> Iterator[bytes]:
        with path.open("rb") as handle:
            handle.seek(offset)
            while block := handle.read(BLOCK):
                if stopping():
                    raise UploadStopped("stopped")
                yield block

    def send(
        self,
        file: UploadFile,
        on_offset: Callable[[int], Any] = lambda _: None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        """Upload ``file`` until the hub confirmed it by its sha256. ``on_offset(bytes)`` is
        called with each offset the hub acknowledges; ``stopping()`` before each block sent
        (True ends the upload with :class:`UploadStopped`). Raises :class:`UploadFailed` when
        the hub cannot be reached or refuses, or when :data:`STALLS` tries in a row make no
        progress (the message says which)."""
        best, stalls = -1, 0
        while True:
            try:
                offset, stored = self.offset(file)
            except httpx.TransportError as error:
                raise UploadFailed(f"hub unreachable: {error}") from error
            on_offset(offset)
            if stored:
                return
            if offset > best:
                best, stalls = offset, 0
            else:
                stalls += 1
                if stalls >= STALLS:
                    raise UploadFailed(f"no progress past byte {offset} of {file.length}")
            try:
                response = self._client.patch(
                    self._where(file.upload_id),
                    content=self._body(file.path, offset, stopping),
                    headers={
                        "Content-Type": "application/offset+octet-stream",
                        "Content-Length": str(file.length - offset),
                        "Upload-Offset": str(offset),
                    },
                )
            except httpx.TransportError:
                continue  # cut mid-file: ask the offset again and resume from it
            if response.status_code == 204:
                on_offset(int(response.headers.get("upload-offset", offset)))
                if response.headers.get(STORED_HEADER, "").lower() == file.sha256:
                    return
                continue
            if response.status_code == 409:  # the hub holds other bytes: ask again
                continue
            if response.status_code == 460:
                raise UploadFailed("the hub found another sha256 than the file's: resending")
            raise _refusal(response, "sending the file")


def _refusal(response: httpx.Response, doing: str) -> UploadFailed:
    text = response.text.strip()[:300]
    permanent = response.status_code in (400, 401, 403, 413, 415)
    return UploadFailed(
        f"hub answered {response.status_code} {doing}: {text or response.reason_phrase}",
        permanent=permanent,
    )
