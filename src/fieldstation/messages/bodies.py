"""Body models of every message kind, schema 1, as the station's producers write them today.

Each model is strict (``extra="forbid"``): a field a producer adds must be added here first
(this package is the contract between station and hub). Times are ISO 8601 strings with an
offset (UTC) on the wire and aware ``datetime`` here; durations are seconds; rates are Hz;
sizes are bytes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "AlertBody",
    "Body",
    "CommandResultBody",
    "DetectionBody",
    "DetectionItem",
    "DetectionsToday",
    "EventBody",
    "HeartbeatBody",
    "HeartbeatMetrics",
    "ReadingsBody",
    "RecordingBody",
    "SummaryBody",
    "SummaryLabel",
    "SummaryReading",
]


class Body(BaseModel):
    """Base of every body model: strict, frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RecordingBody(Body):
    """``recording``: one committed chunk (``recording.commit``)."""

    recording_id: int = Field(description="Row id in the station's database.")
    sensor: str
    path: str = Field(description="Path relative to the station home.")
    session_id: str
    capture_id: str | None = None
    chunk_index: int = Field(ge=0)
    start_frame: int = Field(ge=0)
    started_at: AwareDatetime
    duration: float = Field(ge=0, description="Seconds.")
    media: str = Field(description="audio, video, readings, ...")
    rate: int | float = Field(
        gt=0, description="Frames per second (Hz); an int as stations send it (48000)."
    )
    channels: int = Field(ge=0)
    frames: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    format: str
    end_reason: str
    sample_rate: int | float | None = Field(
        default=None, gt=0, description="Audio only: = rate (Hz)."
    )
    stream: dict[str, Any] | None = Field(default=None, description="Non-audio media only.")

    @model_validator(mode="before")
    @classmethod
    def _before_media(cls, data: Any) -> Any:
        """Bodies written before recordings had a media (fieldstation 0.2: audio only, its
        rate under ``sample_rate``, no ``capture_id``) are still recordings: an upgraded
        station sends what its outbox held, and a fleet upgrades one station at a time."""
        if isinstance(data, dict) and "rate" not in data and "sample_rate" in data:
            data = {**data, "rate": data["sample_rate"], "media": data.get("media", "audio")}
        return data


class DetectionItem(Body):
    """One detection inside a ``detection`` body."""

    label: str
    score: float
    start: float = Field(description="Seconds from the recording start.")
    end: float = Field(description="Seconds from the recording start.")
    low_hz: float | None = None
    high_hz: float | None = None
    detected_at: AwareDatetime
    extra: dict[str, Any] = Field(default_factory=dict)


class DetectionBody(Body):
    """``detection``: every detection of one model run on one recording
    (``store.processing``)."""

    recording_id: int
    sensor: str
    recording_started_at: AwareDatetime
    processor: str
    model: str
    model_version: str | None = Field(
        default=None,
        description="The run's model version: the model's own version and, after '+', a digest "
        "of its files and settings (changes when either does; decision 0135).",
    )
    run_id: str | None = Field(
        default=None,
        description="The model run's identity (a UUID): tells a re-analysis apart from the run "
        "before it (decision 0135). Absent in messages of older stations.",
    )
    detections: list[DetectionItem]


class DetectionsToday(Body):
    """``metrics.detections_today`` of a heartbeat: detections of the station's local day."""

    count: int = Field(
        ge=0,
        description="Detections with detected_at from since to the heartbeat, of the latest "
        "run of each processor on each recording (a reprocessed recording counts once).",
    )
    since: AwareDatetime = Field(description="Start of the station's local day (its timezone).")


class HeartbeatMetrics(Body):
    """``metrics`` of a heartbeat (``health.metrics.StationMetrics.as_dict``)."""

    host: dict[str, Any]
    outbox: dict[str, Any] = Field(description="pending (count), oldest_age_s (seconds).")
    last_recording_age_s: float | None
    last_detection_age_s: float | None
    jobs: list[dict[str, Any]]
    deployment_id: int | None
    config_hash: str | None
    versions: dict[str, str]
    battery: dict[str, Any] | None = None
    errors: list[str] = Field(default_factory=list)
    detections_today: DetectionsToday | None = Field(
        default=None,
        description="Detections so far on the station's local day (Home Assistant's "
        "'Detections today'); null when the database could not be read.",
    )


class HeartbeatBody(Body):
    """``heartbeat``: station health (``health.heartbeat.Heartbeat.build``)."""

    status: str = Field(description="ok, degraded or failing.")
    reasons: list[str]
    seq: int = Field(ge=0, description="Counts from 1 at each station start.")
    interval: float = Field(gt=0, description="Seconds to the next heartbeat.")
    network_up: bool | None
    station_uptime_s: float = Field(ge=0)
    config_hash_in_force: str | None
    metrics: HeartbeatMetrics
    power: dict[str, Any] | None = Field(
        default=None,
        description="Stations with [[suspenders]]: each suspender's state, last value and "
        "reason, and the jobs held (power.job.Suspenders.status); absent otherwise.",
    )


class SummaryLabel(Body):
    """One label's line in a ``summary``."""

    label: str
    count: int = Field(ge=0)
    max_score: float
    mean_score: float


class SummaryReading(Body):
    """One slow sensor quantity's line in a ``summary``: its values over the period."""

    sensor: str
    quantity: str
    unit: str
    count: int = Field(ge=0)
    min: float
    max: float
    mean: float


class SummaryBody(Body):
    """``summary``: detections per label and slow sensors' values over one period
    (``health.summary``)."""

    period_start: AwareDatetime
    period_end: AwareDatetime
    interval: float = Field(gt=0, description="Seconds.")
    recordings: int = Field(ge=0)
    recorded_s: float = Field(ge=0)
    detections: int = Field(ge=0)
    labels: list[SummaryLabel]
    readings: list[SummaryReading] = Field(
        default_factory=list, description="Per sensor and quantity; absent before 0.3."
    )
    late: bool


class EventBody(Body):
    """``event``: restarts, failures, disk low, ... (``store.events.record_event``)."""

    event: str = Field(description="The event kind, e.g. job_restarted.")
    severity: Literal["info", "warning", "error"]
    source: str
    message: str
    data: dict[str, Any] = Field(default_factory=dict)
    event_id: int


class ReadingsBody(Body):
    """``readings``: one measurement of a slow sensor (``recording.rows``)."""

    sensor: str
    measured_at: AwareDatetime
    period: float = Field(gt=0, description="Seconds between measurements.")
    values: dict[str, float | None] = Field(description="Quantity -> value; null: not measured.")
    units: dict[str, str] = Field(description="Quantity -> UCUM unit.")


class AlertBody(Body):
    """``alert``: one firing of an alert rule (``alerts.job``), delivered with high priority."""

    rule: str = Field(description="Name of the [[alerts]] rule that fired.")
    title: str = Field(max_length=250)
    message: str = Field(description="Readable text of the alert.")
    severity: Literal["info", "warning", "error"]
    occurred_at: AwareDatetime = Field(description="When the detection, event or reading was.")
    ref: str = Field(description="What fired it: 'detection:<id>', 'event:<id>', 'reading:<id>'.")
    data: dict[str, Any] = Field(default_factory=dict)
    attachment: str | None = Field(
        default=None, description="Image beside it (path relative to the station home), or null."
    )


class CommandResultBody(Body):
    """``command_result``: a station's answer to one fleet command
    (:mod:`fieldstation.messages.commands`), sent through the outbox so the hub sees each
    command's state even across outages. A command gets ``accepted`` when it is stored (applied
    at most once: its id is kept), then ``done`` or ``refused``; a refused one may come without
    ``accepted`` (a bad signature, an expired or replayed command, invalid arguments or config)."""

    command_id: str = Field(min_length=1, max_length=200)
    command: str = Field(max_length=50, description="set_config, restart, ... ('?' if unreadable).")
    state: Literal["accepted", "done", "refused"]
    reason: str | None = Field(default=None, description="Why refused (or a note on done).")
    details: dict[str, Any] = Field(
        default_factory=dict, description="Per command: validation errors, a ping's uptime, ..."
    )
    config_hash_in_force: str | None = Field(
        default=None, description="The station's config hash after the command."
    )
    at: AwareDatetime = Field(description="When the station reached this state (UTC).")
