"""``[uploads]`` of the hub config: the endpoint, its folder, the store, the limits."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ByteSize, Field, model_validator

from fieldstation.config.base import StrictModel
from fieldstation.config.secrets import SecretRef
from fieldstation.config.units import Bytes, Seconds

__all__ = ["S3Config", "UploadsConfig"]


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
    partial_max_age: Seconds = Field(
        default=7 * 86400.0,
        gt=0,
        description="Seconds after its last byte arrived that an unfinished upload is dropped "
        "(partial file and row; the station creates it anew if it comes back); default 7 days.",
    )

    @model_validator(mode="after")
    def _s3(self) -> UploadsConfig:
        if self.storage == "s3" and self.s3 is None:
            raise ValueError("storage = 's3' needs an [uploads.s3] section with the bucket")
        return self
