"""Which jobs a change of the station file touches: :func:`plan_change` on pairs of files."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest

from fieldstation.config import parse_config, template_text
from fieldstation.runtime.reconfigure import job_names, plan_change


def data(home: Path) -> dict[str, Any]:
    """The embedded default station (one synthetic mic, the energy processor, a file output)
    plus a second sensor and an MQTT output, living in ``home``."""
    raw = tomllib.loads(template_text())
    raw["station"]["home"] = str(home)
    raw["sensors"].append({"name": "host", "kind": "system", "period": "10s"})
    raw["outputs"].append(
        {"name": "hub", "kind": "mqtt", "host": "127.0.0.1", "username": "st", "password": "env:X"}
    )
    return raw


def plan(old: dict[str, Any], change: Any) -> Any:
    new = copy.deepcopy(old)
    change(new)
    return plan_change(parse_config(old), parse_config(new))


@pytest.fixture
def old(tmp_path: Path) -> dict[str, Any]:
    return data(tmp_path / "home")


def test_the_jobs_of_a_station(old: dict[str, Any]) -> None:
    assert set(job_names(parse_config(old))) == {
        "recorder:mic",
        "recorder:host",
        "processor:energy",
        "network",
        "outbox",
        "heartbeat",
        "summary",
        "retention",
    }
    assert set(job_names(parse_config(old), threads=False)) == {
        "recorder:mic",
        "recorder:host",
        "processor:energy",
    }


def test_the_same_file_touches_nothing(old: dict[str, Any]) -> None:
    change = plan(old, lambda new: None)
    assert change.empty and not change.refused


def test_a_processor_threshold_restarts_only_that_processor(old: dict[str, Any]) -> None:
    change = plan(old, lambda new: new["processors"][0].update(threshold_db=20.0))
    assert change.restart == {"processor:energy"}
    assert not change.add and not change.remove and not change.refused


def test_a_sensor_change_restarts_its_recorder(old: dict[str, Any]) -> None:
    change = plan(old, lambda new: new["sensors"][0].update(chunk="5s"))
    assert change.restart == {"recorder:mic"}
    # its min_free is read by the heartbeat's disk rule too
    change = plan(old, lambda new: new["sensors"][0].update(min_free="300MB"))
    assert change.restart == {"recorder:mic", "heartbeat"}


def test_a_schedule_change_restarts_the_recorders_using_it(old: dict[str, Any]) -> None:
    change = plan(
        old,
        lambda new: new["schedules"]["always"].update(windows=[{"start": "01:00", "end": "23:00"}]),
    )
    assert change.restart == {"recorder:mic"}
    unused = plan(old, lambda new: new["schedules"]["dawn_chorus"].update(polar="whole_day"))
    assert unused.empty


def test_output_credentials_restart_only_the_outbox(old: dict[str, Any]) -> None:
    change = plan(old, lambda new: new["outputs"][1].update(password="env:OTHER"))
    assert change.restart == {"outbox"}


def test_an_output_on_another_host_restarts_the_network_monitor_and_its_users(
    old: dict[str, Any],
) -> None:
    change = plan(old, lambda new: new["outputs"][1].update(host="192.0.2.1"))
    assert change.restart == {"outbox", "network", "heartbeat"}


def test_a_new_route_restarts_the_producers_of_that_kind(old: dict[str, Any]) -> None:
    # the hub output stops taking detections: the processor enqueues them elsewhere now
    change = plan(
        old,
        lambda new: new["outputs"][1].update(kinds=["heartbeat", "event", "recording", "summary"]),
    )
    assert change.restart == {"outbox", "processor:energy", "recorder:mic", "recorder:host"}


def test_events_go_everywhere_so_a_new_event_route_restarts_every_job(
    old: dict[str, Any],
) -> None:
    change = plan(old, lambda new: new["outputs"].append({"name": "f2", "kind": "file"}))
    assert change.restart == set(job_names(parse_config(old)))


def test_added_and_removed_sensors_and_processors(old: dict[str, Any]) -> None:
    def edit(new: dict[str, Any]) -> None:
        new["sensors"][1]["enabled"] = False
        new["sensors"].append({"name": "mic2", "kind": "synthetic", "chunk": "5s"})
        new["processors"][0]["sensors"] = ["mic"]

    change = plan(old, edit)
    assert change.add == {"recorder:mic2"}
    assert change.remove == {"recorder:host"}
    # the processor's own entry changed (its sensors); retention reads the sensor list
    assert change.restart == {"processor:energy", "retention"}


def test_heartbeat_settings_restart_the_heartbeat_and_summary(old: dict[str, Any]) -> None:
    change = plan(old, lambda new: new["heartbeat"].update(interval="1m"))
    assert change.restart == {"heartbeat", "summary"}


def test_the_station_place_restarts_everything(old: dict[str, Any]) -> None:
    change = plan(old, lambda new: new["station"].update(latitude=10.0))
    assert change.restart == set(job_names(parse_config(old))) and not change.refused


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda new: new["station"].update(id="other"), "station.id"),
        (lambda new: new["station"].update(home="/tmp/elsewhere"), "station.home"),
        (lambda new: new["runtime"].update(max_restarts=9), "runtime"),
        (lambda new: new.update(logging={"level": "DEBUG"}), "logging"),
    ],
)
def test_what_a_running_station_cannot_take_is_refused(
    old: dict[str, Any], edit: Any, key: str
) -> None:
    change = plan(old, edit)
    assert len(change.refused) == 1
    assert change.refused[0].startswith(f"{key}: cannot change while the station runs")


def test_web_and_job_plugins(old: dict[str, Any]) -> None:
    old = copy.deepcopy(old)
    old["web"] = {"enabled": True}
    old["alerts"] = [{"name": "every-detection", "on": "detection", "cooldown": 0}]
    names = set(job_names(parse_config(old)))
    assert {"web", "job:alerts"} <= names
    change = plan(old, lambda new: new["alerts"][0].update(cooldown=60))
    assert change.restart == {"job:alerts"}
    change = plan(old, lambda new: new["web"].update(port=8181))
    assert change.restart == {"web", "job:alerts"}  # a job plugin sees the whole file


def test_the_command_channel(old: dict[str, Any]) -> None:
    from fieldstation.messages.commands import generate_private_key, public_key_text

    old = copy.deepcopy(old)
    old["commands"] = {
        "enabled": True,
        "hub_keys": {"hub": public_key_text(generate_private_key())},
    }
    assert "commands" in job_names(parse_config(old))
    # a new hub key: the commands job and the outbox (its MQTT outputs feed the inbox)
    other = public_key_text(generate_private_key())
    change = plan(old, lambda new: new["commands"]["hub_keys"].update(hub2=other))
    assert change.restart == {"commands", "outbox"}
    # a remote file may not cut the channel it came by
    change = plan(old, lambda new: new["commands"].update(enabled=False, hub_keys={}))
    assert change.refused and change.refused[0].startswith("commands.enabled: ")
    # nor replace every hub key at once (rotation: add the new key, then drop the old)
    change = plan(old, lambda new: new["commands"].update(hub_keys={"hub2": other}))
    assert change.refused and change.refused[0].startswith("commands.hub_keys: ")


def test_the_upload_job_and_retention_that_waits_for_it(old: dict[str, Any]) -> None:
    old = copy.deepcopy(old)
    old["upload"] = {"url": "http://127.0.0.1:9/upload", "token": "env:HUB_TOKEN"}
    assert "upload" in job_names(parse_config(old))
    change = plan(old, lambda new: new["upload"].update(select="pinned"))
    assert change.restart == {"upload", "retention"}
    change = plan(old, lambda new: new.pop("upload"))
    assert change.remove == {"upload"} and change.restart == {"retention"}
