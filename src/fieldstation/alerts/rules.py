"""Pure evaluation of alert rules: facts in, firings out, no I/O and no clock of its own.

:class:`RuleEngine` takes the rules, the station's timezone and an :class:`AlertState` (plain
data, saved as JSON between passes by :mod:`fieldstation.alerts.job`) and turns each fact (a
:class:`DetectionFact`, :class:`EventFact` or :class:`ReadingFact`, fed in the order they were
stored) into zero or more :class:`Firing`. ``now`` (aware UTC) is passed in by the caller:
cooldowns and quiet hours are judged at ``now``, the time the alert would go out; days,
absences and count windows are judged at the fact's own time.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fieldstation.config.alerts import DetectionRule, EventRule, ReadingRule

__all__ = [
    "AlertState",
    "DetectionFact",
    "EventFact",
    "Firing",
    "History",
    "ReadingFact",
    "RuleEngine",
    "in_quiet_hours",
]

Rule = DetectionRule | EventRule | ReadingRule

_SEVERITY_RANK = {"info": 0, "warning": 1, "error": 2}


@dataclass(frozen=True)
class DetectionFact:
    """One stored detection: ``detected_at`` aware UTC, ``score`` in [0, 1]."""

    id: int
    label: str
    score: float
    detected_at: datetime
    sensor: str
    recording_id: int
    processor: str = ""
    attachment: str | None = None
    """Path (relative to the station home) of an image of the recording (a motion
    thumbnail), or None."""
    reanalysis: bool = False
    """The detection belongs to a re-analysis (a later run of its processor on its recording,
    ``fieldstation reprocess``): it fires only rules with ``reanalysis = true``."""


@dataclass(frozen=True)
class EventFact:
    """One stored station event."""

    id: int
    kind: str
    severity: str
    source: str
    message: str
    created_at: datetime


@dataclass(frozen=True)
class ReadingFact:
    """One stored value of a slow sensor (``unit``: UCUM-like short form)."""

    id: int
    sensor: str
    quantity: str
    unit: str
    value: float
    measured_at: datetime


Fact = DetectionFact | EventFact | ReadingFact


@dataclass(frozen=True)
class Firing:
    """One alert to send: ``ref`` names the fact (``detection:12``) and with ``rule`` makes
    the message id stable, so a pass repeated after a crash writes no second message."""

    rule: str
    ref: str
    title: str
    body: str
    severity: str
    occurred_at: datetime
    subject: str
    data: dict[str, Any] = field(default_factory=dict)
    attachment: str | None = None
    outputs: tuple[str, ...] | None = None


@dataclass
class AlertState:
    """What the rules remember between facts (times as ISO 8601 strings, JSON-ready).

    ``last_fired``: ``rule|subject`` -> time of the last firing (cooldowns); ``last_seen``:
    ``rule|label`` -> newest matching detection (first of day, first ever, not seen for);
    ``windows``: ``rule|label`` -> times of recent matching detections (count rules);
    ``armed``: ``rule|sensor|quantity`` -> whether a reading rule may fire.
    """

    last_fired: dict[str, str] = field(default_factory=dict)
    last_seen: dict[str, str] = field(default_factory=dict)
    windows: dict[str, list[str]] = field(default_factory=dict)
    armed: dict[str, bool] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The state as JSON-ready data."""
        return {
            "last_fired": self.last_fired,
            "last_seen": self.last_seen,
            "windows": self.windows,
            "armed": self.armed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AlertState:
        """The state saved by :meth:`to_json` (missing keys: empty)."""
        return cls(
            last_fired=dict(data.get("last_fired", {})),
            last_seen=dict(data.get("last_seen", {})),
            windows={k: list(v) for k, v in data.get("windows", {}).items()},
            armed=dict(data.get("armed", {})),
        )


def in_quiet_hours(now: datetime, quiet: tuple[time, time] | None, tz: ZoneInfo) -> bool:
    """Whether ``now`` (aware) falls in ``quiet`` = (start, end) local times of ``tz``; the
    interval is [start, end) and wraps past midnight when end < start."""
    if quiet is None:
        return False
    start, end = quiet
    local = now.astimezone(tz).time().replace(tzinfo=None)
    if start < end:
        return start <= local < end
    return local >= start or local < end


History = Callable[[DetectionRule, DetectionFact], datetime | None]
"""``history(rule, fact)`` -> the newest earlier matching detection's time (see
:class:`RuleEngine`)."""


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text)


class RuleEngine:
    """Evaluates ``rules`` (disabled ones ignored) against facts, updating ``state``.

    ``tz``: the station's timezone (local days of ``first_of_day``, quiet hours).
    ``history(rule, fact)``: the newest ``detected_at`` (aware UTC) of a detection stored
    before ``fact`` that ``rule`` matches (label, sensors, min score), or None: asked when the
    rule has no memory of the label yet (a new rule, a new label pattern, a lost state file),
    so ``first_ever``, ``first_of_day`` and ``not_seen_for`` know the station's past. None:
    no history (the rule's memory starts empty).
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        tz: ZoneInfo,
        state: AlertState | None = None,
        station: str = "",
        history: History | None = None,
    ) -> None:
        self.rules = [rule for rule in rules if rule.enabled]
        self.tz = tz
        self.state = state if state is not None else AlertState()
        self.station = station
        self.history = history

    # --- one fact --------------------------------------------------------------------------

    def evaluate(self, fact: Fact, now: datetime) -> list[Firing]:
        """Firings of every rule for ``fact`` at ``now`` (after cooldown and quiet hours)."""
        firings: list[Firing] = []
        for rule in self.rules:
            firing: Firing | None = None
            if isinstance(rule, DetectionRule) and isinstance(fact, DetectionFact):
                firing = self._detection(rule, fact, now)
            elif isinstance(rule, EventRule) and isinstance(fact, EventFact):
                firing = self._event(rule, fact, now)
            elif isinstance(rule, ReadingRule) and isinstance(fact, ReadingFact):
                firing = self._reading(rule, fact, now)
            if firing is not None:
                firings.append(firing)
        return firings

    def _allowed(self, rule: Rule, subject: str, now: datetime) -> bool:
        """Not in quiet hours and out of the cooldown of ``rule`` for ``subject``."""
        if in_quiet_hours(now, rule.quiet, self.tz):
            return False
        last = self.state.last_fired.get(f"{rule.name}|{subject}")
        return last is None or (now - _t(last)).total_seconds() >= rule.cooldown

    def _fire(self, rule: Rule, subject: str, now: datetime, **fields: Any) -> Firing:
        self.state.last_fired[f"{rule.name}|{subject}"] = now.isoformat()
        outputs = tuple(rule.outputs) if rule.outputs is not None else None
        if rule.title:
            fields["title"] = rule.title
        return Firing(rule=rule.name, subject=subject, outputs=outputs, **fields)

    # --- detections ------------------------------------------------------------------------

    def _detection(self, rule: DetectionRule, fact: DetectionFact, now: datetime) -> Firing | None:
        if fact.score < rule.min_score:
            return None
        if rule.labels is not None and not any(
            fnmatch.fnmatchcase(fact.label, pattern) for pattern in rule.labels
        ):
            return None
        if rule.sensors is not None and fact.sensor not in rule.sensors:
            return None
        key = f"{rule.name}|{fact.label}"
        previous = self.state.last_seen.get(key)
        if previous is None and self.history is not None:
            before = self.history(rule, fact)  # the station's past, before this rule knew it
            previous = before.isoformat() if before is not None else None
        if previous is None or _t(previous) < fact.detected_at:
            self.state.last_seen[key] = fact.detected_at.isoformat()
        else:
            self.state.last_seen[key] = previous
        if fact.reanalysis and not rule.reanalysis:
            return None  # seen (the memory knows it), but a re-analysis does not alert
        when = fact.detected_at.astimezone(self.tz)
        why = self._why(rule, fact, key, previous, when)
        if why is None or not self._allowed(rule, fact.label, now):
            return None
        title = f"{fact.label} ({fact.score:.0%}) at {self.station or 'the station'}"
        body = (
            f"{why}: {fact.label}, score {fact.score:.2f}, at "
            f"{when:%Y-%m-%d %H:%M:%S %Z} on sensor {fact.sensor} (rule {rule.name})."
        )
        return self._fire(
            rule,
            fact.label,
            now,
            ref=f"detection:{fact.id}",
            title=title,
            body=body,
            severity="info",
            occurred_at=fact.detected_at,
            data={
                "label": fact.label,
                "score": fact.score,
                "sensor": fact.sensor,
                "recording_id": fact.recording_id,
                "detection_id": fact.id,
                "condition": rule.condition,
            },
            attachment=fact.attachment,
        )

    def _why(
        self,
        rule: DetectionRule,
        fact: DetectionFact,
        key: str,
        previous: str | None,
        when: datetime,
    ) -> str | None:
        """Why the detection fires ``rule`` (words for the body), or None when it does not."""
        before = _t(previous) if previous is not None else None
        if rule.condition == "any":
            return "Detected"
        if rule.condition == "first_ever":
            return "First ever" if before is None else None
        if rule.condition == "first_of_day":
            if before is None or before.astimezone(self.tz).date() < when.date():
                return "First of the day"
            return None
        if rule.condition == "not_seen_for":
            gap = timedelta(days=rule.not_seen_days)
            if before is None:
                return "First ever"
            if fact.detected_at - before >= gap:
                return f"First in {(fact.detected_at - before).days} days"
            return None
        # count within a window
        window = timedelta(seconds=rule.window)
        times = [t for t in self.state.windows.get(key, []) if fact.detected_at - _t(t) < window]
        times.append(fact.detected_at.isoformat())
        if len(times) >= rule.count:
            self.state.windows[key] = []
            return f"{len(times)} detections within {rule.window:g} s"
        self.state.windows[key] = times
        return None

    # --- events ----------------------------------------------------------------------------

    def _event(self, rule: EventRule, fact: EventFact, now: datetime) -> Firing | None:
        if fact.kind not in rule.kinds():
            return None
        if _SEVERITY_RANK.get(fact.severity, 0) < _SEVERITY_RANK[rule.min_severity]:
            return None
        if not self._allowed(rule, fact.kind, now):
            return None
        return self._fire(
            rule,
            fact.kind,
            now,
            ref=f"event:{fact.id}",
            title=f"{fact.kind.replace('_', ' ')} at {self.station or 'the station'}",
            body=f"{fact.message} (source {fact.source}, {fact.severity}; rule {rule.name}).",
            severity=fact.severity,
            occurred_at=fact.created_at,
            data={"event": fact.kind, "source": fact.source, "event_id": fact.id},
        )

    # --- readings --------------------------------------------------------------------------

    def _reading(self, rule: ReadingRule, fact: ReadingFact, now: datetime) -> Firing | None:
        if fact.quantity != rule.quantity or (rule.sensor and fact.sensor != rule.sensor):
            return None
        key = f"{rule.name}|{fact.sensor}|{fact.quantity}"
        armed = self.state.armed.get(key, True)
        if rule.above is not None:
            crossed, threshold, word = fact.value > rule.above, rule.above, "above"
            rearm = fact.value <= rule.above - rule.hysteresis
        else:
            assert rule.below is not None
            crossed, threshold, word = fact.value < rule.below, rule.below, "below"
            rearm = fact.value >= rule.below + rule.hysteresis
        if rearm:
            self.state.armed[key] = True
            return None
        subject = f"{fact.sensor}|{fact.quantity}"
        # a crossing held back by quiet hours or a cooldown stays armed: if the value is
        # still past the threshold afterwards, that later reading fires
        if not crossed or not armed or not self._allowed(rule, subject, now):
            return None
        self.state.armed[key] = False
        return self._fire(
            rule,
            subject,
            now,
            ref=f"reading:{fact.id}",
            title=f"{fact.quantity} {word} {threshold:g} {fact.unit} at "
            f"{self.station or 'the station'}",
            body=f"{fact.sensor} measured {fact.quantity} = {fact.value:g} {fact.unit} at "
            f"{fact.measured_at.astimezone(self.tz):%Y-%m-%d %H:%M:%S %Z}, {word} "
            f"{threshold:g} (rule {rule.name}).",
            severity="warning",
            occurred_at=fact.measured_at,
            data={
                "sensor": fact.sensor,
                "quantity": fact.quantity,
                "value": fact.value,
                "unit": fact.unit,
                "threshold": threshold,
            },
        )
