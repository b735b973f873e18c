"""Where the hub keeps complete uploaded files: its disk, or an S3-compatible bucket."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fieldstation.home import fsync_dir
from fieldstation.hub.uploads.config import S3Config

__all__ = ["DiskStore", "S3Store"]


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
        fsync_dir(target.parent)
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
