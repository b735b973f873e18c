"""``set_config`` on a real running station: a good file is in force with only its jobs
restarted; a broken one is refused with ``validate``'s errors; wrong broker credentials (a real
Mosquitto that requires a password) are rolled back and the station reconnects."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from fieldstation.clock import VirtualClock
from fieldstation.commands.config_apply import (
    apply_remote_config,
)
from fieldstation.config import config_hash, parse_config
from fieldstation.messages.commands import SetConfigArgs
from fieldstation.runtime.kept_configs import KeptConfigs, config_in_force
from fieldstation.runtime.station import Station
from fieldstation.testing.broker import MosquittoBroker, MosquittoMissingError, Subscriber

CLI = [sys.executable, "-m", "fieldstation.cli"]


def command_args(data: dict[str, Any]) -> SetConfigArgs:
    text = tomli_w.dumps(data)
    return SetConfigArgs(config=text, sha256=hashlib.sha256(text.encode()).hexdigest())


class Answers:
    """The ``answer`` callback of the command channel, recorded."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str | None, dict[str, Any], str | None]] = []
        self._changed = threading.Condition()

    def __call__(
        self,
        state: str,
        reason: str | None,
        details: dict[str, Any],
        config_hash: str | None = None,
    ) -> None:
        with self._changed:
            self.items.append((state, reason, details, config_hash))
            self._changed.notify_all()

    def wait(self, timeout: float = 120.0) -> tuple[str, str | None, dict[str, Any], str | None]:
        with self._changed:
            assert self._changed.wait_for(lambda: self.items, timeout), "no answer"
            return self.items[0]


def wait_until(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    """Poll ``predicate`` (state another thread changes) until true, or fail after
    ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def job(station: Station, name: str) -> dict[str, Any]:
    assert station.supervisor is not None
    return station.supervisor.job(name)


def heartbeats(home: Path) -> list[dict[str, Any]]:
    path = home / "outbox.jsonl"
    lines = path.read_bytes().splitlines() if path.exists() else []
    found = [json.loads(line) for line in lines]
    return [m["body"] for m in found if m["kind"] == "heartbeat"]


@pytest.mark.slow
def test_a_new_processor_threshold_is_in_force_and_only_the_processor_restarted(
    tmp_path: Path,
    station_tools: Any,
) -> None:
    home = tmp_path / "home"
    old = station_tools.data(home, speed=4.0)
    new = copy.deepcopy(old)
    new["processors"][0]["threshold_db"] = 20.0
    new_hash = config_hash(parse_config(new))
    answers = Answers()
    with station_tools.running(old) as station:
        old_hash = station.config_hash
        for name in ("recorder:mic", "processor:energy"):
            wait_until(lambda n=name: job(station, n)["state"] == "running", what=name)
        before = {j["name"]: j["pid"] for j in station.supervisor.snapshot()}  # type: ignore[union-attr]
        apply_remote_config(station, command_args(new), answers)
        state, reason, details, in_force = answers.wait()
        assert (state, reason, in_force) == ("done", None, new_hash), details
        assert details["restarted"] == ["processor:energy"]
        assert station.config_hash == new_hash != old_hash
        assert station.config.processor("energy").threshold_db == 20.0
        after = {j["name"]: j["pid"] for j in station.supervisor.snapshot()}  # type: ignore[union-attr]
        assert after["processor:energy"] != before["processor:energy"]
        assert after["recorder:mic"] == before["recorder:mic"]  # not restarted
        assert {n: p for n, p in after.items() if n != "processor:energy"} == {
            n: p for n, p in before.items() if n != "processor:energy"
        }
        assert station.status()["deployment"]["config_hash"] == new_hash
        # the heartbeat job was not restarted, and it reports the file in force
        wait_until(
            lambda: any(b["config_hash_in_force"] == new_hash for b in heartbeats(home)),
            what="a heartbeat with the new hash",
        )
    # kept, and in force again when the station starts from the same file
    state_file = KeptConfigs(station.home).state()
    assert state_file.current is not None and not state_file.trial
    again, source = config_in_force(parse_config(old))
    assert config_hash(again) == new_hash and "applied remotely" in source
    # an edit of the station file on the station wins over the older remote file
    edited = copy.deepcopy(old)
    edited["station"]["name"] = "edited on site"
    assert config_in_force(parse_config(edited))[0].station.name == "edited on site"


def test_a_broken_file_is_refused_with_the_errors_validate_gives(
    tmp_path: Path, station_tools: Any
) -> None:
    home = tmp_path / "home"
    old = station_tools.data(home, speed=4.0)
    station = Station(parse_config(old), control=False)  # refused before any job is touched
    broken = copy.deepcopy(old)
    broken["sensors"][0]["chunk"] = "-2s"
    broken["processors"][0]["threshold"] = 3  # no such key
    broken["outputs"].append({"name": "hub", "kind": "mqtt", "password": "hunter2"})
    answers = Answers()
    apply_remote_config(station, command_args(broken), answers)
    state, reason, details, _ = answers.wait()
    assert state == "refused"
    assert reason is not None and reason.startswith("invalid station file: ")
    errors = details["errors"]
    assert len(errors) >= 4  # chunk, threshold, host missing, a literal password
    assert any(e.startswith("outputs[1].password") and "hunter2" not in e for e in errors)
    path = tmp_path / "broken.toml"
    path.write_text(tomli_w.dumps(broken))
    validated = subprocess.run(
        [*CLI, "validate", "-c", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert validated.returncode == 2
    shown = " ".join(validated.stderr.split())
    for error in errors:
        assert " ".join(error.split()) in shown, (error, validated.stderr)
    assert station.config_hash == config_hash(parse_config(old))
    assert KeptConfigs(station.home).files() == []  # nothing kept


def test_a_wrong_sha256_and_a_new_station_id_are_refused(
    tmp_path: Path, station_tools: Any
) -> None:
    old = station_tools.data(tmp_path / "home", speed=4.0)
    station = Station(parse_config(old), control=False)
    answers = Answers()
    args = command_args(old)
    apply_remote_config(station, args.model_copy(update={"sha256": "0" * 64}), answers)
    assert answers.wait()[:2] == (
        "refused",
        f"sha256 mismatch: the file's is {args.sha256}, the command says {'0' * 64}",
    )
    other = copy.deepcopy(old)
    other["station"]["id"] = "someone-else"
    answers = Answers()
    apply_remote_config(station, command_args(other), answers)
    state, reason, details, _ = answers.wait()
    assert state == "refused"
    assert reason is not None and reason.startswith("not appliable remotely: station.id: ")
    answers = Answers()
    apply_remote_config(station, command_args(old), answers)  # the file in force
    assert answers.wait()[:2] == ("done", "already in force")


class HeldClock(VirtualClock):
    """Virtual time that moves only when the test advances it: a wait returns after a short
    real pause (so a polling loop polls) without moving time."""

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        return event.wait(0.05 if timeout is None else min(timeout, 0.05))


def last_error(station: Station, destination: str) -> str:
    from sqlalchemy import select

    from fieldstation.store.models import Delivery

    assert station.db is not None
    with station.db.session() as session:
        found = session.scalars(
            select(Delivery.last_error)
            .where(Delivery.destination == destination, Delivery.last_error.is_not(None))
            .order_by(Delivery.id.desc())
            .limit(1)
        ).first()
    return found or ""


def _secret(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


@pytest.mark.slow
def test_wrong_broker_credentials_are_rolled_back_and_the_station_reconnects(
    tmp_path: Path, require: Any, station_tools: Any
) -> None:
    good, wrong = _secret(tmp_path / "good", "right horse"), _secret(tmp_path / "bad", "nope")
    try:
        broker = MosquittoBroker(
            tmp_path / "broker", users={"default": "right horse", "watcher": "eyes"}
        )
    except MosquittoMissingError as error:
        require("mosquitto", str(error))
    with broker:
        output = {
            "name": "hub",
            "kind": "mqtt",
            "host": broker.host,
            "port": broker.port,
            "username": "default",
            "password": f"file:{good}",
            "connect_timeout": "1s",
            "reconnect_max": "1s",
        }
        old = station_tools.data(tmp_path / "home", [output], speed=4.0)
        new = copy.deepcopy(old)
        new["outputs"][0]["password"] = f"file:{wrong}"
        watcher = Subscriber(
            broker.host, broker.port, "fieldstation/default/heartbeat", "watcher",
            username="watcher", password="eyes",
        )  # fmt: skip

        def beats() -> list[int]:
            return [json.loads(p)["body"]["seq"] for p in watcher.payloads.get(watcher.topic, [])]

        try:
            with station_tools.running(old) as station:
                old_hash = station.config_hash
                assert watcher.wait_for(lambda s: len(beats()) >= 2, 60)
                answers = Answers()
                clock = HeldClock(datetime(2026, 6, 1, tzinfo=UTC))
                apply_remote_config(station, command_args(new), answers, clock=clock)
                # the new credentials are tried, and refused by the broker
                wait_until(lambda: "Not authorized" in last_error(station, "hub"), what="refusal")
                assert station.config_hash != old_hash and not answers.items  # still on trial
                clock.advance(120.0)  # the default grace period ends
                state, reason, details, in_force = answers.wait()
                assert state == "refused", (reason, details)
                assert reason is not None
                assert reason.startswith("rolled back: not healthy within 120 s: output hub: ")
                assert "Not authorized" in reason
                assert in_force == old_hash == station.config_hash
                seen = max(beats())
                # connected again with the old credentials: new heartbeats arrive, and none
                # of those enqueued meanwhile is lost
                assert watcher.wait_for(lambda s: max(beats()) >= seen + 2, 60)
                got = sorted(set(beats()))
                assert got == list(range(got[0], got[-1] + 1))
        finally:
            watcher.close()
    state_file = KeptConfigs(station.home).state()
    assert state_file.current is None and not state_file.trial  # the given file is in force
    assert config_hash(config_in_force(parse_config(old))[0]) == old_hash


@pytest.mark.slow
def test_a_missing_device_is_rolled_back_and_the_recorder_records_again(
    tmp_path: Path, station_tools: Any
) -> None:
    old = station_tools.data(tmp_path / "home", speed=4.0)
    new = copy.deepcopy(old)
    new["sensors"][0] = {
        "name": "mic",
        "kind": "audio",
        "device": "no-such-device",
        "sample_rate": "16kHz",
        "chunk": "2s",
        "min_free": "1MB",
        "schedule": "always",
    }
    with station_tools.running(old) as station:
        wait_until(lambda: job(station, "recorder:mic")["state"] == "running", what="recorder")
        answers = Answers()
        clock = HeldClock(datetime(2026, 6, 1, tzinfo=UTC))
        apply_remote_config(station, command_args(new), answers, clock=clock)
        assert station.config.sensor("mic").kind == "audio"
        pid = wait_until(
            lambda: (
                (j := job(station, "recorder:mic"))["pid"]
                and (j["problem"] or j["state"] in ("backoff", "failed", "config_error"))
                and j["pid"]
            ),
            what="the recorder failing to open the device",
        )
        assert not answers.items
        clock.advance(120.0)
        state, reason, details, in_force = answers.wait()
        assert state == "refused" and reason is not None
        assert reason.startswith("rolled back: not healthy within 120 s: job recorder:mic ")
        assert station.config.sensor("mic").kind == "synthetic"
        wait_until(
            lambda: (
                (j := job(station, "recorder:mic"))["pid"] != pid
                and (j["last_progress"] or {}).get("what") == "chunk"
            ),
            what="a chunk of the synthetic sensor again",
        )


@pytest.mark.slow
def test_a_stop_during_the_trial_goes_back_to_the_previous_file_at_the_next_start(
    tmp_path: Path,
    station_tools: Any,
) -> None:
    from fieldstation.testing.broker import free_port

    old = station_tools.data(tmp_path / "home", speed=4.0)
    new = copy.deepcopy(old)
    new["outputs"].append(
        {
            "name": "hub",
            "kind": "mqtt",
            "host": "127.0.0.1",
            "port": free_port(),
            "kinds": ["event"],
        }
    )
    answers = Answers()
    with station_tools.running(old) as station:
        clock = HeldClock(datetime(2026, 6, 1, tzinfo=UTC))
        apply_remote_config(station, command_args(new), answers, clock=clock)
        assert station.config_hash == config_hash(parse_config(new))
        # one file on trial at a time
        second = Answers()
        apply_remote_config(station, command_args(old), second, clock=clock)
        assert second.wait()[:2] == (
            "refused",
            "another station file is on trial; send it again after",
        )
    assert not answers.items  # stopped before the end of the trial: no verdict
    assert KeptConfigs(station.home).state().trial
    config, source = config_in_force(parse_config(old))
    assert config_hash(config) == config_hash(parse_config(old))
    assert "on trial: rolled back" in source


@pytest.mark.slow
def test_a_sensor_added_then_removed_on_a_running_station(
    tmp_path: Path, station_tools: Any
) -> None:
    old = station_tools.data(tmp_path / "home", speed=4.0)
    added = copy.deepcopy(old)
    added["sensors"].append({**old["sensors"][0], "name": "mic2"})
    with station_tools.running(old) as station:
        wait_until(lambda: job(station, "recorder:mic")["state"] == "running", what="recorder")
        pid = job(station, "recorder:mic")["pid"]
        answers = Answers()
        apply_remote_config(station, command_args(added), answers)
        state, reason, details, _ = answers.wait()
        assert (state, reason) == ("done", None), details
        assert details["started"] == ["recorder:mic2"] and details["stopped"] == []
        assert job(station, "recorder:mic2")["state"] == "running"
        answers = Answers()
        apply_remote_config(station, command_args(old), answers)
        state, reason, details, _ = answers.wait()
        assert (state, reason) == ("done", None), details
        assert details["stopped"] == ["recorder:mic2"]
        assert station.supervisor is not None
        wait_until(
            lambda: "recorder:mic2" not in {j["name"] for j in station.supervisor.snapshot()},  # type: ignore[union-attr]
            what="recorder:mic2 gone",
        )
        assert job(station, "recorder:mic")["pid"] == pid  # untouched throughout


@pytest.mark.slow
def test_a_signed_set_config_through_the_broker_is_answered_done_with_the_hash(
    tmp_path: Path, require: Any, station_tools: Any
) -> None:
    """End to end through the command channel: the hub's signed ``set_config`` on the
    station's command topic; ``accepted`` then ``done`` with the new hash on its
    ``command_result`` topic, and heartbeats report the hash in force."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from fieldstation.messages import CommandResultBody, parse_message
    from fieldstation.messages.commands import (
        command_topic,
        generate_private_key,
        public_key_text,
        sign_command,
    )

    key = generate_private_key()
    try:
        broker = MosquittoBroker(tmp_path / "broker")
    except MosquittoMissingError as error:
        require("mosquitto", str(error))
    with broker:
        output = {"name": "hub", "kind": "mqtt", "host": broker.host, "port": broker.port}
        old = station_tools.data(tmp_path / "home", [output], speed=4.0)
        old["commands"] = {"enabled": True, "hub_keys": {"hub": public_key_text(key)}}
        new = copy.deepcopy(old)
        new["processors"][0]["threshold_db"] = 20.0
        new_hash = config_hash(parse_config(new))
        watcher = Subscriber(broker.host, broker.port, "fieldstation/default/#", "watcher")

        def results() -> list[CommandResultBody]:
            texts = watcher.payloads.get("fieldstation/default/command_result", [])
            bodies = [parse_message(t.encode()).body for t in list(texts)]
            return [b for b in bodies if isinstance(b, CommandResultBody)]

        def beats() -> list[str | None]:
            texts = watcher.payloads.get("fieldstation/default/heartbeat", [])
            return [json.loads(t)["body"]["config_hash_in_force"] for t in list(texts)]

        try:
            with station_tools.running(old) as station:
                wait_until(lambda: job(station, "processor:energy")["state"] == "running")
                assert watcher.wait_for(lambda s: beats(), 60)  # the station is connected
                text = tomli_w.dumps(new)
                signed = sign_command(
                    key,
                    key_id="hub",
                    station="default",
                    command="set_config",
                    args={"config": text, "sha256": hashlib.sha256(text.encode()).hexdigest()},
                    issued_at=datetime.now(UTC),
                    ttl=3600.0,
                )
                hub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-hub")
                hub.connect(broker.host, broker.port)
                hub.loop_start()
                try:
                    info = hub.publish(
                        command_topic("fieldstation", "default"), signed.to_json(), 1
                    )
                    info.wait_for_publish(60)
                finally:
                    hub.disconnect()
                    hub.loop_stop()
                assert watcher.wait_for(lambda s: any(r.state == "done" for r in results()), 120)
                done = [r for r in results() if r.command_id == signed.id and r.state == "done"]
                assert done and done[0].config_hash_in_force == new_hash
                assert [r.state for r in results() if r.command_id == signed.id][0] == "accepted"
                assert watcher.wait_for(lambda s: new_hash in beats(), 60)
                assert station.config_hash == new_hash
        finally:
            watcher.close()
