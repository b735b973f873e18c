"""Malformed station files: each gives exit 2 and a message naming the offending key."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from typer.testing import CliRunner

from fieldstation.cli.app import app
from fieldstation.config import template_text

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


CASES: list[tuple[str, Callable[[Data], None], str]] = [
    ("latitude out of range", _set("station.latitude", 91), "station.latitude"),
    ("longitude out of range", _set("station.longitude", -181), "station.longitude"),
    ("latitude wrong type", _set("station.latitude", "north"), "station.latitude"),
    ("unknown timezone", _set("station.timezone", "Mars/Olympus"), "station.timezone"),
    ("station id with space", _set("station.id", "my station"), "station.id"),
    ("missing station id", _delete("station.id"), "station.id"),
    ("missing station section", _delete("station"), "station"),
    ("unknown station key", _set("station.colour", "red"), "station.colour"),
    ("unknown top-level key", _set("sensorz", []), "sensorz"),
    ("bad sample rate unit", _set("sensors.0.sample_rate", "48 kHzz"), "sensors[0].sample_rate"),
    ("negative sample rate", _set("sensors.0.sample_rate", -48000), "sensors[0].sample_rate"),
    (
        "fractional sample rate",
        _set("sensors.0.sample_rate", "44.1005kHz"),
        "sensors[0].sample_rate",
    ),
    ("bad chunk duration", _set("sensors.0.chunk", "ten seconds"), "sensors[0].chunk"),
    ("zero chunk", _set("sensors.0.chunk", 0), "sensors[0].chunk"),
    ("bad size", _set("sensors.0.min_free", "lots"), "sensors[0].min_free"),
    ("unknown sensor kind", _set("sensors.0.kind", "thermometer9000"), "sensors[0].kind"),
    ("missing sensor kind", _delete("sensors.0.kind"), "sensors[0].kind"),
    ("unknown sensor key", _set("sensors.0.gain", 3), "sensors[0].gain"),
    ("bad sample format", _set("sensors.0.sample_format", "int12"), "sensors[0].sample_format"),
    ("bad file format", _set("sensors.0.format", "mp3"), "sensors[0].format"),
    ("channels zero", _set("sensors.0.channels", 0), "sensors[0].channels"),
    ("duplicate sensor names", _append_sensor(), "sensors[1].name"),
    ("second sensor bad kind", _append_sensor(name="mic2", kind="nope"), "sensors[1].kind"),
    ("schedule does not exist", _set("sensors.0.schedule", "nightly"), "sensors[0].schedule"),
    (
        "bad window edge",
        _set("schedules.always.windows", [{"start": "25:00", "end": "26:00"}]),
        "schedules.always.windows[0].start",
    ),
    (
        "bad sun event",
        _set("schedules.dawn_chorus.windows.0.start", "moonrise"),
        "schedules.dawn_chorus.windows[0].start",
    ),
    (
        "duty cycle without period",
        _set("schedules.dawn_chorus.duty_cycle", {"record": "1m"}),
        "schedules.dawn_chorus.duty_cycle",
    ),
    (
        "duty cycle every < record",
        _set("schedules.dawn_chorus.duty_cycle", {"record": "5m", "every": "1m"}),
        "schedules.dawn_chorus.duty_cycle",
    ),
    (
        "bad polar option",
        _set("schedules.dawn_chorus.polar", "maybe"),
        "schedules.dawn_chorus.polar",
    ),
    (
        "bad weekday",
        _set("schedules.dawn_chorus.weekdays", ["funday"]),
        "schedules.dawn_chorus.weekdays[0]",
    ),
    ("unknown model", _set("processors.0.model", "owlnet"), "processors[0].model"),
    (
        "processor for unknown sensor",
        _set("processors.0.sensors", ["ghost"]),
        "processors[0].sensors[0]",
    ),
    (
        "score out of range",
        _set("processors.0.cleaners.min_score", 1.5),
        "processors[0].cleaners.min_score",
    ),
    ("unknown output kind", _set("outputs.0.kind", "pigeon"), "outputs[0].kind"),
    ("mqtt without host", _set("outputs", [{"name": "b", "kind": "mqtt"}]), "outputs[0].host"),
    (
        "plain-text password",
        _set("outputs", [{"name": "b", "kind": "mqtt", "host": "h", "password": "hunter2"}]),
        "outputs[0].password",
    ),
    ("unknown message kind", _set("outputs.0.kinds", ["gossip"]), "outputs[0].kinds[0]"),
    ("bad when_full", _set("outbox.when_full", "explode"), "outbox.when_full"),
    ("bad heartbeat interval", _set("heartbeat.interval", "-5m"), "heartbeat.interval"),
    ("bad retention policy", _set("retention.default.keep", "forever"), "retention.default.keep"),
    ("keep days without days", _set("retention.default", {"keep": "days"}), "retention.default"),
    (
        "retention for unknown sensor",
        _set("retention.sensors", {"ghost": {"keep": "all"}}),
        "retention.sensors.ghost",
    ),
    ("bad log level", _set("logging.level", "LOUD"), "logging.level"),
]


@pytest.mark.parametrize(("name", "mutate", "key"), CASES, ids=[c[0] for c in CASES])
def test_malformed_station_file_exits_2_naming_the_key(
    tmp_path: Path, name: str, mutate: Callable[[Data], None], key: str
) -> None:
    data = tomllib.loads(template_text())
    mutate(data)
    path = tmp_path / "station.toml"
    path.write_text(tomli_w.dumps(data))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert f"{key}:" in result.output, result.output


def test_plain_text_password_is_not_echoed(tmp_path: Path) -> None:
    data = tomllib.loads(template_text())
    data["outputs"] = [{"name": "b", "kind": "mqtt", "host": "h", "password": "hunter2"}]
    path = tmp_path / "station.toml"
    path.write_text(tomli_w.dumps(data))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "hunter2" not in result.output


def test_broken_toml_names_line(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text("[station\nid = 1\n")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "line 1" in result.output


def test_missing_file_is_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "absent.toml")])
    assert result.exit_code == 2
    assert "cannot read file" in result.output


def test_every_error_is_reported_not_only_the_first(tmp_path: Path) -> None:
    data = tomllib.loads(template_text())
    data["station"]["latitude"] = 100
    data["sensors"][0]["sample_rate"] = "fast"
    data["outbox"]["when_full"] = "explode"
    path = tmp_path / "station.toml"
    path.write_text(tomli_w.dumps(data))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    for key in ("station.latitude", "sensors[0].sample_rate", "outbox.when_full"):
        assert key in result.output


def _validate_output(tmp_path: Path, outputs: Any) -> str:
    data = tomllib.loads(template_text())
    data["outputs"] = outputs
    path = tmp_path / "station.toml"
    path.write_text(tomli_w.dumps(data))
    result = CliRunner().invoke(app, ["validate", str(path)])
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
        "outputs[0].kind: 'kind' is required and names a messengers plugin (installed: file, "
        "http, mqtt) (got 7)",
    ),
    (
        "unknown kind",
        [{"name": "b", "kind": "pigeon", "host": "h", "password": "hunter2"}],
        "outputs[0].kind: unknown messengers plugin (installed: file, http, mqtt) (got 'pigeon')",
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
