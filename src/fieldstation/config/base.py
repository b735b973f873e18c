"""Shared building blocks of every config model: the strict base class and the name type."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

__all__ = ["Name", "StrictModel"]


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True, use_attribute_docstrings=True)


Name = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"),
]
"""A name used in paths, topics and job names: letters, digits, ``_ . -``, 1-64 characters."""
