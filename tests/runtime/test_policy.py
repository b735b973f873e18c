"""Restart policy (backoff with jitter, intensity) and liveness rules, on virtual time."""

from __future__ import annotations

import pytest

from fieldstation.clock import VirtualClock
from fieldstation.config.runtime import RuntimeConfig
from fieldstation.runtime.liveness import AlwaysAlive, ProcessorLiveness, RecorderLiveness
from fieldstation.runtime.policy import RestartPolicy


def _policy(jitter: float = 1.0, **kw: float) -> RestartPolicy:
    cfg = RuntimeConfig(backoff_initial=1, backoff_max=8, max_restarts=5, restart_window=60)
    cfg = cfg.model_copy(update=kw)
    return RestartPolicy.from_config(cfg, jitter=lambda: jitter)


def test_backoff_doubles_up_to_max() -> None:
    policy, clock = _policy(), VirtualClock()
    delays = []
    for _ in range(5):
        decision = policy.on_exit(clock.monotonic())
        assert decision.restart
        delays.append(decision.delay)
        clock.advance(0.5)
    assert delays == [1, 2, 4, 8, 8]


def test_jitter_keeps_delay_between_half_and_full() -> None:
    low, high = _policy(jitter=0.0), _policy(jitter=0.999)
    assert low.on_exit(0).delay == pytest.approx(0.5)
    assert high.on_exit(0).delay == pytest.approx(1.0, abs=0.01)
    default = RestartPolicy.from_config(RuntimeConfig(backoff_initial=2, backoff_max=2))
    assert all(1.0 <= default.on_exit(t * 1000.0).delay <= 2.0 for t in range(50))


def test_more_than_max_restarts_in_window_fails() -> None:
    policy, clock = _policy(max_restarts=3, restart_window=10), VirtualClock()
    for _ in range(3):
        assert policy.on_exit(clock.monotonic()).restart
        clock.advance(1)
    decision = policy.on_exit(clock.monotonic())
    assert not decision.restart
    assert decision.restarts_in_window == 3


def test_restarts_outside_window_are_forgotten_and_backoff_resets() -> None:
    policy, clock = _policy(max_restarts=3, restart_window=10), VirtualClock()
    for _ in range(3):
        policy.on_exit(clock.monotonic())
        clock.advance(1)
    clock.advance(10.5)
    decision = policy.on_exit(clock.monotonic())
    assert decision.restart and decision.delay == 1 and decision.restarts_in_window == 1
    assert policy.total_restarts == 4


def test_reset_forgets_restarts() -> None:
    policy = _policy(max_restarts=1)
    assert policy.on_exit(0).restart
    assert not policy.on_exit(1).restart
    policy.reset()
    assert policy.on_exit(2).restart


def test_recorder_liveness_only_inside_a_slot() -> None:
    rule, clock = RecorderLiveness(chunk=10, grace=5), VirtualClock()
    start = clock.monotonic()
    clock.advance(1000)
    assert rule.stalled("waiting", start, clock.monotonic()) is None
    assert rule.stalled(None, None, clock.monotonic()) is None
    assert rule.stalled("chunk", clock.monotonic() - 25, clock.monotonic()) is None
    reason = rule.stalled("slot", clock.monotonic() - 25.1, clock.monotonic())
    assert reason is not None and "25.1" in reason


def test_processor_liveness_claimed_and_silent() -> None:
    rule = ProcessorLiveness(timeout=60, poll_interval=5)
    assert rule.stalled("claimed", 0, 59) is None
    assert rule.stalled("claimed", 0, 61) is not None
    # between recordings an idle worker reports every poll_interval: silence past
    # poll_interval + timeout means it is stuck before its next claim
    assert rule.stalled("processed", 0, 64) is None
    assert rule.stalled("idle", 0, 65) is None
    reason = rule.stalled("idle", 0, 65.5)
    assert reason is not None and "'idle'" in reason and "65.0" in reason
    assert rule.stalled("processed", 0, 1000) is not None
    assert rule.stalled(None, None, 1e9) is None  # starting: nothing reported yet
    assert AlwaysAlive().stalled("claimed", 0, 1e9) is None
