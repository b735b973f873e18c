"""The supervisor's sans-IO core on virtual time: every decision in milliseconds, no process.

Each test drives a :class:`JobCore` with events (spawned, reported, exited, time passed,
operator commands) and checks the actions it returns, as the supervisor would carry them out.
"""

from __future__ import annotations

import logging

import pytest

from fieldstation.clock import VirtualClock
from fieldstation.config.runtime import RuntimeConfig
from fieldstation.job import EXIT_CONFIG
from fieldstation.progress import (
    Chunk,
    ConfigErrorReport,
    Idle,
    JobState,
    OtherReport,
    Slot,
    Waiting,
    parse_report,
)
from fieldstation.runtime.core import (
    Action,
    JobCore,
    Log,
    Nudge,
    Record,
    Signal,
    Spawn,
    exit_status,
    has_pending_work,
)
from fieldstation.runtime.liveness import BUSY, WAITING, RecorderLiveness, ThreadLiveness
from fieldstation.runtime.policy import RestartPolicy


def core(*, max_restarts: int = 3, failed_retry: float = 0.0, **kwargs: object) -> JobCore:
    config = RuntimeConfig(
        backoff_initial=1, backoff_max=8, max_restarts=max_restarts, restart_window=60
    )
    policy = RestartPolicy.from_config(config, jitter=lambda: 1.0)  # no jitter: exact delays
    return JobCore(
        name="job",
        policy=policy,
        stop_timeout=2.0,
        failed_retry=failed_retry,
        **kwargs,  # type: ignore[arg-type]
    )


def kinds(actions: list[Action]) -> list[str]:
    return [a.kind for a in actions if isinstance(a, Record)]


def run_until_spawn(job: JobCore, clock: VirtualClock, limit: float = 10_000.0) -> float:
    """Advance virtual time to the job's next deadline and tick until it spawns; the wait."""
    start = clock.monotonic()
    while clock.monotonic() - start < limit:
        deadline = job.deadline()
        assert deadline is not None, "nothing scheduled"
        clock.advance(max(0.0, deadline - clock.monotonic()))
        if any(isinstance(a, Spawn) for a in job.tick(clock.monotonic())):
            return clock.monotonic() - start
    raise AssertionError("never spawned")


def test_crashes_back_off_exponentially_then_fail_and_retry_after_failed_retry() -> None:
    clock, job = VirtualClock(), core(max_restarts=3, failed_retry=3600)
    assert job.begin(clock.monotonic()) == [Spawn("job")] and job.state == JobState.STARTING
    waits = []
    for _ in range(3):
        actions = job.exited(clock.monotonic(), 1, pid=10, error=None)
        assert kinds(actions) == ["job_restarted"] and job.state == JobState.BACKOFF
        assert job.tick(clock.monotonic()) == []  # not yet: backoff
        waits.append(run_until_spawn(job, clock))
    assert waits == [1.0, 2.0, 4.0]
    actions = job.exited(clock.monotonic(), 1)
    assert kinds(actions) == ["job_failed"] and job.state == JobState.FAILED
    failed = next(a for a in actions if isinstance(a, Record))
    assert "tried again in 3600 s" in failed.message and "fieldstation start job" in failed.message
    assert any(isinstance(a, Log) and a.level == logging.ERROR for a in actions)
    clock.advance(3599.9)
    assert job.tick(clock.monotonic()) == []
    clock.advance(0.2)
    actions = job.tick(clock.monotonic())
    assert kinds(actions) == ["job_retried"] and Spawn("job") in actions
    # a fresh budget: the next crash restarts after the initial delay again
    job.exited(clock.monotonic(), 1)
    assert run_until_spawn(job, clock) == 1.0


def test_failed_stays_failed_without_failed_retry() -> None:
    clock, job = VirtualClock(), core(max_restarts=1, failed_retry=0)
    job.begin(0.0)
    job.exited(0.0, 1)
    run_until_spawn(job, clock)
    job.exited(clock.monotonic(), 1)
    assert job.state == JobState.FAILED and job.deadline() is None
    clock.advance(1e6)
    assert job.tick(clock.monotonic()) == []
    assert job.start(clock.monotonic()) == [Spawn("job")]  # an operator starts it


def test_exit_78_is_a_config_error_with_one_event_and_no_restart() -> None:
    clock, job = VirtualClock(), core(max_restarts=3, failed_retry=60)
    job.begin(0.0)
    reason = "sensors.mic.path: /x.wav does not exist"
    assert job.reported(ConfigErrorReport(reason=reason), 0.1) == []
    actions = job.exited(0.2, EXIT_CONFIG, pid=42)
    assert job.state == JobState.CONFIG_ERROR and job.reason == reason
    assert kinds(actions) == ["job_config_error"]
    (record,) = [a for a in actions if isinstance(a, Record)]
    assert record.severity == "error" and reason in record.message
    assert record.data == {"job": "job", "exit_code": 78, "pid": 42, "reason": reason}
    (line,) = [a for a in actions if isinstance(a, Log)]
    assert line.level == logging.ERROR and reason in line.message
    assert "fieldstation start job" in line.message
    assert job.policy.total_restarts == 0 and job.deadline() is None
    for _ in range(100):  # days pass: not restarted, nothing more recorded or logged
        clock.advance(3600)
        assert job.tick(clock.monotonic()) == []
    assert job.problem == reason
    # an operator starts it (after fixing the file): it runs again
    assert job.start(clock.monotonic()) == [Spawn("job")]
    assert job.state == JobState.STARTING and job.problem is None


def test_exit_78_without_a_report_still_says_what_it_is() -> None:
    job = core()
    job.begin(0.0)
    job.exited(1.0, EXIT_CONFIG)
    assert job.state == JobState.CONFIG_ERROR and "exit code 78" in str(job.reason)


def test_an_operator_stop_of_a_config_error_job_is_stopped() -> None:
    job = core()
    job.begin(0.0)
    job.exited(1.0, EXIT_CONFIG)
    assert job.stop(2.0) == [] and job.state == JobState.STOPPED


def test_a_hung_process_is_terminated_then_killed_and_restarted() -> None:
    clock = VirtualClock()
    job = core(liveness=RecorderLiveness(chunk=1.0, grace=0.5))  # a chunk due within 2.5 s
    job.begin(clock.monotonic())
    job.reported(Slot(start="a", end="b"), clock.monotonic())
    clock.advance(2.4)
    assert job.tick(clock.monotonic()) == []
    clock.advance(0.2)
    actions = job.tick(clock.monotonic())
    assert Signal("job", "terminate") in actions and job.state == JobState.STOPPING
    assert str(job.reason).startswith("hung: no chunk for 2.6 s")
    clock.advance(1.9)
    assert job.tick(clock.monotonic()) == []  # stop_timeout is 2 s
    clock.advance(0.2)
    assert Signal("job", "kill") in job.tick(clock.monotonic())
    actions = job.exited(clock.monotonic(), -9)
    assert kinds(actions) == ["job_restarted"]
    (record,) = [a for a in actions if isinstance(a, Record)]
    assert record.data["reason"].startswith("hung: ") and record.log_tail
    assert run_until_spawn(job, clock) == 1.0


def test_a_thread_that_stops_turning_is_hung_once_and_recovers() -> None:
    clock = VirtualClock()
    job = core(liveness=ThreadLiveness(timeout=30.0), process=False)
    job.begin(clock.monotonic())
    assert job.state == JobState.RUNNING
    job.observed(WAITING, clock.monotonic())
    clock.advance(3600)  # waiting on its stop event for an hour: idle, not hung
    assert job.tick(clock.monotonic()) == []
    job.observed(BUSY, clock.monotonic())
    clock.advance(30.5)
    actions = job.tick(clock.monotonic())
    assert kinds(actions) == ["job_hung"] and job.state == JobState.HUNG
    assert not any(isinstance(a, Signal) for a in actions)  # a thread cannot be killed
    clock.advance(100)
    assert job.tick(clock.monotonic()) == []  # one event, not one per tick
    job.observed(WAITING, clock.monotonic())
    actions = job.tick(clock.monotonic())
    assert job.state == JobState.RUNNING and kinds(actions) == []
    assert any(isinstance(a, Log) for a in actions)


def test_stop_start_restart_and_shutdown() -> None:
    clock, job = VirtualClock(), core()
    job.begin(0.0)
    assert job.stop(1.0) == [Signal("job", "stop")] and job.state == JobState.STOPPING
    actions = job.exited(1.5, 0)
    assert job.state == JobState.STOPPED and kinds(actions) == []
    clock.advance(1000)
    assert job.tick(clock.monotonic()) == []  # stays stopped
    job.start(clock.monotonic())
    assert job.restart(clock.monotonic()) == [Signal("job", "stop")]
    assert Spawn("job") in job.exited(clock.monotonic(), 0)  # started again once ended
    job.exited(clock.monotonic(), 1)  # a crash: backoff...
    job.begin_shutdown()
    assert job.state == JobState.STOPPED and job.deadline() is None  # ...not after shutdown


def test_a_chunk_nudges_the_consumers_and_waiting_says_why() -> None:
    producer, consumer = core(), core(drain=True)
    producer.begin(0.0)
    consumer.begin(0.0)
    assert producer.reported(Chunk(recording_id=1), 1.0) == [Nudge("job")]
    assert consumer.reported(Chunk(recording_id=1), 1.0) == []
    assert producer.in_slot and producer.problem is None
    producer.reported(Waiting(next_slot="t", reason="device error: no input 'usb'"), 2.0)
    assert producer.problem == "device error: no input 'usb'" and producer.next_slot == "t"
    producer.reported(Slot(start="a", end="b"), 2.5)  # it tries the device again...
    assert producer.problem == "device error: no input 'usb'"  # ...and is not recording yet
    producer.reported(Chunk(recording_id=2), 3.0)
    assert producer.problem is None  # recording again
    producer.reported(Waiting(next_slot="t", reason="disk low: 1 MB free"), 4.0)
    producer.reported(Waiting(next_slot="t2"), 5.0)
    assert producer.problem is None  # between slots: all is well


def test_pending_work_at_shutdown() -> None:
    assert not has_pending_work(Idle(pending=0), 5.0, None)
    assert not has_pending_work(Idle(pending=0), 5.0, 4.0)
    assert has_pending_work(Idle(pending=0), 5.0, 6.0)  # a chunk after its last look
    assert has_pending_work(parse_report("claimed", {"recording_id": 3}), 5.0, None)
    assert has_pending_work(None, None, None)


def test_typed_reports_keep_the_wire_format() -> None:
    wire = {"recording_id": 12, "path": "data/x.flac", "frames": 480000}
    report = parse_report("chunk", wire)
    assert report == Chunk(12, "data/x.flac", 480000) and report.details() == wire
    assert parse_report("waiting", {"next_slot": None}).details() == {}
    odd = parse_report("batch", {"sent": 3})
    assert odd == OtherReport(kind="batch", extra={"sent": 3}) and odd.details() == {"sent": 3}
    assert parse_report("idle", {"pending": 2, "unknown": 1}) == Idle(pending=2)
    assert JobState("config_error") is JobState.CONFIG_ERROR and JobState.FAILED == "failed"


@pytest.mark.parametrize("code", [0, 1, -9])
def test_other_exits_are_transient(code: int) -> None:
    job = core()
    job.begin(0.0)
    job.exited(1.0, code)
    assert job.state == JobState.BACKOFF


def test_exit_status_of_a_run() -> None:
    assert exit_status([JobState.RUNNING, JobState.STOPPED]) == 0
    assert exit_status([JobState.FAILED, JobState.STOPPED]) == 1
    assert exit_status([JobState.HUNG]) == 1
    assert exit_status([JobState.FAILED, JobState.CONFIG_ERROR]) == EXIT_CONFIG
    assert exit_status([]) == 0


def test_a_thread_that_does_not_stop_at_shutdown_ends_hung() -> None:
    """It cannot be killed: ``hung`` with one event, so the station exits 1."""
    job = core(process=False)
    job.begin(0.0)
    job.begin_shutdown()
    assert job.terminate("shutdown", 1.0) == [Signal("job", "terminate")]
    assert job.state == JobState.STOPPING
    actions = job.not_stopped(2.0)
    assert kinds(actions) == ["job_hung"] and job.state == JobState.HUNG
    assert job.reason == "hung: still running 2.0 s after it was told to stop"
    assert exit_status([job.state]) == 1


def test_a_job_that_could_not_be_started_backs_off_like_a_crash() -> None:
    """The fork server could not fork it: ``exited`` without a code, with the error."""
    clock, job = VirtualClock(), core()
    job.begin(clock.monotonic())
    actions = job.exited(clock.monotonic(), None, error="not started: EAGAIN")
    assert kinds(actions) == ["job_restarted"] and job.state == JobState.BACKOFF
    assert job.reason == "not started: EAGAIN"
    assert run_until_spawn(job, clock) == 1.0
