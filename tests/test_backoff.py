"""The one backoff rule (fieldstation.backoff) and its one config shape (BackoffSettings)."""

from __future__ import annotations

import pytest

from fieldstation.backoff import Backoff, backoff_delay
from fieldstation.config import parse_config
from fieldstation.config.base import BackoffSettings
from fieldstation.config.outputs import OutboxConfig
from fieldstation.config.runtime import RuntimeConfig


def test_equal_jitter_doubles_from_initial_and_stops_at_maximum() -> None:
    assert [backoff_delay(n, 1.0, 10.0, 0.0) for n in range(1, 7)] == [0.5, 1, 2, 4, 5, 5]
    assert [backoff_delay(n, 1.0, 10.0, 0.999999) for n in (1, 4, 5)] == pytest.approx(
        [1.0, 8.0, 10.0]
    )
    assert backoff_delay(10_000, 1.0, 10.0, 0.0) == 5.0  # no overflow after months of failures
    with pytest.raises(ValueError, match="initial <= maximum"):
        backoff_delay(1, 5.0, 1.0)


def test_backoff_counts_failures_and_resets_on_success() -> None:
    backoff = Backoff(2.0, 60.0, jitter=lambda: 0.0)
    assert [backoff.next_delay() for _ in range(4)] == [1.0, 2.0, 4.0, 8.0]
    backoff.reset()
    assert backoff.next_delay() == 1.0


@pytest.mark.parametrize("model", [RuntimeConfig, OutboxConfig])
def test_runtime_and_outbox_share_one_backoff_shape(model: type[BackoffSettings]) -> None:
    assert issubclass(model, BackoffSettings)
    assert model().backoff_initial == 1.0 and model().backoff_max == 300.0


@pytest.mark.parametrize("section", ["runtime", "outbox"])
def test_a_max_below_initial_is_refused_naming_the_section(section: str) -> None:
    data = {
        "station": {"id": "b", "latitude": 0, "longitude": 0},
        section: {"backoff_initial": "10s", "backoff_max": "2s"},
    }
    with pytest.raises(ValueError) as raised:
        parse_config(data)
    text = str(raised.value)
    assert section in text and "backoff_max (2 s) must be at least backoff_initial (10 s)" in text
