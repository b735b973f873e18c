"""Shared building blocks of every config model: the strict base class and the name type."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from fieldstation.config.units import Seconds

__all__ = ["MAX_STRING", "NAME_PATTERN", "BackoffSettings", "Name", "StrictModel", "check_name"]

MAX_STRING = 4096
"""Longest string (characters) any config field accepts unless it sets a shorter
``max_length``: Linux's ``PATH_MAX`` (4096 bytes), so every path, URL, host or topic fits, and
a 10 MB value in a station file is refused instead of being copied into every process, log
line and message."""


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, defaults are validated too, strings
    (and dict keys, and paths) are at most :data:`MAX_STRING` characters."""

    model_config = ConfigDict(
        extra="forbid",
        validate_default=True,
        use_attribute_docstrings=True,
        str_max_length=MAX_STRING,
    )


class BackoffSettings(StrictModel):
    """The one config shape of a retry backoff (``[runtime]`` restarts, ``[outbox]`` retries):
    the n-th consecutive failure waits ``min(backoff_max, backoff_initial * 2**(n-1))``
    seconds scaled by a random factor in [0.5, 1] (:mod:`fieldstation.backoff`, "equal
    jitter"). The network monitor's probes back off the same way from ``network.interval``."""

    backoff_initial: Seconds = Field(
        default=1.0, gt=0, description="Wait after the first failure, seconds (before jitter)."
    )
    backoff_max: Seconds = Field(
        default=300.0, gt=0, description="Longest wait between tries, seconds (before jitter)."
    )

    @model_validator(mode="after")
    def _initial_within_max(self) -> BackoffSettings:
        if self.backoff_max < self.backoff_initial:
            raise ValueError(
                f"backoff_max ({self.backoff_max:g} s) must be at least backoff_initial "
                f"({self.backoff_initial:g} s)"
            )
        return self


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Names used in paths, topics and job names: letters, digits, ``_ . -``, 1-64 characters,
starting with a letter or digit."""

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
"""A name used in paths, topics and job names (:data:`NAME_PATTERN`)."""


def check_name(value: str, what: str) -> str:
    """Return ``value`` if it is a valid name; else raise ``ValueError`` naming ``what``."""
    if not re.fullmatch(NAME_PATTERN, value):
        raise ValueError(
            f"{what} {value!r} is not valid: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit (e.g. 'pond-7')"
        )
    return value
