"""The station file: top-level model, plugin-aware validation, loading and hashing."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Annotated, Any, NamedTuple, Union
from zoneinfo import ZoneInfo, available_timezones

from pydantic import (
    Discriminator,
    Field,
    Tag,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from fieldstation.config.alerts import AlertRule
from fieldstation.config.base import Name, StrictModel
from fieldstation.config.commands import CommandsConfig
from fieldstation.config.field import FieldConfig
from fieldstation.config.health import BatteryConfig, HeartbeatConfig, NetworkConfig
from fieldstation.config.jobs import JobEntry
from fieldstation.config.outputs import OutboxConfig, OutputConfig
from fieldstation.config.plugins import PluginGroup, UnknownPluginError, load_plugin, plugin_names
from fieldstation.config.power import ClockConfig, SuspenderConfig
from fieldstation.config.processing import ProcessorConfig
from fieldstation.config.retention import RetentionConfig
from fieldstation.config.runtime import LoggingConfig, RuntimeConfig
from fieldstation.config.schedule import ScheduleConfig
from fieldstation.config.sensors import SensorConfig
from fieldstation.config.sessions import SessionConfig
from fieldstation.config.upload import UploadConfig
from fieldstation.config.web import WebConfig

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "StationConfig",
    "StationSection",
    "config_data",
    "config_hash",
    "host_issues",
    "load_config",
    "parse_config",
    "station_model",
]


@cache
def _iana_zones() -> frozenset[str]:
    """IANA ``Area/Location`` zone names known to this system (tzdata), plus ``UTC``.

    Names without an area (``localtime``, ``EST5EDT``, ``GMT``, ``Factory``) are left out:
    ``localtime`` is whatever the host is set to, the POSIX-style ones are legacy rules.
    """
    return frozenset(name for name in available_timezones() if "/" in name) | {"UTC"}


class StationSection(StrictModel):
    """Who and where the station is."""

    id: Name = Field(description="Station id: unique in a fleet; used in paths and topics.")
    name: str = Field(
        default="", max_length=200, description="Human name of the station (≤ 200 characters)."
    )
    latitude: float = Field(ge=-90, le=90, description="Latitude, decimal degrees (north > 0).")
    longitude: float = Field(ge=-180, le=180, description="Longitude, decimal degrees (east > 0).")
    elevation: float = Field(default=0.0, ge=-500, le=9000, description="Elevation, metres.")
    timezone: str = Field(
        default="UTC",
        description="IANA Area/Location timezone of local times in schedules ('Europe/London'), "
        "or 'UTC'.",
    )
    home: Path | None = Field(
        default=None,
        description="Station home folder; default $FIELDSTATION_HOME or ~/.fieldstation/<id>.",
    )

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        if value in _iana_zones():
            return value
        if "/" not in value:
            raise ValueError(
                f"{value!r} is not an IANA Area/Location timezone name; use one such as "
                "'Europe/London' or 'America/New_York', or 'UTC'"
            )
        raise ValueError(f"unknown IANA timezone {value!r} (e.g. 'Europe/London')")

    @property
    def tz(self) -> ZoneInfo:
        """The station timezone."""
        return ZoneInfo(self.timezone)


class StationConfig(StrictModel):
    """A whole station file. Build it with :func:`load_config` or :func:`parse_config`.

    ``sensors``, ``processors`` and ``outputs`` hold instances of each plugin's own config model
    (subclasses of the bases named in the annotations).
    """

    station: StationSection = Field(
        description="Who and where the station is: id, place (for sun events) and timezone."
    )
    sensors: list[SensorConfig] = Field(default_factory=list, description="Sensors (plugins).")
    schedules: dict[Name, ScheduleConfig] = Field(
        default_factory=dict, description="Named schedules, referred to by sensors."
    )
    sessions: list[SessionConfig] = Field(
        default_factory=list,
        description="Sensors recorded together as one session (one id, one anchor, a manifest).",
    )
    processors: list[ProcessorConfig] = Field(
        default_factory=list, description="Processors: a model plus filters and cleaners."
    )
    retention: RetentionConfig = Field(
        default_factory=RetentionConfig,
        description="What is kept on disk: per-sensor policies, quota and free-space floor.",
    )
    outputs: list[OutputConfig] = Field(default_factory=list, description="Outbox destinations.")
    outbox: OutboxConfig = Field(
        default_factory=OutboxConfig,
        description="The durable outbox: byte cap, policy when full, batching and backoff.",
    )
    heartbeat: HeartbeatConfig = Field(
        default_factory=HeartbeatConfig,
        description="Periodic health messages, detection summaries and 'degraded' thresholds.",
    )
    network: NetworkConfig = Field(
        default_factory=NetworkConfig,
        description="Network monitor: probes, hysteresis and backoff while down.",
    )
    battery: BatteryConfig = Field(
        default_factory=BatteryConfig, description="Optional INA219 battery monitor over I2C."
    )
    suspenders: list[SuspenderConfig] = Field(
        default_factory=list,
        description="Pause recorders, processors or outputs while power or temperature is "
        "beyond a threshold (hysteresis, minimum times).",
    )
    clock: ClockConfig = Field(
        default_factory=ClockConfig,
        description="Clock sanity: wait for a trustworthy clock; cut sessions at clock steps.",
    )
    field: FieldConfig = Field(
        default_factory=FieldConfig,
        description="Field hardware: GPIO button and LED, network levels, Wi-Fi provisioning.",
    )
    runtime: RuntimeConfig = Field(
        default_factory=RuntimeConfig,
        description="Supervisor: restart backoff and limits, liveness, stop timeout.",
    )
    logging: LoggingConfig = Field(
        default_factory=LoggingConfig,
        description="Log level and rotation of the log files in logs/ (size, age, backups).",
    )
    web: WebConfig = Field(
        default_factory=WebConfig,
        description="The station's own web page: address, login, spectrogram cache.",
    )
    commands: CommandsConfig = Field(
        default_factory=CommandsConfig,
        description="Fleet commands from the hub: signature keys, HTTP polling (docs/commands.md).",
    )
    alerts: list[AlertRule] = Field(
        default_factory=list,
        description="Alert rules on detections, events and readings, sent as 'alert' messages.",
    )
    jobs: list[JobEntry] = Field(
        default_factory=list,
        description="Jobs of job plugins (entry point group fieldstation.jobs): exports, ...",
    )
    upload: UploadConfig | None = Field(
        default=None,
        description="Recordings uploaded to the hub, resumably; retention waits for the hub.",
    )

    @model_validator(mode="after")
    def _alerts_and_jobs(self) -> StationConfig:
        from fieldstation.config.alerts import alert_issues

        problems = alert_issues(
            self.alerts, [o.name for o in self.outputs], [j.name for j in self.jobs]
        )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def sensor(self, name: str) -> SensorConfig:
        """The sensor named ``name``; raises ``KeyError``."""
        for sensor in self.sensors:
            if sensor.name == name:
                return sensor
        raise KeyError(f"no sensor named {name!r}")

    def processor(self, name: str) -> ProcessorConfig:
        """The processor named ``name``; raises ``KeyError``."""
        for processor in self.processors:
            if processor.name == name:
                return processor
        raise KeyError(f"no processor named {name!r}")

    def session_of(self, sensor: str) -> SessionConfig | None:
        """The session ``sensor`` belongs to, or None."""
        for session in self.sessions:
            if sensor in session.sensors:
                return session
        return None

    def schedule_for(self, sensor: SensorConfig) -> ScheduleConfig:
        """The schedule of ``sensor`` (continuous when it names none)."""
        return self.schedules[sensor.schedule] if sensor.schedule else ScheduleConfig()

    def destinations_for(self, kind: str) -> list[str]:
        """Names of the enabled outputs that take messages of ``kind``."""
        return [o.name for o in self.outputs if o.enabled and (o.kinds is None or kind in o.kinds)]

    def home_path(self) -> Path:
        """The station home: ``station.home``, else ``$FIELDSTATION_HOME``, else the default."""
        if self.station.home is not None:
            return self.station.home.expanduser()
        env = os.environ.get("FIELDSTATION_HOME")
        if env:
            return Path(env).expanduser()
        return Path("~/.fieldstation").expanduser() / self.station.id


class ConfigIssue(NamedTuple):
    """One problem in a station file: dotted key path, the offending value, the reason."""

    path: str
    value: Any
    message: str

    def __str__(self) -> str:
        shown = "" if self.value is _MISSING else f" (got {self.value!r})"
        return f"{self.path or '<file>'}: {self.message}{shown}"


class ConfigError(ValueError):
    """A station file is invalid; ``issues`` lists every problem found."""

    def __init__(self, issues: Sequence[ConfigIssue], source: Path | None = None) -> None:
        self.issues = list(issues)
        self.source = source
        where = f"{source}: " if source else ""
        lines = "\n".join(f"  {issue}" for issue in self.issues)
        super().__init__(f"{where}{len(self.issues)} error(s) in station config\n{lines}")


_SECRET_KEY = re.compile(
    r"passw(or)?d|passphrase|token|secret|api_?key|credential|authorization", re.IGNORECASE
)
_URL_USERINFO = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/?#@:\s]*):[^/?#@\s]*@"
)
_MISSING: Any = type("_Missing", (), {"__repr__": lambda self: "<missing>"})()
_REDACTED = "<redacted>"


class _Described:
    """A value shown by description (its type and keys), never verbatim."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def redact_text(text: str) -> str:
    """``text`` with the password of every URL replaced (``mqtt://u:<redacted>@host``)."""
    return _URL_USERINFO.sub(rf"\g<scheme>\g<user>:{_REDACTED}@", text)


def shown_value(value: Any, key: str | None = None) -> Any:
    """What an error message may show of a bad ``value`` found under ``key``.

    Secret-looking keys (password, passwd, token, secret, api_key... anywhere in the name) show
    ``<redacted>``; a table (dict) shows only its type and key names, a list its length and the
    types of its items, never their contents (they may hold secrets); strings have URL
    passwords redacted. Other scalars are shown as they are.
    """
    if value is _MISSING:
        return value
    if key is not None and _SECRET_KEY.search(key):
        return _REDACTED
    if isinstance(value, dict):
        keys = ", ".join(str(k) for k in value)
        return _Described(f"a table with keys {keys}" if keys else "an empty table")
    if isinstance(value, list | tuple):
        kinds = sorted({type(item).__name__ for item in value})
        if not value:
            return _Described("an empty list")
        return _Described(f"a list of {len(value)} item(s) of type {', '.join(kinds)}")
    if isinstance(value, str):
        # clip first: the URL pattern is slow on a megabyte of text, and only the start shows
        return _clipped(redact_text(value[: _SHOWN_CHARS * 2]), len(value))
    return value


_SHOWN_CHARS = 80
"""How much of a long bad string an error message shows."""


def _clipped(text: str, length: int) -> Any:
    """``text`` (of a value ``length`` characters long), or its first :data:`_SHOWN_CHARS`
    characters and the length when longer."""
    if length <= _SHOWN_CHARS:
        return text
    return _Described(f"{text[:_SHOWN_CHARS]!r}... ({length} characters)")


_PLUGIN_LISTS: dict[str, tuple[PluginGroup, str]] = {
    "sensors": ("sensors", "kind"),
    "processors": ("models", "model"),
    "outputs": ("messengers", "kind"),
}


def _plugin_union(field: str, base: type[StrictModel], names: Iterable[str]) -> Any:
    """A tagged union of the config models of the plugins ``names`` for one plugin list."""
    group, key = _PLUGIN_LISTS[field]
    members = []
    for name in names:
        model = load_plugin(group, name).config_model
        if not issubclass(model, base):
            raise TypeError(f"{group} plugin {name!r}: config model must subclass {base.__name__}")
        members.append(Annotated[model, Tag(name)])
    if not members:
        return base

    def tag_of(value: Any) -> str | None:
        raw = value.get(key) if isinstance(value, dict) else getattr(value, key, None)
        return raw if isinstance(raw, str) else None

    return Annotated[Union[tuple(members)], Discriminator(tag_of)]  # noqa: UP007


@cache
def station_model(named: frozenset[tuple[str, str]] | None = None) -> type[StationConfig]:
    """The station model with each plugin list typed by the installed plugins' config models.

    ``named``: only the plugins of these ``(list, plugin name)`` pairs, e.g. ``("sensors",
    "synthetic")`` (:func:`parse_config` passes those a file names, when all are installed, so
    a station loads only its own plugins: issue 22, start-up time and memory); None: every
    installed plugin (the schema of any station file)."""
    bases: dict[str, type[StrictModel]] = {
        "sensors": SensorConfig,
        "processors": ProcessorConfig,
        "outputs": OutputConfig,
    }
    fields: dict[str, Any] = {}
    for field, base in bases.items():
        group = _PLUGIN_LISTS[field][0]
        names = (
            plugin_names(group)
            if named is None
            else sorted(name for list_name, name in named if list_name == field)
        )
        fields[field] = (
            list[_plugin_union(field, base, names)],  # type: ignore[misc]
            Field(default_factory=list, description=StationConfig.model_fields[field].description),
        )
    return create_model("StationConfig", __base__=StationConfig, **fields)  # type: ignore[call-overload, no-any-return]


def _path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part)  # a key of the file, which may be absurdly long
            if len(text) > _SHOWN_CHARS:
                text = f"{text[:_SHOWN_CHARS]}...({len(text)} characters)"
            out += f".{text}" if out else text
    return out


def _lookup(data: Any, loc: Sequence[int | str]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return data


def _issues_from(error: ValidationError, data: dict[str, Any]) -> list[ConfigIssue]:
    issues = []
    for err in error.errors(include_url=False):
        loc = list(err["loc"])
        # A tagged union puts the plugin name into the path: sensors.1.synthetic.rate.
        if len(loc) >= 3 and loc[0] in _PLUGIN_LISTS and isinstance(loc[1], int):
            del loc[2]
        message = err["msg"]
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            group, key = _PLUGIN_LISTS[str(loc[0])]
            loc.append(key)
            known = ", ".join(plugin_names(group)) or "none installed"
            message = f"unknown {group} plugin (installed: {known})"
            if err["type"] == "union_tag_not_found":
                message = f"'{key}' is required and names a {group} plugin (installed: {known})"
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        value = err.get("input", _MISSING) if err["type"] != "missing" else _MISSING
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            value = _lookup(data, loc)  # the tag itself, not the whole entry
        secret = any(isinstance(part, str) and _SECRET_KEY.search(part) for part in loc)
        value = _REDACTED if secret and value is not _MISSING else shown_value(value)
        issues.append(ConfigIssue(_path(loc), value, redact_text(message)))
    return issues


def _duplicates(kind: str, names: Sequence[str]) -> list[ConfigIssue]:
    seen: set[str] = set()
    issues = []
    for index, name in enumerate(names):
        if name in seen:
            issues.append(ConfigIssue(f"{kind}[{index}].name", name, f"duplicate {kind[:-1]} name"))
        seen.add(name)
    return issues


def _media_issues(key: str, processor: ProcessorConfig, sensor: SensorConfig) -> list[ConfigIssue]:
    """A processor naming a sensor whose recordings its model cannot analyse: the model
    plugin's ``media`` against the sensor config class's ``media``."""
    try:
        wanted = load_plugin("models", processor.model).media
    except UnknownPluginError:  # reported by the validation of the processor itself
        return []
    recorded = type(sensor).media
    if wanted == recorded:
        return []
    return [
        ConfigIssue(
            key,
            sensor.name,
            f"processor {processor.name!r} (model {processor.model!r}) analyses {wanted}, but "
            f"sensor {sensor.name!r} records {recorded}: name only sensors recording {wanted} "
            f"here, or give sensor {sensor.name!r} a processor whose model analyses {recorded}",
        )
    ]


def _cross_checks(config: StationConfig) -> list[ConfigIssue]:
    """Checks that span sections: unique names and references between sections."""
    issues = _duplicates("sensors", [s.name for s in config.sensors])
    issues += _duplicates("processors", [p.name for p in config.processors])
    issues += _duplicates("outputs", [o.name for o in config.outputs])
    sensor_names = {s.name for s in config.sensors}
    for i, sensor in enumerate(config.sensors):
        if sensor.schedule is not None and sensor.schedule not in config.schedules:
            known = ", ".join(sorted(config.schedules)) or "none defined"
            issues.append(
                ConfigIssue(
                    f"sensors[{i}].schedule", sensor.schedule, f"no such schedule ({known})"
                )
            )
    sensors_by_name = {s.name: s for s in config.sensors}
    for i, processor in enumerate(config.processors):
        for j, name in enumerate(processor.sensors or []):
            if name not in sensor_names:
                issues.append(ConfigIssue(f"processors[{i}].sensors[{j}]", name, "no such sensor"))
            else:
                issues += _media_issues(
                    f"processors[{i}].sensors[{j}]", processor, sensors_by_name[name]
                )
    for name in config.retention.sensors:
        if name not in sensor_names:
            issues.append(ConfigIssue(f"retention.sensors.{name}", name, "no such sensor"))
    issues += _session_checks(config)
    return issues


def _session_checks(config: StationConfig) -> list[ConfigIssue]:
    """Sessions name existing sensors, each sensor is in one session at most, and a session's
    sensors share one schedule (so that they start and stop together)."""
    issues = _duplicates("sessions", [s.name for s in config.sessions])
    by_name = {s.name: s for s in config.sensors}
    member_of: dict[str, str] = {}
    for i, session in enumerate(config.sessions):
        schedules: dict[str | None, str] = {}
        for j, name in enumerate(session.sensors):
            key = f"sessions[{i}].sensors[{j}]"
            if name not in by_name:
                issues.append(ConfigIssue(key, name, "no such sensor"))
                continue
            if name in member_of:
                issues.append(ConfigIssue(key, name, f"already in session {member_of[name]!r}"))
                continue
            member_of[name] = session.name
            schedules.setdefault(by_name[name].schedule, name)
        if len(schedules) > 1:
            shown = ", ".join(
                f"{sensor} has {schedule or 'none (continuous)'}"
                for schedule, sensor in schedules.items()
            )
            issues.append(
                ConfigIssue(
                    f"sessions[{i}].sensors",
                    session.sensors,
                    f"sensors of one session must share a schedule ({shown}): give them the "
                    "same 'schedule'",
                )
            )
    return issues


def host_issues(config: StationConfig) -> list[ConfigIssue]:
    """What stops the enabled sensors and processors of ``config`` on *this* machine, found
    cheaply by each plugin's ``preflight`` (replay files missing, not regular, unreadable or
    undecodable by their headers; model extras not installed): one issue per problem at the
    entry's key path. Checks only; builds nothing (decision record 0014)."""
    issues: list[ConfigIssue] = []
    entries: list[tuple[str, PluginGroup, str, Any]] = [
        *(("sensors", "sensors", s.kind, s) for s in config.sensors),
        *(("processors", "models", p.model, p) for p in config.processors),
    ]
    index = {"sensors": 0, "processors": 0}
    for field, group, name, entry in entries:
        key = f"{field}[{index[field]}]"
        index[field] += 1
        check = load_plugin(group, name).preflight
        if not entry.enabled or check is None:
            continue
        for problem in check(entry):
            issues.append(ConfigIssue(key, _MISSING, problem))
    return issues


def _plugins_named(data: Any) -> frozenset[tuple[str, str]] | None:
    """The ``(list, plugin name)`` pairs of a station file's plugin lists when every entry
    names an installed plugin; None otherwise (the full model then reports what is wrong,
    naming every installed plugin)."""
    if not isinstance(data, dict):
        return None
    named = set()
    for field, (group, key) in _PLUGIN_LISTS.items():
        entries = data.get(field, [])
        if not isinstance(entries, list):
            return None
        for entry in entries:
            name = entry.get(key) if isinstance(entry, dict) else None
            if not isinstance(name, str) or name not in plugin_names(group):
                return None
            named.add((field, name))
    return frozenset(named)


def parse_config(data: dict[str, Any], source: Path | None = None) -> StationConfig:
    """Validate a parsed station file. Raises :class:`ConfigError` listing every problem."""
    try:
        config = station_model(_plugins_named(data)).model_validate(data)
    except ValidationError as error:
        raise ConfigError(_issues_from(error, data), source) from None
    issues = _cross_checks(config)
    if issues:
        raise ConfigError(issues, source)
    return config


MAX_FILE_BYTES = 1 << 20
"""Largest station file read (1 MiB): a real one is a few kB; a bigger file is refused before
it is parsed, so a runaway value cannot fill memory or every log line."""


def _file_issue(message: str, source: Path) -> ConfigError:
    return ConfigError([ConfigIssue("", _MISSING, message)], source)


def load_config(path: str | Path) -> StationConfig:
    """Read and validate a station TOML file.

    Raises :class:`ConfigError` (one line per problem, never a traceback) for a file that cannot
    be read, is over :data:`MAX_FILE_BYTES`, is not UTF-8 (with the byte offset), is not valid
    TOML (with line and column) or nests too deeply to parse, or for invalid content (every
    problem with its key path).
    """
    source = Path(path)
    try:
        with source.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise _file_issue(f"cannot read file: {error}", source) from None
    if len(raw) > MAX_FILE_BYTES:
        raise _file_issue(
            f"file is larger than {MAX_FILE_BYTES} bytes; a station file is a few kB: "
            "is this the right file?",
            source,
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise _file_issue(
            f"not UTF-8 text: byte 0x{raw[error.start]:02x} at offset {error.start} (line "
            f"{line}); save the file as UTF-8",
            source,
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise _file_issue(f"not valid TOML: {error}", source) from None
    except RecursionError:
        raise _file_issue(
            "arrays or tables nest too deeply to read; a station file needs a few levels",
            source,
        ) from None
    try:
        return parse_config(data, source)
    except RecursionError:
        raise _file_issue("values nest too deeply to validate", source) from None


def config_hash(config: StationConfig) -> str:
    """SHA-256 (hex) of the canonical JSON of the validated config; names a deployment."""
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def config_data(config: StationConfig) -> dict[str, Any]:
    """The config as JSON-ready data for another process, which validates it again with
    :func:`parse_config`: only the keys the station file set (``exclude_unset``), so the copy
    knows what was given and what was left to a default (the replay sensor takes an omitted
    ``sample_rate`` from its first file), and its values are the same."""
    return config.model_dump(mode="json", exclude_unset=True)
