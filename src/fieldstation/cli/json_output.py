"""The JSON that listing commands print with ``--json``: one pydantic model per command.

These models are the schema scripts can rely on (``model_json_schema()`` gives the JSON
Schema); each command builds its model and prints it with :func:`dump`, so what is printed
is what the schema says. Times are ISO 8601 strings in UTC; durations are seconds; sizes are
bytes. A field may be added in a later release; none is removed or changes meaning without a
new ``schema`` number.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SCHEMA_VERSION",
    "DetectionList",
    "DetectionRow",
    "OutboxDestination",
    "OutboxStatus",
    "RecordingList",
    "RecordingRow",
    "ScheduleDay",
    "ScheduleList",
    "ScheduleSensor",
    "ScheduleSlot",
    "StationStatus",
    "dump",
]

SCHEMA_VERSION = 1
"""Version of the JSON of every listing command (``schema`` in each document)."""


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Document(_Output):
    schema_version: Literal[1] = Field(
        1, alias="schema", description="Version of this JSON layout (SCHEMA_VERSION)."
    )
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RecordingRow(_Output):
    """One recording of ``fieldstation recordings --json``."""

    id: int = Field(description="Recording id (for pin, unpin).")
    sensor: str = Field(description="Sensor name.")
    media: str = Field(description="audio, video or readings.")
    started_at: datetime = Field(description="Time of the first frame (UTC).")
    duration_s: float = Field(ge=0, description="Length in seconds.")
    state: str = Field(description="recorded, processing, processed, failed or quarantined.")
    file_state: str = Field(description="present, deleted or missing.")
    delete_reason: str | None = Field(description="Why retention deleted the file, if it did.")
    pinned: bool = Field(description="True when retention never deletes it.")
    detections: int = Field(ge=0, description="Detections stored for it.")
    path: str = Field(description="File path, relative to the station home.")


class RecordingList(_Document):
    """``fieldstation recordings --json``: newest first."""

    recordings: list[RecordingRow] = Field(description="The recordings, newest first.")


class DetectionRow(_Output):
    """One detection of ``fieldstation detections --json``."""

    id: int = Field(description="Detection id.")
    detected_at: datetime = Field(description="When the model found it (UTC).")
    label: str = Field(description="What was detected (a species, 'energy', 'motion').")
    score: float = Field(description="Model confidence, 0 to 1.")
    start_s: float = Field(description="Start, seconds from the recording's start.")
    end_s: float = Field(description="End, seconds from the recording's start.")
    low_hz: float | None = Field(description="Lowest frequency (Hz), when the model gives it.")
    high_hz: float | None = Field(description="Highest frequency (Hz), when the model gives it.")
    recording_id: int = Field(description="Recording it was found in.")
    sensor: str = Field(description="Sensor of that recording.")
    path: str = Field(description="File of that recording, relative to the station home.")
    file_state: str = Field(description="present, deleted or missing.")


class DetectionList(_Document):
    """``fieldstation detections --json``: newest first."""

    detections: list[DetectionRow] = Field(description="The detections, newest first.")


class OutboxDestination(_Output):
    """Counts of one destination (an output) of ``fieldstation outbox status --json``."""

    pending: int = Field(ge=0, description="Messages waiting to be delivered.")
    sent: int = Field(ge=0, description="Messages delivered.")
    dead: int = Field(ge=0, description="Messages given up on (dead letters).")
    dropped: int = Field(ge=0, description="Messages dropped by the outbox cap.")
    oldest_pending: datetime | None = Field(description="Creation time of the oldest pending.")
    next_attempt: datetime | None = Field(description="When delivery is tried next (UTC).")
    configured: bool = Field(description="False for a destination no longer in the file.")


class DeadReason(_Output):
    """A frequent dead-letter reason."""

    destination: str = Field(description="Output name.")
    reason: str = Field(description="Last error of the dead letters.")
    count: int = Field(ge=1, description="Dead letters with this reason.")


class OutboxStatus(_Document):
    """``fieldstation outbox status --json``."""

    station: str = Field(description="Station id.")
    pending_bytes: int = Field(ge=0, description="Bytes of pending messages.")
    max_bytes: int = Field(ge=0, description="The outbox cap in bytes.")
    when_full: str = Field(description="What the outbox does at the cap.")
    destinations: dict[str, OutboxDestination] = Field(description="Counts per output name.")
    stuck: dict[str, datetime] = Field(
        description="Outputs stuck in one delivery, with when that was found."
    )
    dead_reasons: list[DeadReason] = Field(description="Most frequent dead-letter reasons.")


class ScheduleSlot(_Output):
    """One upcoming recording slot."""

    start: datetime = Field(description="Slot start (with the station's UTC offset).")
    end: datetime = Field(description="Slot end (with the station's UTC offset).")
    duration_s: float = Field(ge=0, description="Length in seconds.")


class ScheduleDay(_Output):
    """One planned day of a sensor."""

    date: str = Field(description="Local date (YYYY-MM-DD).")
    windows: list[tuple[datetime, datetime]] = Field(description="Windows [start, end).")
    slots: int = Field(ge=0, description="Slots that day.")
    recorded_s: float = Field(ge=0, description="Seconds recorded that day.")
    bytes: float | None = Field(description="Estimated bytes that day (null: unknown rate).")
    active: bool = Field(description="False when a filter removed the day.")
    polar: list[str] = Field(description="Sun events missing that day (polar fallback).")


class ScheduleSensor(_Output):
    """The plan of one sensor."""

    name: str = Field(description="Sensor name.")
    kind: str = Field(description="Sensor kind.")
    enabled: bool = Field(description="False for a disabled sensor.")
    schedule: str | None = Field(description="Schedule name; null: continuous.")
    bytes_per_second: float | None = Field(description="Data rate used for the estimate.")
    storage_label: str = Field(description="What the rate measures (raw PCM, bitrate...).")
    next_slots: list[ScheduleSlot] = Field(description="The next slots from the start.")
    days: list[ScheduleDay] = Field(description="One entry per planned day.")
    bytes_per_day: float | None = Field(description="Average estimated bytes per day.")


class ScheduleList(_Document):
    """``fieldstation schedule --json``."""

    station: str = Field(description="Station id.")
    timezone: str = Field(description="Station time zone (IANA name).")
    start: datetime = Field(description="Start of the plan.")
    days: int = Field(ge=1, description="Days planned.")
    sensors: list[ScheduleSensor] = Field(description="Plans per sensor.")


class StationStatus(_Document):
    """``fieldstation status --json``: the running station's status (or, with ``running``
    false, the last one it wrote, in ``last``)."""

    running: bool = Field(description="True when the station answered.")
    error: str | None = Field(None, description="Why it did not answer, when not running.")
    last: dict[str, Any] | None = Field(
        None, description="The last status written by a station that is not running."
    )
    station: str | None = Field(None, description="Station id (running only).")
    pid: int | None = Field(None, description="Supervisor process id (running only).")
    health: str | None = Field(None, description="healthy, degraded or unhealthy.")
    jobs: list[dict[str, Any]] = Field(
        default_factory=list, description="Jobs with state, pid, restarts, last progress."
    )
    model_config = ConfigDict(extra="allow", populate_by_name=True)


def dump(document: BaseModel) -> None:
    """Print ``document`` as indented JSON on stdout (by alias, so ``schema`` is the key)."""
    sys.stdout.write(document.model_dump_json(indent=2, by_alias=True) + "\n")
