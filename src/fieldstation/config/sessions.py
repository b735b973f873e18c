"""Config of sessions of several streams (``[[sessions]]``).

A session groups sensors that start and stop together (a camera, its IMU and a microphone; a
hive's audio, video and temperature): their recordings of one schedule slot share one session
id and one anchor time, and a manifest lists every chunk of every stream
(:mod:`fieldstation.recording.sessions`).
"""

from __future__ import annotations

from pydantic import Field

from fieldstation.config.base import Name, StrictModel

__all__ = ["SessionConfig"]


class SessionConfig(StrictModel):
    """Sensors recorded as one session (they must share a schedule)."""

    name: Name = Field(description="Session name; used in session ids and manifest paths.")
    sensors: list[Name] = Field(
        min_length=1,
        description="Sensors recorded together; each in one session at most, all with the same "
        "'schedule' (or none).",
    )
    description: str = Field(default="", description="Free text (what the session records).")
