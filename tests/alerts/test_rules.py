"""The rule engine alone, on virtual time: every rule kind, cooldowns, quiet hours, days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import TypeAdapter, ValidationError

from fieldstation.alerts.rules import (
    AlertState,
    DetectionFact,
    EventFact,
    ReadingFact,
    RuleEngine,
)
from fieldstation.clock import VirtualClock
from fieldstation.config.alerts import AlertRule

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LONDON = ZoneInfo("Europe/London")  # UTC+1 in June
_RULE = TypeAdapter(AlertRule)


def rule(**fields: Any) -> Any:
    return _RULE.validate_python({"name": "r", "cooldown": 0, **fields})


class Feed:
    """Facts with increasing ids, evaluated at the virtual clock's now."""

    def __init__(self, engine: RuleEngine, clock: VirtualClock) -> None:
        self.engine, self.clock, self.n = engine, clock, 0

    def det(self, label: str, score: float = 0.9, at: datetime | None = None) -> list[Any]:
        self.n += 1
        fact = DetectionFact(self.n, label, score, at or self.clock.now(), "mic", 1)
        return self.engine.evaluate(fact, self.clock.now())

    def event(self, kind: str, severity: str = "error") -> list[Any]:
        self.n += 1
        fact = EventFact(self.n, kind, severity, "recorder:mic", "it broke", self.clock.now())
        return self.engine.evaluate(fact, self.clock.now())

    def reading(self, value: float, quantity: str = "temperature") -> list[Any]:
        self.n += 1
        fact = ReadingFact(self.n, "bme", quantity, "Cel", value, self.clock.now())
        return self.engine.evaluate(fact, self.clock.now())


def feed(*rules: Any, tz: ZoneInfo = LONDON, start: datetime = T0) -> Feed:
    clock = VirtualClock(start)
    return Feed(RuleEngine(list(rules), tz, AlertState(), station="hedge-07"), clock)


def test_any_detection_respects_labels_groups_and_min_score() -> None:
    f = feed(rule(on="detection", labels=["Strix*", "Tyto alba_Barn Owl"], min_score=0.5))
    assert f.det("Strix aluco_Tawny Owl", 0.4) == []
    [firing] = f.det("Strix aluco_Tawny Owl", 0.8)
    assert firing.title == "Strix aluco_Tawny Owl (80%) at hedge-07"
    assert "score 0.80" in firing.body and "13:00:00 BST" in firing.body
    assert firing.ref == "detection:2"
    assert len(f.det("Tyto alba_Barn Owl")) == 1
    assert f.det("Turdus merula_Eurasian Blackbird") == []


def test_cooldown_per_label() -> None:
    f = feed(rule(on="detection", cooldown=600))
    assert len(f.det("owl")) == 1
    f.clock.advance(599)
    assert f.det("owl") == []
    assert len(f.det("wren")) == 1  # another label has its own cooldown
    f.clock.advance(1)
    assert len(f.det("owl")) == 1


def test_quiet_hours_span_midnight_in_station_time() -> None:
    # 22:00-06:30 London = 21:00-05:30 UTC in June
    f = feed(rule(on="detection", quiet_hours="22:00-06:30"), start=T0.replace(hour=20, minute=59))
    assert len(f.det("owl")) == 1  # 21:59 local
    f.clock.advance(60)  # 22:00 local: quiet
    assert f.det("owl") == []
    f.clock.advance(8 * 3600 + 29 * 60)  # 06:29 local
    assert f.det("owl") == []
    f.clock.advance(60)  # 06:30 local: loud again
    assert len(f.det("owl")) == 1


def test_first_of_day_uses_the_local_day() -> None:
    f = feed(rule(on="detection", condition="first_of_day"), start=T0.replace(hour=22))
    assert len(f.det("owl")) == 1  # 23:00 local on 1 June
    f.clock.advance(30 * 60)  # 23:30 local: same day
    assert f.det("owl") == []
    f.clock.advance(40 * 60)  # 00:10 local on 2 June, but still 1 June in UTC
    [firing] = f.det("owl")
    assert firing.body.startswith("First of the day")


def test_first_ever_and_not_seen_for() -> None:
    f = feed(
        rule(on="detection", condition="first_ever"),
        rule(name="back", on="detection", condition="not_seen_for", not_seen_days=3),
    )
    assert {x.rule for x in f.det("owl")} == {"r", "back"}
    f.clock.advance(2 * 86400)
    assert f.det("owl") == []
    f.clock.advance(3 * 86400)
    [firing] = f.det("owl")
    assert firing.rule == "back" and firing.body.startswith("First in 3 days")


def test_count_in_a_window() -> None:
    f = feed(rule(on="detection", condition="count", count=3, window="10m"))
    assert f.det("owl") == []
    f.clock.advance(300)
    assert f.det("owl") == []
    f.clock.advance(301)  # the first one left the window
    assert f.det("owl") == []
    f.clock.advance(60)
    [firing] = f.det("owl")
    assert firing.body.startswith("3 detections within 600 s")
    assert f.det("owl") == []  # counting starts again


def test_events_with_aliases_and_severity() -> None:
    f = feed(rule(on="event", events=["job_failed", "disk_low"], min_severity="warning"))
    assert len(f.event("job_config_error")) == 1
    assert f.event("disk_low", severity="info") == []
    [firing] = f.event("disk_low", severity="warning")
    assert firing.title == "disk low at hedge-07" and firing.severity == "warning"
    assert f.event("device_error") == []


def test_reading_above_with_hysteresis() -> None:
    f = feed(rule(on="reading", quantity="temperature", above=30, hysteresis=2))
    assert f.reading(29.9) == []
    [firing] = f.reading(30.5)
    assert firing.title == "temperature above 30 Cel at hedge-07"
    assert f.reading(31) == []  # still above: no second alert
    assert f.reading(28.5) == []  # under 30 but not under 28: not re-armed
    assert f.reading(30.2) == []
    assert f.reading(27.9) == []  # re-armed
    assert len(f.reading(30.1)) == 1
    assert f.reading(40, quantity="humidity") == []


def test_reading_below_held_by_quiet_hours_fires_after_them() -> None:
    f = feed(
        rule(on="reading", quantity="battery_voltage", below=11.8, quiet_hours="00:00-06:00"),
        start=T0.replace(hour=0),  # 01:00 local: quiet
    )
    assert f.reading(11.5, "battery_voltage") == []
    f.clock.advance(5 * 3600)  # 06:00 local
    assert len(f.reading(11.6, "battery_voltage")) == 1


def test_state_round_trips_through_json() -> None:
    f = feed(rule(on="detection", condition="first_ever", cooldown=60))
    f.det("owl")
    saved = f.engine.state.to_json()
    again = RuleEngine(f.engine.rules, LONDON, AlertState.from_json(saved))
    fact = DetectionFact(9, "owl", 0.9, T0 + timedelta(days=1), "mic", 1)
    assert again.evaluate(fact, T0 + timedelta(days=1)) == []


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"on": "reading", "quantity": "t"}, "exactly one of 'above' or 'below'"),
        ({"on": "detection", "quiet_hours": "22-6"}, "HH:MM-HH:MM"),
        ({"on": "event", "events": []}, "at least 1 item"),
        ({"on": "sms"}, "does not match any of the expected tags"),
    ],
)
def test_bad_rules_are_refused(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        rule(**fields)


def test_rules_checked_against_the_station(tmp_path: Any) -> None:
    from fieldstation.config import ConfigError
    from fieldstation.home import StationHome

    from .conftest import station_config

    home = StationHome(tmp_path)
    with pytest.raises(ConfigError, match=r"alerts\[1\].name: duplicate rule name 'a'"):
        station_config(
            home, alerts=[{"name": "a", "on": "detection"}, {"name": "a", "on": "detection"}]
        )
    with pytest.raises(ConfigError, match=r"alerts\[0\].outputs\[0\]: no output named 'pager'"):
        station_config(home, alerts=[{"name": "a", "on": "detection", "outputs": ["pager"]}])
