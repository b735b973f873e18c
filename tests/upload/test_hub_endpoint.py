"""The hub's upload endpoint (tus 1.0 subset) on a real uvicorn: tokens, offsets, a bad
checksum, idempotent creation; files stored on disk or in S3 (moto's server); the dashboard
plays an uploaded recording with HTTP Range."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from fieldstation.clock import VirtualClock
from fieldstation.hub.alerts import AlertRules
from fieldstation.hub.http import create_app
from fieldstation.hub.models import UploadedFile
from fieldstation.hub.uploads import S3Config, UploadsConfig
from fieldstation.hub.users import add_user
from fieldstation.hub.web import Dashboard
from fieldstation.upload.client import TusClient, UploadFailed, UploadFile

PASSWORD = "correct horse battery"


def metadata(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def create(client: httpx.Client, hub: Any, data: bytes, upload_id: str, **headers: str) -> Any:
    return client.post(
        hub.url,
        headers={
            "Upload-Length": str(len(data)),
            "Upload-Metadata": metadata(
                station="default",
                upload_id=upload_id,
                sha256=hashlib.sha256(data).hexdigest(),
                filename="a.wav",
                media_type="audio/wav",
            ),
            **headers,
        },
    )


def patch(client: httpx.Client, hub: Any, upload_id: str, offset: int, body: bytes) -> Any:
    return client.patch(
        f"{hub.url}/default/{upload_id}",
        content=body,
        headers={"Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)},
    )


@pytest.fixture
def client(hub: Any) -> Iterator[httpx.Client]:
    with httpx.Client(
        headers={"Authorization": f"Bearer {hub.token}", "Tus-Resumable": "1.0.0"}
    ) as made:
        yield made


def test_protocol_offsets_tokens_and_checksum(hub: Any, client: httpx.Client) -> None:
    data = bytes(range(256)) * 400  # 102,400 bytes
    upload_id = "0b9f0a8e-0000-4000-8000-000000000001"
    # no token, another station's token: refused
    assert httpx.post(hub.url, headers={"Upload-Length": "1"}).status_code == 401
    wrong = httpx.head(
        f"{hub.url}/default/{upload_id}", headers={"Authorization": "Bearer fsh_nope"}
    )
    assert wrong.status_code == 401
    options = client.options(hub.url)
    assert (
        options.headers["tus-version"] == "1.0.0" and "creation" in options.headers["tus-extension"]
    )
    assert client.head(f"{hub.url}/default/{upload_id}").status_code == 404
    made = create(client, hub, data, upload_id)
    assert made.status_code == 201, made.text
    assert made.headers["location"] == f"/uploads/default/{upload_id}"
    assert made.headers["upload-offset"] == "0"
    # part of it, then the offset says where to resume; a wrong offset is a conflict
    assert patch(client, hub, upload_id, 0, data[:40_000]).headers["upload-offset"] == "40000"
    head = client.head(f"{hub.url}/default/{upload_id}")
    assert head.headers["upload-offset"] == "40000" and head.headers["upload-length"] == "102400"
    assert patch(client, hub, upload_id, 0, data[:10]).status_code == 409
    # creating it again is idempotent (same length and sha256), another sha256 a conflict
    again = create(client, hub, data, upload_id)
    assert again.status_code == 201 and again.headers["upload-offset"] == "40000"
    assert create(client, hub, data[::-1], upload_id).status_code == 409
    # the rest, with one byte wrong: checksum mismatch, bytes discarded
    bad = bytearray(data[40_000:])
    bad[5] ^= 0xFF
    mismatch = patch(client, hub, upload_id, 40_000, bytes(bad))
    assert mismatch.status_code == 460
    assert client.head(f"{hub.url}/default/{upload_id}").headers["upload-offset"] == "0"
    # all of it: stored, confirmed by its sha256
    done = patch(client, hub, upload_id, 0, data)
    assert done.status_code == 204
    assert done.headers["fieldstation-stored"] == hashlib.sha256(data).hexdigest()
    with hub.db.session() as session:
        row = session.scalars(select(UploadedFile)).one()
        assert (row.state, row.storage, row.length) == ("stored", "disk", len(data))
        location = row.location
    assert hub.service.store.path(location).read_bytes() == data
    # a file larger than the limit is refused at creation
    too_big = client.post(
        hub.url,
        headers={
            "Upload-Length": str(10**13),
            "Upload-Metadata": metadata(
                station="default", upload_id="big", sha256="0" * 64, filename="x.wav"
            ),
        },
    )
    assert too_big.status_code == 413


def test_client_refused_token_is_permanent(hub: Any, tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    path.write_bytes(b"x" * 1000)
    file = UploadFile(path, "u-1", 1000, hashlib.sha256(b"x" * 1000).hexdigest(), {})
    client = TusClient(hub.url, "fsh_wrong", "default")
    try:
        with pytest.raises(UploadFailed, match="401") as caught:
            client.send(file)
        assert caught.value.permanent
    finally:
        client.close()
    unreachable = TusClient("http://127.0.0.1:9/uploads", hub.token, "default", timeout=5)
    try:
        with pytest.raises(UploadFailed, match="unreachable"):
            unreachable.send(file)
    finally:
        unreachable.close()


def log_in(client: Any) -> None:
    form = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf
    answer = client.post(
        "/login", data={"name": "vera", "password": PASSWORD, "csrf": csrf.group(1), "next": "/"}
    )
    assert answer.status_code == 303


def send(hub: Any, tmp_path: Path, data: bytes, upload_id: str) -> None:
    path = tmp_path / f"{upload_id}.wav"
    path.write_bytes(data)
    hub.upload(
        path, upload_id, {"filename": "rec.wav", "media_type": "audio/wav", "recording_id": "7"}
    )


def dashboard_client(hub: Any) -> Any:
    from starlette.testclient import TestClient

    from fieldstation.hub.store import set_station_status

    add_user(hub.db, "vera", PASSWORD, "viewer")
    set_station_status(hub.db, "default", True)
    dashboard = Dashboard(
        secret="s" * 40, rules=AlertRules(), clock=VirtualClock(), uploads=hub.service
    )
    return TestClient(create_app(hub.db, dashboard=dashboard), follow_redirects=False)


def test_dashboard_plays_an_uploaded_recording_with_range(hub: Any, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    upload_id = "0b9f0a8e-0000-4000-8000-000000000002"
    send(hub, tmp_path, data, upload_id)
    client = dashboard_client(hub)
    assert client.get(f"/files/default/{upload_id}").status_code == 303  # log in first
    log_in(client)
    page = client.get("/stations/default")
    assert page.status_code == 200, page.text
    assert f'<audio controls preload="none" src="/files/default/{upload_id}">' in page.text
    whole = client.get(f"/files/default/{upload_id}")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"].startswith("audio/wav")
    part = client.get(f"/files/default/{upload_id}", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == data[1000:2000]
    assert client.get("/files/default/nope").status_code == 404


@pytest.fixture
def s3() -> Iterator[tuple[str, Any]]:
    """moto's S3 server on a free loopback port and a boto3 client of it, bucket 'rec'."""
    import boto3
    from moto.server import ThreadedMotoServer

    from fieldstation.testing.broker import free_port

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    client.create_bucket(Bucket="rec")
    try:
        yield endpoint, client
    finally:
        server.stop()


def test_s3_storage_and_presigned_range(
    make_hub: Any, tmp_path: Path, s3: tuple[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, s3_client = s3
    monkeypatch.setenv("S3_KEY", "test")
    monkeypatch.setenv("S3_SECRET", "test")
    config = UploadsConfig.model_validate(
        {
            "storage": "s3",
            "s3": {
                "bucket": "rec",
                "prefix": "fleet/",
                "endpoint_url": endpoint,
                "region": "us-east-1",
                "access_key_id": "env:S3_KEY",
                "secret_access_key": "env:S3_SECRET",
            },
        }
    )
    hub = make_hub(config)  # its own boto3 client, from the config's secrets
    data = bytes(range(256)) * 12_000  # ~3 MB
    upload_id = "0b9f0a8e-0000-4000-8000-000000000003"
    send(hub, tmp_path, data, upload_id)
    key = f"fleet/default/{upload_id}.wav"
    stored = s3_client.get_object(Bucket="rec", Key=key)["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(data).hexdigest()
    assert not list(hub.service.partial_root.rglob(upload_id))  # partial removed
    client = dashboard_client(hub)
    log_in(client)
    redirect = client.get(f"/files/default/{upload_id}")
    assert redirect.status_code == 307
    part = httpx.get(redirect.headers["location"], headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    with pytest.raises(ValueError, match="bucket"):
        UploadsConfig.model_validate({"storage": "s3"})
    assert S3Config(bucket="abc").prefix == ""


def test_uploads_on_a_postgresql_fleet_database(
    make_hub: Any, postgres_url: str, tmp_path: Path
) -> None:
    hub = make_hub(database=postgres_url)
    data = bytes(range(256)) * 1000
    upload_id = "0b9f0a8e-0000-4000-8000-0000000000c1"
    send(hub, tmp_path, data, upload_id)
    send(hub, tmp_path, data, upload_id)  # again: already stored, confirmed at once
    with hub.db.session() as session:
        row = session.scalars(select(UploadedFile)).one()
        assert (row.state, row.recording_id, row.length) == ("stored", 7, len(data))
        assert row.stored_at is not None and row.stored_at.tzinfo is not None
