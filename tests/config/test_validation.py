"""Malformed station files: each gives exit 2 and a message naming the offending key."""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from typer.testing import CliRunner

from fieldstation.cli.app import app
from fieldstation.config import template_text
from fieldstation.config.plugins import plugin_names

Data = dict[str, Any]


def _set(path: str, value: Any) -> Callable[[Data], None]:
    """Mutation that sets a dotted path (``sensors.0.chunk``) to ``value``."""

    def apply(data: Data) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return apply


def _delete(path: str) -> Callable[[Data], None]:
    def apply(data: Data) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]

    return apply


def _append_sensor(**fields: Any) -> Callable[[Data], None]:
    def apply(data: Data) -> None:
        base = copy.deepcopy(data["sensors"][0])
        base.update(fields)
        data["sensors"].append(base)

    return apply


NO_VALUE = None
"""The message shows no value (a missing key)."""

# (case, mutation, key path, a fragment of the reason, the bad value as shown after "got ")
CASES: list[tuple[str, Callable[[Data], None], str, str, str | None]] = [
    (
        "latitude out of range",
        _set("station.latitude", 91),
        "station.latitude",
        "less than or equal to 90",
        "91",
    ),
    (
        "longitude out of range",
        _set("station.longitude", -181),
        "station.longitude",
        "greater than or equal to -180",
        "-181",
    ),
    (
        "latitude wrong type",
        _set("station.latitude", "north"),
        "station.latitude",
        "valid number",
        "'north'",
    ),
    (
        "unknown timezone",
        _set("station.timezone", "Mars/Olympus"),
        "station.timezone",
        "unknown IANA timezone",
        "'Mars/Olympus'",
    ),
    (
        "timezone 'localtime' is not an IANA name",
        _set("station.timezone", "localtime"),
        "station.timezone",
        "not an IANA Area/Location timezone",
        "'localtime'",
    ),
    (
        "POSIX-style timezone",
        _set("station.timezone", "EST5EDT"),
        "station.timezone",
        "not an IANA Area/Location timezone",
        "'EST5EDT'",
    ),
    (
        "station id with space",
        _set("station.id", "my station"),
        "station.id",
        "should match pattern",
        "'my station'",
    ),
    ("missing station id", _delete("station.id"), "station.id", "Field required", NO_VALUE),
    ("missing station section", _delete("station"), "station", "Field required", NO_VALUE),
    (
        "unknown station key",
        _set("station.colour", "red"),
        "station.colour",
        "Extra inputs are not permitted",
        "'red'",
    ),
    (
        "unknown top-level key",
        _set("sensorz", []),
        "sensorz",
        "Extra inputs are not permitted",
        "an empty list",
    ),
    (
        "bad sample rate unit",
        _set("sensors.0.sample_rate", "48 kHzz"),
        "sensors[0].sample_rate",
        "cannot read '48 kHzz' as a frequency",
        "'48 kHzz'",
    ),
    (
        "negative sample rate",
        _set("sensors.0.sample_rate", -48000),
        "sensors[0].sample_rate",
        "positive whole number of Hz",
        "-48000",
    ),
    (
        "fractional sample rate",
        _set("sensors.0.sample_rate", "44.1005kHz"),
        "sensors[0].sample_rate",
        "positive whole number of Hz, got 44100.5",
        "'44.1005kHz'",
    ),
    (
        "infinite sample rate",
        _set("sensors.0.sample_rate", math.inf),
        "sensors[0].sample_rate",
        "must be finite",
        "inf",
    ),
    (
        "bad chunk duration",
        _set("sensors.0.chunk", "ten seconds"),
        "sensors[0].chunk",
        "cannot read 'ten seconds' as a duration",
        "'ten seconds'",
    ),
    ("zero chunk", _set("sensors.0.chunk", 0), "sensors[0].chunk", "or equal to 0.05", "0.0"),
    (
        "bad size",
        _set("sensors.0.min_free", "lots"),
        "sensors[0].min_free",
        "could not parse value and unit",
        "'lots'",
    ),
    (
        "unknown sensor kind",
        _set("sensors.0.kind", "thermometer9000"),
        "sensors[0].kind",
        f"unknown sensors plugin (installed: {', '.join(plugin_names('sensors'))})",
        "'thermometer9000'",
    ),
    (
        "missing sensor kind",
        _delete("sensors.0.kind"),
        "sensors[0].kind",
        "'kind' is required and names a sensors plugin",
        NO_VALUE,
    ),
    (
        "unknown sensor key",
        _set("sensors.0.gain", 3),
        "sensors[0].gain",
        "Extra inputs are not permitted",
        "3",
    ),
    (
        "bad sample format",
        _set("sensors.0.sample_format", "int12"),
        "sensors[0].sample_format",
        "Input should be 'int16', 'int24', 'int32' or 'float32'",
        "'int12'",
    ),
    (
        "bad file format",
        _set("sensors.0.format", "mp3"),
        "sensors[0].format",
        "Input should be 'flac' or 'wav'",
        "'mp3'",
    ),
    (
        "channels zero",
        _set("sensors.0.channels", 0),
        "sensors[0].channels",
        "greater than or equal to 1",
        "0",
    ),
    (
        "duplicate sensor names",
        _append_sensor(),
        "sensors[1].name",
        "duplicate sensor name",
        "'mic'",
    ),
    (
        "second sensor bad kind",
        _append_sensor(name="mic2", kind="nope"),
        "sensors[1].kind",
        "unknown sensors plugin",
        "'nope'",
    ),
    (
        "schedule does not exist",
        _set("sensors.0.schedule", "nightly"),
        "sensors[0].schedule",
        "no such schedule (always, dawn_chorus)",
        "'nightly'",
    ),
    (
        "bad window edge",
        _set("schedules.always.windows", [{"start": "25:00", "end": "26:00"}]),
        "schedules.always.windows[0].start",
        "'25:00' is not a window edge",
        "'25:00'",
    ),
    (
        "bad sun event",
        _set("schedules.dawn_chorus.windows.0.start", "moonrise"),
        "schedules.dawn_chorus.windows[0].start",
        "'moonrise' is not a window edge",
        "'moonrise'",
    ),
    (
        "duty cycle without period",
        _set("schedules.dawn_chorus.duty_cycle", {"record": "1m"}),
        "schedules.dawn_chorus.duty_cycle",
        "give exactly one of 'sleep' or 'every'",
        "a table with keys record",
    ),
    (
        "duty cycle every < record",
        _set("schedules.dawn_chorus.duty_cycle", {"record": "5m", "every": "1m"}),
        "schedules.dawn_chorus.duty_cycle",
        "'every' (60 s) is shorter than 'record' (300 s)",
        "a table with keys record, every",
    ),
    (
        "bad polar option",
        _set("schedules.dawn_chorus.polar", "maybe"),
        "schedules.dawn_chorus.polar",
        "Input should be 'skip' or 'whole_day'",
        "'maybe'",
    ),
    (
        "bad weekday",
        _set("schedules.dawn_chorus.weekdays", ["funday"]),
        "schedules.dawn_chorus.weekdays[0]",
        "Input should be 'mon', 'tue'",
        "'funday'",
    ),
    (
        "no weekdays",
        _set("schedules.dawn_chorus.weekdays", []),
        "schedules.dawn_chorus.weekdays",
        "give at least one weekday",
        "an empty list",
    ),
    (
        "unknown model",
        _set("processors.0.model", "owlnet"),
        "processors[0].model",
        "unknown models plugin",
        "'owlnet'",
    ),
    (
        "processor for unknown sensor",
        _set("processors.0.sensors", ["ghost"]),
        "processors[0].sensors[0]",
        "no such sensor",
        "'ghost'",
    ),
    (
        "score out of range",
        _set("processors.0.cleaners.min_score", 1.5),
        "processors[0].cleaners.min_score",
        "less than or equal to 1",
        "1.5",
    ),
    (
        "unknown output kind",
        _set("outputs.0.kind", "pigeon"),
        "outputs[0].kind",
        "unknown messengers plugin",
        "'pigeon'",
    ),
    (
        "mqtt without host",
        _set("outputs", [{"name": "b", "kind": "mqtt"}]),
        "outputs[0].host",
        "Field required",
        NO_VALUE,
    ),
    (
        "plain-text password",
        _set("outputs", [{"name": "b", "kind": "mqtt", "host": "h", "password": "hunter2"}]),
        "outputs[0].password",
        "a secret must be given as 'env:VARIABLE' or 'file:/path/to/file'",
        "'<redacted>'",
    ),
    (
        "unknown message kind",
        _set("outputs.0.kinds", ["gossip"]),
        "outputs[0].kinds[0]",
        "Input should be 'event', 'alert', 'heartbeat'",
        "'gossip'",
    ),
    (
        "bad when_full",
        _set("outbox.when_full", "explode"),
        "outbox.when_full",
        "Input should be 'drop_oldest' or 'block'",
        "'explode'",
    ),
    (
        "bad heartbeat interval",
        _set("heartbeat.interval", "-5m"),
        "heartbeat.interval",
        "cannot read '-5m' as a duration",
        "'-5m'",
    ),
    (
        "infinite heartbeat interval",
        _set("heartbeat.interval", math.inf),
        "heartbeat.interval",
        "must be finite",
        "inf",
    ),
    (
        "heartbeat interval 'nan'",
        _set("heartbeat.interval", "nan"),
        "heartbeat.interval",
        "must be finite",
        "'nan'",
    ),
    (
        "repeated duration unit",
        _set("heartbeat.interval", "1h1h"),
        "heartbeat.interval",
        "'1h1h' repeats the unit 'h'",
        "'1h1h'",
    ),
    (
        "repeated duration unit under another name",
        _set("heartbeat.interval", "1m 30min"),
        "heartbeat.interval",
        "repeats the unit 'm'",
        "'1m 30min'",
    ),
    (
        "bad retention policy",
        _set("retention.default.keep", "forever"),
        "retention.default.keep",
        "Input should be 'all', 'detections' or 'days'",
        "'forever'",
    ),
    (
        "keep days without days",
        _set("retention.default", {"keep": "days"}),
        "retention.default",
        "keep='days' needs 'days'",
        "a table with keys keep",
    ),
    (
        "retention for unknown sensor",
        _set("retention.sensors", {"ghost": {"keep": "all"}}),
        "retention.sensors.ghost",
        "no such sensor",
        "'ghost'",
    ),
    (
        "log files without size rotation",
        _set("logging.max_bytes", 0),
        "logging.max_bytes",
        "must be more than 0 bytes",
        "0",
    ),
    (
        "bad log level",
        _set("logging.level", "LOUD"),
        "logging.level",
        "Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'",
        "'LOUD'",
    ),
]


@pytest.mark.parametrize(
    ("name", "mutate", "key", "reason", "value"), CASES, ids=[c[0] for c in CASES]
)
def test_malformed_station_file_exits_2_naming_key_reason_and_value(
    tmp_path: Path,
    name: str,
    mutate: Callable[[Data], None],
    key: str,
    reason: str,
    value: str | None,
) -> None:
    data = tomllib.loads(template_text())
    mutate(data)
    path = tmp_path / "station.toml"
    path.write_text(tomli_w.dumps(data))
    result = CliRunner().invoke(app, ["validate", "-c", str(path)])
    assert result.exit_code == 2, result.output
    lines = [line.strip() for line in result.output.splitlines()]
    (line,) = [line for line in lines if line.startswith(f"{key}: ")] or [result.output]
    assert reason in line, line
    if value is None:
        assert "(got " not in line, line
    else:
        assert line.endswith(f"(got {value})"), line


def test_the_table_has_at_least_30_cases() -> None:
    assert len(CASES) >= 30
    assert len({c[0] for c in CASES}) == len(CASES)


def test_plain_text_password_is_not_echoed(tmp_path: Path) -> None:
    data = tomllib.loads(template_text())
    data["outputs"] = [{"name": "b", "kind": "mqtt", "host": "h", "password": "hunter2"}]
    path = tmp_path / "station.toml"
    path.write_text(tomli_w.dumps(data))
    result = CliRunner().invoke(app, ["validate", "-c", str(path)])
    assert result.exit_code == 2
    assert "hunter2" not in result.output


def test_broken_toml_names_line(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text("[station\nid = 1\n")
    result = CliRunner().invoke(app, ["validate", "-c", str(path)])
    assert result.exit_code == 2
    assert "line 1" in result.output


def test_missing_file_is_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", "-c", str(tmp_path / "absent.toml")])
    assert result.exit_code == 2
    assert "cannot read file" in result.output


def test_every_error_is_reported_not_only_the_first(tmp_path: Path) -> None:
    data = tomllib.loads(template_text())
    data["station"]["latitude"] = 100
    data["sensors"][0]["sample_rate"] = "fast"
    data["outbox"]["when_full"] = "explode"
    path = tmp_path / "station.toml"
    path.write_text(tomli_w.dumps(data))
    result = CliRunner().invoke(app, ["validate", "-c", str(path)])
    assert result.exit_code == 2
    for key in ("station.latitude", "sensors[0].sample_rate", "outbox.when_full"):
        assert key in result.output


def _validate_output(tmp_path: Path, outputs: Any) -> str:
    data = tomllib.loads(template_text())
    data["outputs"] = outputs
    path = tmp_path / "station.toml"
    path.write_text(tomli_w.dumps(data))
    result = CliRunner().invoke(app, ["validate", "-c", str(path)])
    assert result.exit_code == 2, result.output
    return result.output


SECRET_OUTPUTS: list[tuple[str, Any, str]] = [
    # (case, the outputs value, what the message shows instead of the input)
    (
        "kind missing",
        [{"name": "b", "host": "h", "password": "hunter2"}],
        "outputs[0].kind: 'kind' is required and names a messengers plugin",
    ),
    (
        "kind of the wrong type",
        [{"name": "b", "kind": 7, "host": "h", "password": "hunter2"}],
        "outputs[0].kind: 'kind' is required and names a messengers plugin (installed: "
        "apprise, file, http, mqtt) (got 7)",
    ),
    (
        "unknown kind",
        [{"name": "b", "kind": "pigeon", "host": "h", "password": "hunter2"}],
        "outputs[0].kind: unknown messengers plugin (installed: apprise, file, http, mqtt) "
        "(got 'pigeon')",
    ),
    (
        "a table instead of a list of tables",
        {"name": "b", "kind": "mqtt", "host": "h", "password": "hunter2"},
        "outputs: Input should be a valid list (got a table with keys name, kind, host, password)",
    ),
    (
        "nested secret in a bad value",
        [{"name": "b", "kind": "mqtt", "host": "h", "tls": {"user": "u", "passwd": "hunter2"}}],
        "outputs[0].tls: Input should be a valid boolean (got a table with keys user, passwd)",
    ),
    (
        "secret in a list under an unknown key",
        [{"name": "b", "kind": "mqtt", "host": "h", "extra": [{"api_token": "hunter2"}, 3]}],
        "outputs[0].extra: Extra inputs are not permitted (got a list of 2 item(s) of type dict, "
        "int)",
    ),
    (
        "secret-looking unknown key",
        [{"name": "b", "kind": "mqtt", "host": "h", "broker_secret": "hunter2"}],
        "outputs[0].broker_secret: Extra inputs are not permitted (got '<redacted>')",
    ),
]


@pytest.mark.parametrize(
    ("case", "outputs", "shown"), SECRET_OUTPUTS, ids=[c[0] for c in SECRET_OUTPUTS]
)
def test_a_bad_output_never_prints_its_password(
    tmp_path: Path, case: str, outputs: Any, shown: str
) -> None:
    output = _validate_output(tmp_path, outputs)
    assert "hunter2" not in output
    assert shown in output


def test_a_url_password_is_not_printed(tmp_path: Path) -> None:
    url = "ftp://station:s3cr3tpw@example.org/in"  # refused: http(s) only
    shown = _validate_output(tmp_path, [{"name": "h", "kind": "http", "url": url}])
    assert "outputs[0].url:" in shown
    assert "s3cr3tpw" not in shown
    assert "ftp://station:<redacted>@example.org/in" in shown
