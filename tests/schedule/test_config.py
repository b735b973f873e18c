"""Schedule config validation: clear errors for edges, duty cycles and dates."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fieldstation.config.schedule import ScheduleConfig, parse_edge


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("05:30", ("clock", 19800.0)),
        ("24:00", ("clock", 86400.0)),
        ("7:05:09", ("clock", 25509.0)),
        ("sunset-30m", ("sunset", -1800.0)),
        ("Sunrise + 1h30m", ("sunrise", 5400.0)),
        ("civil_dawn", ("civil_dawn", 0.0)),
        ("noon+12h", ("noon", 43200.0)),
    ],
)
def test_parse_edge(text, expected):
    assert parse_edge(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("24:01", "past 24:00"),
        ("25:00", "not a window edge"),
        ("moonrise", "not a window edge"),
        ("sunset+13h", "more than 12h"),
    ],
)
def test_bad_edges_say_what_is_accepted(text, message):
    with pytest.raises(ValueError, match=message):
        parse_edge(text)


@pytest.mark.parametrize(
    ("duty", "message"),
    [
        ({"record": "1m"}, "exactly one of 'sleep' or 'every'"),
        ({"record": "1m", "sleep": "1m", "every": "2m"}, "exactly one"),
        ({"record": "2m", "every": "1m"}, "shorter than 'record'"),
        ({"record": "1m", "every": "7m", "align": "clock"}, "must divide a day"),
        ({"record": "1s", "every": "10s", "offset": "10s", "align": "clock"}, "less than"),
        ({"record": "1m", "every": "5m", "offset": "5s"}, "align = 'clock' only"),
    ],
)
def test_bad_duty_cycles(duty, message):
    with pytest.raises(ValidationError, match=message):
        ScheduleConfig.model_validate({"duty_cycle": duty})


def test_dates_in_order_and_default_is_continuous():
    with pytest.raises(ValidationError, match="before first_date"):
        ScheduleConfig.model_validate({"first_date": "2027-05-02", "last_date": "2027-05-01"})
    default = ScheduleConfig()
    assert [(w.start, w.end) for w in default.windows] == [("00:00", "24:00")]
    assert default.duty_cycle is None
