"""The hub's endpoint bounds what it holds: a PATCH longer than what is left of Upload-Length
is refused (413) without writing past it; the per-upload lock and running hash are dropped
when an upload is stored; abandoned partial uploads expire after ``partial_max_age`` (on
virtual time)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from fieldstation.clock import VirtualClock
from fieldstation.hub.models import UploadedFile
from fieldstation.hub.uploads import UploadsConfig
from fieldstation.hub.uploads.service import SWEEP_EVERY

from .test_hub_endpoint import create, patch

HEADERS = {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}


@pytest.fixture
def client(hub: Any) -> Iterator[httpx.Client]:
    with httpx.Client(
        headers={"Authorization": f"Bearer {hub.token}", "Tus-Resumable": "1.0.0"}
    ) as made:
        yield made


def offset(client: httpx.Client, hub: Any, upload_id: str) -> int:
    return int(client.head(f"{hub.url}/default/{upload_id}").headers["upload-offset"])


def test_a_patch_longer_than_the_upload_is_refused_without_writing_past_it(
    hub: Any, client: httpx.Client
) -> None:
    data = bytes(range(256)) * 4  # 1024 bytes
    assert create(client, hub, data, "long-1").status_code == 201
    # announced too long (Content-Length): refused before a byte is written
    refused = patch(client, hub, "long-1", 0, data + b"more")
    assert refused.status_code == 413, refused.text
    assert offset(client, hub, "long-1") == 0
    assert patch(client, hub, "long-1", 0, data[:1000]).status_code == 204

    def chunked() -> Iterator[bytes]:  # no Content-Length: the hub stops at the limit
        yield data[1000:]
        yield b"x" * 5000

    over = client.patch(
        f"{hub.url}/default/long-1", content=chunked(), headers={**HEADERS, "Upload-Offset": "1000"}
    )
    assert over.status_code == 413, over.text
    assert offset(client, hub, "long-1") == 1000  # what this PATCH wrote is dropped
    done = patch(client, hub, "long-1", 1000, data[1000:])
    assert done.headers["fieldstation-stored"] == hashlib.sha256(data).hexdigest()


def test_memory_is_released_and_abandoned_uploads_expire(hub: Any, client: httpx.Client) -> None:
    service = hub.service
    assert UploadsConfig().partial_max_age == 7 * 86400
    clock = VirtualClock(datetime.now(UTC))
    service.now = clock.now
    kept, abandoned = b"k" * 3000, b"a" * 3000
    assert create(client, hub, abandoned, "gone-1").status_code == 201
    assert patch(client, hub, "gone-1", 0, abandoned[:1000]).status_code == 204
    assert create(client, hub, kept, "kept-1").status_code == 201
    assert patch(client, hub, "kept-1", 0, kept).status_code == 204
    assert ("default", "kept-1") not in service._locks  # stored: nothing left in memory
    assert ("default", "kept-1") not in service._hashes
    partial = service.partial("default", "gone-1")
    assert partial.stat().st_size == 1000
    clock.advance(6 * 86400)  # not old enough yet
    assert service.expire() == 0
    clock.advance(2 * 86400)
    fresh = b"f" * 10
    assert create(client, hub, fresh, "fresh-1").status_code == 201  # a create sweeps
    assert not partial.exists()
    assert client.head(f"{hub.url}/default/gone-1").status_code == 404
    assert ("default", "gone-1") not in service._locks
    assert ("default", "gone-1") not in service._hashes
    with hub.db.session() as session:
        states = {r.upload_id: r.state for r in session.scalars(select(UploadedFile))}
    assert states == {"kept-1": "stored", "fresh-1": "partial"}
    # the station comes back: it creates the upload anew and sends it whole
    assert create(client, hub, abandoned, "gone-1").status_code == 201
    assert patch(client, hub, "gone-1", 0, abandoned).status_code == 204


def test_hub_run_sweeps_abandoned_uploads_every_hour(hub: Any, client: httpx.Client) -> None:
    service = hub.service
    clock = VirtualClock(datetime.now(UTC))
    service.now = clock.now
    assert create(client, hub, b"a" * 100, "idle-1").status_code == 201
    partial = service.partial("default", "idle-1")
    stop = threading.Event()
    sweeps: list[datetime] = []
    expire = service.expire

    def counted() -> int:
        dropped = expire()
        sweeps.append(clock.now())
        if dropped:
            stop.set()
        return int(dropped)

    service.expire = counted
    service.run(stop, clock)  # virtual time: each hourly wait returns at once
    assert not partial.exists()
    waited = (sweeps[-1] - sweeps[0]).total_seconds()
    assert 7 * 86400 - 3600 <= waited <= 7 * 86400 + 3600
    assert all((b - a).total_seconds() == SWEEP_EVERY for a, b in pairwise(sweeps))
