"""Retention config: policy fields apply only to their own kind of policy."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from fieldstation.config.retention import RetentionConfig, RetentionPolicy


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"keep": "days"}, "needs 'days'"),
        ({"keep": "all", "days": 3}, "'days' applies only"),
        ({"keep": "all", "labels": ["bat"]}, "apply only to keep='detections'"),
        ({"keep": "days", "days": 2, "min_score": 0.5}, "apply only to keep='detections'"),
        ({"keep": "detections", "min_score": 1.5}, "less than or equal to 1"),
    ],
)
def test_bad_policies(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RetentionPolicy(**fields)


def test_sizes_and_durations_in_human_units() -> None:
    config = RetentionConfig.model_validate(
        {
            "interval": "5m",
            "max_bytes": "2GB",
            "min_free": "500MB",
            "default": {"keep": "detections", "labels": ["bat"], "min_score": 0.4},
        }
    )
    assert config.interval == 300.0 and config.max_bytes == 2_000_000_000
    assert config.min_free == 500_000_000 and config.default.labels == ["bat"]
