"""Which jobs a change of the station file touches (pure; decision record 0142).

A running station can take a new station file without stopping (a remote ``set_config``,
:mod:`fieldstation.commands.config_apply`): only the jobs whose part of the file changed are
restarted. A job's part (its *view*) is the JSON of every setting it reads: a recorder reads
its sensor, its schedule, its session, and where its messages go; a processor its own entry
and the media of the sensors it analyses; the ``outbox`` thread job every output and the
outbox settings; and so on (:func:`job_views`). Settings every job reads (the ``[station]``
place and timezone, ``[clock]``, ``[[suspenders]]``) are in every view. Where two thread jobs
share one object (the network monitor, the suspenders), the view of the user includes the view
of the owner, so both restart together.

Some settings cannot change while the station runs (:data:`NOT_APPLIABLE`): its id and home
(they name the database, the home lock and the topics), ``[runtime]`` (the supervisor's own
policy) and ``[logging]`` (set up once per process); and a remote file may not turn off the
command channel (``commands.enabled``) it came by, nor replace every hub key in force. A
change of those is refused with one reason per key; apply them on the station and restart it.

Usage::

    change = plan_change(old_config, new_config)
    if change.refused: ...              # reasons, one line each
    change.restart, change.add, change.remove   # job names
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fieldstation.config.outputs import MESSAGE_KINDS
from fieldstation.config.station import StationConfig

__all__ = [
    "NOT_APPLIABLE",
    "ConfigChange",
    "NotAppliableError",
    "job_names",
    "job_views",
    "plan_change",
]

NOT_APPLIABLE: dict[str, str] = {
    "station.id": "the station id names its home, database and topics",
    "station.home": "the station home holds the database and the lock of the running station",
    "runtime": "the supervisor's own settings are read once when the station starts",
    "logging": "logging is set up once when each process starts",
    "commands.enabled": "a remote file cannot turn off the command channel it came by (the "
    "station could not be reached again)",
    "commands.hub_keys": "a remote file must keep at least one of the hub keys in force (add "
    "the new key first, drop the old one in a later file), or no command would be accepted",
}
"""Keys whose change a running station refuses, and why."""


class NotAppliableError(ValueError):
    """The new station file changes what a running station cannot take (:data:`NOT_APPLIABLE`);
    ``reasons``: one line per key."""

    def __init__(self, reasons: Iterable[str]) -> None:
        self.reasons = tuple(reasons)
        super().__init__("; ".join(self.reasons))


@dataclass(frozen=True)
class ConfigChange:
    """What applying a new station file to a running station does.

    ``restart``: jobs in both files whose view changed; ``add``: jobs only the new file has
    (a new or newly enabled sensor, processor, ...); ``remove``: jobs only the old file has;
    ``refused``: one line per setting that cannot change while the station runs (empty when
    the change can be applied)."""

    restart: frozenset[str]
    add: frozenset[str]
    remove: frozenset[str]
    refused: tuple[str, ...] = ()

    @property
    def touched(self) -> frozenset[str]:
        """Every job the change starts, stops or restarts."""
        return self.restart | self.add | self.remove

    @property
    def empty(self) -> bool:
        """Nothing to restart, add or remove."""
        return not self.touched


def _dump(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_dump(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _dump(item) for key, item in value.items()}
    return value


def _routes(config: StationConfig, kinds: Iterable[str]) -> dict[str, list[str]]:
    """Where messages of each of ``kinds`` go (names of the enabled outputs taking them)."""
    return {kind: config.destinations_for(kind) for kind in kinds}


def _common(config: StationConfig) -> dict[str, Any]:
    """What every job reads: the station (place, timezone: schedules and names), the clock
    sanity settings and the suspenders (they may hold any job)."""
    return {
        "station": _dump(config.station),
        "clock": _dump(config.clock),
        "suspenders": _dump(config.suspenders),
    }


def _enqueues(config: StationConfig, *kinds: str) -> dict[str, Any]:
    """What a job that enqueues messages of ``kinds`` (and events) reads: their routes and
    the outbox cap."""
    return {"routes": _routes(config, {*kinds, "event"}), "outbox": _dump(config.outbox)}


def _network_view(config: StationConfig) -> dict[str, Any]:
    from fieldstation.health.network import targets_of

    return {
        "network": _dump(config.network),
        "targets": sorted(str(target) for target in targets_of(config)),
        **_enqueues(config),
    }


def _power_view(config: StationConfig) -> dict[str, Any]:
    if not config.suspenders:
        return {}
    from fieldstation.power.job import job_names as held

    return {"battery": _dump(config.battery), "jobs": held(config), **_enqueues(config)}


def _commands_view(config: StationConfig) -> dict[str, Any]:
    """The ``commands`` job and its inbox (which the outbox's MQTT outputs feed): the
    ``[commands]`` section, where answers go, the HTTP outputs it polls."""
    polled = [_dump(o) for o in config.outputs if o.enabled and getattr(o, "commands_url", None)]
    return {
        "commands": _dump(config.commands),
        "polled": polled,
        **_enqueues(config, "command_result"),
    }


def _recorder_view(config: StationConfig, sensor: Any) -> dict[str, Any]:
    session = config.session_of(sensor.name)
    members = (
        [_dump(config.sensor(name)) for name in session.sensors if name != sensor.name]
        if session is not None
        else []
    )
    return {
        "sensor": _dump(sensor),
        "schedule": _dump(config.schedule_for(sensor)),
        "session": _dump(session) if session is not None else None,
        "session_sensors": members,
        **_enqueues(config, "recording", "readings"),
    }


def _processor_view(config: StationConfig, processor: Any) -> dict[str, Any]:
    names = processor.sensors if processor.sensors is not None else [s.name for s in config.sensors]
    media = {s.name: type(s).media for s in config.sensors if s.name in set(names)}
    return {"processor": _dump(processor), "media": media, **_enqueues(config, "detection")}


def job_views(config: StationConfig, *, threads: bool = True) -> dict[str, dict[str, Any]]:
    """Job name -> the JSON-ready settings it reads, for every job a station running
    ``config`` has (:func:`~fieldstation.runtime.station.process_jobs` and, with ``threads``,
    the thread jobs of :class:`~fieldstation.runtime.station.Station`)."""
    from fieldstation.runtime.plugins_jobs import plugin_entries

    views: dict[str, dict[str, Any]] = {}
    for sensor in config.sensors:
        if sensor.enabled:
            views[f"recorder:{sensor.name}"] = _recorder_view(config, sensor)
    for processor in config.processors:
        if processor.enabled:
            views[f"processor:{processor.name}"] = _processor_view(config, processor)
    if config.web.enabled:
        views["web"] = {
            "web": _dump(config.web),
            "battery": _dump(config.battery),
            "sensors": _dump(config.sensors),
            "processors": _dump(config.processors),
        }
    if threads:
        network, power = _network_view(config), _power_view(config)
        commands = _commands_view(config) if config.commands.enabled else {}
        views["network"] = network
        views["outbox"] = {
            "outputs": _dump(config.outputs),
            "outbox": _dump(config.outbox),
            "routes": _routes(config, (*MESSAGE_KINDS, "command_result")),
            "uses_network": network,
            "uses_power": power,
            "uses_commands": commands,
        }
        if config.commands.enabled:
            views["commands"] = commands
        views["heartbeat"] = {
            "heartbeat": _dump(config.heartbeat),
            "battery": _dump(config.battery),
            "min_free": [s.min_free for s in config.sensors if s.enabled],
            "retention_min_free": config.retention.min_free,
            "uses_network": network,
            "uses_power": power,
            **_enqueues(config, "heartbeat"),
        }
        views["summary"] = {"heartbeat": _dump(config.heartbeat), **_enqueues(config, "summary")}
        upload = _dump(config.upload) if config.upload is not None else None
        views["retention"] = {
            "retention": _dump(config.retention),
            "sensors": [s.name for s in config.sensors],
            "upload": upload,  # what waits for its upload before deletion
            **_enqueues(config),
        }
        if config.upload is not None:
            views["upload"] = {"upload": upload, **_enqueues(config)}
        field = {"field": _dump(config.field), **_enqueues(config)}
        if config.field.button.enabled or config.field.led.enabled:
            views["field"] = field
        if config.field.network.enabled:
            views["netlevel"] = field
        if config.field.wifi.enabled:
            views["wifi"] = field
        if config.suspenders:
            views["power"] = power
        for name in plugin_entries(config):
            # a job plugin's factory is given the whole station: any change restarts it
            views[f"job:{name}"] = {"config": config.model_dump(mode="json")}
    common = _common(config)
    return {name: {**common, **view} for name, view in views.items()}


def job_names(config: StationConfig, *, threads: bool = True) -> list[str]:
    """The names of the jobs a station running ``config`` has (see :func:`job_views`)."""
    return list(job_views(config, threads=threads))


def _refusals(old: StationConfig, new: StationConfig) -> tuple[str, ...]:
    found = []
    pairs = {
        "station.id": (old.station.id, new.station.id),
        "station.home": (old.home_path(), new.home_path()),
        "runtime": (_dump(old.runtime), _dump(new.runtime)),
        "logging": (_dump(old.logging), _dump(new.logging)),
    }
    if old.commands.enabled and not new.commands.enabled:
        pairs["commands.enabled"] = (True, False)
    elif old.commands.enabled and not (
        {k.strip() for k in old.commands.hub_keys.values()}
        & {k.strip() for k in new.commands.hub_keys.values()}
    ):
        pairs["commands.hub_keys"] = (True, False)
    for key, (before, after) in pairs.items():
        if before != after:
            found.append(
                f"{key}: cannot change while the station runs ({NOT_APPLIABLE[key]}); "
                "change it on the station and restart it"
            )
    return tuple(found)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def plan_change(old: StationConfig, new: StationConfig, *, threads: bool = True) -> ConfigChange:
    """Which jobs applying ``new`` to a station running ``old`` restarts, adds and removes,
    and what of the change cannot be applied while it runs (``refused``). Pure."""
    before, after = job_views(old, threads=threads), job_views(new, threads=threads)
    return ConfigChange(
        restart=frozenset(
            name for name in before.keys() & after.keys() if not _same(before[name], after[name])
        ),
        add=frozenset(after.keys() - before.keys()),
        remove=frozenset(before.keys() - after.keys()),
        refused=_refusals(old, new),
    )
