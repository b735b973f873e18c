"""The station's own fork server: a small single-threaded process that forks job processes.

Why a fork server at all is decision record 0060: the supervisor runs threads that use SQLite, so
it must not fork; a server forked from it while it was still single-threaded, preloaded with what
every job needs (:data:`PRELOAD`, then ``gc.freeze()``), forks each job instead, and all of them
share one copy of the interpreter and libraries. Why our own and not multiprocessing's is decision
record 0067: that one can only be forked from the supervisor through private attributes, which
changed in CPython 3.14 (an authkey handshake).

The protocol uses public APIs only (``os.fork``, ``socket.send_fds``/``recv_fds``, pipes):

- the client (the supervisor's process) holds one end of a ``socketpair``; each request is one
  length-prefixed pickle sent with two file descriptors, the write ends of a *status* pipe and
  of a *data* pipe: ``("run", function, args)`` runs ``function(*args, conn)`` in the child,
  ``conn`` the data pipe (a job's progress reports, :func:`.jobs.start_job`);
  ``("call", function, args)`` sends what ``function(*args)`` returned or raised back over it
  (:func:`call_in_child`);
- the server forks a child, writes the child's PID to the status pipe (4 bytes), and when it
  reaps the child writes its exit code (4 bytes, signed: ``-N`` when killed by signal N, as
  :attr:`multiprocessing.Process.exitcode`) and closes the pipe;
- the client's read end of the status pipe is the child's *sentinel* (readable once it ended);
- the server exits when the client's end of the socket closes (the supervisor ended, even by
  SIGKILL); the kernel then sends its children SIGTERM (``PR_SET_PDEATHSIG``, set by each child).

The children are not the supervisor's own (their parent is the server), so the supervisor learns
their exit status from the status pipe, and signals them by PID as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "CallInChild",
    "ChildProcess",
    "ForkServer",
    "ForkServerError",
    "PRELOAD",
    "die_with_parent",
    "give_back_freed_memory",
    "trim_freed_memory",
    "call_in_child",
    "fork_server_pid",
    "start_call",
    "start_fork_server",
]

PRELOAD = ["fieldstation.runtime.jobs", "fieldstation.runtime.preload"]
"""Modules the fork server imports once, so each child starts with them and their pages are
shared by all jobs (see :mod:`fieldstation.runtime.preload`)."""

_HEADER = struct.Struct("!I")
_CODE = struct.Struct("!i")
START_TIMEOUT = 30.0
"""Seconds the client waits for the server to report a new child's PID before giving up."""


class ForkServerError(RuntimeError):
    """The fork server is gone or did not start a child; the message says which."""


class ChildProcess:
    """A process started by the fork server: PID, sentinel, exit code; not our own child.

    ``sentinel``: a file descriptor that becomes readable once the process has ended (for
    :func:`multiprocessing.connection.wait` or ``select``). ``exitcode``: None while it runs, else
    its exit status (``-N`` when killed by signal N; ``-SIGKILL`` reported when the server itself
    died, which took the child with it). Safe to use from several threads (the supervisor's loop
    closes it while its status writer may ask whether it is alive).
    """

    def __init__(self, pid: int, sentinel: int, name: str = "") -> None:
        self.pid = pid
        self.sentinel = sentinel
        self.name = name
        self._exitcode: int | None = None
        self._closed = False
        self._lock = threading.Lock()

    @property
    def exitcode(self) -> int | None:
        """The exit status once ended (non-blocking), else None."""
        if self._exitcode is None and not self._closed:
            self.join(0)
        return self._exitcode

    def is_alive(self) -> bool:
        return self.exitcode is None

    def join(self, timeout: float | None = None) -> int | None:
        """Wait up to ``timeout`` s (None: forever) for the end; returns :attr:`exitcode`."""
        with self._lock:
            return self._join(timeout)

    def _join(self, timeout: float | None) -> int | None:
        if self._exitcode is not None or self._closed:
            return self._exitcode
        ready, _, _ = select.select([self.sentinel], [], [], timeout)
        if ready:
            data = b""
            with contextlib.suppress(OSError):
                data = os.read(self.sentinel, _CODE.size)
            # EOF without a code: the server died, and its children with it (PDEATHSIG)
            code = _CODE.unpack(data)[0] if len(data) == _CODE.size else -int(signal.SIGKILL)
            self._exitcode = code
        return self._exitcode

    def send_signal(self, sig: int) -> None:
        """Signal the process; nothing when it has ended (its PID may be reused: checked)."""
        if self.exitcode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def close(self) -> None:
        """Release the sentinel (after the process ended)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                with contextlib.suppress(OSError):
                    os.close(self.sentinel)

    def __repr__(self) -> str:
        return f"<ChildProcess {self.name} pid={self.pid} exitcode={self._exitcode}>"


class ForkServer:
    """The client side: ``start_job``/``call`` send a request and return a :class:`ChildProcess`.

    Safe to use from several threads (one request at a time crosses the socket).
    """

    def __init__(self, sock: socket.socket, pid: int, process: subprocess.Popen[bytes] | None):
        self._sock = sock
        self.pid = pid
        self._process = process  # when exec'd rather than forked
        self._lock = threading.Lock()

    def alive(self) -> bool:
        """Whether the server still runs (it may have been killed)."""
        if self._process is not None:
            return self._process.poll() is None
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return _exists(self.pid)
        return pid == 0

    def start(self, request: tuple[Any, ...], data_fd: int, name: str = "") -> ChildProcess:
        """Have the server fork a child for ``request``; ``data_fd`` goes to the child (and is
        closed here). Raises :class:`ForkServerError` when the server is gone, does not answer
        within :data:`START_TIMEOUT` s, or its fork failed (EAGAIN, ENOMEM: the server and its
        other children run on)."""
        status_r, status_w = os.pipe()
        try:
            payload = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
            message = _HEADER.pack(len(payload)) + payload
            with self._lock:
                sent = socket.send_fds(self._sock, [message], [status_w, data_fd])
                if sent < len(message):
                    self._sock.sendall(message[sent:])
        except OSError as error:
            os.close(status_r)
            raise ForkServerError(f"the fork server (pid {self.pid}) is gone: {error}") from error
        finally:
            os.close(status_w)
            os.close(data_fd)
        ready, _, _ = select.select([status_r], [], [], START_TIMEOUT)
        data = os.read(status_r, _CODE.size) if ready else b""
        if len(data) != _CODE.size:
            os.close(status_r)
            raise ForkServerError(f"the fork server (pid {self.pid}) started no process")
        pid = _CODE.unpack(data)[0]
        if pid <= 0:  # the fork failed: 0, then its errno
            data = os.read(status_r, _CODE.size)
            os.close(status_r)
            code = _CODE.unpack(data)[0] if len(data) == _CODE.size else 0
            raise ForkServerError(
                f"the fork server (pid {self.pid}) could not start a process: "
                f"{os.strerror(code) if code else 'unknown error'}"
            )
        return ChildProcess(pid, status_r, name)

    def close(self) -> None:
        """Close our end: the server exits (its children get SIGTERM)."""
        with contextlib.suppress(OSError):
            self._sock.close()


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_server: ForkServer | None = None
_server_lock = threading.Lock()


def fork_server_pid() -> int | None:
    """PID of this process's fork server, or None when none was started."""
    return _server.pid if _server is not None else None


def start_fork_server(preload: Sequence[str] = PRELOAD) -> ForkServer:
    """Start the fork server of this process, or return the running one.

    Call it while the process is single-threaded (before the supervisor starts threads or opens
    the database): the server is then *forked* from this process and shares every page it has
    loaded (Python, pydantic, SQLAlchemy, the config) with the supervisor and with every job
    (decision 0060). When other threads already run, forking could copy a lock another thread
    holds, so the server is a fresh interpreter instead (tests; it costs memory, not safety).
    ``preload``: modules the server imports before forking anything. This is the one way to
    start it; :func:`.jobs.start_job` and :func:`call_in_child` call it too. Raises
    :class:`ForkServerError` when the server cannot be started (fork or exec failed).
    """
    global _server
    with _server_lock:
        if _server is not None and _server.alive():
            return _server
        if _server is not None:
            _server.close()
        _server = None
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as error:
            raise ForkServerError(f"cannot start the fork server: {error}") from error
        try:
            if _thread_count() == 1:
                _server = _fork(ours, theirs, list(preload))
            else:
                _server = _exec(ours, theirs, list(preload))
        except OSError as error:
            ours.close()
            theirs.close()
            raise ForkServerError(f"cannot start the fork server: {error}") from error
        return _server


def _thread_count() -> int:
    """Threads of this process as the kernel counts them (C libraries' threads included)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _fork(ours: socket.socket, theirs: socket.socket, preload: list[str]) -> ForkServer:
    gc.collect()
    gc.freeze()  # shared pages stay shared: the collector no longer writes to these objects
    pid = os.fork()
    if pid == 0:  # the fork server
        code = 0
        try:
            ours.close()
            serve(theirs.detach(), preload)
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    theirs.close()
    return ForkServer(ours, pid, None)


def _exec(ours: socket.socket, theirs: socket.socket, preload: list[str]) -> ForkServer:
    fd = theirs.fileno()
    process = subprocess.Popen(
        [sys.executable, "-m", "fieldstation.runtime.forkserver", str(fd), *preload],
        pass_fds=[fd],
        stdin=subprocess.DEVNULL,
        start_new_session=False,
    )
    theirs.close()
    return ForkServer(ours, process.pid, process)


PR_SET_PDEATHSIG = 1
"""prctl(2) option: signal sent to this process when its parent thread dies."""

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
"""mallopt(3) parameters, from glibc's <malloc.h>."""
FREED_MEMORY_THRESHOLD = 128 * 1024
"""Bytes: allocations from this size up are mmap'ed (and unmapped when freed), and free heap
above this size at the top is returned to the kernel: glibc's defaults, but fixed (mallopt(3)
otherwise raises the mmap threshold up to 32 MiB after the first large block is freed)."""
MALLOC_ARENAS = 2
"""glibc malloc arenas per process: every thread that mallocs otherwise gets an arena of its
own (up to 8 per core), each keeping its freed memory resident; the supervisor runs about ten
threads."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None)


def give_back_freed_memory() -> None:
    """Make glibc give freed memory back to the kernel (a no-op elsewhere).

    A job frees large numpy buffers after each chunk or recording; with glibc's dynamic
    threshold they end up in the heap and stay resident (about 5 MiB per job of the embedded
    default, bench/footprint.py). Also limits malloc to :data:`MALLOC_ARENAS` arenas.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = _libc()
        libc.mallopt(M_MMAP_THRESHOLD, FREED_MEMORY_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, FREED_MEMORY_THRESHOLD)
        libc.mallopt(M_ARENA_MAX, MALLOC_ARENAS)


def trim_freed_memory() -> None:
    """Return the free pages of glibc's heaps to the kernel now (``malloc_trim(0)``; a no-op
    elsewhere): start-up's temporary objects leave free pages inside the heap, which the top
    threshold of :func:`give_back_freed_memory` never reaches. Takes well under a millisecond
    for a station's heap."""
    with contextlib.suppress(OSError, AttributeError):
        _libc().malloc_trim(0)


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the parent (the fork server) dies; exit if it is gone."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


# --- the server -------------------------------------------------------------------------------


def serve(fd: int, preload: Sequence[str]) -> None:
    """The server's loop on the socket ``fd``; returns when the client's end closes."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the supervisor
    give_back_freed_memory()  # inherited by every job
    for name in preload:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    gc.collect()
    gc.freeze()
    trim_freed_memory()  # the imports' temporaries: not copied into every job
    sock = socket.socket(fileno=fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.set_wakeup_fd(wake_w)
    children: dict[int, int] = {}  # pid -> write end of its status pipe
    buffer = b""
    fds: list[int] = []
    try:
        while True:
            _reap(children)
            ready, _, _ = select.select([sock.fileno(), wake_r], [], [])
            if wake_r in ready:
                with contextlib.suppress(OSError):
                    os.read(wake_r, 4096)
            if sock.fileno() not in ready:
                continue
            data, new_fds, _, _ = socket.recv_fds(sock, 1 << 16, 16)
            if not data:
                return  # the client is gone
            buffer += data
            fds += new_fds
            while len(buffer) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(buffer)
                if len(buffer) < _HEADER.size + size:
                    break
                payload = buffer[_HEADER.size : _HEADER.size + size]
                buffer = buffer[_HEADER.size + size :]
                status_w, data_fd, fds = fds[0], fds[1], fds[2:]
                inherited = [sock.fileno(), wake_r, wake_w, status_w, *children.values(), *fds]
                try:
                    pid = _fork_child(payload, data_fd, inherited)
                except OSError as error:  # EAGAIN, ENOMEM: this request fails, the rest run on
                    print(f"fieldstation fork server: fork failed: {error}", file=sys.stderr)
                    os.close(data_fd)
                    _write_code(status_w, 0, error.errno or 0)
                    os.close(status_w)
                    continue
                os.close(data_fd)
                _write_code(status_w, pid)
                children[pid] = status_w
    finally:
        sock.close()


def _reap(children: dict[int, int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        status_w = children.pop(pid, None)
        if status_w is not None:
            _write_code(status_w, os.waitstatus_to_exitcode(status))
            os.close(status_w)


def _write_code(fd: int, *values: int) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, b"".join(_CODE.pack(value) for value in values))  # one atomic write


def _fork_child(payload: bytes, data_fd: int, close: list[int]) -> int:
    pid = os.fork()
    if pid != 0:
        return pid
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in close:
            with contextlib.suppress(OSError):
                os.close(fd)
        request = pickle.loads(payload)
        if request[0] == "run":
            from multiprocessing.connection import Connection

            _, function, args = request
            function(*args, Connection(data_fd, readable=False))
            code = 0
        else:
            _, function, args = request
            code = _call(function, args, data_fd)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    return 0  # not reached


# --- short-lived calls ------------------------------------------------------------------------


def _call(function: Callable[..., Any], args: tuple[Any, ...], fd: int) -> int:
    die_with_parent()
    try:
        result: tuple[str, Any] = ("ok", function(*args))
    except BaseException as error:
        remote = "".join(traceback.format_exception(error))
        try:
            pickle.dumps(error)
            result = ("error", (error, remote))
        except Exception:
            result = ("error", (RuntimeError(f"{type(error).__name__}: {error}"), remote))
    try:
        data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        data = pickle.dumps(("error", (TypeError(f"result cannot be pickled: {error}"), "")))
    with open(fd, "wb") as out:
        out.write(data)
    return 0


def call_in_child(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in a short-lived child of the fork server; its result or exception.

    ``function`` and ``args`` cross over pickled (``function`` must be a module-level name), and
    so does what it returns or raises; a raised exception carries the child's traceback as a
    note. Raises :class:`ForkServerError` when the child died without an answer (its exit code
    in the message).
    """
    call = start_call(function, *args)
    call.poll(None)
    return call.result()


class CallInChild:
    """A call started by :func:`start_call`, running in a child of the fork server, that the
    caller polls instead of waiting for it (a thread that must keep turning its loop).

    :meth:`poll` reads what the child sent so far without blocking (or waiting up to
    ``timeout`` seconds) and says whether the call ended; :meth:`result` then returns what
    ``function`` returned or re-raises what it raised (:class:`ForkServerError` when the child
    died without an answer); :meth:`cancel` ends the child (SIGTERM, then SIGKILL after
    ``grace`` seconds). Used by one thread.
    """

    def __init__(self, child: ChildProcess, data_fd: int, name: str) -> None:
        self.child = child
        self.name = name
        self.pid = child.pid
        self._fd: int | None = data_fd
        self._data = bytearray()
        self._code: int | None = None
        os.set_blocking(data_fd, False)

    @property
    def ended(self) -> bool:
        return self._fd is None

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Read what the child wrote; True once the call ended (its answer read, the child
        reaped). ``timeout``: seconds to wait for the end (0: none; None: until it ends)."""
        if self._fd is None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._fd], [], [], left)
            if not ready:
                return False
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                chunk = None  # a wake-up without data: wait on
            if chunk == b"":
                break  # EOF: the child ended
            if chunk:
                self._data += chunk
            if deadline is not None and time.monotonic() >= deadline:
                return False
        os.close(self._fd)
        self._fd = None
        try:
            self._code = self.child.join()
        finally:
            self.child.close()
        return True

    def result(self) -> Any:
        """What the call returned, or raises what it raised; only once :meth:`poll` said it
        ended (:class:`RuntimeError` before)."""
        if self._fd is not None:
            raise RuntimeError(f"{self.name} in a child process has not ended")
        if not self._data:
            raise ForkServerError(
                f"{self.name} in a child process ended with exit code {self._code}, no result"
            )
        kind, value = pickle.loads(bytes(self._data))
        if kind == "ok":
            return value
        error, remote = value
        if remote:
            error.add_note(f"in the child process:\n{remote.rstrip()}")
        raise error

    def cancel(self, grace: float = 10.0) -> None:
        """End the child (SIGTERM, SIGKILL after ``grace`` s) and forget its answer."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.child.terminate()
        if self.child.join(grace) is None:
            with contextlib.suppress(OSError):
                self.child.kill()
            self.child.join(grace)
        os.close(self._fd)
        self._fd = None
        self._code = self.child.exitcode
        self.child.close()


def start_call(function: Callable[..., Any], *args: Any) -> CallInChild:
    """Start ``function(*args)`` in a short-lived child of the fork server and return at once
    (:class:`CallInChild`; :func:`call_in_child` is the waiting form). Raises
    :class:`ForkServerError` when no child could be started."""
    server = start_fork_server()  # first: a server forked now must not inherit our pipe
    data_r, data_w = os.pipe()
    name = getattr(function, "__qualname__", "call")
    try:
        child = server.start(("call", function, args), data_w, name)
    except BaseException:
        os.close(data_r)
        raise
    return CallInChild(child, data_r, name)


if __name__ == "__main__":  # the exec'd server: python -m fieldstation.runtime.forkserver FD ...
    serve(int(sys.argv[1]), sys.argv[2:])
