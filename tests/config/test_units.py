"""Human units: durations, sizes, frequencies."""

from __future__ import annotations

import math

import pytest
from pydantic import TypeAdapter, ValidationError

from fieldstation.config.units import (
    Bytes,
    format_seconds,
    parse_duration,
    parse_frequency,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("5m", 300),
        ("1h30m", 5400),
        ("2m 30s", 150),
        ("250ms", 0.25),
        ("2d", 172800),
        (12, 12),
        ("1.5h", 5400),
        ("0", 0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["ten", "5 parsecs", "-5m", "1h banana", "", True])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (math.inf, "finite"),
        ("inf", "finite"),
        ("-inf", "finite"),
        (math.nan, "finite"),
        ("NaN", "finite"),
        ("1h1h", "repeats the unit 'h'"),
        ("1m 30min", "repeats the unit 'm'"),
        ("5s2sec", "repeats the unit 's'"),
    ],
)
def test_non_finite_durations_and_repeated_units_are_refused(text: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


def test_seconds_and_milliseconds_are_different_units() -> None:
    assert parse_duration("1s500ms") == 1.5


@pytest.mark.parametrize(
    ("text", "hz"), [("48kHz", 48000), ("44.1 kHz", 44100), (256000, 256000), ("1MHz", 1_000_000)]
)
def test_frequencies(text: object, hz: int) -> None:
    assert parse_frequency(text) == hz


@pytest.mark.parametrize("text", ["48 kHzz", "fast", -1, 0, "0.5Hz"])
def test_bad_frequencies(text: object) -> None:
    with pytest.raises(ValueError):
        parse_frequency(text)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_frequencies_are_a_value_error(value: float) -> None:
    with pytest.raises(ValueError, match="finite"):  # was OverflowError, escaping validation
        parse_frequency(value)


@pytest.mark.parametrize(
    ("text", "size"), [("20 GB", 20 * 10**9), ("512MiB", 512 * 2**20), (1000, 1000)]
)
def test_sizes(text: object, size: int) -> None:
    assert TypeAdapter(Bytes).validate_python(text) == size


def test_bad_size() -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Bytes).validate_python("lots")


def test_format_seconds_round_trips() -> None:
    for seconds in (5400, 45, 86400 + 61):
        assert parse_duration(format_seconds(seconds)) == seconds
