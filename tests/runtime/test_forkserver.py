"""The station's own fork server (runtime/forkserver.py, decision 0067): real processes."""

from __future__ import annotations

import multiprocessing.forkserver
import operator
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import psutil
import pytest

from fieldstation.config import config_data, default_config
from fieldstation.home import StationHome
from fieldstation.job import EXIT_CONFIG
from fieldstation.runtime.forkserver import ForkServerError, fork_server_pid, start_fork_server
from fieldstation.runtime.jobs import ProcessJobSpec, start_job
from fieldstation.runtime.station import run_in_child


def _wait_until(condition, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_run_in_child_returns_and_reraises() -> None:
    assert run_in_child(operator.mul, 21, 2) == 42
    with pytest.raises(ValueError, match="bad input") as caught:
        run_in_child(int, "bad input")
    assert any("in the child process" in note for note in caught.value.__notes__)
    with pytest.raises(ForkServerError, match="exit code 3"):
        run_in_child(os._exit, 3)


def test_no_private_multiprocessing_fork_server_is_used(tmp_path: Path) -> None:
    """The jobs start through our server: multiprocessing's stays unstarted (CPython 3.14)."""
    assert run_in_child(operator.mul, 1, 2) == 2
    server: object = multiprocessing.forkserver._forkserver  # type: ignore[attr-defined]
    assert getattr(server, "_forkserver_pid", None) is None
    assert fork_server_pid() == start_fork_server().pid


@pytest.fixture
def home(tmp_path: Path) -> StationHome:
    home = StationHome(tmp_path / "home")
    home.logs.mkdir(parents=True)
    return home


def _start(home: StationHome, target: str, *args: object):  # type: ignore[no-untyped-def]
    config = default_config()
    spec = ProcessJobSpec(name="test:job", target=target, args=args)
    return start_job(spec, config_data(config), home, 1)


def test_job_exit_status_reaches_the_supervisor(home: StationHome, tmp_path: Path) -> None:
    """Exit 78 (configuration error), a crash (1) and SIGKILL (-9) are seen by the starter."""
    process, conn = _start(home, "fieldstation.testing.jobs:crashing")
    assert process.join(30.0) == 1
    process.close()
    conn.close()

    process, conn = _start(home, "fieldstation.testing.jobs:misconfigured")
    assert process.join(30.0) == EXIT_CONFIG
    assert conn.poll(5.0)
    assert b"config_error" in conn.recv_bytes()
    process.close()
    conn.close()

    marker = tmp_path / "hang"
    process, conn = _start(home, "fieldstation.testing.jobs:hanging", str(marker))
    assert conn.poll(30.0)
    assert b"slot" in conn.recv_bytes()
    assert process.exitcode is None
    assert os.getpgid(process.pid) == process.pid  # its own process group, as before
    process.kill()
    assert process.join(30.0) == -signal.SIGKILL
    process.close()
    conn.close()


def test_a_failed_fork_fails_that_start_only(
    home: StationHome,
    tmp_path: Path,
    no_forks: Callable[[int], AbstractContextManager[None]],
) -> None:
    """fork() refused (EAGAIN): that one start raises ForkServerError; the server and the jobs
    it started run on, and the next start works."""
    server = start_fork_server()
    marker = tmp_path / "hang"
    process, conn = _start(home, "fieldstation.testing.jobs:hanging", str(marker))
    try:
        assert conn.poll(30.0)
        with no_forks(server.pid), pytest.raises(ForkServerError, match="could not start"):
            _start(home, "fieldstation.testing.jobs:crashing")
        assert server.alive() and process.exitcode is None
        assert start_fork_server() is server
        again, again_conn = _start(home, "fieldstation.testing.jobs:crashing")
        assert again.join(30.0) == 1
        again.close()
        again_conn.close()
        assert process.exitcode is None
    finally:
        process.kill()
        process.join(30.0)
        process.close()
        conn.close()


CLIENT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from fieldstation.config import config_data, default_config
    from fieldstation.home import StationHome
    from fieldstation.runtime.forkserver import start_fork_server
    from fieldstation.runtime.jobs import ProcessJobSpec, start_job

    server = start_fork_server()
    home = StationHome(Path(sys.argv[1]))
    spec = ProcessJobSpec(
        name="test:job", target="fieldstation.testing.jobs:progressing", args=(sys.argv[2],)
    )
    process, conn = start_job(spec, config_data(default_config()), home, 1)
    conn.recv_bytes()
    print(server.pid, process.pid, flush=True)
    time.sleep(600)
    """
)


def test_jobs_die_with_a_sigkilled_supervisor(home: StationHome, tmp_path: Path) -> None:
    """SIGKILL of the process holding the server: the server exits, its jobs get SIGTERM."""
    marker = tmp_path / "job"
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(home.root), str(marker)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout is not None
        server_pid, job_pid = map(int, client.stdout.readline().split())
        job = psutil.Process(job_pid)
        assert job.ppid() == server_pid
        client.kill()
        client.wait(30)

        def gone(pid: int) -> bool:
            try:
                return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        _wait_until(lambda: gone(server_pid) and gone(job_pid))
        assert marker.read_text() == "shutdown"  # SIGTERM (PR_SET_PDEATHSIG) stopped it
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()


STARTER = textwrap.dedent(
    """
    import operator, sys, threading
    import psutil
    from fieldstation.runtime.forkserver import fork_server_pid
    from fieldstation.runtime.station import run_in_child

    if sys.argv[1] == "threads":
        idle = threading.Event()
        threading.Thread(target=idle.wait, daemon=True).start()
    assert run_in_child(operator.mul, 6, 7) == 42
    print(" ".join(psutil.Process(fork_server_pid()).cmdline()))
    """
)


@pytest.mark.parametrize(("threads", "execd"), [("none", False), ("threads", True)])
def test_the_server_is_forked_only_from_a_single_threaded_process(
    threads: str, execd: bool
) -> None:
    """Forked (sharing the caller's pages) when the caller has one thread; a fresh interpreter
    when it has more, as forking then could copy a lock another thread holds."""
    done = subprocess.run(
        [sys.executable, "-c", STARTER, threads], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert ("-m fieldstation.runtime.forkserver" in done.stdout) == execd, done.stdout


def test_a_started_call_is_polled_not_waited_for_and_can_be_cancelled() -> None:
    """:func:`start_call` returns at once; ``poll`` says when the child ended (its result or
    exception then), ``cancel`` ends a child that runs on (a stop during a reprocess)."""
    from fieldstation.runtime.forkserver import start_call

    quick = start_call(operator.truediv, 1, 4)
    assert quick.poll(WAIT_CHILD)
    assert quick.result() == 0.25
    failing = start_call(operator.truediv, 1, 0)
    assert failing.poll(WAIT_CHILD)
    with pytest.raises(ZeroDivisionError):
        failing.result()
    slow = start_call(time.sleep, 3600)
    assert not slow.poll()  # at once, never blocking
    assert psutil.pid_exists(slow.pid)
    slow.cancel()
    assert slow.ended
    _wait_until(
        lambda: (
            not psutil.pid_exists(slow.pid)
            or psutil.Process(slow.pid).status() == psutil.STATUS_ZOMBIE
        )
    )
    with pytest.raises(ForkServerError, match="no result"):
        slow.result()


WAIT_CHILD = 60.0
"""Real seconds a started call may take to answer on a busy machine."""
