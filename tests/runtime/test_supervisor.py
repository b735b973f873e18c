"""The supervisor with real child processes: crashes, hangs, SIGKILLs, stop/start, shutdown.

The job functions below run in forked children (the supervisor imports them by module path).
"""

from __future__ import annotations

import logging
import os
import random
import re
import signal
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
import pytest

from fieldstation.clock import SystemClock, VirtualClock
from fieldstation.config import StationConfig, parse_config, template_text
from fieldstation.home import StationHome
from fieldstation.runtime.forkserver import start_fork_server
from fieldstation.runtime.jobs import ProcessJobSpec, ThreadJobSpec
from fieldstation.runtime.liveness import RecorderLiveness, ThreadLiveness
from fieldstation.runtime.logs import setup_logging
from fieldstation.runtime.supervisor import Supervisor, UnknownJobError, tail_lines
from fieldstation.testing.jobs import job_processes

HERE = "fieldstation.testing.jobs"


# --- helpers -----------------------------------------------------------------------------


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout} s")


def fast_config(home: StationHome, **runtime: float) -> StationConfig:
    values: dict[str, float] = {
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
        "max_restarts": 100,
        "restart_window": 60,
        "liveness_grace": 0.5,
        "stop_timeout": 1.0,
    }
    values.update(runtime)
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home.root)
    data["runtime"] = values
    return parse_config(data)


@contextmanager
def supervising(
    config: StationConfig, home: StationHome, specs: list[Any]
) -> Iterator[tuple[Supervisor, list[tuple[str, str, str, str, dict[str, Any]]]]]:
    events: list[tuple[str, str, str, str, dict[str, Any]]] = []
    sup = Supervisor(
        config, home, 1, SystemClock(), specs, events=lambda *e: events.append(e), tick=0.1
    )
    stop = threading.Event()

    def main() -> None:
        sup.start()
        sup.run(stop)

    thread = threading.Thread(target=main)
    thread.start()
    try:
        yield sup, events
    finally:
        stop.set()
        thread.join(15)
        sup.close()
    assert not thread.is_alive()
    assert job_processes() == []


def state(sup: Supervisor, name: str) -> str:
    return str(sup.job(name)["state"])


def progress_spec(marker: Path, name: str = "rec") -> ProcessJobSpec:
    return ProcessJobSpec(
        name, f"{HERE}:progressing", (str(marker),), RecorderLiveness(chunk=0.1, grace=0.5)
    )


# --- tests --------------------------------------------------------------------------------


def test_crashing_job_fails_after_limit_while_others_keep_running(home: StationHome) -> None:
    config = fast_config(home, max_restarts=3, stop_timeout=15.0)  # rec honours SIGTERM
    marker = home.root / "rec"
    specs = [progress_spec(marker), ProcessJobSpec("crash", f"{HERE}:crashing")]
    with supervising(config, home, specs) as (sup, events):
        # the state turns failed a moment before its event is recorded: wait for both
        wait_for(
            lambda: state(sup, "crash") == "failed" and any(e[0] == "job_failed" for e in events)
        )
        restarted = [e for e in events if e[0] == "job_restarted"]
        failed = [e for e in events if e[0] == "job_failed"]
        assert len(restarted) == 3 and len(failed) == 1
        for _kind, source, _message, _severity, data in restarted + failed:
            assert source == "crash" and data["exit_code"] == 1
            assert any("boom: crashing job always fails" in line for line in data["log_tail"])
        assert failed[0][3] == "error" and "fieldstation start crash" in failed[0][2]
        assert not sup.healthy()
        first = sup.job("rec")["last_progress"]["details"]["recording_id"]
        wait_for(lambda: sup.job("rec")["last_progress"]["details"]["recording_id"] > first + 3)
        assert state(sup, "rec") == "running" and sup.job("rec")["restarts"] == 0
        # failed stays failed until an operator starts it: it then gets a fresh budget
        sup.start_job("crash")
        wait_for(lambda: sup.job("crash")["restarts"] >= 4)
    assert marker.read_text() == "shutdown"


def test_failed_job_is_retried_after_failed_retry(home: StationHome) -> None:
    config = fast_config(home, max_restarts=1, failed_retry=0.5)
    with supervising(config, home, [ProcessJobSpec("crash", f"{HERE}:crashing")]) as (sup, events):
        wait_for(lambda: [e[0] for e in events].count("job_failed") >= 2)
        assert sup.job("crash")["state"] in ("failed", "starting", "backoff")
    kinds = [e[0] for e in events]
    first = kinds.index("job_failed")
    assert kinds[: first + 1] == ["job_restarted", "job_failed"]
    assert re.search(r"tried again in \d+ s", events[first][2])
    assert kinds[first + 1] == "job_retried"  # then a fresh budget: one restart, failed again
    assert kinds[first + 1 : first + 4] == ["job_retried", "job_restarted", "job_failed"]


def test_failed_job_stays_failed_when_failed_retry_is_0(home: StationHome) -> None:
    config = fast_config(home, max_restarts=1, failed_retry=0)
    with supervising(config, home, [ProcessJobSpec("crash", f"{HERE}:crashing")]) as (sup, events):
        wait_for(lambda: state(sup, "crash") == "failed")
        time.sleep(0.5)
        assert state(sup, "crash") == "failed" and sup.job("crash")["restart_in_s"] is None
    assert [e[0] for e in events] == ["job_restarted", "job_failed"]


def test_hanging_job_is_killed_by_liveness_and_restarted(home: StationHome) -> None:
    config = fast_config(home, stop_timeout=0.5)
    starts = home.root / "hang.starts"
    spec = ProcessJobSpec(
        "hang", f"{HERE}:hanging", (str(starts),), RecorderLiveness(chunk=0.1, grace=0.3)
    )
    with supervising(config, home, [spec]) as (sup, events):
        wait_for(lambda: len(starts.read_text().split()) >= 3 if starts.exists() else False)
        restarts = [e for e in events if e[0] == "job_restarted"]
        assert len(restarts) >= 2
        data = restarts[0][4]
        assert data["reason"].startswith("hung: no chunk for")
        assert data["exit_code"] in (-signal.SIGKILL, -signal.SIGALRM)
    pids = [int(p) for p in starts.read_text().split()]
    assert len(set(pids)) == len(pids)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)


def test_sigkilled_job_is_restarted_every_time(home: StationHome) -> None:
    config = fast_config(home)
    marker = home.root / "rec"
    rng = random.Random(7)
    with supervising(config, home, [progress_spec(marker)]) as (sup, events):
        for kill in range(10):
            pid = wait_for(lambda: state(sup, "rec") == "running" and sup.job("rec")["pid"])
            time.sleep(rng.uniform(0, 0.1))
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda n=kill + 1: sup.job("rec")["restarts"] == n)
        wait_for(lambda: state(sup, "rec") == "running")
    codes = [e[4]["exit_code"] for e in events if e[0] == "job_restarted"]
    assert codes == [-signal.SIGKILL] * 10
    assert len((home.root / "rec.starts").read_text().split()) == 11


def test_stop_keeps_job_stopped_until_started(home: StationHome) -> None:
    config = fast_config(home, stop_timeout=15.0)  # it honours SIGTERM: never SIGKILLed
    marker = home.root / "rec"
    with supervising(config, home, [progress_spec(marker)]) as (sup, events):
        wait_for(lambda: state(sup, "rec") == "running")
        sup.stop_job("rec")
        wait_for(lambda: state(sup, "rec") == "stopped")
        assert marker.read_text() == "stopped"
        time.sleep(0.5)  # several backoff periods: nothing restarts it
        assert state(sup, "rec") == "stopped" and events == []
        sup.start_job("rec")
        wait_for(lambda: state(sup, "rec") == "running")
        sup.restart_job("rec")
        wait_for(lambda: len((home.root / "rec.starts").read_text().split()) == 3)
        wait_for(lambda: state(sup, "rec") == "running")
        with pytest.raises(UnknownJobError, match="jobs: rec"):
            sup.stop_job("nope")
    assert events == []


def test_shutdown_stops_children_and_threads(home: StationHome) -> None:
    # children that honour SIGTERM stop as soon as they run: a generous stop_timeout, so a
    # busy machine that schedules them late does not SIGKILL them (as 1 s did once)
    config = fast_config(home, stop_timeout=15.0)
    seen = threading.Event()

    def thread_job(stop: threading.Event) -> None:
        seen.set()
        stop.wait()

    markers = [home.root / f"rec{i}" for i in range(3)]
    specs: list[Any] = [progress_spec(m, f"rec{i}") for i, m in enumerate(markers)]
    specs.append(ThreadJobSpec("loop", thread_job))
    with supervising(config, home, specs) as (sup, _):
        wait_for(lambda: all(state(sup, f"rec{i}") == "running" for i in range(3)))
        assert seen.is_set() and state(sup, "loop") == "running"
        pids = [sup.job(f"rec{i}")["pid"] for i in range(3)]
        # each child leads its own process group (killed as a whole on exit)
        assert [os.getpgid(p) for p in pids] == pids
    assert [m.read_text() for m in markers] == ["shutdown"] * 3
    assert state(sup, "loop") == "stopped"


def test_shutdown_stops_producers_before_draining_consumers(home: StationHome) -> None:
    """Recorders close their last chunk before processors stop, so it gets processed."""
    config = fast_config(home, stop_timeout=5.0)
    journal = home.root / "journal"
    specs = [
        ProcessJobSpec("proc", f"{HERE}:idling", (str(journal),), drain=True),
        ProcessJobSpec("rec", f"{HERE}:closing_slowly", (str(journal),)),
    ]
    with supervising(config, home, specs) as (sup, _):
        wait_for(lambda: state(sup, "rec") == "running" and state(sup, "proc") == "running")
    lines = [line.split() for line in journal.read_text().splitlines()]
    assert [f"{w[0]} {w[1]}" for w in lines] == ["producer closed", "consumer stopped"]
    # the consumer was stopped promptly once idle after the producer, not after the drain limit
    assert float(lines[1][2]) - float(lines[0][2]) < 2.0


def test_a_committed_chunk_wakes_the_processors_at_once(home: StationHome) -> None:
    config = fast_config(home)
    journal = home.root / "journal"
    specs = [
        ProcessJobSpec("proc", f"{HERE}:woken", (str(journal),), drain=True),
        progress_spec(home.root / "rec"),  # reports a chunk every 0.05 s
    ]
    with supervising(config, home, specs) as (sup, _):
        # the consumer waits up to 60 s per poll: only nudges can wake it this often
        wait_for(lambda: journal.exists() and len(journal.read_text().split("\n")) > 5, 5.0)
        assert state(sup, "proc") == "running" and sup.job("proc")["restarts"] == 0


def test_loop_alive_judges_the_loop_not_the_jobs(home: StationHome) -> None:
    clock = VirtualClock()
    sup = Supervisor(fast_config(home), home, 1, clock, [], tick=1.0)
    try:
        sup.step(0)
        clock.advance(7.9)  # 3 * tick + 5 = 8 s
        assert sup.loop_alive() and sup.healthy()
        clock.advance(0.2)
        assert not sup.loop_alive() and not sup.healthy()
        sup.step(0)
        assert sup.loop_alive()
    finally:
        sup.close()


def test_thread_job_crash_is_restarted(home: StationHome) -> None:
    config = fast_config(home, max_restarts=2)
    runs: list[int] = []

    def flaky(stop: threading.Event) -> None:
        runs.append(1)
        raise ValueError("thread boom")

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    setup_logging(config.logging, home.logs, name="station", console=False)
    try:
        with supervising(config, home, [ThreadJobSpec("flaky", flaky)]) as (sup, events):
            wait_for(lambda: state(sup, "flaky") == "failed")
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    assert len(runs) == 3
    assert [e[0] for e in events] == ["job_restarted", "job_restarted", "job_failed"]
    assert "thread boom" in events[0][4]["reason"]
    # a thread job's restart event carries the supervisor's log, with the crash in it
    assert any("ValueError: thread boom" in line for line in events[-1][4]["log_tail"])


def test_tail_lines_gives_whole_lines_however_long(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    lines = [f"{i} " + "x" * (i * 700) for i in range(120)]  # up to 83 kB a line
    log.write_text("\n".join(lines) + "\n")
    assert tail_lines(log, 3) == lines[-3:]
    assert tail_lines(log, 500) == lines
    assert tail_lines(log, 0) == [] and tail_lines(log, -3) == []
    assert tail_lines(tmp_path / "none.log", 5) == []


def test_why_a_recorder_is_not_recording_is_logged_when_it_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from fieldstation.runtime.station import _ProgressLog

    progress = _ProgressLog()
    with caplog.at_level("INFO", logger="fieldstation.runtime.station"):
        for _ in range(3):
            progress("recorder:usb", "waiting", {"next_slot": "t1", "reason": "device error: x"})
        progress("recorder:usb", "waiting", {"next_slot": "t2", "reason": "disk low: y"})
        progress("recorder:usb", "waiting", {"next_slot": "t3"})
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "recorder:usb: not recording: device error: x; next try t1",
        "recorder:usb: not recording: disk low: y; next try t2",
    ]
    assert "recorder:usb: waiting, next slot t3" in caplog.text


def test_a_configuration_error_is_not_retried(
    home: StationHome, caplog: pytest.LogCaptureFixture
) -> None:
    """A real job process raising ConfigurationError exits 78: config_error at once with its
    reason, one ERROR line, one event, no restart (while a crashing neighbour restarts many
    times meanwhile) until an operator starts it."""
    config = fast_config(home, max_restarts=100, failed_retry=0.1)
    starts = home.root / "bad.starts"
    specs = [
        ProcessJobSpec("bad", f"{HERE}:misconfigured", (str(starts),)),
        ProcessJobSpec("crash", f"{HERE}:crashing"),
    ]
    with (
        caplog.at_level("INFO", logger="fieldstation.runtime"),
        supervising(config, home, specs) as (sup, events),
    ):
        wait_for(lambda: state(sup, "bad") == "config_error")
        job = sup.job("bad")
        assert "missing.wav does not exist" in job["reason"] and job["exit_code"] == 78
        assert job["problem"] == job["reason"] and job["restart_in_s"] is None
        # time passes (the neighbour restarts 5 times, several backoff periods): nothing
        wait_for(lambda: sup.job("crash")["restarts"] >= 5)
        assert state(sup, "bad") == "config_error" and sup.job("bad")["restarts"] == 0
        assert len(starts.read_text().split()) == 1
        assert not sup.healthy() and sup.failed_jobs() == ["bad"]
        sup.start_job("bad")
        wait_for(lambda: len(starts.read_text().split()) == 2)
        wait_for(lambda: state(sup, "bad") == "config_error")
    mine = [e for e in events if e[1] == "bad"]
    assert [e[0] for e in mine] == ["job_config_error", "job_config_error"]
    assert mine[0][3] == "error" and "missing.wav does not exist" in mine[0][2]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len([m for m in errors if m.startswith("job bad:")]) == 2  # one per start
    assert not any(
        "bad" in r.getMessage() and "restart in" in r.getMessage() for r in caplog.records
    )
    assert sup.exit_status() == 78


def test_every_process_job_misconfigured_ends_the_run(home: StationHome) -> None:
    config = fast_config(home)
    stop = threading.Event()
    sup = Supervisor(
        config,
        home,
        1,
        SystemClock(),
        [ProcessJobSpec("bad", f"{HERE}:misconfigured")],
        tick=0.1,
        exit_when_unrunnable=True,
    )
    try:
        sup.start()
        runner = threading.Thread(target=sup.run, args=(stop,))
        runner.start()
        runner.join(20)  # returns by itself: nothing can run
        assert not runner.is_alive() and stop.is_set()
    finally:
        stop.set()
        sup.close()
    assert state(sup, "bad") == "config_error" and sup.exit_status() == 78
    assert job_processes() == []


def test_a_hung_thread_job_is_reported_and_starves_the_watchdog(home: StationHome) -> None:
    """A thread blocked in a read that never returns (a real blocked syscall) stops touching
    its stop event: it is reported ``hung`` with one event, and ``watchdog_ok`` turns False;
    when the read returns, it is running again."""
    config = fast_config(home)
    read_end, write_end = os.pipe()

    def stuck(stop: threading.Event) -> None:
        os.read(read_end, 1)  # blocks until the test writes
        stop.wait()

    spec = ThreadJobSpec("stuck", stuck, liveness=ThreadLiveness(timeout=0.3))
    try:
        with supervising(config, home, [spec]) as (sup, events):
            wait_for(lambda: state(sup, "stuck") == "hung")
            assert not sup.watchdog_ok() and not sup.healthy()
            assert "busy for" in sup.job("stuck")["reason"]
            time.sleep(0.3)  # several ticks: still one event
            assert [e[0] for e in events] == ["job_hung"]
            os.write(write_end, b"x")
            wait_for(lambda: state(sup, "stuck") == "running")
            assert sup.watchdog_ok()
    finally:
        os.close(read_end)
        os.close(write_end)
    assert [e[0] for e in events] == ["job_hung"]


def test_a_thread_waiting_on_its_stop_is_not_hung(home: StationHome) -> None:
    config = fast_config(home)
    spec = ThreadJobSpec("idle", lambda stop: stop.wait(), liveness=ThreadLiveness(timeout=0.1))
    with supervising(config, home, [spec]) as (sup, events):
        time.sleep(0.5)  # five liveness timeouts, waiting all along
        assert state(sup, "idle") == "running" and sup.watchdog_ok()
    assert events == []


def test_pending_work_is_announced_only_when_there_is_some(
    home: StationHome, caplog: pytest.LogCaptureFixture
) -> None:
    config = fast_config(home)
    journal = home.root / "journal"
    specs = [ProcessJobSpec("proc", f"{HERE}:idling", (str(journal),), drain=True)]
    with (
        caplog.at_level("INFO", logger="fieldstation.runtime"),
        supervising(config, home, specs) as (sup, _),
    ):
        wait_for(lambda: sup.job("proc")["last_progress"] is not None)
    assert "finish pending work" not in caplog.text
    assert "consumer stopped" in journal.read_text()


def test_a_retry_while_not_recording_does_not_say_slot_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from fieldstation.runtime.station import _ProgressLog

    progress = _ProgressLog()
    with caplog.at_level("INFO", logger="fieldstation.runtime.station"):
        progress("recorder:usb", "slot", {"start": "t0", "end": "t9"})
        progress("recorder:usb", "waiting", {"next_slot": "t1", "reason": "device error: x"})
        for retry in ("t1", "t2"):  # the recorder reports the slot each time it tries again
            progress("recorder:usb", "slot", {"start": retry, "end": "t9"})
            progress("recorder:usb", "waiting", {"next_slot": "t3", "reason": "device error: x"})
        progress("recorder:usb", "slot", {"start": "t3", "end": "t9"})
        progress("recorder:usb", "chunk", {"recording_id": 1, "frames": 10})
    lines = [r.getMessage() for r in caplog.records]
    assert [line for line in lines if "slot open" in line] == ["recorder:usb: slot open until t9"]
    assert "recorder:usb: recording again" in lines


# --- the fork server fails or stalls; a thread does not stop ------------------------------


def test_a_job_the_fork_server_cannot_start_backs_off_and_the_station_runs_on(
    home: StationHome, no_forks: Callable[[int], AbstractContextManager[None]]
) -> None:
    """fork() refused (a real EAGAIN): the job goes through backoff like a crash, with the
    reason; the loop runs on, and the job runs again once forks work."""
    config = fast_config(home, stop_timeout=15.0)  # rec honours SIGTERM: never SIGKILLed
    marker = home.root / "rec"
    with supervising(config, home, [progress_spec(marker)]) as (sup, events):
        wait_for(lambda: state(sup, "rec") == "running")

        def not_started() -> list[dict[str, Any]]:
            return [
                e[4]
                for e in list(events)
                if e[0] == "job_restarted" and "not started" in e[4]["reason"]
            ]

        with no_forks(start_fork_server().pid):
            os.kill(sup.job("rec")["pid"], signal.SIGKILL)
            wait_for(lambda: len(not_started()) >= 2)
            assert sup.loop_alive() and state(sup, "rec") in ("backoff", "starting")
        assert "could not start a process" in not_started()[0]["reason"]
        assert not_started()[0]["exit_code"] is None
        wait_for(lambda: state(sup, "rec") == "running")
    assert marker.read_text() == "shutdown"


def _in_fork_server_start() -> bool:
    """Some thread waits in ForkServer.start for the server's answer."""
    for frame in sys._current_frames().values():
        at: FrameType | None = frame
        while at is not None:
            code = at.f_code
            if code.co_name == "start" and code.co_filename.endswith("forkserver.py"):
                return True
            at = at.f_back
    return False


def test_status_does_not_wait_for_a_slow_fork_server(home: StationHome) -> None:
    """The loop waits up to START_TIMEOUT for the fork server to start a job; snapshot()
    (status, heartbeat, watchdog) answers meanwhile. The server is stopped with SIGSTOP."""
    config = fast_config(home)
    marker = home.root / "rec"
    with supervising(config, home, [progress_spec(marker)]) as (sup, _):
        wait_for(lambda: state(sup, "rec") == "running")
        sup.stop_job("rec")
        wait_for(lambda: state(sup, "rec") == "stopped")
        server = start_fork_server()
        os.kill(server.pid, signal.SIGSTOP)
        starter = threading.Thread(target=sup.start_job, args=("rec",), daemon=True)
        try:
            starter.start()
            wait_for(_in_fork_server_start)
            answers: list[list[dict[str, Any]]] = []
            asking = threading.Thread(target=lambda: answers.append(sup.snapshot()), daemon=True)
            asking.start()
            asking.join(5.0)
            assert answers, "snapshot() waited for the fork server"
            assert answers[0][0]["state"] == "starting"
        finally:
            os.kill(server.pid, signal.SIGCONT)
        starter.join(30.0)
        wait_for(lambda: state(sup, "rec") == "running")


def test_a_thread_job_that_does_not_stop_is_hung_and_the_exit_status_1(
    home: StationHome,
) -> None:
    """A thread still running when its stop time is up cannot be killed: it ends ``hung``
    with an event, and the station exits 1 (decision record 0063)."""
    config = fast_config(home)  # stop_timeout 1 s
    read_end, write_end = os.pipe()

    def deaf(stop: threading.Event) -> None:
        stop.wait()
        os.read(read_end, 1)  # blocks until the test writes

    try:
        with supervising(config, home, [ThreadJobSpec("deaf", deaf)]) as (sup, events):
            wait_for(lambda: state(sup, "deaf") == "running")
        assert state(sup, "deaf") == "hung" and sup.exit_status() == 1
        assert "told to stop" in sup.job("deaf")["reason"]
        assert [e[0] for e in events] == ["job_hung"]
    finally:
        os.write(write_end, b"x")
        for thread in threading.enumerate():
            if thread.name == "deaf":
                thread.join(10.0)
        os.close(read_end)
        os.close(write_end)
