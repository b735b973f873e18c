"""Config of recording upload to the hub (``[upload]``; semantics in :mod:`fieldstation.upload`).

Example::

    [upload]
    url = "https://hub.example.org:8780/uploads"
    token = "env:FIELDSTATION_HUB_TOKEN"     # a token of 'fieldstation hub token add STATION'
    select = "labels"                        # all | detections | pinned | labels | none
    labels = ["Turdus merula"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from fieldstation.config.base import StrictModel
from fieldstation.config.secrets import SecretRef
from fieldstation.config.units import Seconds

__all__ = ["UploadConfig"]


class UploadConfig(StrictModel):
    """Recordings uploaded to the hub's upload endpoint, resumably (tus 1.0 core subset).

    While ``[upload]`` is present, retention never deletes a recording the selection chose (or
    the ``upload`` command asked for) before the hub confirmed it by its sha256.
    """

    url: str = Field(
        pattern=r"^https?://",
        description="The hub's upload endpoint, e.g. http://hub:8780/uploads.",
    )
    token: SecretRef = Field(
        description="Bearer token of this station ('fieldstation hub token add STATION'): "
        "'env:NAME' or 'file:PATH'."
    )
    select: Literal["all", "detections", "pinned", "labels", "none"] = Field(
        default="detections",
        description="Which recordings to upload: all; detections (with a detection scoring at "
        "least min_score); pinned; labels (a detection of one of 'labels'); none (only those "
        "the 'upload' command asks for).",
    )
    labels: list[str] = Field(
        default_factory=list, description="With select='labels': the labels that count."
    )
    min_score: float = Field(
        default=0.0, ge=0, le=1, description="With detections/labels: lowest score that counts."
    )
    sensors: list[str] | None = Field(
        default=None, description="Only recordings of these sensors (default: every sensor)."
    )
    interval: Seconds = Field(
        default=10.0, gt=0, description="Seconds between looks for new recordings to upload."
    )
    timeout: Seconds = Field(
        default=60.0, gt=0, description="Seconds without progress before a request is given up."
    )
    retry_initial: Seconds = Field(default=5.0, gt=0, description="First retry delay, seconds.")
    retry_max: Seconds = Field(default=600.0, gt=0, description="Longest retry delay, seconds.")
    verify: bool = Field(default=True, description="Verify the hub's TLS certificate.")
    ca_file: Path | None = Field(
        default=None, description="CA bundle (PEM) of the hub's certificate (private CA)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> UploadConfig:
        if self.select == "labels" and not self.labels:
            raise ValueError("select = 'labels' needs 'labels' (a list of labels to upload)")
        if self.labels and self.select != "labels":
            raise ValueError("'labels' is only used with select = 'labels'")
        if self.retry_max < self.retry_initial:
            raise ValueError("retry_max must be at least retry_initial")
        if self.ca_file is not None and not self.verify:
            raise ValueError("ca_file is set but verify = false: remove verify = false")
        return self
